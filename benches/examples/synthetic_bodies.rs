//! Writes the synthetic bodies to files, for benchmarks outside Rust (the Envoy
//! benchmark, `make bench-envoy`, serves them through the kubelet stand-in):
//!
//! ```text
//! synthetic_bodies OUT_DIR PODS...
//! ```
//!
//! writes `OUT_DIR/cadvisor-<PODS>pods.txt` for each pod count (110: 8.3 MB, 133: 10.1 MB) and
//! `OUT_DIR/snapshot.json`, the namespace map those bodies are filtered against.
//! The bodies are the ones the criterion benchmarks time, from the same generator.

use std::path::PathBuf;
use std::process::ExitCode;

use kubelet_scope_benches::synthetic;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: synthetic_bodies OUT_DIR PODS...");
        return ExitCode::from(2);
    };
    let mut files = vec![("snapshot.json".to_owned(), synthetic::snapshot())];
    for arg in args {
        let Ok(pods) = arg.parse::<usize>() else {
            eprintln!("synthetic_bodies: not a pod count: {arg}");
            return ExitCode::from(2);
        };
        files.push((
            format!("cadvisor-{pods}pods.txt"),
            synthetic::cadvisor(pods),
        ));
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("synthetic_bodies: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, bytes) in files {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, &bytes) {
            eprintln!("synthetic_bodies: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
    ExitCode::SUCCESS
}
