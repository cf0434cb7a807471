//! Fan-out benchmark (not a test): N concurrent long-poll clients against one
//! `kubelet-scope serve` watching a real kube-apiserver.
//!
//! For each N: every client holds `GET /v1/snapshot?waitSeconds=60` with the
//! current version; one namespace label is changed in the apiserver; the time from
//! issuing that change to each client's 200 is recorded (p50/p99/max), together
//! with the server's resident memory (idle, and with N waiting) and the CPU time it
//! spent from the change until the last client was answered.
//!
//! An example rather than a `[[bench]]`: benches are built with `panic=unwind`
//! next to the binary's `panic=abort`, which builds the filter crate (a `cdylib`,
//! whose file names carry no hash) twice into the same path (cargo#6313).
//! `make bench-control-plane` builds the release binary and runs this with
//! `KUBELET_SCOPE_BIN` pointing at it; `FANOUT_CLIENTS=100,1000,5000` sets N.
//!
//! It measures and prints only: it asserts no more than that every client was
//! answered, and must not become a test (it takes minutes and thousands of sockets).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use support::{Cluster, Serve};

const ROUNDS: usize = 3;

/// (resident set in MiB, CPU seconds user+system) of a process, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    (rss_kib / 1024.0, ticks / 100.0) // USER_HZ is 100 on Linux
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// The client counts to run, from `FANOUT_CLIENTS`.
fn client_counts() -> Vec<usize> {
    std::env::var("FANOUT_CLIENTS")
        .unwrap_or_else(|_| "100,1000,5000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("FANOUT_CLIENTS: comma-separated numbers")
        })
        .collect()
}

/// Creates namespace `bench` (label `team`, which serve exports) and returns the
/// admin's API on namespaces.
async fn bench_namespace(cluster: &Cluster) -> Api<Namespace> {
    let admin = cluster.admin("main").await;
    let namespaces = Api::<Namespace>::all(admin.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("bench".into()),
            labels: Some([("team".to_string(), "0".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    namespaces
}

/// One round: `n` long-polls wait, the label changes to `label`; prints the
/// latencies from the change to each 200, the RSS with `n` waiting and the CPU the
/// server spent.
async fn run_round(serve: &Serve, namespaces: &Api<Namespace>, n: usize, round: usize, label: u32) {
    let version = serve.current().await.version;
    let clients: Vec<_> = (0..n).map(|_| serve.long_poll(&version, 60)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while serve.metric("kubelet_scope_long_polls_waiting").await != Some(n as f64) {
        assert!(
            Instant::now() < deadline,
            "clients did not all start waiting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (rss_waiting, cpu_before) = usage(serve.pid());
    let changed = Instant::now();
    namespaces
        .patch(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": label.to_string()}}})),
        )
        .await
        .unwrap();
    let mut lat = Vec::with_capacity(n);
    for c in clients {
        let (status, at) = c.await.unwrap();
        assert_eq!(status, 200, "a client was not woken by the change");
        lat.push(at.duration_since(changed));
    }
    let (_, cpu_after) = usage(serve.pid());
    lat.sort();
    println!(
        "{n:>7}  {round:>5}  {:>6}  {:>6}  {:>6}  {rss_waiting:>15.1}  {:>12.2}",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap()),
        cpu_after - cpu_before
    );
}

#[tokio::main]
async fn main() {
    let counts = client_counts();
    let cluster = Cluster::start("");
    let namespaces = bench_namespace(&cluster).await;
    let serve = cluster.serve(&["--label", "team"], cluster.port("main"));
    serve.wait_ready(Duration::from_secs(30)).await;
    let (idle_rss, _) = usage(serve.pid());
    println!("kubelet-scope serve idle: {idle_rss:.1} MiB RSS");
    println!("clients  round  p50_ms  p99_ms  max_ms  rss_waiting_mib  server_cpu_s");

    let mut label = 0;
    for &n in &counts {
        for r in 1..=ROUNDS {
            label += 1;
            run_round(&serve, &namespaces, n, r, label).await;
        }
    }
}
