//! Test harness: a real etcd + kube-apiserver (started by `hack/kube-apiserver.sh`)
//! and the real `kubelet-scope serve` binary, talked to over HTTP.
//!
//! Shared by the integration tests and the fan-out example: everything they start
//! goes through here, and every process is stopped on drop. It must not reach into
//! the crate's internals (only the binary, its HTTP API and the apiserver) nor
//! decide what a test asserts beyond its own waits.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kubelet_scope_filter::snapshot::Snapshot;
use reqwest::StatusCode;

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/kube-apiserver.sh");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn script(args: &[&str], extra_env: &[(&str, &str)]) {
    let status = Command::new(SCRIPT)
        .args(args)
        .envs(extra_env.iter().copied())
        .status()
        .expect("run hack/kube-apiserver.sh");
    assert!(status.success(), "kube-apiserver.sh {args:?} failed");
}

/// The service-account issuer of a [`Cluster`] unless it is given another.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc";

/// etcd plus one or more apiservers sharing it, in a temporary directory; every
/// process is stopped (by PID) on drop. Each cluster has its own CA and its own
/// service-account signing key (`sa.key`).
pub struct Cluster {
    pub dir: tempfile::TempDir,
    extra_args: String,
    /// The `iss` of its tokens, and its API audience.
    pub issuer: String,
}

impl Cluster {
    /// etcd only; add apiservers with [`Cluster::start_apiserver`].
    pub fn etcd(extra_apiserver_args: &str) -> Cluster {
        Cluster::etcd_with_issuer(extra_apiserver_args, DEFAULT_ISSUER)
    }

    fn etcd_with_issuer(extra_apiserver_args: &str, issuer: &str) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("kubelet-scope-it-")
            .tempdir()
            .unwrap();
        let c = Cluster {
            dir,
            extra_args: extra_apiserver_args.to_string(),
            issuer: issuer.to_string(),
        };
        script(&["start-etcd", c.path()], &[]);
        c
    }

    /// etcd and the apiserver `main`.
    pub fn start(extra_apiserver_args: &str) -> Cluster {
        let c = Cluster::etcd(extra_apiserver_args);
        c.start_apiserver("main", None);
        c
    }

    /// etcd and the apiserver `main`, its tokens issued as `issuer`: another
    /// cluster (a virtual cluster's apiserver) next to the first.
    pub fn start_with_issuer(issuer: &str) -> Cluster {
        let c = Cluster::etcd_with_issuer("", issuer);
        c.start_apiserver("main", None);
        c
    }

    pub fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    pub fn start_apiserver(&self, name: &str, port: Option<u16>) {
        let port = port.map(|p| p.to_string()).unwrap_or_default();
        script(
            &["start-apiserver", self.path(), name, &port],
            &[
                ("KUBE_APISERVER_EXTRA_ARGS", &self.extra_args),
                ("KUBE_APISERVER_ISSUER", &self.issuer),
            ],
        );
    }

    pub fn stop(&self, name: &str) {
        script(&["stop", self.path(), name], &[]);
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn port(&self, name: &str) -> u16 {
        self.read(&format!("{name}.port")).parse().unwrap()
    }

    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.read("etcd.port"))
    }

    /// Writes a kubeconfig for apiserver port `port` and `token`.
    pub fn kubeconfig(&self, port: u16, token: &str, file: &str) -> PathBuf {
        let ca = self.dir.path().join("ca.crt");
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {}\n\
             users:\n- name: test\n  user:\n    token: {token}\n\
             contexts:\n- name: test\n  context: {{cluster: test, user: test}}\n",
            ca.display()
        );
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts `kubelet-scope serve` with `args`, watching apiserver port `port` as
    /// the admin (`serve.kubeconfig`); its log goes into the cluster's directory.
    pub fn serve(&self, args: &[&str], port: u16) -> Serve {
        let kubeconfig = self.kubeconfig(port, "admin-token", "serve.kubeconfig");
        Serve::start(args, Some(&kubeconfig), self.dir.path())
    }

    pub async fn admin(&self, name: &str) -> kube::Client {
        let path = self.kubeconfig(self.port(name), "admin-token", "admin.kubeconfig");
        client_for(&path).await
    }

    /// Compacts etcd's history up to its current revision (what the apiserver does
    /// every 5 minutes), through etcd's JSON gateway.
    pub async fn compact_etcd(&self) -> i64 {
        let http = reqwest::Client::new();
        let range: serde_json::Value = http
            .post(format!("{}/v3/kv/range", self.etcd_url()))
            .body(r#"{"key":"AA=="}"#)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let revision: i64 = range["header"]["revision"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let r = http
            .post(format!("{}/v3/kv/compaction", self.etcd_url()))
            .body(format!(r#"{{"revision":"{revision}","physical":true}}"#))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "compaction: {}",
            r.text().await.unwrap()
        );
        revision
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT).args(["stop", self.path()]).status();
    }
}

pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// The `kubelet-scope` binary: cargo's for tests, `KUBELET_SCOPE_BIN` for the
/// fan-out example (examples get no `CARGO_BIN_EXE_*`).
fn binary() -> PathBuf {
    match (
        std::env::var_os("KUBELET_SCOPE_BIN"),
        option_env!("CARGO_BIN_EXE_kubelet-scope"),
    ) {
        (Some(path), _) => path.into(),
        (None, Some(path)) => path.into(),
        (None, None) => panic!("set KUBELET_SCOPE_BIN to the kubelet-scope binary"),
    }
}

/// A running `kubelet-scope serve`.
pub struct Serve {
    child: Child,
    pub base: String,
    pub log: PathBuf,
    http: reqwest::Client,
}

pub const EXPORT_ARGS: &[&str] = &[
    "--label",
    "team",
    "--label",
    "tenant",
    "--label-prefix",
    "acme.io/",
];

impl Serve {
    /// Starts `kubelet-scope serve` with `args` (plus --listen) and `KUBECONFIG`.
    pub fn start(args: &[&str], kubeconfig: Option<&Path>, log_dir: &Path) -> Serve {
        let port = free_port();
        let log = log_dir.join(format!("serve-{port}.log"));
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("RUST_LOG", "info,kube=debug")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(k) = kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        Serve {
            child: cmd.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()
                .unwrap(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn status(&self, path: &str) -> Option<StatusCode> {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()
            .map(|r| r.status())
    }

    pub async fn wait_ready(&self, within: Duration) {
        let logs = || self.logs();
        eventually("serve /readyz 200", within, logs, || async {
            self.status("/readyz").await == Some(StatusCode::OK)
        })
        .await;
    }

    /// The status of `GET /v1/snapshot` with `token` as the bearer, if any.
    pub async fn snapshot_status_as(&self, token: Option<&str>) -> StatusCode {
        let mut req = self.http.get(format!("{}/v1/snapshot", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().status()
    }

    /// `GET /v1/snapshot`, optionally long-polling with the version held.
    pub async fn snapshot(&self, held: Option<&str>, wait: Option<u64>) -> Reply {
        let mut url = format!("{}/v1/snapshot", self.base);
        if let Some(w) = wait {
            url.push_str(&format!("?waitSeconds={w}"));
        }
        let mut req = self.http.get(url);
        if let Some(v) = held {
            req = req.header("if-none-match", format!("\"{v}\""));
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let etag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().trim_matches('"').to_string());
        let body = r.bytes().await.unwrap();
        let snapshot = (status == StatusCode::OK).then(|| Snapshot::parse(&body).unwrap());
        if let Some(s) = &snapshot {
            assert_eq!(
                etag.as_deref(),
                Some(s.version.as_str()),
                "ETag is the version"
            );
        }
        Reply {
            status,
            etag,
            snapshot,
        }
    }

    pub async fn current(&self) -> Snapshot {
        let r = self.snapshot(None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", self.logs());
        r.snapshot.unwrap()
    }

    /// The metrics text; empty while the server is not listening yet.
    pub async fn metrics(&self) -> String {
        match self.http.get(format!("{}/metrics", self.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The value of an unlabelled metric; `None` while the server is not up.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// The value of an unlabelled metric, 0 while the server is not up.
    pub async fn count(&self, name: &str) -> f64 {
        self.metric(name).await.unwrap_or(0.0)
    }

    /// Waits until the metric `name` is at least 1 (an error counted, a long-poll
    /// waiting); fails after `within` with the server's log.
    pub async fn wait_counted(&self, what: &str, name: &str, within: Duration) {
        let logs = || self.logs();
        eventually(what, within, logs, || async {
            self.count(name).await >= 1.0
        })
        .await;
    }

    /// Holds `GET /v1/snapshot?waitSeconds=N` on `version` in a task of its own;
    /// the task ends with the status and the moment the whole answer was read.
    pub fn long_poll(
        &self,
        version: &str,
        wait_seconds: u64,
    ) -> tokio::task::JoinHandle<(StatusCode, Instant)> {
        let request = self
            .http
            .get(format!(
                "{}/v1/snapshot?waitSeconds={wait_seconds}",
                self.base
            ))
            .header("if-none-match", format!("\"{version}\""));
        tokio::spawn(async move {
            let r = request.send().await.unwrap();
            let status = r.status();
            let _ = r.bytes().await.unwrap();
            (status, Instant::now())
        })
    }

    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- kubelet-scope serve log ---\n{}", self.logs());
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub snapshot: Option<Snapshot>,
}

/// Polls `check` every 50 ms until it holds; fails after `within`, printing `context`.
pub async fn eventually<F, Fut>(
    what: &str,
    within: Duration,
    context: impl Fn() -> String,
    check: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates namespace `name` (labelled `labels`); one that exists is fine.
pub async fn namespace(client: &kube::Client, name: &str, labels: &[(&str, &str)]) {
    use k8s_openapi::api::core::v1::Namespace;
    let ns = Namespace {
        metadata: kube::core::ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    match kube::Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("namespace {name}: {e}"),
    }
}

/// Creates the ServiceAccount `namespace:name` (and its namespace).
pub async fn service_account(client: &kube::Client, namespace: &str, name: &str) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    self::namespace(client, namespace, &[]).await;
    let account = ServiceAccount {
        metadata: kube::core::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    kube::Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&Default::default(), &account)
        .await
        .unwrap();
}

/// A token of `namespace:account` for `audience` from the TokenRequest API, as a
/// projected volume holds it (1.20 issues none shorter than 10 minutes).
pub async fn token_request(
    client: &kube::Client,
    namespace: &str,
    account: &str,
    audience: &str,
) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.into()],
            ..Default::default()
        },
        ..Default::default()
    };
    kube::Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &Default::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// `token`'s claims with `changes` merged in, signed again with the cluster's own
/// service-account key (`sa.key`): what the apiserver would have issued with those
/// claims (an `exp` shorter than TokenRequest allows, another `iss`, a `jti` that
/// makes it a distinct token).
pub fn reissue(cluster: &Cluster, token: &str, changes: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let header = parts.next().unwrap();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts.next().unwrap()).unwrap()).unwrap();
    for (k, v) in changes.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let signed = format!("{header}.{}", b64.encode(claims.to_string()));
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(cluster.dir.path().join("sa.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    use std::io::Write;
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(signed.as_bytes())
        .unwrap();
    let out = openssl.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sign failed");
    format!("{signed}.{}", b64.encode(out.stdout))
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The objects of a manifest of deploy/ (`base/control-plane.yaml`, …), untyped.
pub fn deploy_manifest(path: &str) -> Vec<kube::api::DynamicObject> {
    use serde::Deserialize;
    let path = format!("{}/../deploy/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| kube::api::DynamicObject::deserialize(doc).unwrap())
        .collect()
}

/// Creates `obj` as a user applies it (its kind looked up by discovery).
pub async fn create_object(client: &kube::Client, obj: &kube::api::DynamicObject) {
    use kube::discovery::{pinned_kind, Scope};
    let types = obj.types.as_ref().expect("apiVersion/kind");
    let gvk = kube::core::GroupVersionKind::try_from(types).unwrap();
    let (resource, caps) = pinned_kind(client, &gvk).await.unwrap();
    let api: kube::Api<kube::api::DynamicObject> = match caps.scope {
        Scope::Namespaced => kube::Api::namespaced_with(
            client.clone(),
            obj.metadata.namespace.as_deref().expect("namespace"),
            &resource,
        ),
        Scope::Cluster => kube::Api::all_with(client.clone(), &resource),
    };
    api.create(&Default::default(), obj).await.unwrap();
}
