use super::*;

const A: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

fn hv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn host_to_agent() {
    let want = parse_address(A);
    let d = "agent.osaurus.ai";
    let cases = [
        (
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266.agent.osaurus.ai",
            want,
        ),
        (
            "0xF39FD6E51AAD88F6F4CE6AB8827279CFFFB92266.Agent.Osaurus.AI",
            want,
        ),
        (
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266.agent.osaurus.ai:8080",
            want,
        ),
        (
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266.agent.osaurus.ai.",
            want,
        ),
        (
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266.agent.osaurus.ai:",
            None,
        ),
        (
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266.agent.osaurus.ai:x",
            None,
        ),
        (
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb9226.agent.osaurus.ai",
            None,
        ),
        (
            "f39fd6e51aad88f6f4ce6ab8827279cfffb92266.agent.osaurus.ai",
            None,
        ),
        ("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266.evil.ai", None),
        (
            "x.0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266.agent.osaurus.ai",
            None,
        ),
        ("agent.osaurus.ai", None),
        ("[::1]:8080", None),
        ("", None),
    ];
    for (host, want) in cases {
        assert_eq!(agent_from_host(host, d), want, "{host}");
    }
}

#[test]
fn client_ip_sources() {
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let h = hv(&[
        ("fly-client-ip", "203.0.113.7"),
        ("x-forwarded-for", "1.1.1.1, 198.51.100.2"),
    ]);
    assert_eq!(
        client_ip(Fields::Pairs(&h), peer, &ClientIpSource::Peer),
        peer
    );
    let fly = ClientIpSource::Header("fly-client-ip".into());
    assert_eq!(
        client_ip(Fields::Pairs(&h), peer, &fly).to_string(),
        "203.0.113.7"
    );
    let xff = ClientIpSource::Header("x-forwarded-for".into());
    assert_eq!(
        client_ip(Fields::Pairs(&h), peer, &xff).to_string(),
        "198.51.100.2"
    );
    let junk = hv(&[("fly-client-ip", "not-an-ip")]);
    assert_eq!(client_ip(Fields::Pairs(&junk), peer, &fly), peer);
    assert_eq!(client_ip(Fields::EMPTY, peer, &fly), peer);
}

#[test]
fn request_headers_are_sanitised() {
    let h = hv(&[
        ("Host", "x"),
        ("Content-Type", "application/json"),
        ("Cookie", "s=1"),
        ("Authorization", "Bearer osk-v1.x"),
        ("Proxy-Authorization", "p"),
        ("Fly-Client-IP", "1.2.3.4"),
        ("CF-Ray", "r"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Agent-Address", "0xspoof"),
        ("Connection", "keep-alive, X-Secret"),
        ("X-Secret", "hop"),
        ("Transfer-Encoding", "chunked"),
        ("Accept", "a"),
        ("accept", "b"),
    ]);
    let agent = crate::auth::parse_address(A).unwrap();
    let out = forward_headers(Fields::Pairs(&h), &agent, "203.0.113.1".parse().unwrap());
    assert_eq!(
        out.0,
        hv(&[
            ("content-type", "application/json"),
            ("authorization", "Bearer osk-v1.x"),
            ("accept", "a, b"),
            ("x-agent-address", A),
            ("x-forwarded-for", "203.0.113.1"),
        ])
    );
}

#[test]
fn response_headers_validated_sanitised_and_cors() {
    let h = Headers(hv(&[
        ("Content-Type", "text/plain"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "99"),
        ("Connection", "close"),
        ("X-Ok", "a\tb é"),
    ]));
    let out: Vec<(String, String)> = (response_headers(h).unwrap().into_iter())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(
        out,
        hv(&[
            ("content-type", "text/plain"),
            ("x-ok", "a\tb é"),
            ("access-control-allow-origin", "*"),
            ("access-control-expose-headers", "*"),
        ])
    );
    let own = Headers(hv(&[(
        "Access-Control-Allow-Origin",
        "https://app.example",
    )]));
    let out = response_headers(own).unwrap();
    assert_eq!(
        out[0],
        (
            "access-control-allow-origin".into(),
            "https://app.example".into()
        )
    );
    assert_eq!(out.iter().filter(|(k, _)| k == ACAO).count(), 1);
    for (k, v) in [
        ("bad name", "v"),
        ("", "v"),
        ("x:y", "v"),
        ("x", "a\r\nb"),
        ("x", "a\nb"),
        ("x", "a\0"),
    ] {
        assert!(
            response_headers(Headers(hv(&[(k, v)]))).is_err(),
            "{k:?} {v:?}"
        );
    }
}

#[test]
fn errors_and_preflight_carry_cors() {
    let e = error(504, "gateway_timeout");
    assert_eq!(e.status, 504);
    assert_eq!(e.body, br#"{"error":"gateway_timeout"}"#);
    assert!(e.headers.contains(&(ACAO.into(), "*".into())));
    let p = preflight(Fields::EMPTY);
    assert_eq!(p.status, 204);
    assert!(p.body.is_empty());
    assert!(p
        .headers
        .contains(&("access-control-max-age".into(), "86400".into())));
    let asked = preflight(Fields::Pairs(&hv(&[(
        "Access-Control-Request-Headers",
        "mcp-session-id",
    )])));
    let allow = &asked
        .headers
        .iter()
        .find(|(k, _)| k == "access-control-allow-headers")
        .unwrap()
        .1;
    assert!(allow.ends_with("mcp-session-id"));
    let evil = preflight(Fields::Pairs(&hv(&[(
        "access-control-request-headers",
        "a b",
    )])));
    let allow = &evil
        .headers
        .iter()
        .find(|(k, _)| k == "access-control-allow-headers")
        .unwrap()
        .1;
    assert_eq!(allow, "content-type, authorization, x-request-id");
    let again = preflight(Fields::Pairs(&hv(&[(
        "access-control-request-headers",
        "Content-Type, Authorization, MCP-Session-Id, mcp-session-id",
    )])));
    let allow = &again
        .headers
        .iter()
        .find(|(k, _)| k == "access-control-allow-headers")
        .unwrap()
        .1;
    assert_eq!(
        allow, "content-type, authorization, x-request-id, mcp-session-id",
        "each header named once"
    );
}

#[test]
fn limits_count_ipv6_per_64_and_mapped_v4_as_v4() {
    let k = |s: &str| limit_key(s.parse().unwrap()).to_string();
    assert_eq!(k("203.0.113.9"), "203.0.113.9");
    assert_eq!(k("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
    assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
    assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
    assert_eq!(k("::ffff:198.51.100.7"), "198.51.100.7");
}

#[test]
fn token_table_is_rfc_9110_tchar() {
    for b in 0..=255u8 {
        let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        assert_eq!(is_token([b]), tchar, "byte {b}");
    }
    assert!(!is_token(""));
    assert!(is_token("x-relay-region"));
    assert!(!is_token("bad name"));
}

/// The plain reading of a host (search for the port, then the first dot),
/// which `agent_from_host` must agree with.
fn host_reference(host: &str, base_domain: &str) -> Option<Address> {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return None,
        None => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let (label, domain) = host.split_once('.')?;
    if !domain.eq_ignore_ascii_case(base_domain) {
        return None;
    }
    parse_address(label)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
    #[test]
    fn host_reading_matches_the_plain_one(
        host in "(0[xX][0-9a-fA-F]{40}|0x[0-9a-f]{39}[g:.]|0x[0-9a-f]{39,41}|[a-z0-9:.é]{0,4})(\\.?(a\\.b|A\\.B|a\\.c|a\\.b\\.|\\.a\\.b)?)(:[0-9x]{0,3})?\\.?"
    ) {
        proptest::prop_assert_eq!(agent_from_host(&host, "a.b"), host_reference(&host, "a.b"), "{}", host);
    }

    #[test]
    fn ip_text_writes_what_display_writes(v4 in proptest::prelude::any::<u32>(), v6 in proptest::prelude::any::<u128>()) {
        for ip in [IpAddr::from(core::net::Ipv4Addr::from(v4)), IpAddr::from(core::net::Ipv6Addr::from(v6))] {
            let mut text = String::new();
            crate::frame::push_ip(&mut text, ip);
            proptest::prop_assert_eq!(text, ip.to_string());
        }
    }
}
