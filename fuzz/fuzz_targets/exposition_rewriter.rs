//! Fuzzes the streaming Prometheus rewriter (`kubelet_scope_filter::prometheus`).
//!
//! Run (only the stable toolchain is installed; `RUSTC_BOOTSTRAP=1` lets cargo-fuzz
//! pass its nightly-only sanitizer flags):
//!
//! ```sh
//! cargo install cargo-fuzz
//! cd fuzz
//! RUSTC_BOOTSTRAP=1 cargo fuzz run exposition_rewriter corpus/exposition_rewriter \
//!     ../testdata/synthetic ../../shared/fixtures/kubelet -- -max_len=65536 -max_total_time=60
//! ```
//!
//! Input: one control byte (mode and split point), then the body. Invariants:
//! - no panic, whatever the bytes;
//! - the result (output or refusal) is the same for the whole body, for a split
//!   point derived from the input, and (for small bodies) byte by byte;
//! - injection never adds or removes a line, and with nothing to inject it is the
//!   identity;
//! - tenant filtering only removes lines (the output is a subsequence of the
//!   input's lines) and is idempotent: filtering its output again drops nothing.
#![no_main]

use std::rc::Rc;

use kubelet_scope_filter::body::BodyError;
use kubelet_scope_filter::snapshot::catalog::{Catalog, RequestScope};
use kubelet_scope_filter::config::Config;
use kubelet_scope_filter::prometheus::Rewriter;
use kubelet_scope_filter::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

const SNAPSHOT: &[u8] = br#"{"version":"1","generatedAt":"t","namespaces":{
    "shop":{"labels":{"team":"web\"shop","tenant":"acme"}},
    "db":{"labels":{"tenant":"acme"}},
    "bank":{"labels":{"team":"money","tenant":"globex"}}}}"#;

fn scope(config: &[u8], tenant: Option<&str>) -> RequestScope {
    let config = Config::parse(config).expect("fuzz config");
    let snapshot = Snapshot::parse(SNAPSHOT).expect("fuzz snapshot");
    RequestScope::new(Rc::new(Catalog::new(&config, Some(&snapshot))), tenant)
}

fn run(scope: &RequestScope, chunks: &[&[u8]]) -> Result<Vec<u8>, BodyError> {
    let mut rewriter = Rewriter::new(scope.clone());
    let mut out = Vec::new();
    for chunk in chunks {
        rewriter.feed(chunk, &mut out)?;
    }
    rewriter.finish(&mut out)?;
    Ok(out)
}

fn lines(body: &[u8]) -> Vec<&[u8]> {
    body.split_inclusive(|&b| b == b'\n').collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let inject = scope(br#"{"inject":{"labels":{"team":"team"}},"snapshot":{"cluster":"cp"}}"#, None);
    let filter = scope(
        br#"{"tenancy":{"tenant":{"header":"t"},"namespaceLabel":"tenant"},"snapshot":{"cluster":"cp"}}"#,
        Some("acme"),
    );
    let scope = if control & 1 == 0 { &inject } else { &filter };
    let split = usize::from(control >> 1) * body.len() / 127;

    let whole = run(scope, &[body]);
    let halves = run(scope, &[&body[..split], &body[split..]]);
    assert_eq!(whole, halves, "split at {split} changes the result");
    if body.len() <= 512 {
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(whole, run(scope, &bytes), "byte-by-byte feeding changes the result");
    }
    let Ok(out) = whole else {
        return;
    };
    if control & 1 == 0 {
        assert_eq!(lines(&out).len(), lines(body).len(), "injection changed the line count");
        let nothing = Snapshot::parse(br#"{"version":"0","generatedAt":"t","namespaces":{}}"#).expect("snapshot");
        let config = Config::parse(br#"{"inject":{"labels":{"team":"team"}},"snapshot":{"cluster":"cp"}}"#).expect("config");
        let empty = RequestScope::new(Rc::new(Catalog::new(&config, Some(&nothing))), None);
        assert_eq!(run(&empty, &[body]).as_deref(), Ok(body), "nothing to inject, yet the body changed");
    } else {
        let input = lines(body);
        let mut at = 0;
        for line in lines(&out) {
            // The last line may have lost nothing but could lack a newline in both.
            let found = input[at..].iter().position(|l| *l == line);
            let found = found.unwrap_or_else(|| panic!("output line not in the input: {:?}", String::from_utf8_lossy(line)));
            at += found + 1;
        }
        let mut again = Rewriter::new(scope.clone());
        let mut twice = Vec::new();
        again.feed(&out, &mut twice).expect("filtered output is refused");
        again.finish(&mut twice).expect("filtered output is refused");
        assert_eq!(again.counters().dropped, 0, "filtering is not idempotent");
        assert_eq!(twice, out);
    }
});
