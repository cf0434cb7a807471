//! `kubelet-scope serve --namespaces-file`: the real binary over HTTP, no apiserver.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::{eventually, Serve, EXPORT_ARGS};

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

    let s = serve.current().await;
    let shop = &s.namespaces["shop"].labels;
    assert_eq!(shop.len(), 3, "{shop:?}");
    assert_eq!(shop["team"], "frontend");
    assert_eq!(shop["acme.io/cost"], "42");
    assert!(!shop.contains_key("owner"), "unexported label leaked");
    assert!(s.namespaces["kube-system"].labels.is_empty());

    // A waiting long-poll is answered as soon as the file changes.
    let poll = {
        let base = serve.base.clone();
        let v = s.version.clone();
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .get(format!("{base}/v1/snapshot?waitSeconds=30"))
                .header("if-none-match", format!("\"{v}\""))
                .send()
                .await
                .unwrap();
            (r.status(), Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished());
    std::fs::write(&file, NAMESPACES.replace("frontend", "checkout")).unwrap();
    let written = Instant::now();
    let (status, answered) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // One poll interval (1 s) plus slack.
    assert!(answered - written < Duration::from_millis(1500));
    let s2 = serve.current().await;
    assert_eq!(s2.namespaces["shop"].labels["team"], "checkout");

    // An invalid file keeps the last good snapshot.
    std::fs::write(
        &file,
        "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{",
    )
    .unwrap();
    let logs = || serve.logs();
    eventually(
        "invalid file counted",
        Duration::from_secs(5),
        logs,
        || async {
            serve
                .metric("kubelet_scope_watch_errors_total")
                .await
                .unwrap_or(0.0)
                >= 1.0
        },
    )
    .await;
    assert_eq!(serve.current().await.version, s2.version);
    assert_eq!(serve.status("/readyz").await, Some(StatusCode::OK));

    // SIGTERM releases a waiting long-poll at once (304) and exits 0.
    let base = serve.base.clone();
    let poll = tokio::spawn(async move {
        reqwest::Client::new()
            .get(format!("{base}/v1/snapshot?waitSeconds=60"))
            .header("if-none-match", format!("\"{}\"", s2.version))
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    serve.terminate();
    assert_eq!(poll.await.unwrap(), StatusCode::NOT_MODIFIED);
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
