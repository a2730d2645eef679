//! Strict, IO-free HTTP/1.1 request codec for a public-facing server.

pub mod answer;
pub mod chunked;
pub mod head;
pub mod response;

pub use answer::{parse_answer, Answer, AnswerError, AnswerFraming, AnswerHead, AnswerLimits};
pub use chunked::{ChunkError, ChunkedDecoder, Decoded};
pub use head::{parse_head, BodyFraming, HeadError, HeadLimits, RequestHead};
pub use response::{reason_phrase, write_chunk, write_head, ResponseFraming, LAST_CHUNK};
