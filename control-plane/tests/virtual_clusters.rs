//! The ext_authz endpoint (`serve --authz-listen`) against real apiservers: the host
//! cluster, and a second kube-apiserver with its own etcd, its own service-account
//! signing key and its own issuer playing a virtual cluster's (vcluster's) apiserver.
//! Tokens come from their TokenRequest APIs (or are reissued with the cluster's own
//! key where a test needs claims TokenRequest does not give: a short `exp`).
//!
//! Ignored by plain `cargo test` (they need the apiserver built by
//! `hack/kube-apiserver.sh build`); `make control-plane-it` runs them. Every test's
//! name carries `virtual` or `vcluster`: other checks select them so.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Api, Client};
use reqwest::StatusCode;
use serde_json::json;
use support::{eventually, Cluster, Serve, EXPORT_ARGS};

/// The audience tenants' projected tokens carry (the DaemonSet's `--authz-audience`).
const AUDIENCE: &str = "kubelet-scope";
const K8S1_ISSUER: &str = "https://k8s1.vcluster-k8s1.svc";
/// The apiserver caches a token's successful authentication for 10 s.
const APISERVER_CACHE: Duration = Duration::from_secs(10);

/// What the endpoint answered, and the headers Envoy passes on.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    namespace: Option<String>,
    tenant: Option<String>,
    host_namespace: Option<String>,
    denied: Option<String>,
}

struct Authz {
    base: String,
    http: reqwest::Client,
}

impl Authz {
    fn new(port: u16) -> Authz {
        Authz {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    /// What Envoy's ext_authz asks for a scrape of /metrics/cadvisor with `token`.
    async fn check(&self, token: Option<&str>) -> Answer {
        let mut req = self
            .http
            .get(format!("{}/v1/authz/metrics/cadvisor", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let header = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        Answer {
            status: r.status(),
            namespace: header("x-kubelet-scope-namespace"),
            tenant: header("x-kubelet-scope-tenant"),
            host_namespace: header("x-kubelet-scope-host-namespace"),
            denied: header("x-kubelet-scope-denied"),
        }
    }

    /// [`Authz::check`]'s status and how long the answer took.
    async fn timed(&self, token: &str) -> (StatusCode, Duration) {
        let start = Instant::now();
        let status = self.check(Some(token)).await.status;
        (status, start.elapsed())
    }
}

/// Sum of the metric `name` over the series whose labels contain all of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A kubeconfig of `cluster`'s apiserver as admin, the CA inline (as vcluster
/// writes it into its `vc-<name>` Secret).
fn inline_kubeconfig(cluster: &Cluster) -> String {
    use base64::Engine;
    let ca = std::fs::read(cluster.dir.path().join("ca.crt")).unwrap();
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: vc\n\
         clusters:\n- name: vc\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority-data: {ca}\n\
         users:\n- name: vc\n  user:\n    token: admin-token\n\
         contexts:\n- name: vc\n  context: {{cluster: vc, user: vc}}\n",
        cluster.port("main")
    )
}

async fn create_secret(client: &Client, namespace: &str, name: &str, key: &str, value: &str) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([(key.to_string(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// `serve` watching `host` with `--authz-listen` and `virtual_clusters` (the
/// file's YAML), caches as short as `cache_args` say; and its ext_authz client.
fn serve_authz(host: &Cluster, virtual_clusters: &str, cache_args: &[&str]) -> (Serve, Authz) {
    let file: PathBuf = host.dir.path().join("virtual-clusters.yaml");
    std::fs::write(&file, virtual_clusters).unwrap();
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = EXPORT_ARGS.to_vec();
    args.extend([
        "--authz-listen",
        &listen,
        "--authz-audience",
        AUDIENCE,
        "--virtual-clusters",
        file.to_str().unwrap(),
    ]);
    args.extend(cache_args);
    (host.serve(&args, host.port("main")), Authz::new(port))
}

/// Host namespace `shop` with ServiceAccount `agent`; the virtual cluster's
/// `datadog:agent`, and its host namespace `vcluster-k8s1`.
async fn populate(host: &Client, vc: &Client) {
    support::service_account(host, "shop", "agent").await;
    support::namespace(host, "vcluster-k8s1", &[("tenant", "k8s1")]).await;
    support::service_account(vc, "datadog", "agent").await;
}

/// The host's apiserver and k8s1's (its own etcd, signing key and `issuer`), with
/// an admin client of each.
async fn host_and_virtual(issuer: &str) -> (Cluster, Cluster, Client, Client) {
    let host = Cluster::start("");
    let k8s1 = Cluster::start_with_issuer(issuer);
    let (host_admin, vc_admin) = (host.admin("main").await, k8s1.admin("main").await);
    (host, k8s1, host_admin, vc_admin)
}

/// The realistic set-up: the virtual cluster's kubeconfig from vcluster's own
/// Secret `vc-k8s1` in its host namespace (server given, as vcluster's points at
/// localhost), its issuer and the host's discovered from their apiservers.
#[tokio::test]
#[ignore = "needs a real kube-apiserver: make control-plane-it"]
async fn virtual_cluster_tokens_are_its_tenant_and_host_tokens_still_their_namespace() {
    let (host, k8s1, host_admin, vc_admin) = host_and_virtual(K8S1_ISSUER).await;
    populate(&host_admin, &vc_admin).await;
    create_secret(
        &host_admin,
        "vcluster-k8s1",
        "vc-k8s1",
        "config",
        &inline_kubeconfig(&k8s1),
    )
    .await;
    // k8s2's Secret is vcluster's default, pointing at localhost: refused, so its
    // tokens cannot be reviewed (503), never guessed.
    support::namespace(&host_admin, "vcluster-k8s2", &[]).await;
    create_secret(
        &host_admin,
        "vcluster-k8s2",
        "vc-k8s2",
        "config",
        &inline_kubeconfig(&k8s1).replace("127.0.0.1", "localhost"),
    )
    .await;
    let file = format!(
        "virtualClusters:\n\
         - {{name: k8s1, hostNamespace: vcluster-k8s1, server: 'https://127.0.0.1:{}'}}\n\
         - {{name: k8s2, hostNamespace: vcluster-k8s2, issuer: 'https://k8s2.example'}}\n",
        k8s1.port("main")
    );
    let (serve, authz) = serve_authz(&host, &file, &[]);
    serve.wait_ready(Duration::from_secs(30)).await;

    let agent = support::token_request(&vc_admin, "datadog", "agent", AUDIENCE).await;
    let logs = || serve.logs();
    eventually(
        "k8s1's credentials loaded and issuer discovered",
        Duration::from_secs(30),
        logs,
        || async { authz.check(Some(&agent)).await.status == StatusCode::OK },
    )
    .await;
    let a = authz.check(Some(&agent)).await;
    assert_eq!(
        (a.tenant.as_deref(), a.host_namespace.as_deref()),
        (Some("k8s1"), Some("vcluster-k8s1")),
        "{a:?}"
    );
    assert_eq!(a.namespace.as_deref(), Some("vcluster-k8s1"));

    let shop = support::token_request(&host_admin, "shop", "agent", AUDIENCE).await;
    let a = authz.check(Some(&shop)).await;
    assert_eq!(
        (a.status, a.namespace.as_deref(), a.tenant.as_deref()),
        (StatusCode::OK, Some("shop"), None),
        "{a:?}"
    );

    // Tokens for another audience (the apiserver's, as a pod's default token is).
    let vc_default = support::token_request(&vc_admin, "datadog", "agent", K8S1_ISSUER).await;
    let host_default =
        support::token_request(&host_admin, "shop", "agent", support::DEFAULT_ISSUER).await;
    for t in [&vc_default, &host_default] {
        assert_eq!(authz.check(Some(t)).await.status, StatusCode::UNAUTHORIZED);
    }
    // No token, a static token, an issuer nobody here has: 401 without asking.
    let reviews_before = metric(
        &serve.metrics().await,
        "kubelet_scope_token_reviews_total",
        &[],
    );
    let stranger = support::reissue(&k8s1, &agent, json!({"iss": "https://unknown.example"}));
    for (token, reason) in [
        (None, "no bearer token"),
        (Some("admin-token"), "not a JWT"),
        (Some(stranger.as_str()), "unknown issuer"),
    ] {
        let a = authz.check(token).await;
        assert_eq!(
            (a.status, a.denied.as_deref(), a.namespace.as_deref()),
            (StatusCode::UNAUTHORIZED, Some(reason), None)
        );
    }
    let m = serve.metrics().await;
    assert_eq!(
        metric(&m, "kubelet_scope_token_reviews_total", &[]),
        reviews_before,
        "{m}"
    );
    // k8s2 cannot be asked: 503, and the log says why.
    let k8s2 = support::reissue(&k8s1, &agent, json!({"iss": "https://k8s2.example"}));
    assert_eq!(
        authz.check(Some(&k8s2)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        serve
            .logs()
            .contains("reachable only from the vcluster's own pod"),
        "{}",
        serve.logs()
    );
    let m = serve.metrics().await;
    assert!(
        metric(
            &m,
            "kubelet_scope_authz_decisions_total",
            &[r#"cluster="k8s1""#, r#"code="200""#]
        ) >= 1.0,
        "{m}"
    );
}

/// Revocation and expiry: a deleted ServiceAccount's token is refused within our
/// cache's bound plus the apiserver's own; an expired token at once; a token that
/// expires soon is not answered from the cache past its `exp`.
#[tokio::test]
#[ignore = "needs a real kube-apiserver: make control-plane-it"]
async fn virtual_cluster_tokens_are_refused_when_revoked_or_expired() {
    let (host, k8s1, host_admin, vc_admin) = host_and_virtual(K8S1_ISSUER).await;
    populate(&host_admin, &vc_admin).await;
    let kubeconfig = k8s1.kubeconfig(k8s1.port("main"), "admin-token", "vc.kubeconfig");
    let file = format!(
        "virtualClusters:\n- {{name: k8s1, hostNamespace: vcluster-k8s1, issuer: '{K8S1_ISSUER}', kubeconfigFile: '{}'}}\n",
        kubeconfig.display()
    );
    let cache_seconds = 3;
    let (serve, authz) = serve_authz(
        &host,
        &file,
        &[
            "--authz-cache-seconds",
            "3",
            "--authz-negative-cache-seconds",
            "1",
        ],
    );
    serve.wait_ready(Duration::from_secs(30)).await;
    let agent = support::token_request(&vc_admin, "datadog", "agent", AUDIENCE).await;
    let logs = || serve.logs();
    eventually("k8s1 reviewed", Duration::from_secs(30), logs, || async {
        authz.check(Some(&agent)).await.status == StatusCode::OK
    })
    .await;

    // Expired: refused without a review.
    let now = support::unix_now();
    let expired = support::reissue(&k8s1, &agent, json!({"exp": now - 5}));
    let a = authz.check(Some(&expired)).await;
    assert_eq!(
        (a.status, a.denied.as_deref()),
        (StatusCode::UNAUTHORIZED, Some("expired"))
    );
    // Expiring in 4 s: valid (the apiserver accepts it) until then, and refused
    // the second its exp passes, whatever any cache holds.
    let exp = support::unix_now() + 4;
    let short = support::reissue(&k8s1, &agent, json!({"exp": exp, "jti": "short"}));
    assert_eq!(authz.check(Some(&short)).await.status, StatusCode::OK);
    // (JWT: not accepted on or after exp.)
    while support::unix_now() + 1 < exp {
        assert_eq!(authz.check(Some(&short)).await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    while support::unix_now() < exp {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = authz.check(Some(&short)).await;
    assert_eq!(
        (a.status, a.denied.as_deref()),
        (StatusCode::UNAUTHORIZED, Some("expired"))
    );

    // Revoked: the ServiceAccount deleted in the virtual cluster.
    Api::<ServiceAccount>::namespaced(vc_admin.clone(), "datadog")
        .delete("agent", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = Instant::now();
    let bound = Duration::from_secs(cache_seconds) + APISERVER_CACHE + Duration::from_secs(3);
    eventually(
        "the deleted account's token refused",
        bound,
        logs,
        || async { authz.check(Some(&agent)).await.status == StatusCode::UNAUTHORIZED },
    )
    .await;
    eprintln!(
        "deleted ServiceAccount's token refused after {:?} (bound {bound:?})",
        deleted.elapsed()
    );
}

/// Envoy asks for every request: cached answers cost no TokenReview, the cache is
/// bounded (`--authz-cache-entries`), and what an answer costs is measured.
#[tokio::test]
#[ignore = "needs a real kube-apiserver: make control-plane-it"]
async fn virtual_cluster_reviews_are_cached_and_the_cache_is_bounded() {
    let (host, k8s1, host_admin, vc_admin) = host_and_virtual(K8S1_ISSUER).await;
    populate(&host_admin, &vc_admin).await;
    let kubeconfig = k8s1.kubeconfig(k8s1.port("main"), "admin-token", "vc.kubeconfig");
    let file = format!(
        "virtualClusters:\n- {{name: k8s1, hostNamespace: vcluster-k8s1, kubeconfigFile: '{}'}}\n",
        kubeconfig.display()
    );
    let entries = 8;
    let (serve, authz) = serve_authz(&host, &file, &["--authz-cache-entries", "8"]);
    serve.wait_ready(Duration::from_secs(30)).await;
    let agent = support::token_request(&vc_admin, "datadog", "agent", AUDIENCE).await;
    let logs = || serve.logs();
    eventually("k8s1 reviewed", Duration::from_secs(30), logs, || async {
        authz.check(Some(&agent)).await.status == StatusCode::OK
    })
    .await;
    let reviews = || async {
        metric(
            &serve.metrics().await,
            "kubelet_scope_token_reviews_total",
            &[r#"reviewer="k8s1""#],
        )
    };

    // Cached: 50 answers, no review.
    let before = reviews().await;
    let mut cached = Vec::new();
    for _ in 0..50 {
        let (status, took) = authz.timed(&agent).await;
        assert_eq!(status, StatusCode::OK);
        cached.push(took);
    }
    assert_eq!(reviews().await, before);
    // Uncached: distinct tokens (another jti each), one review each.
    let mut uncached = Vec::new();
    for i in 0..30 {
        let t = support::reissue(&k8s1, &agent, json!({"jti": format!("t{i}")}));
        let (status, took) = authz.timed(&t).await;
        assert_eq!(status, StatusCode::OK);
        uncached.push(took);
    }
    assert_eq!(reviews().await, before + 30.0);
    let m = serve.metrics().await;
    let held = metric(
        &m,
        "kubelet_scope_token_review_cache_entries",
        &[r#"reviewer="k8s1""#],
    );
    assert!(
        held >= 1.0 && held <= entries as f64,
        "{held} entries held: {m}"
    );
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let p90 = |v: &Vec<Duration>| v[v.len() * 9 / 10];
    let (mc, mu) = (median(&mut cached), median(&mut uncached));
    eprintln!(
        "ext_authz answer over loopback HTTP: cached median {mc:?} p90 {:?}; \
         uncached (TokenReview to the virtual apiserver) median {mu:?} p90 {:?}",
        p90(&cached),
        p90(&uncached)
    );
}

/// vcluster's apiservers default to the same issuer as most hosts: a token of that
/// issuer is asked of the host first and, refused there, of the virtual cluster.
#[tokio::test]
#[ignore = "needs a real kube-apiserver: make control-plane-it"]
async fn vcluster_sharing_the_hosts_issuer_is_told_apart_by_its_apiserver() {
    let (host, k8s1, host_admin, vc_admin) = host_and_virtual(support::DEFAULT_ISSUER).await;
    populate(&host_admin, &vc_admin).await;
    let kubeconfig = k8s1.kubeconfig(k8s1.port("main"), "admin-token", "vc.kubeconfig");
    let file = format!(
        "virtualClusters:\n- {{name: k8s1, hostNamespace: vcluster-k8s1, kubeconfigFile: '{}'}}\n",
        kubeconfig.display()
    );
    let (serve, authz) = serve_authz(&host, &file, &[]);
    serve.wait_ready(Duration::from_secs(30)).await;
    let agent = support::token_request(&vc_admin, "datadog", "agent", AUDIENCE).await;
    let shop = support::token_request(&host_admin, "shop", "agent", AUDIENCE).await;
    let logs = || serve.logs();
    eventually("k8s1 reviewed", Duration::from_secs(30), logs, || async {
        authz.check(Some(&agent)).await.status == StatusCode::OK
    })
    .await;
    assert_eq!(
        authz.check(Some(&agent)).await.tenant.as_deref(),
        Some("k8s1")
    );
    let a = authz.check(Some(&shop)).await;
    assert_eq!(
        (a.namespace.as_deref(), a.tenant.as_deref()),
        (Some("shop"), None)
    );
    let m = serve.metrics().await;
    assert!(
        metric(
            &m,
            "kubelet_scope_token_reviews_total",
            &[r#"reviewer="host""#, r#"result="unauthenticated""#]
        ) >= 1.0,
        "the host was asked about k8s1's token first: {m}"
    );
}

/// The Deployment's own ServiceAccount and RBAC (deploy/base/control-plane.yaml)
/// plus the example's Role (deploy/examples/virtual-cluster.yaml): enough to read
/// k8s1's kubeconfig Secret and review both clusters' tokens, and no other Secret.
#[tokio::test]
#[ignore = "needs a real kube-apiserver: make control-plane-it"]
async fn vcluster_kubeconfig_is_read_with_exactly_the_example_role() {
    let (host, k8s1, host_admin, vc_admin) = host_and_virtual(K8S1_ISSUER).await;
    for obj in support::deploy_manifest("base/control-plane.yaml") {
        support::create_object(&host_admin, &obj).await;
    }
    populate(&host_admin, &vc_admin).await;
    for obj in support::deploy_manifest("examples/virtual-cluster.yaml") {
        let kind = obj.types.as_ref().unwrap().kind.clone();
        if kind == "Role" || kind == "RoleBinding" {
            support::create_object(&host_admin, &obj).await;
        }
    }
    let kubeconfig = inline_kubeconfig(&k8s1);
    create_secret(
        &host_admin,
        "vcluster-k8s1",
        "vc-k8s1",
        "config",
        &kubeconfig,
    )
    .await;
    create_secret(&host_admin, "vcluster-k8s1", "other", "config", &kubeconfig).await;
    let scoped = host.kubeconfig(
        host.port("main"),
        &support::token_request(
            &host_admin,
            "kubelet-scope",
            "kubelet-scope",
            support::DEFAULT_ISSUER,
        )
        .await,
        "scope.kubeconfig",
    );
    // What it may read: that Secret, not the other one beside it.
    let as_scope = support::client_for(&scoped).await;
    let secrets = Api::<Secret>::namespaced(as_scope, "vcluster-k8s1");
    assert!(secrets.get("vc-k8s1").await.is_ok());
    let err = secrets.get("other").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );

    let file = host.dir.path().join("virtual-clusters.yaml");
    std::fs::write(
        &file,
        format!(
            "virtualClusters:\n- {{name: k8s1, hostNamespace: vcluster-k8s1, server: 'https://127.0.0.1:{}'}}\n",
            k8s1.port("main")
        ),
    )
    .unwrap();
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = EXPORT_ARGS.to_vec();
    args.extend([
        "--authz-listen",
        &listen,
        "--authz-audience",
        AUDIENCE,
        "--virtual-clusters",
        file.to_str().unwrap(),
    ]);
    let serve = Serve::start(&args, Some(&scoped), host.dir.path());
    let authz = Authz::new(port);
    serve.wait_ready(Duration::from_secs(30)).await;
    let agent = support::token_request(&vc_admin, "datadog", "agent", AUDIENCE).await;
    let logs = || serve.logs();
    eventually(
        "k8s1's agent allowed",
        Duration::from_secs(30),
        logs,
        || async { authz.check(Some(&agent)).await.status == StatusCode::OK },
    )
    .await;
    let shop = support::token_request(&host_admin, "shop", "agent", AUDIENCE).await;
    let a = authz.check(Some(&shop)).await;
    assert_eq!(
        (a.status, a.namespace.as_deref()),
        (StatusCode::OK, Some("shop"))
    );
}
