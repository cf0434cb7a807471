//! What the json modules' tests share: a scope with a tenant (`acme`, who sees the
//! namespaces `shop` and `db`) and running a body through [`JsonFilter`] whole,
//! split in two at every offset, and byte by byte. Test code only.

use std::rc::Rc;

use super::JsonFilter;
use crate::body::BodyError;
use crate::config::Config;
use crate::policy::endpoint::JsonEndpoint;
use crate::snapshot::catalog::{Catalog, RequestScope};
use crate::snapshot::Snapshot;

pub(super) fn scope(tenant: Option<&str>, tenancy: bool) -> RequestScope {
    let config = if tenancy {
        r#"{"tenancy": {"tenant": {"header": "x-tenant"}, "namespaceLabel": "tenant"},
                "snapshot": {"cluster": "cp"}}"#
    } else {
        r#"{"passThrough": true, "snapshot": {"cluster": "cp"}}"#
    };
    let config = Config::parse(config.as_bytes()).unwrap();
    let snapshot = Snapshot::parse(
        br#"{"version":"1","generatedAt":"t","namespaces":{
                "shop":{"labels":{"tenant":"acme"}},"db":{"labels":{"tenant":"acme"}},
                "bank":{"labels":{"tenant":"globex"}}}}"#,
    )
    .unwrap();
    RequestScope::new(Rc::new(Catalog::new(&config, Some(&snapshot))), tenant)
}

pub(super) fn run(endpoint: JsonEndpoint, body: &str) -> Result<String, BodyError> {
    run_split(endpoint, body.as_bytes(), &[])
}

pub(super) fn run_split(
    endpoint: JsonEndpoint,
    body: &[u8],
    splits: &[usize],
) -> Result<String, BodyError> {
    let mut f = JsonFilter::new(endpoint, scope(Some("acme"), true), 1 << 20);
    let mut out = Vec::new();
    let mut at = 0;
    for &s in splits.iter().chain(std::iter::once(&body.len())) {
        f.feed(&body[at..s], &mut out)?;
        at = s;
    }
    f.finish(&mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

pub(super) fn every_split(endpoint: JsonEndpoint, body: &str) -> Result<String, BodyError> {
    let whole = run(endpoint, body);
    for s in 0..=body.len() {
        let split = run_split(endpoint, body.as_bytes(), &[s]);
        match (&whole, &split) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "split at {s}"),
            (Err(_), Err(_)) => {}
            _ => panic!("split at {s}: {whole:?} vs {split:?}"),
        }
    }
    let bytes: Vec<usize> = (1..body.len()).collect();
    let bytewise = run_split(endpoint, body.as_bytes(), &bytes);
    assert_eq!(whole.is_ok(), bytewise.is_ok());
    if let (Ok(a), Ok(b)) = (&whole, &bytewise) {
        assert_eq!(a, b);
    }
    whole
}
