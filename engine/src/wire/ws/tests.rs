use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: FIN flag, opcode, masked payload.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    let mut p = payload.to_vec();
    for (i, b) in p.iter_mut().enumerate() {
        *b ^= MASK[i % 4];
    }
    out.extend_from_slice(&p);
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Close(Option<u16>),
}

/// Feeds `wire` in pieces cut at `cuts`; what was seen and how it ended.
fn run(max: usize, wire: &[u8], cuts: &[usize]) -> (Vec<Seen>, Fed) {
    let mut r = FrameReader::new(max);
    let mut seen = Vec::new();
    let mut on = |m: Msg<'_>| {
        seen.push(match m {
            Msg::Text(t) => Seen::Text(t.to_string()),
            Msg::Binary => Seen::Binary,
            Msg::Ping(p) => Seen::Ping(p.to_vec()),
            Msg::Close(c) => Seen::Close(c),
        })
    };
    let mut last = 0;
    let mut fed = Ok(false);
    for &c in cuts.iter().chain(std::iter::once(&wire.len())) {
        let mut piece = wire[last..c].to_vec();
        last = c;
        fed = r.feed(&mut piece, &mut on);
        if !matches!(fed, Ok(false)) {
            break;
        }
    }
    (seen, fed)
}

#[test]
fn every_split_of_a_conversation_reads_the_same() {
    let big = "é".repeat(200); // 400 bytes: a 16-bit length
    let mut wire = frame(true, 1, br#"{"type":"auth"}"#);
    wire.extend(frame(false, 1, &big.as_bytes()[..101]));
    wire.extend(frame(true, 9, b"hi"));
    wire.extend(frame(true, 0, &big.as_bytes()[101..]));
    wire.extend(frame(true, 2, &[0, 1, 2]));
    wire.extend(frame(true, 10, b""));
    wire.extend(frame(true, 8, &[0x03, 0xe8, b'o', b'k']));
    let want = vec![
        Seen::Text(r#"{"type":"auth"}"#.into()),
        Seen::Ping(b"hi".to_vec()),
        Seen::Text(big.clone()),
        Seen::Binary,
        Seen::Close(Some(1000)),
    ];
    assert_eq!(run(1 << 20, &wire, &[]), (want.clone(), Ok(true)));
    for a in 1..wire.len() {
        assert_eq!(
            run(1 << 20, &wire, &[a]),
            (want.clone(), Ok(true)),
            "cut at {a}"
        );
    }
    for a in (1..wire.len()).step_by(7) {
        for b in (a + 1..wire.len()).step_by(5) {
            assert_eq!(run(1 << 20, &wire, &[a, b]), (want.clone(), Ok(true)));
        }
    }
}

#[test]
fn a_complete_frame_leaves_nothing_behind() {
    let mut r = FrameReader::new(1 << 20);
    let wire = frame(true, 1, &[b'x'; 5000]);
    let (head, tail) = wire.split_at(3000);
    let mut texts = 0;
    let mut on = |m: Msg<'_>| {
        if let Msg::Text(t) = m {
            assert_eq!(t.len(), 5000);
            texts += 1;
        }
    };
    assert_eq!(r.feed(&mut head.to_vec(), &mut on), Ok(false));
    assert_eq!(r.partial.len(), 3000);
    assert!(
        r.partial.capacity() >= 5000,
        "sized from the header at once"
    );
    assert_eq!(r.feed(&mut tail.to_vec(), &mut on), Ok(false));
    assert_eq!(texts, 1);
    assert_eq!(
        r.partial.capacity(),
        0,
        "the buffer is freed once the frame is done"
    );
    assert!(r.message.is_none());
}

#[test]
fn bad_frames_close_with_the_right_code() {
    let unmasked = {
        let mut f = frame(true, 1, b"hi");
        f[1] &= 0x7f;
        f.drain(2..6);
        for (b, m) in f[2..].iter_mut().zip(MASK) {
            *b ^= m;
        }
        f
    };
    let rsv = {
        let mut f = frame(true, 1, b"hi");
        f[0] |= 0x40;
        f
    };
    let cases: Vec<(Vec<u8>, Fault)> = vec![
        (unmasked, Fault::Protocol),
        (rsv, Fault::Protocol),
        (frame(true, 3, b"x"), Fault::Protocol),
        (frame(true, 11, b"x"), Fault::Protocol),
        (frame(true, 0, b"x"), Fault::Protocol),
        (frame(false, 9, b"x"), Fault::Protocol),
        (frame(true, 9, &[0; 126]), Fault::Protocol),
        (frame(true, 8, &[3]), Fault::Protocol),
        (frame(true, 1, &[0xff, 0xfe]), Fault::BadUtf8),
        (frame(true, 8, &[0x03, 0xe8, 0xff]), Fault::BadUtf8),
        (frame(true, 1, &[b'x'; 101]), Fault::TooBig),
        (
            [frame(false, 1, b"a"), frame(true, 1, b"b")].concat(),
            Fault::Protocol,
        ),
        (
            [frame(false, 1, &[b'x'; 60]), frame(true, 0, &[b'x'; 41])].concat(),
            Fault::TooBig,
        ),
    ];
    for (wire, fault) in cases {
        assert_eq!(run(100, &wire, &[]).1, Err(fault), "{wire:02x?}");
    }
    // Exactly the limit, in one frame or two, is fine.
    let ok = [frame(false, 1, &[b'x'; 60]), frame(true, 0, &[b'x'; 40])].concat();
    assert_eq!(run(100, &ok, &[]).1, Ok(false));
    // A header announcing too much is refused before its payload arrives.
    let huge = frame(true, 1, &[b'x'; 70_000]);
    assert_eq!(run(65_536, &huge[..20], &[]).1, Err(Fault::TooBig));
}

#[test]
fn unmask_matches_the_bytewise_definition() {
    for n in 0..40 {
        let data: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(31)).collect();
        let mut fast = data.clone();
        unmask(&mut fast, MASK);
        let slow: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4])
            .collect();
        assert_eq!(fast, slow, "length {n}");
    }
}

#[test]
fn server_frames_parse_back() {
    for len in [0usize, 125, 126, 65_535, 65_536] {
        let body = vec![b'y'; len];
        let mut out = Vec::new();
        encode(&mut out, OpCode::Text, &[b"ab", &body], len + 2);
        let h = parse_header(&out).unwrap().unwrap();
        assert!(h.fin && !h.rsv && h.mask.is_none());
        assert_eq!(h.opcode, OpCode::Text);
        assert_eq!(h.len as usize, len + 2);
        assert_eq!(out.len() - h.size, len + 2);
        assert_eq!(&out[h.size..h.size + 2], b"ab");
        for cut in 0..h.size {
            assert_eq!(parse_header(&out[..cut]), Ok(None), "{cut} header bytes");
        }
    }
}

proptest::proptest! {
    /// Any bytes, cut anywhere: never a panic, and the same messages and
    /// outcome however the bytes were split across reads.
    #[test]
    fn hostile_bytes_read_the_same_however_split(
        frames in proptest::collection::vec(
            (proptest::bool::ANY, 0u8..16, proptest::collection::vec(proptest::num::u8::ANY, 0..300), proptest::bool::ANY),
            0..6,
        ),
        noise in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        cuts in proptest::collection::vec(0usize..2000, 0..4),
    ) {
        let mut wire = Vec::new();
        for (fin, op, payload, masked) in &frames {
            let mut f = frame(*fin, *op, payload);
            if !masked {
                f[1] &= 0x7f;
            }
            wire.extend(f);
        }
        wire.extend(noise);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.sort_unstable();
        let whole = run(256, &wire, &[]);
        let split = run(256, &wire, &cuts);
        proptest::prop_assert_eq!(whole, split);
    }
}

#[test]
fn headers_read_every_field_and_refuse_a_length_with_its_top_bit_set() {
    let f = frame(false, 0x2, &[1, 2, 3]);
    let h = parse_header(&f).unwrap().unwrap();
    assert_eq!(
        h,
        FrameHeader {
            fin: false,
            rsv: false,
            opcode: OpCode::Binary,
            mask: Some(MASK),
            len: 3,
            size: 6,
        }
    );
    let mut r = f.clone();
    r[0] |= 0x40;
    assert!(parse_header(&r).unwrap().unwrap().rsv);
    assert_eq!(
        parse_header(&[0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1]),
        Err(Fault::Protocol)
    );
    assert_eq!(
        parse_header(&[0x8b, 0]).unwrap().unwrap().opcode,
        OpCode::Reserved(11)
    );
    // A reserved opcode or set RSV bit fails the connection.
    assert_eq!(run(256, &r, &[]).1, Err(Fault::Protocol));
    assert_eq!(
        run(256, &frame(true, 0x3, b""), &[]).1,
        Err(Fault::Protocol)
    );
}
