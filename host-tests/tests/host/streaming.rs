//! Streaming equals the CLI and the native rewriter, whatever the chunking and
//! however the stream ends (trailers, an empty last chunk, no final newline).

use kubelet_scope_filter::metrics as m;

use super::*;

#[test]
fn streaming_rewrite_equals_native_and_cli_for_every_text_capture() {
    let cli = cli_path();
    if cli.is_none() {
        eprintln!("note: target/release/kubelet-scope not built; comparing with the rlib only");
    }
    let mut cli_compared = 0;
    for (config, tenant) in [
        (injection_config(), None),
        (tenant_config(), Some("acme")),
        (tenant_config(), Some("globex")),
        (static_config(), None),
    ] {
        let proxy = proxy();
        let snapshot = (!config.contains("static")).then_some(SNAPSHOT_V1);
        let mut vm = vm_with_snapshot(&proxy, &config, snapshot).unwrap();
        for fixture in text_fixtures() {
            let body = read(&fixture);
            let path = kubelet_path(&fixture);
            let expected = native(&config, snapshot, path, tenant, &body);
            let mut sizes = vec![97, 4096, 16 << 10, 64 << 10, 1 << 20, body.len().max(1)];
            if body.len() < 120_000 {
                sizes.extend([1, 7, 13]);
            }
            for cs in sizes {
                let ex = fetch(
                    &mut vm,
                    path,
                    &tenant_header(tenant),
                    &Upstream::ok(TEXT, &body, cs),
                );
                let what = format!("{} {tenant:?} chunk {cs}", fixture.display());
                assert_matches_native(&ex, &expected, &what);
                if expected.is_ok() && ex.local_reply.is_none() {
                    let rewritten =
                        ex.upstream_header("accept") == Some("text/plain;version=0.0.4".into());
                    if rewritten {
                        assert_eq!(ex.header("content-length"), None, "{what}");
                    }
                }
            }
            if let (Some(cli), Some(snapshot), Ok(out)) = (&cli, snapshot, &expected) {
                if path.starts_with("/metrics") {
                    let got = cli_rewrite(cli, &config, snapshot, path, tenant, 4096, &body);
                    assert!(
                        got.as_ref() == Some(out),
                        "CLI differs on {} ({tenant:?}): {:?} bytes",
                        fixture.display(),
                        got.map(|g| g.len())
                    );
                    cli_compared += 1;
                }
            }
        }
        assert!(vm.failed().is_none());
        assert!(proxy.metric(m::SERIES_SEEN).unwrap_or(0) > 0);
        if config.contains("tenancy") {
            assert!(proxy.metric(m::SERIES_DROPPED).unwrap_or(0) > 0);
        }
        if config.contains("inject") {
            assert!(proxy.metric(m::SERIES_INJECTED).unwrap_or(0) > 0);
        }
    }
    eprintln!("compared with the CLI on {cli_compared} capture/configuration pairs");
}

#[test]
fn json_endpoints_match_native_or_are_refused() {
    let proxy = proxy();
    let config = tenant_config();
    let mut vm = vm_with_snapshot(&proxy, &config, Some(SNAPSHOT_V1)).unwrap();
    for fixture in json_fixtures() {
        let body = read(&fixture);
        let path = kubelet_path(&fixture);
        let expected = native(&config, Some(SNAPSHOT_V1), path, Some("acme"), &body);
        for cs in [4096, 64 << 10, body.len().max(1)] {
            let ex = fetch(
                &mut vm,
                path,
                &[("x-tenant", "acme")],
                &Upstream::ok("application/json", &body, cs),
            );
            let what = format!("{} chunk {cs}", fixture.display());
            match &expected {
                // A JSON body the rewriter refuses is refused before the headers go
                // out (502) or the stream is reset.
                Err((0, _)) => assert!(ex.status == 502 || ex.reset, "{what}"),
                _ => assert_matches_native(&ex, &expected, &what),
            }
            assert_eq!(
                ex.upstream_header("accept").as_deref(),
                Some("application/json")
            );
        }
    }
    assert!(vm.failed().is_none());
}

#[test]
fn end_of_stream_in_trailers_and_empty_last_chunks() {
    let proxy = proxy();
    let config = tenant_config();
    let mut vm = vm_with_snapshot(&proxy, &config, Some(SNAPSHOT_V1)).unwrap();
    let body = third_party!("cadvisor-k8s1.16-kind-containerd-datadog.txt");
    let expected = acme_cadvisor(&config, &body).unwrap();

    ends_in_trailers_or_an_empty_chunk_after_a_final_newline(&mut vm, &body, &expected);
    a_last_line_without_newline_is_flushed_or_dropped_before_trailers(
        &mut vm, &config, &body, &expected,
    );
    assert_eq!(proxy.metric(m::BODY_TAIL_DROPPED), Some(1));
    json_streams_and_ends_in_trailers(&mut vm, &config);
    assert!(vm.failed().is_none());
}

/// The native rewriter's verdict on `body` from `/metrics/cadvisor` for `acme`.
fn acme_cadvisor(config: &str, body: &[u8]) -> Result<Vec<u8>, (u16, Vec<u8>)> {
    native(
        config,
        Some(SNAPSHOT_V1),
        "/metrics/cadvisor",
        Some("acme"),
        body,
    )
}

fn ends_in_trailers_or_an_empty_chunk_after_a_final_newline(
    vm: &mut Vm,
    body: &[u8],
    expected: &[u8],
) {
    // Trailers after a body that ends in a newline: nothing is held back.
    let mut up = Upstream::ok(TEXT, body, 5000);
    up.trailers = Some(headers(&[("x-checksum", "abc")]));
    let ex = fetch(vm, "/metrics/cadvisor", &[("x-tenant", "acme")], &up);
    assert_eq!(ex.body, expected);
    assert_eq!(ex.trailers, Some(headers(&[("x-checksum", "abc")])));

    // A final empty chunk carrying end of stream (HTTP/1.1 chunked).
    let mut up = Upstream::ok(TEXT, body, 5000);
    up.chunks.push(Vec::new());
    let ex = fetch(vm, "/metrics/cadvisor", &[("x-tenant", "acme")], &up);
    assert_eq!(ex.body, expected);
}

fn a_last_line_without_newline_is_flushed_or_dropped_before_trailers(
    vm: &mut Vm,
    config: &str,
    body: &[u8],
    expected: &[u8],
) {
    // A last line without newline is flushed at end of stream...
    let tail = b"up{namespace=\"default\"} 1";
    let mut unterminated = body.to_vec();
    unterminated.extend_from_slice(tail);
    let expected_tail = acme_cadvisor(config, &unterminated).unwrap();
    assert!(expected_tail.ends_with(b"team=\"web\"} 1"));
    let ex = fetch(
        vm,
        "/metrics/cadvisor",
        &[("x-tenant", "acme")],
        &Upstream::ok(TEXT, &unterminated, 4096),
    );
    assert_eq!(ex.body, expected_tail);
    // ...but when the stream ends in trailers Envoy offers no body buffer to
    // write it to: it is dropped (never sent unfiltered) and counted.
    let mut up = Upstream::ok(TEXT, &unterminated, 4096);
    up.trailers = Some(headers(&[("x-a", "b")]));
    let ex = fetch(vm, "/metrics/cadvisor", &[("x-tenant", "acme")], &up);
    assert_eq!(ex.body, expected);
}

fn json_streams_and_ends_in_trailers(vm: &mut Vm, config: &str) {
    let json = third_party!("pods-k8s1.31-minikube-containerd1.7-nri.json");
    let Ok(out) = native(config, Some(SNAPSHOT_V1), "/pods", Some("acme"), &json) else {
        return;
    };
    let ex = fetch(
        vm,
        "/pods",
        &[("x-tenant", "acme")],
        &Upstream::ok("application/json", &json, 3000),
    );
    assert!(ex.body == out && !ex.reset, "streamed JSON differs");
    assert!(ex.body_actions.iter().all(|a| *a == ACTION_CONTINUE));
    let mut up = Upstream::ok("application/json", &json, 3000);
    up.trailers = Some(headers(&[("x-a", "b")]));
    let ex = fetch(vm, "/pods", &[("x-tenant", "acme")], &up);
    // The JSON filter writes the document's end as soon as it is fed, so
    // nothing is left for the trailers; if something were, the stream would
    // be reset. Never a silently truncated document.
    assert!(
        (ex.body == out && !ex.reset) || (ex.reset && out.starts_with(&ex.body)),
        "JSON ending in trailers: {} of {} bytes, reset {}",
        ex.body.len(),
        out.len(),
        ex.reset
    );
    assert_eq!(ex.trailers, Some(headers(&[("x-a", "b")])));
}
