//! Parser targets: no panic, and what parses re-encodes to the same thing.

use osaurus_relay_engine::frame::{Inbound, ServerFrame};
use osaurus_relay_engine::wire::http1::{
    parse_head, BodyFraming, ChunkedDecoder, Decoded, HeadLimits,
};
use osaurus_relay_engine::wire::ws::{Fault, FrameReader, Msg};

/// Tunnel frames as the relay parses them.
pub fn frame_relay(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Inbound::Frame(f) = Inbound::parse(&text) {
        assert_eq!(
            Inbound::parse(&f.encode()),
            Inbound::Frame(f),
            "re-encoding is stable"
        );
    }
}

/// Relay frames as a tunnel client parses them.
pub fn frame_client(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(f) = ServerFrame::parse(&text) {
        assert_eq!(
            ServerFrame::parse(&f.encode()),
            Some(f),
            "re-encoding is stable"
        );
    }
}

/// Request heads: the consumed length is sane and the head alone parses the same.
pub fn http_head(data: &[u8]) {
    let limits = HeadLimits::default();
    if let Ok(Some((head, n))) = parse_head(data, &limits) {
        assert!(n <= data.len());
        let again = parse_head(&data[..n], &limits).expect("the head alone parses");
        assert_eq!(again, Some((head.clone(), n)));
        if let BodyFraming::Length(_) = head.body {
            assert!(head.headers.get("transfer-encoding").is_none());
        }
    }
}

/// Feeds everything at once and then split at arbitrary points: both ways
/// must decode the same bytes, or fail the same way.
pub fn chunked(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let whole = decode(body, &[]);
    let cuts: Vec<usize> = (1..body.len())
        .filter(|i| (i * 31 + split as usize).is_multiple_of(7))
        .collect();
    let pieces = decode(body, &cuts);
    assert_eq!(
        whole, pieces,
        "decoding must not depend on how input arrives"
    );
}

/// (decoded bytes, finished, failed) feeding `body` in pieces cut at `cuts`.
fn decode(body: &[u8], cuts: &[usize]) -> (Vec<u8>, bool, bool) {
    let mut dec = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut start = 0;
    let ends = cuts.iter().copied().chain(std::iter::once(body.len()));
    for end in ends {
        buf.extend_from_slice(&body[start..end]);
        start = end;
        loop {
            match dec.decode(&buf) {
                Ok(Decoded::Data { consumed, data }) => {
                    assert!(data.end <= consumed && consumed <= buf.len());
                    out.extend_from_slice(&buf[data]);
                    buf.drain(..consumed);
                }
                Ok(Decoded::NeedMore { consumed }) => {
                    assert!(consumed <= buf.len());
                    buf.drain(..consumed);
                    break;
                }
                Ok(Decoded::Done { .. }) => return (out, true, false),
                Err(_) => return (out, false, true),
            }
        }
    }
    (out, false, false)
}

/// A tunnel's WebSocket bytes, read whole and cut at arbitrary points: no
/// panic, and the same messages and outcome however the bytes arrive.
pub fn ws_frames(data: &[u8]) {
    let Some((&split, wire)) = data.split_first() else {
        return;
    };
    let whole = read_frames(wire, &[]);
    let cuts: Vec<usize> = (1..wire.len())
        .filter(|i| (i * 17 + split as usize).is_multiple_of(5))
        .collect();
    assert_eq!(
        whole,
        read_frames(wire, &cuts),
        "frames must not depend on how bytes arrive"
    );
}

/// What a reader with a 4 KiB message limit makes of `wire` fed in pieces.
fn read_frames(wire: &[u8], cuts: &[usize]) -> (Vec<String>, Result<bool, Fault>) {
    let mut reader = FrameReader::new(4096);
    let mut seen = Vec::new();
    let mut fed = Ok(false);
    let mut start = 0;
    for end in cuts.iter().copied().chain(std::iter::once(wire.len())) {
        let mut piece = wire[start..end].to_vec();
        start = end;
        fed = reader.feed(&mut piece, &mut |m: Msg<'_>| seen.push(format!("{m:?}")));
        if fed != Ok(false) {
            break;
        }
    }
    (seen, fed)
}
