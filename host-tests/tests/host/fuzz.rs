//! Fuzzing: no input makes the VM trap, and tenant mode never leaks.

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("default".to_owned()),
        Just("kube-system".to_owned()),
        Just("workload-stress-ng".to_owned()),
        Just(String::new()),
        "[a-z\\\\\"{},=]{0,8}",
    ]
}

/// Lines as a kubelet could write them (label values may still be broken).
fn sample_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"# HELP m A metric.\n".to_vec()),
        Just(b"# TYPE m counter\n".to_vec()),
        (namespace(), "[ -~]{0,12}").prop_map(|(ns, v)| {
            let v = v.replace(['\\', '"'], "");
            format!("m{{namespace=\"{ns}\",l=\"{v}\"}} 1\n").into_bytes()
        }),
        namespace().prop_map(|ns| {
            format!("m{{exported_namespace=\"default\",namespace=\"{ns}\"}} 2 1700000000\n")
                .into_bytes()
        }),
        Just(b"m_total 3\n".to_vec()),
        Just(b"# EOF\n".to_vec()),
    ]
}

/// Those and arbitrary bytes.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![sample_line(), sample_line(), vec(any::<u8>(), 0..48)]
}

fn run_body(
    body: &[u8],
    chunk: usize,
    tenant_mode: bool,
    trailers: bool,
) -> Result<Exchange, TestCaseError> {
    let proxy = proxy();
    let (config, tenant) = if tenant_mode {
        (tenant_config(), Some("acme"))
    } else {
        (injection_config(), None)
    };
    let mut vm = vm_with_snapshot(&proxy, &config, Some(SNAPSHOT_V1)).unwrap();
    let mut up = Upstream::ok(TEXT, body, chunk);
    if trailers {
        up.trailers = Some(headers(&[("x-t", "1")]));
    }
    let ex = vm.exchange(get("/metrics/cadvisor", &tenant_header(tenant)), &up);
    prop_assert!(vm.failed().is_none(), "trap: {:?}", vm.failed());
    let ex = ex.unwrap();
    let expected = native(
        &config,
        Some(SNAPSHOT_V1),
        "/metrics/cadvisor",
        tenant,
        body,
    );
    match (&expected, trailers) {
        // With trailers an unterminated last line is dropped.
        (Ok(out), true) if !body.ends_with(b"\n") && !body.is_empty() => {
            prop_assert!(out.starts_with(&ex.body));
        }
        _ => assert_matches_native(&ex, &expected, "fuzzed body"),
    }
    Ok(ex)
}

fn assert_no_leak(ex: &Exchange) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(&ex.body);
    prop_assert!(
        !text.contains("namespace=\"kube-system\""),
        "leaked: {text:?}"
    );
    prop_assert!(
        !text.contains("namespace=\"workload-stress-ng\""),
        "leaked: {text:?}"
    );
    Ok(())
}

fn token() -> impl Strategy<Value = Vec<u8>> {
    "[a-z0-9!#$%&'*+.^_`|~-]{1,16}".prop_map(String::into_bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn fuzzed_bodies_never_trap_and_match_native(
        lines in vec(line(), 0..80),
        chunk in 1usize..300,
        tenant_mode in any::<bool>(),
        trailers in any::<bool>(),
    ) {
        run_body(&lines.concat(), chunk, tenant_mode, trailers)?;
    }

    #[test]
    fn tenant_mode_never_leaks_other_namespaces(
        lines in vec(sample_line(), 0..80),
        chunk in 1usize..300,
        trailers in any::<bool>(),
    ) {
        let ex = run_body(&lines.concat(), chunk, true, trailers)?;
        assert_no_leak(&ex)?;
    }

    /// Garbage lines too: a line whose "metric name" is garbage followed by
    /// whitespace (`\0\tm{namespace="kube-system"} 2`) must be refused, not
    /// kept as a series without labels.
    #[test]
    fn tenant_mode_never_leaks_even_on_garbage(
        lines in vec(line(), 0..80),
        chunk in 1usize..300,
    ) {
        let ex = run_body(&lines.concat(), chunk, true, false)?;
        assert_no_leak(&ex)?;
    }

    #[test]
    fn fuzzed_headers_never_trap(
        path in prop_oneof![
            Just(b"/metrics/cadvisor".to_vec()),
            Just(b"/healthz".to_vec()),
            Just(b"/containerLogs/default/p/c".to_vec()),
            "/[ -~]{0,30}".prop_map(String::into_bytes),
            vec(any::<u8>(), 0..30),
        ],
        tenants in vec(vec(any::<u8>(), 0..10), 0..3),
        extra in vec((token(), vec(any::<u8>(), 0..24)), 0..6),
        status in prop_oneof![Just(b"200".to_vec()), Just(b"500".to_vec()), vec(any::<u8>(), 0..4)],
        content_type in prop_oneof![Just(TEXT.as_bytes().to_vec()), vec(any::<u8>(), 0..20)],
        content_encoding in proptest::option::of(vec(any::<u8>(), 0..10)),
        tenant_mode in any::<bool>(),
    ) {
        let proxy = proxy();
        let config = if tenant_mode { tenant_config() } else { injection_config() };
        let mut vm = vm_with_snapshot(&proxy, &config, Some(SNAPSHOT_V1)).unwrap();
        let mut request = get("/", &[]);
        request[1].1 = path;
        for t in tenants {
            request.push((b"x-tenant".to_vec(), t));
        }
        request.extend(extra);
        let body = b"m{namespace=\"kube-system\"} 1\nm{namespace=\"default\"} 2\n";
        let mut up = Upstream::ok(TEXT, body, 7);
        up.headers[0].1 = status;
        up.headers[1].1 = content_type;
        if let Some(ce) = content_encoding {
            up.headers.push((b"content-encoding".to_vec(), ce));
        }
        let ex = vm.exchange(request, &up);
        prop_assert!(vm.failed().is_none(), "trap: {:?}", vm.failed());
        let ex = ex.unwrap();
        let rewritten = ex.upstream_header("accept-encoding").as_deref() == Some("identity");
        if tenant_mode && rewritten && ex.status == 200 {
            prop_assert!(!String::from_utf8_lossy(&ex.body).contains("kube-system"));
        }
    }
}
