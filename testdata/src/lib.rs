//! The kubelet bodies the tests run on, and the one rule for finding them (the
//! Python harness, `envoy/e2e/stack.py`, applies the same rule). Every body is a
//! file named `<endpoint prefix>-<anything>.txt|json` (see `testdata/README.md`), in
//! one of three sources:
//!
//! * [`Source::ThirdParty`]: captures from other public repositories, which the
//!   project does not carry: `$KUBELET_SCOPE_FIXTURES`, else
//!   `<repo>/../shared/fixtures/kubelet`. May be absent: a test that needs one of
//!   them then prints one `SKIPPED:` line and returns (Rust has no skip).
//! * [`Source::OwnCaptures`]: what the cluster harness captured from its real
//!   kubelet: `$KUBELET_SCOPE_OWN_CAPTURES`, else `<repo>/target/cluster/captures`.
//!   May be absent (no cluster run yet).
//! * [`Source::Synthetic`]: `testdata/synthetic/`, committed, always there.
//!
//! The fixture tests run on [`bodies`], the union of the sources present.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Once;

/// Kubelet path of a body, by its file-name prefix.
const ENDPOINTS: [(&str, &str); 7] = [
    ("kubelet-metrics-", "/metrics"),
    ("cadvisor-", "/metrics/cadvisor"),
    ("resource-", "/metrics/resource"),
    ("probes-", "/metrics/probes"),
    ("slis-", "/metrics/slis"),
    ("stats-summary-", "/stats/summary"),
    ("pods-", "/pods"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    ThirdParty,
    OwnCaptures,
    Synthetic,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::ThirdParty, Source::OwnCaptures, Source::Synthetic];

    /// The source's folder (which may not exist); a relative one in the variable is
    /// taken from the repository's root, as the Makefile and `stack.py` take it.
    pub fn dir(self) -> PathBuf {
        let (var, default) = match self {
            Source::ThirdParty => ("KUBELET_SCOPE_FIXTURES", "../shared/fixtures/kubelet"),
            Source::OwnCaptures => ("KUBELET_SCOPE_OWN_CAPTURES", "target/cluster/captures"),
            Source::Synthetic => return repo().join("testdata/synthetic"),
        };
        match std::env::var_os(var) {
            Some(dir) if !dir.is_empty() => normalize(&repo().join(dir)),
            _ => normalize(&repo().join(default)),
        }
    }

    /// Whether the folder is there; says once per test binary when it is not.
    pub fn present(self) -> bool {
        let dir = self.dir();
        let present = dir.is_dir();
        if !present {
            static THIRD_PARTY: Once = Once::new();
            static OWN: Once = Once::new();
            let (once, what) = match self {
                Source::ThirdParty => (
                    &THIRD_PARTY,
                    "SKIPPED: third-party kubelet captures not found at {dir} (set \
                     KUBELET_SCOPE_FIXTURES to their folder); tests that need them return \
                     without checking anything, the others run on the project's own bodies only",
                ),
                Source::OwnCaptures => (
                    &OWN,
                    "NOTE: no captures of the project's own cluster at {dir} (the cluster \
                     harness writes them; KUBELET_SCOPE_OWN_CAPTURES points elsewhere)",
                ),
                Source::Synthetic => panic!("{} is missing", dir.display()),
            };
            once.call_once(|| loud(&what.replace("{dir}", &dir.display().to_string())));
        }
        present
    }
}

/// A body file of one of the sources.
#[derive(Debug, Clone)]
pub struct Body {
    pub name: String,
    pub source: Source,
    pub path: PathBuf,
}

impl Body {
    pub fn read(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_else(|e| panic!("{}: {e}", self.path.display()))
    }

    /// The kubelet path the body is an answer of.
    pub fn kubelet_path(&self) -> &'static str {
        kubelet_path(&self.name).unwrap_or_else(|| {
            panic!(
                "{}: not named after its endpoint (testdata/README.md)",
                self.path.display()
            )
        })
    }
}

/// The kubelet path of a body named `name`, by its prefix.
pub fn kubelet_path(name: &str) -> Option<&'static str> {
    ENDPOINTS
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|&(_, path)| path)
}

/// Every `*.<ext>` body of every source present: third-party captures, own
/// captures, synthetic bodies, each source's sorted by name.
pub fn bodies(ext: &str) -> Vec<Body> {
    let mut all = Vec::new();
    for source in Source::ALL {
        if !source.present() {
            continue;
        }
        let dir = source.dir();
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut found: Vec<Body> = entries
            .map(|e| {
                e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                    .path()
            })
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .map(|path| Body {
                name: path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                source,
                path,
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        for body in &found {
            body.kubelet_path();
        }
        all.extend(found);
    }
    all
}

/// The third-party capture `name`, or `None` when those captures are absent (said
/// once). Use through [`third_party!`], which returns from the test instead.
pub fn third_party(name: &str) -> Option<Vec<u8>> {
    if !Source::ThirdParty.present() {
        return None;
    }
    let path = Source::ThirdParty.dir().join(name);
    Some(std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the third-party captures are there, but not this one)",
            path.display()
        )
    }))
}

/// A body of the project's own, from `testdata/synthetic/`.
pub fn synthetic(name: &str) -> Vec<u8> {
    let path = Source::Synthetic.dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `third_party!("name")`: the capture's bytes, or a return from the calling test
/// when the third-party captures are absent.
#[macro_export]
macro_rules! third_party {
    ($name:expr) => {
        match $crate::third_party($name) {
            Some(body) => body,
            None => return,
        }
    };
}

fn repo() -> PathBuf {
    normalize(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// `a/b/../c` as `a/c`, without asking the file system (which WASI may not allow
/// above the preopened folder).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// To stderr past the test harness' capture (which only takes `eprint!`), so that
/// a passing run shows it too.
fn loud(message: &str) {
    let _ = writeln!(std::io::stderr(), "\n{message}\n");
}
