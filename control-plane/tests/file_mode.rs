//! `kubelet-scope serve --namespaces-file`: the real binary over HTTP, no apiserver.
//!
//! The file is the only input: these tests must not need a cluster (they run in a
//! plain `cargo test`).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kubelet_scope_filter::snapshot::Snapshot;
use reqwest::StatusCode;
use support::{Serve, EXPORT_ARGS};

const NAMESPACES: &str = r#"{"apiVersion":"v1","kind":"List","items":[
  {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop",
    "labels":{"team":"frontend","tenant":"acme","owner":"bob","acme.io/cost":"42"}}},
  {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kube-system"}}]}"#;

#[tokio::test]
async fn serves_the_file_follows_edits_and_shuts_down_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ns.json");
    std::fs::write(&file, NAMESPACES).unwrap();
    let mut args = vec!["--namespaces-file", file.to_str().unwrap()];
    args.extend_from_slice(EXPORT_ARGS);
    let mut serve = Serve::start(&args, None, dir.path());
    serve.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(serve.status("/healthz").await, Some(StatusCode::OK));

    let s = serves_the_exported_labels_only(&serve).await;
    let s2 = a_file_change_answers_a_waiting_long_poll(&serve, &file, &s).await;
    an_invalid_file_keeps_the_last_good_snapshot(&serve, &file, &s2).await;
    sigterm_releases_long_polls_and_exits_0(&mut serve, &s2).await;
}

async fn serves_the_exported_labels_only(serve: &Serve) -> Snapshot {
    let s = serve.current().await;
    let shop = &s.namespaces["shop"].labels;
    assert_eq!(shop.len(), 3, "{shop:?}");
    assert_eq!(shop["team"], "frontend");
    assert_eq!(shop["acme.io/cost"], "42");
    assert!(!shop.contains_key("owner"), "unexported label leaked");
    assert!(s.namespaces["kube-system"].labels.is_empty());
    s
}

/// A waiting long-poll is answered as soon as the file changes.
async fn a_file_change_answers_a_waiting_long_poll(
    serve: &Serve,
    file: &Path,
    s: &Snapshot,
) -> Snapshot {
    let poll = serve.long_poll(&s.version, 30);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished());
    std::fs::write(file, NAMESPACES.replace("frontend", "checkout")).unwrap();
    let written = Instant::now();
    let (status, answered) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // One poll interval (1 s) plus slack.
    assert!(answered - written < Duration::from_millis(1500));
    let s2 = serve.current().await;
    assert_eq!(s2.namespaces["shop"].labels["team"], "checkout");
    s2
}

/// An invalid file keeps the last good snapshot.
async fn an_invalid_file_keeps_the_last_good_snapshot(serve: &Serve, file: &Path, s2: &Snapshot) {
    std::fs::write(
        file,
        "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{",
    )
    .unwrap();
    serve
        .wait_counted(
            "invalid file counted",
            "kubelet_scope_watch_errors_total",
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(serve.current().await.version, s2.version);
    assert_eq!(serve.status("/readyz").await, Some(StatusCode::OK));
}

/// SIGTERM releases a waiting long-poll at once (304) and exits 0.
async fn sigterm_releases_long_polls_and_exits_0(serve: &mut Serve, s2: &Snapshot) {
    let poll = serve.long_poll(&s2.version, 60);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    serve.terminate();
    assert_eq!(poll.await.unwrap().0, StatusCode::NOT_MODIFIED);
    let status = serve.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status:?}\n{}", serve.logs());
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn empty_label_selector_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(&["--namespaces-file", "x", "--label", ""], None, dir.path());
    let status = serve.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{}", serve.logs());
}
