//! What the rewriter's unit tests share: scopes over one snapshot, and
//! [`rewrite`], which feeds a body whole, at every split point and byte by byte,
//! and checks that all agree.

use std::rc::Rc;

use super::Rewriter;
use crate::body::BodyError;
use crate::config::Config;
use crate::snapshot::catalog::{Catalog, RequestScope};
use crate::snapshot::Snapshot;

const SNAPSHOT: &str = r#"{"version":"1","generatedAt":"t","namespaces":{
    "shop":{"labels":{"team":"front\"end","tenant":"acme"}},
    "db":{"labels":{"tenant":"acme"}},
    "bank":{"labels":{"team":"money","tenant":"globex"}}}}"#;

pub(super) fn scope(config: &str, tenant: Option<&str>) -> RequestScope {
    let config = Config::parse(config.as_bytes()).unwrap();
    let snapshot = Snapshot::parse(SNAPSHOT.as_bytes()).unwrap();
    RequestScope::new(Rc::new(Catalog::new(&config, Some(&snapshot))), tenant)
}

pub(super) fn inject(on_conflict: &str) -> RequestScope {
    scope(
        &format!(
            r#"{{"inject":{{"labels":{{"team":"team"}},"onConflict":"{on_conflict}"}},
                "snapshot":{{"cluster":"cp"}}}}"#
        ),
        None,
    )
}

pub(super) fn tenant(extra: &str) -> RequestScope {
    scope(
        &format!(
            r#"{{"tenancy":{{"tenant":{{"header":"t"}},"namespaceLabel":"tenant"{extra}}},
                "snapshot":{{"cluster":"cp"}}}}"#
        ),
        Some("acme"),
    )
}

/// Rewrites `body` fed in one chunk and at every split point, asserts all
/// agree, and returns the output.
pub(super) fn rewrite(scope: &RequestScope, body: &str) -> Result<String, BodyError> {
    let body = body.as_bytes();
    let whole = run(scope, &[body]);
    for split in 0..=body.len() {
        let (a, b) = body.split_at(split);
        assert_eq!(run(scope, &[a, b]), whole, "split at {split}");
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(run(scope, &bytes), whole, "byte by byte");
    whole.map(|out| String::from_utf8(out).unwrap())
}

pub(super) fn run(scope: &RequestScope, chunks: &[&[u8]]) -> Result<Vec<u8>, BodyError> {
    let mut rewriter = Rewriter::new(scope.clone());
    let mut out = Vec::new();
    for chunk in chunks {
        rewriter.feed(chunk, &mut out)?;
    }
    rewriter.finish(&mut out)?;
    let counters = rewriter.counters();
    assert_eq!(
        counters.bytes_in,
        chunks.iter().map(|c| c.len() as u64).sum::<u64>()
    );
    assert_eq!(counters.bytes_out, out.len() as u64);
    Ok(out)
}
