//! Recovery and signing checked against an independent implementation's vectors.

use super::*;
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let v: Value = serde_json::from_str(include_str!("../../testdata/eip191.json")).unwrap();
    v["vectors"].as_array().unwrap().clone()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap()
}

#[test]
fn vectors_hash_recover_and_sign_like_viem() {
    let vs = vectors();
    assert!(vs.len() >= 5);
    for v in &vs {
        let msg = s(v, "message");
        assert_eq!(
            format!("0x{}", hex::encode(eip191_hash(msg.as_bytes()))),
            s(v, "eip191_hash"),
            "hash of {msg}"
        );
        let addr = parse_address(s(v, "address")).unwrap();
        assert_eq!(recover(msg.as_bytes(), s(v, "signature")), Ok(addr));
        let key = SecretKey::from_hex(s(v, "private_key")).unwrap();
        assert_eq!(key.address(), addr);
        assert_eq!(key.sign_message(msg.as_bytes()), s(v, "signature"));
        if let Some(lower) = v.get("address_lowercase").and_then(Value::as_str) {
            assert_eq!(to_lower(&addr), lower);
        }
    }
}

#[test]
fn tunnel_vectors_verify_against_the_address_as_sent() {
    for v in vectors().iter().filter(|v| v.get("nonce").is_some()) {
        let (addr, nonce) = (s(v, "address"), s(v, "nonce"));
        let ts = v["timestamp"].as_u64().unwrap();
        assert_eq!(tunnel_message(addr, nonce, ts), s(v, "message"));
        let sig = s(v, "signature");
        assert!(verify_agent(addr, sig, nonce, ts, ts + 5, 30).is_ok());
        // The other case of the same address is a different message.
        let flipped = if addr == addr.to_lowercase() {
            to_checksum(&parse_address(addr).unwrap())
        } else {
            addr.to_lowercase()
        };
        assert_eq!(
            verify_agent(&flipped, sig, nonce, ts, ts, 30),
            Err(AuthFail::Signature)
        );
        assert_eq!(
            verify_agent(addr, sig, nonce, ts, ts + 31, 30),
            Err(AuthFail::Timestamp)
        );
        assert_eq!(
            verify_agent(addr, sig, nonce, ts + 1, ts, 30),
            Err(AuthFail::Signature),
            "the timestamp is signed"
        );
    }
}

#[test]
fn checksum_matches_vectors_and_eip55_examples() {
    for v in vectors() {
        let a = parse_address(s(&v, "address")).unwrap();
        if s(&v, "address") != to_lower(&a) {
            assert_eq!(to_checksum(&a), s(&v, "address"));
        }
    }
    for good in [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    ] {
        assert_eq!(to_checksum(&parse_address(good).unwrap()), good);
    }
}

#[test]
fn v_values_zero_one_accepted_others_rejected() {
    let v = &vectors()[0];
    let (msg, sig) = (s(v, "message").as_bytes(), s(v, "signature"));
    let want = parse_address(s(v, "address")).unwrap();
    let body = &sig[..130];
    let v_byte = u8::from_str_radix(&sig[130..], 16).unwrap();
    assert_eq!(
        recover(msg, &format!("{body}{:02x}", v_byte - 27)),
        Ok(want)
    );
    // Wrong parity recovers some other key, never the claimed one.
    let flipped = format!("{body}{:02x}", if v_byte == 27 { 28 } else { 27 });
    assert_ne!(recover(msg, &flipped), Ok(want));
    for bad_v in [2u8, 26, 29, 35, 255] {
        assert_eq!(
            recover(msg, &format!("{body}{bad_v:02x}")),
            Err(SigError::BadRecoveryId)
        );
    }
}

#[test]
fn high_s_signature_is_accepted_like_viem() {
    let v = &vectors()[0];
    let (msg, sig) = (s(v, "message").as_bytes(), s(v, "signature"));
    let mut raw = hex::decode(&sig[2..]).unwrap();
    let s_low = k256::NonZeroScalar::try_from(&raw[32..64]).unwrap();
    let s_high = -*s_low.as_ref();
    raw[32..64].copy_from_slice(&s_high.to_bytes());
    raw[64] = if raw[64] == 27 { 28 } else { 27 };
    let high = format!("0x{}", hex::encode(&raw));
    assert_eq!(
        recover(msg, &high),
        Ok(parse_address(s(v, "address")).unwrap())
    );
}

#[test]
fn malformed_signatures_are_rejected_without_panic() {
    let msg = b"osaurus-tunnel:x:y:1";
    let zeros = format!("0x{}1b", "00".repeat(64));
    let ones = format!("0x{}1b", "ff".repeat(64));
    let cases: &[(&str, SigError)] = &[
        ("", SigError::Malformed),
        ("0x", SigError::Malformed),
        ("0x1234", SigError::Malformed),
        (&zeros, SigError::Invalid),
        (&ones, SigError::Invalid),
    ];
    for (sig, want) in cases {
        assert_eq!(recover(msg, sig), Err(*want), "{sig}");
    }
    let no_prefix = "ab".repeat(65);
    assert_eq!(recover(msg, &no_prefix), Err(SigError::Malformed));
    let bad_hex = format!("0x{}zz", "ab".repeat(64));
    assert_eq!(recover(msg, &bad_hex), Err(SigError::Malformed));
    let too_long = format!("0x{}", "ab".repeat(66));
    assert_eq!(recover(msg, &too_long), Err(SigError::Malformed));
    let multibyte = format!("0x{}é", "a".repeat(128));
    assert_eq!(recover(msg, &multibyte), Err(SigError::Malformed));
}

#[test]
fn address_parsing_is_strict() {
    assert!(parse_address("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266").is_some());
    for bad in [
        "",
        "0x",
        "f39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb9226",
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb922666",
        "0xg39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "0x f39Fd6e51aad88F6F4ce6aB8827279cffFb9226",
    ] {
        assert_eq!(parse_address(bad), None, "{bad}");
    }
}

use proptest::prelude::*;

proptest! {
    #[test]
    fn address_parsing_decodes_as_the_hex_crate_does(
        text in prop_oneof![
            "[0-9a-fA-F]{40}",
            "[0-9a-fA-F]{0,41}",
            // One byte that is not a hex digit, anywhere.
            ("[0-9a-fA-F]{40}", 0..40usize, "[g-zG-Z :/@`\\[{\\x00\\x7f]").prop_map(|(mut t, at, c)| {
                t.replace_range(at..at + 1, &c);
                t
            }),
            proptest::collection::vec(any::<u8>(), 40)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    ) {
        let mut want = [0u8; 20];
        let want = (text.len() == 40 && hex::decode_to_slice(&text, &mut want).is_ok()).then_some(Address(want));
        prop_assert_eq!(parse_address(&format!("0x{text}")), want);
    }
}
