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
    run_split_in(&scope(Some("acme"), true), endpoint, body, splits)
}

/// The scope of virtual cluster `cluster`: host pods of k8s1 (two) and k8s2 (one)
/// in their host namespaces, a host tenant's namespace `shop`.
pub(super) fn virtual_scope(cluster: &str) -> RequestScope {
    let config = Config::parse(
        br#"{"tenancy": {"tenant": {"header": "x-tenant"}, "namespaceLabel": "tenant"},
             "snapshot": {"cluster": "cp"}}"#,
    )
    .unwrap();
    let snapshot = Snapshot::parse(
        br#"{"version":"1","generatedAt":"t","namespaces":{"shop":{"labels":{"tenant":"acme"}}},
            "virtualPods":{
              "vcluster-k8s1/web-1-x-shop-x-k8s1":{"cluster":"k8s1","namespace":"shop",
                 "name":"web-1","uid":"v-uid-1","hostUid":"h-uid-1"},
              "vcluster-k8s1/db-0-x-data-x-k8s1":{"cluster":"k8s1","namespace":"data",
                 "name":"db-0","uid":"v-uid-2","hostUid":"h-uid-2"},
              "vcluster-k8s2/web-1-x-shop-x-k8s2":{"cluster":"k8s2","namespace":"shop",
                 "name":"web-1","uid":"v-uid-3","hostUid":"h-uid-3"}}}"#,
    )
    .unwrap();
    RequestScope::for_virtual_cluster(Rc::new(Catalog::new(&config, Some(&snapshot))), cluster)
}

pub(super) fn run_split_in(
    scope: &RequestScope,
    endpoint: JsonEndpoint,
    body: &[u8],
    splits: &[usize],
) -> Result<String, BodyError> {
    let mut f = JsonFilter::new(endpoint, scope.clone(), 1 << 20);
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
    every_split_in(&scope(Some("acme"), true), endpoint, body)
}

/// `body` filtered in `scope` whole, split in two at every offset and byte by
/// byte; all must agree.
pub(super) fn every_split_in(
    scope: &RequestScope,
    endpoint: JsonEndpoint,
    body: &str,
) -> Result<String, BodyError> {
    let run_split =
        |endpoint, body: &[u8], splits: &[usize]| run_split_in(scope, endpoint, body, splits);
    let whole = run_split(endpoint, body.as_bytes(), &[]);
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
