//! Fixtures and helpers shared by the host tests: configurations, a snapshot that
//! matches the kubelet bodies of the test data (`kubelet-scope-testdata`), the native reference
//! (the same `BodyFilter` the CLI runs, called from the rlib) and the CLI itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::OnceLock;

use kubelet_scope_filter::config::Config;
use kubelet_scope_filter::policy::decide::{decide, resolve_tenant, Decision, Request};
use kubelet_scope_filter::rewrite::BodyFilter;
use kubelet_scope_filter::snapshot::catalog::{Catalog, RequestScope};
use kubelet_scope_filter::snapshot::Snapshot;

use crate::{headers, Headers, Proxy, Result, Vm};

/// The control plane's cluster in every test configuration.
pub const CLUSTER: &str = "kubelet-scope-control-plane";

/// Namespaces of the captures and of the own synthetic bodies, with owners and teams.
pub const SNAPSHOT_V1: &str = r#"{"version":"v1","generatedAt":"2026-01-01T00:00:00Z","namespaces":{
  "kube-system":{"labels":{"team":"platform","tenant":"ops","cost-centre":"42"}},
  "default":{"labels":{"team":"web","tenant":"acme"}},
  "scraper":{"labels":{"team":"observability","tenant":"acme"}},
  "datadog-agent-helm":{"labels":{"team":"observability","tenant":"acme"}},
  "workload-dogstatsd":{"labels":{"team":"load \"quoted\"","tenant":"globex"}},
  "workload-stress-ng":{"labels":{"tenant":"globex"}},
  "workload-stress-test-ad":{"labels":{"tenant":"globex"}},
  "local-path-storage":{"labels":{"tenant":"ops"}},
  "sleeper-1":{"labels":{"team":"sleepers","tenant":"acme"}},
  "shop":{"labels":{"team":"web","tenant":"acme"}},
  "analytics":{"labels":{"team":"data","tenant":"globex"}}}}"#;

/// Injection only.
pub fn injection_config() -> String {
    format!(
        r#"{{"inject": {{"labels": {{"team": "team", "cost-centre": "cost_centre"}}}},
            "snapshot": {{"cluster": "{CLUSTER}", "pollTimeoutMs": 30000, "maxStalenessSeconds": 60}}}}"#
    )
}

/// Tenant filtering from the `x-tenant` header, plus injection.
pub fn tenant_config() -> String {
    format!(
        r#"{{"inject": {{"labels": {{"team": "team"}}}},
            "tenancy": {{"tenant": {{"header": "x-tenant"}}, "namespaceLabel": "tenant",
                         "allowPodScopedPaths": true}},
            "snapshot": {{"cluster": "{CLUSTER}", "pollTimeoutMs": 30000, "maxStalenessSeconds": 60}}}}"#
    )
}

/// Tenant filtering from a static namespace list: needs no control plane.
pub fn static_config() -> String {
    r#"{"tenancy": {"tenant": {"static": "acme"},
                    "staticNamespaces": {"acme": ["default", "scraper", "sleeper-1"]}}}"#
        .to_owned()
}

/// The compiled filter, once per test binary; each test takes a [`Proxy::fresh`]
/// copy with its own shared data and metrics.
pub fn proxy() -> Proxy {
    static PROXY: OnceLock<Proxy> = OnceLock::new();
    let p = PROXY.get_or_init(|| match Proxy::load_default() {
        Ok(p) => p,
        Err(e) => panic!("{e:?}"),
    });
    let p = p.fresh();
    p.add_cluster(CLUSTER);
    p
}

/// Starts a VM with `config` and, when it polls, answers with `snapshot`.
pub fn vm_with_snapshot(proxy: &Proxy, config: &str, snapshot: Option<&str>) -> Result<Vm> {
    let mut vm = proxy.start_vm(config.as_bytes())?;
    if !vm.configured {
        wasmtime::bail!("configuration rejected: {:?}", vm.logs());
    }
    if let Some(snapshot) = snapshot {
        // The lease is taken, and the first poll sent, on the first tick.
        vm.tick()?;
        answer_poll(&mut vm, snapshot)?;
    }
    Ok(vm)
}

/// Answers the VM's outstanding poll with a 200 carrying `snapshot`.
pub fn answer_poll(vm: &mut Vm, snapshot: &str) -> Result<()> {
    let calls = vm.pending_calls();
    let Some(call) = calls.first() else {
        wasmtime::bail!("the VM has no outstanding poll");
    };
    let version = Snapshot::parse(snapshot.as_bytes())
        .map(|s| s.version)
        .unwrap_or_default();
    let etag = format!("\"{version}\"");
    vm.respond_call(
        call.token,
        headers(&[
            (":status", "200"),
            ("content-type", "application/json"),
            ("etag", &etag),
        ]),
        snapshot.as_bytes(),
    )
}

pub fn get(path: &str, extra: &[(&str, &str)]) -> Headers {
    let mut h = headers(&[
        (":method", "GET"),
        (":path", path),
        (":authority", "10.0.0.1:10250"),
        (":scheme", "https"),
        ("accept-encoding", "gzip"),
        ("user-agent", "Prometheus/3.0"),
    ]);
    h.extend(headers(extra));
    h
}

/// Text bodies (`*.txt`) of every fixture source present.
pub fn text_fixtures() -> Vec<PathBuf> {
    fixtures("txt")
}

/// JSON bodies (`*.json`) of every fixture source present.
pub fn json_fixtures() -> Vec<PathBuf> {
    fixtures("json")
}

fn fixtures(ext: &str) -> Vec<PathBuf> {
    kubelet_scope_testdata::bodies(ext)
        .into_iter()
        .map(|b| b.path)
        .collect()
}

/// The kubelet path a body was taken from (by its file-name prefix).
pub fn kubelet_path(fixture: &Path) -> &'static str {
    let name = fixture
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    kubelet_scope_testdata::kubelet_path(&name)
        .unwrap_or_else(|| panic!("{}: no endpoint prefix", fixture.display()))
}

/// What the pure rewriter gives for `body` on `path`: `Ok(out)`, or the refusal
/// (`Err((status, partial output))`, status 0 for a body error).
pub fn native(
    config: &str,
    snapshot: Option<&str>,
    path: &str,
    tenant: Option<&str>,
    body: &[u8],
) -> std::result::Result<Vec<u8>, (u16, Vec<u8>)> {
    let config = Config::parse(config.as_bytes()).map_err(|_| (0, vec![]))?;
    let snapshot = snapshot.map(|s| Snapshot::parse(s.as_bytes()).map_err(|_| (0, vec![])));
    let snapshot = match snapshot {
        Some(s) => Some(s?),
        None => None,
    };
    let catalog = Rc::new(Catalog::new(&config, snapshot.as_ref()));
    let have = !config.needs_snapshot() || snapshot.is_some();
    let tenant = resolve_tenant(&config, have.then_some(&*catalog), tenant);
    let request = Request {
        method: "GET",
        path,
        tenant: tenant.as_deref(),
        virtual_cluster: None,
    };
    let decision = decide(&config, have.then_some(&*catalog), &request);
    let kind = match decision {
        Decision::Rewrite(kind) => kind,
        Decision::PassThrough => return Ok(body.to_vec()),
        Decision::Deny { status, .. } => return Err((status, vec![])),
    };
    let scope = RequestScope::new(catalog, tenant.as_deref());
    let mut filter = BodyFilter::new(kind, scope, config.max_json_body_bytes);
    let mut out = Vec::new();
    match filter
        .feed(body, &mut out)
        .and_then(|()| filter.finish(&mut out))
    {
        Ok(()) => Ok(out),
        Err(_) => Err((0, out)),
    }
}

/// The `kubelet-scope` CLI, when built: `$KUBELET_SCOPE_CLI`, else
/// `target/release/kubelet-scope`.
pub fn cli_path() -> Option<PathBuf> {
    let p = match std::env::var_os("KUBELET_SCOPE_CLI") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/kubelet-scope"),
    };
    p.is_file().then_some(p)
}

/// `kubelet-scope rewrite` on `body`; `None` when it refused or is not built.
pub fn cli_rewrite(
    cli: &Path,
    config: &str,
    snapshot: &str,
    path: &str,
    tenant: Option<&str>,
    chunk_size: usize,
    body: &[u8],
) -> Option<Vec<u8>> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "kubelet-scope-host-tests-{}-{n}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).ok()?;
    let config_file = dir.join("config.json");
    let snapshot_file = dir.join("snapshot.json");
    std::fs::write(&config_file, config).ok()?;
    std::fs::write(&snapshot_file, snapshot).ok()?;
    let mut cmd = Command::new(cli);
    cmd.arg("rewrite")
        .arg("--config")
        .arg(&config_file)
        .arg("--snapshot")
        .arg(&snapshot_file)
        .arg("--path")
        .arg(path)
        .arg("--chunk-size")
        .arg(chunk_size.to_string());
    if let Some(t) = tenant {
        cmd.arg("--tenant").arg(t);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = body.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().ok()?;
    let _ = writer.join();
    let _ = std::fs::remove_dir_all(&dir);
    output.status.success().then_some(output.stdout)
}
