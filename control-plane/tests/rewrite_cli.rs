//! `kubelet-scope rewrite` and `check-config` as users run them: exit codes,
//! chunk-size invariance, and every rewritten text body of the test data
//! (`kubelet-scope-testdata`: third-party, own captures, synthetic) accepted by Prometheus' own
//! parser (`promtool check metrics`, from Debian's `prometheus` package, which
//! `make test` unpacks into `.cache/` and passes as `PROMTOOL`).
//!
//! Only the binary is run, as a user runs it: these tests must not call the crate's
//! functions directly, so that argument parsing and exit codes are covered too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn promtool() -> PathBuf {
    let path = std::env::var_os("PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/prometheus/usr/bin/promtool"));
    assert!(
        path.exists(),
        "promtool not found at {} (run `make test`, which installs it)",
        path.display()
    );
    path
}

fn run(program: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The CLI may exit before reading everything (a refused path).
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

fn cli(args: &[&str], stdin: &[u8]) -> Output {
    run(Path::new(env!("CARGO_BIN_EXE_kubelet-scope")), args, stdin)
}

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(name: &str) -> Files {
        let dir =
            std::env::temp_dir().join(format!("kubelet-scope-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Files { dir }
    }

    fn write(&self, name: &str, content: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const SNAPSHOT: &str = r#"{"version":"1","generatedAt":"2026-11-21T00:00:00Z","namespaces":{
    "kube-system":{"labels":{"team":"platform","tenant":"ops"}},
    "scraper":{"labels":{"team":"observability \"o11y\"","tenant":"acme"}},
    "default":{"labels":{"team":"apps","tenant":"acme"}},
    "workload-stress-ng":{"labels":{"team":"perf","tenant":"acme"}},
    "datadog-agent-helm":{"labels":{"team":"observability","tenant":"ops"}},
    "shop":{"labels":{"team":"web \"storefront\"","tenant":"acme"}},
    "analytics":{"labels":{"team":"data","tenant":"globex"}}}}"#;

const INJECT: &str = r#"{"inject":{"labels":{"team":"team"}},"snapshot":{"cluster":"cp"}}"#;
const TENANT: &str = r#"{"tenancy":{"tenant":{"header":"x-tenant"},"namespaceLabel":"tenant"},"snapshot":{"cluster":"cp"}}"#;
const BOTH: &str = r#"{"inject":{"labels":{"team":"team"},"onConflict":"exported"},
    "tenancy":{"tenant":{"static":"acme"},"namespaceLabel":"tenant"},"snapshot":{"cluster":"cp"}}"#;

fn text_fixtures() -> Vec<(String, Vec<u8>)> {
    kubelet_scope_testdata::bodies("txt")
        .iter()
        .map(|b| (b.name.clone(), b.read()))
        .collect()
}

#[test]
fn every_rewritten_capture_parses_with_promtool() {
    let promtool = promtool();
    let files = Files::new("promtool");
    let snapshot = files.write("snapshot.json", SNAPSHOT);
    let configs = [
        ("inject", files.write("inject.json", INJECT)),
        ("tenant", files.write("tenant.json", TENANT)),
        ("both", files.write("both.json", BOTH)),
    ];
    let mut checked = 0;
    let fixtures = text_fixtures();
    for (name, body) in &fixtures {
        // Only classic Prometheus text is fed to promtool's strict 0.0.4 parser.
        let original = run(&promtool, &["check", "metrics"], body);
        assert_ne!(
            original.status.code(),
            Some(1),
            "{name}: capture itself does not parse"
        );
        for (mode, config) in &configs {
            let out = cli(
                &[
                    "rewrite",
                    "--config",
                    config,
                    "--snapshot",
                    &snapshot,
                    "--path",
                    "/metrics/cadvisor",
                    "--tenant",
                    "acme",
                ],
                body,
            );
            assert!(
                out.status.success(),
                "{name} {mode}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let check = run(&promtool, &["check", "metrics"], &out.stdout);
            // promtool exits 1 on parse errors and 3 on lint findings (naming), which
            // the kubelet's own bodies already have.
            assert_ne!(
                check.status.code(),
                Some(1),
                "{name} {mode}: promtool rejects the output: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * fixtures.len());
    if kubelet_scope_testdata::Source::ThirdParty.present() {
        assert!(checked >= 36, "only {checked} outputs checked");
    }
}

#[test]
fn chunk_size_does_not_change_the_output() {
    let files = Files::new("chunks");
    let snapshot = files.write("snapshot.json", SNAPSHOT);
    let config = files.write("both.json", BOTH);
    let body = kubelet_scope_testdata::synthetic("cadvisor-k8s1.20-synthetic.txt");
    let args = |chunk: &'static str| {
        [
            "rewrite",
            "--config",
            &config,
            "--snapshot",
            &snapshot,
            "--path",
            "/metrics/cadvisor",
            "--chunk-size",
            chunk,
        ]
        .map(str::to_owned)
    };
    let reference = cli(&args("65536").each_ref().map(String::as_str), &body);
    assert!(reference.status.success());
    assert!(String::from_utf8_lossy(&reference.stdout).contains("team=\"web \\\"storefront\\\"\""));
    for chunk in ["1", "13", "4096", "1000000"] {
        let out = cli(&args(chunk).each_ref().map(String::as_str), &body);
        assert!(
            out.stdout == reference.stdout,
            "chunk size {chunk} changes the output"
        );
    }
}

/// The files `exit_codes` runs `rewrite` with, removed on drop.
struct ExitCase {
    _files: Files,
    snapshot: String,
    tenant: String,
    both: String,
    bad: String,
}

/// The body `exit_codes` rewrites: one series of `scraper` (acme's), one of
/// `kube-system` (ops').
const EXIT_BODY: &[u8] = b"m{namespace=\"scraper\"} 1\nm{namespace=\"kube-system\"} 2\n";

impl ExitCase {
    fn new() -> ExitCase {
        let files = Files::new("exit");
        ExitCase {
            snapshot: files.write("snapshot.json", SNAPSHOT),
            tenant: files.write("tenant.json", TENANT),
            both: files.write("both.json", BOTH),
            bad: files.write("bad.json", r#"{"tenancy":{"tenant":{"static":"a"},"staticNamespaces":{"a":[]},"allowPodScoped":true}}"#),
            _files: files,
        }
    }

    /// `kubelet-scope rewrite ARGS` on [`EXIT_BODY`].
    fn rewrite(&self, args: &[&str]) -> Output {
        cli(&[&["rewrite"], args].concat(), EXIT_BODY)
    }

    /// `rewrite` with the inject + static tenant configuration and the snapshot, for
    /// `/metrics`, plus `extra`.
    fn both_on_metrics(&self, extra: &[&str]) -> Output {
        let args = [
            "--config",
            &self.both,
            "--snapshot",
            &self.snapshot,
            "--path",
            "/metrics",
        ];
        self.rewrite(&[&args[..], extra].concat())
    }

    /// `rewrite` of `body` for `path` as tenant acme (the header configuration).
    fn as_acme(&self, path: &str, body: &[u8]) -> Output {
        let args = [
            "rewrite",
            "--config",
            &self.tenant,
            "--snapshot",
            &self.snapshot,
        ];
        cli(
            &[&args[..], &["--path", path, "--tenant", "acme"]].concat(),
            body,
        )
    }
}

#[test]
fn exit_codes() {
    let case = ExitCase::new();
    exit_0_writes_the_tenants_series(&case);
    exit_2_for_invalid_input_and_usage(&case);
    exit_3_for_refused_requests_with_the_reason(&case);
    exit_3_for_bodies_the_filter_cannot_filter(&case);
}

fn exit_0_writes_the_tenants_series(case: &ExitCase) {
    let ok = case.rewrite(&[
        "--config",
        &case.tenant,
        "--snapshot",
        &case.snapshot,
        "--path",
        "/metrics",
        "--tenant",
        "acme",
    ]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(ok.stdout, b"m{namespace=\"scraper\"} 1\n");
}

/// 2: invalid configuration (the field is named), missing snapshot, usage.
fn exit_2_for_invalid_input_and_usage(case: &ExitCase) {
    let out = case.rewrite(&["--config", &case.bad, "--path", "/metrics"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allowPodScoped"));
    let out = case.rewrite(&[
        "--config",
        &case.tenant,
        "--path",
        "/metrics",
        "--tenant",
        "acme",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--snapshot"));
    assert_eq!(
        case.rewrite(&["--config", &case.tenant]).status.code(),
        Some(2)
    );
    assert_eq!(
        case.both_on_metrics(&["--chunk-size", "0"]).status.code(),
        Some(2)
    );
    let out = case.both_on_metrics(&["--tenant", "ops"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--tenant must match a static tenant"
    );
}

/// 3: refused, with the reason, and nothing on stdout.
fn exit_3_for_refused_requests_with_the_reason(case: &ExitCase) {
    for (args, reason) in [
        (
            vec!["--path", "/configz", "--tenant", "acme"],
            "not available to tenants",
        ),
        (
            vec!["--path", "/exec/scraper/pod/c", "--tenant", "acme"],
            "pod-scoped",
        ),
        (vec!["--path", "/metrics"], "no tenant"),
        (
            vec!["--path", "/metrics", "--tenant", "nobody"],
            "unknown tenant",
        ),
    ] {
        let mut all = vec![
            "--config",
            case.tenant.as_str(),
            "--snapshot",
            case.snapshot.as_str(),
        ];
        all.extend(args);
        let out = case.rewrite(&all);
        assert_eq!(out.status.code(), Some(3), "{all:?}");
        assert!(out.stdout.is_empty());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(reason),
            "{all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Bodies the filter cannot filter, as tenant acme.
fn exit_3_for_bodies_the_filter_cannot_filter(case: &ExitCase) {
    let broken = case.as_acme(
        "/metrics",
        b"m{namespace=\"scraper\"} 1\nm{namespace=\"scraper\" 2\n",
    );
    assert_eq!(broken.status.code(), Some(3));
    assert!(
        broken.stdout.is_empty(),
        "a refused body must not be partly written"
    );
    let json = case.as_acme(
        "/pods",
        br#"{"kind":"PodList","items":[{"metadata":{"name":"x"}}]}"#,
    );
    assert_eq!(
        json.status.code(),
        Some(3),
        "a pod without a namespace is refused"
    );
}

#[test]
fn check_config_and_label_name() {
    let files = Files::new("check");
    let good = files.write("good.json", BOTH);
    let out = cli(&["check-config", &good], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("inject + tenancy"));
    let bad = files.write("bad.json", r#"{"inject":{"labels":{"app.kubernetes.io/team":"app.kubernetes.io/team"}},"snapshot":{"cluster":"cp"}}"#);
    let out = cli(&["check-config", &bad], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("app_kubernetes_io_team"));
    assert_eq!(
        cli(&["check-config", "/nonexistent"], b"").status.code(),
        Some(2)
    );
    // The README's example configurations stay valid.
    for example in ["plugin-inject.json", "plugin-tenant.json"] {
        let path = root().join("deploy/examples").join(example);
        let out = cli(&["check-config", path.to_str().unwrap()], b"");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cli(
        &["label-name", "app.kubernetes.io/team", "cost-centre"],
        b"",
    );
    assert_eq!(out.stdout, b"app_kubernetes_io_team\ncost_centre\n");
}
