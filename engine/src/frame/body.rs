//! Bodies on the wire: UTF-8 text as is, any other bytes as base64 with
//! `"bodyEncoding": "base64"` (the Osaurus app's binary-safe extension).

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The value of `bodyEncoding` that marks a base64 body.
pub const BASE64: &str = "base64";

/// Standard alphabet; padding optional on input (encoders differ), written
/// on output as every base64 library expects.
const CODEC: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A request or response body, or a stream chunk's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// UTF-8 text, sent as a JSON string.
    Text(String),
    /// Raw bytes, sent as base64 with `"bodyEncoding": "base64"`.
    Binary(Vec<u8>),
}

impl Default for Body {
    fn default() -> Self {
        Body::Text(String::new())
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::Text(s)
    }
}

impl From<&str> for Body {
    fn from(s: &str) -> Self {
        Body::Text(s.to_string())
    }
}

impl Body {
    /// Text when the bytes are UTF-8, else binary.
    pub fn from_bytes(bytes: Vec<u8>) -> Body {
        match String::from_utf8(bytes) {
            Ok(s) => Body::Text(s),
            Err(e) => Body::Binary(e.into_bytes()),
        }
    }

    /// The bytes it stands for.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Body::Text(s) => s.into_bytes(),
            Body::Binary(b) => b,
        }
    }

    /// Length in bytes of what it stands for (not of its wire form).
    pub fn len(&self) -> usize {
        match self {
            Body::Text(s) => s.len(),
            Body::Binary(b) => b.len(),
        }
    }

    /// `true` when it stands for no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text, if it is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Body::Text(s) => Some(s),
            Body::Binary(_) => None,
        }
    }

    /// `true` for raw bytes sent as base64.
    pub fn is_binary(&self) -> bool {
        matches!(self, Body::Binary(_))
    }

    /// Bytes its JSON string takes on the wire, roughly (text unescaped).
    pub fn wire_len(&self) -> usize {
        match self {
            Body::Text(s) => s.len(),
            Body::Binary(b) => b.len().div_ceil(3) * 4,
        }
    }
}

/// Appends the base64 of `bytes` (no escaping needed inside a JSON string).
pub fn push_base64(out: &mut String, bytes: &[u8]) {
    CODEC.encode_string(bytes, out);
}

/// Unescaped base64 characters decoded at a time when the text has escapes.
const BLOCK: usize = 4096;

/// Decodes the base64 inside a JSON string literal (`raw`, with its quotes)
/// straight into bytes. Escapes (Swift writes `/` as `\/`) are undone in a
/// bounded block, so a 10 MB body is never held as text a second time.
/// `None` if it is not base64.
pub fn base64_from_json(raw: &str) -> Option<Vec<u8>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?.as_bytes();
    let mut out = Vec::with_capacity(inner.len() / 4 * 3 + 3);
    if !inner.contains(&b'\\') {
        CODEC.decode_vec(inner, &mut out).ok()?;
        return Some(out);
    }
    let mut block = Vec::with_capacity(BLOCK);
    let mut i = 0;
    while i < inner.len() {
        if block.len() == BLOCK {
            // Padding ends the data: none may follow a full block that has it.
            if block.last() == Some(&b'=') {
                return None;
            }
            CODEC.decode_vec(&block, &mut out).ok()?;
            block.clear();
        }
        match inner[i] {
            b'\\' => {
                let (c, used) = unescape(&inner[i..])?;
                block.extend(c);
                i += used;
            }
            c => {
                block.push(c);
                i += 1;
            }
        }
    }
    CODEC.decode_vec(&block, &mut out).ok()?;
    Some(out)
}

/// One JSON escape at the start of `s`: the base64 character it stands for
/// (none for an escaped line break, which MIME encoders insert) and its length.
fn unescape(s: &[u8]) -> Option<(Option<u8>, usize)> {
    match s.get(1)? {
        b'/' => Some((Some(b'/'), 2)),
        b'n' | b'r' => Some((None, 2)),
        b'u' => {
            let hex = std::str::from_utf8(s.get(2..6)?).ok()?;
            let c = u8::try_from(u16::from_str_radix(hex, 16).ok()?).ok()?;
            match c {
                b'\n' | b'\r' => Some((None, 6)),
                c if c.is_ascii_alphanumeric() || b"+/=".contains(&c) => Some((Some(c), 6)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Writes `body` under `key`, with `bodyEncoding` when it is binary.
fn serialize_under<M: SerializeMap>(m: &mut M, key: &str, body: &Body) -> Result<(), M::Error> {
    match body {
        Body::Text(s) => m.serialize_entry(key, s),
        Body::Binary(b) => {
            let mut text = String::with_capacity(b.len().div_ceil(3) * 4);
            push_base64(&mut text, b);
            m.serialize_entry(key, &text)?;
            m.serialize_entry("bodyEncoding", BASE64)
        }
    }
}

/// Flattened into a frame: `"body": ..` and, when binary, `"bodyEncoding"`.
impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        serialize_under(&mut m, "body", self)?;
        m.end()
    }
}

/// The same under `"data"`, for `stream_chunk`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ChunkData(pub Body);

impl Serialize for ChunkData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        serialize_under(&mut m, "data", &self.0)?;
        m.end()
    }
}

impl From<&str> for ChunkData {
    fn from(s: &str) -> Self {
        ChunkData(s.into())
    }
}

impl From<String> for ChunkData {
    fn from(s: String) -> Self {
        ChunkData(s.into())
    }
}

/// Read from a frame's remaining fields: `body` (absent or null: empty) and
/// `bodyEncoding` (any value but `base64`: text, as the app reads it).
impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Body;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a body and its encoding")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
                let (mut body, mut base64) = (None::<String>, false);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "body" => body = map.next_value::<Option<String>>()?,
                        "bodyEncoding" => {
                            base64 = map.next_value::<Option<String>>()?.as_deref() == Some(BASE64)
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let body = body.unwrap_or_default();
                if !base64 {
                    return Ok(Body::Text(body));
                }
                CODEC
                    .decode(body.as_bytes())
                    .map(Body::Binary)
                    .map_err(|_| serde::de::Error::custom("body is not valid base64"))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json_of(text: &str) -> String {
        serde_json::to_string(text).unwrap()
    }

    #[test]
    fn decodes_padded_unpadded_and_escaped() {
        assert_eq!(base64_from_json(r#""aGk=""#), Some(b"hi".to_vec()));
        assert_eq!(base64_from_json(r#""aGk""#), Some(b"hi".to_vec()));
        assert_eq!(base64_from_json(r#""""#), Some(vec![]));
        // Swift's JSONEncoder escapes slashes; MIME encoders break lines.
        assert_eq!(base64_from_json(r#""\/w==""#), Some(vec![0xff]));
        assert_eq!(base64_from_json(r#""\u002fw==""#), Some(vec![0xff]));
        assert_eq!(base64_from_json(r#""aG\r\nk=""#), Some(b"hi".to_vec()));
    }

    #[test]
    fn rejects_what_is_not_base64() {
        for bad in [
            r#""a""#,
            r#""a===""#,
            r#""aGk=aGk=""#,
            r#""aG k=""#,
            r#""aGk\"""#,
            r#""\u00e9""#,
            r#""QR==""#,
            "notastring",
        ] {
            assert_eq!(base64_from_json(bad), None, "{bad}");
        }
    }

    #[test]
    fn padding_in_the_middle_of_a_long_escaped_body_is_refused() {
        let first = "\\/".repeat(BLOCK - 4) + "QQ==";
        let raw = format!("\"{first}QUFB\"");
        assert_eq!(base64_from_json(&raw), None);
    }

    proptest! {
        #[test]
        fn decoding_matches_any_escaping(bytes in proptest::collection::vec(any::<u8>(), 0..20_000), slash_escape: bool) {
            let mut b64 = String::new();
            push_base64(&mut b64, &bytes);
            let mut raw = json_of(&b64);
            if slash_escape {
                raw = raw.replace('/', "\\/");
            }
            prop_assert_eq!(base64_from_json(&raw), Some(bytes));
        }

        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            let _ = base64_from_json(&json_of(&s));
        }
    }
}
