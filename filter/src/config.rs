//! The plugin configuration: the JSON string Envoy (or Istio's `WasmPlugin`) hands
//! to the filter, and that `kubelet-scope rewrite --config` reads.
//!
//! Parsing is strict: an unknown field is an error that names the field (with its
//! path, e.g. `tenancy.tenant`), because a misspelt security setting that silently
//! falls back to a default is worse than a rejected config.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::prometheus::labels;

/// Default cap on what the JSON filter holds back at once (one `/pods` item or
/// `/stats/summary` pod, which must be complete before its namespace is known):
/// 32 MiB. The body as a whole streams and has no cap.
pub const DEFAULT_MAX_JSON_BODY_BYTES: usize = 32 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Namespace label injection; off when absent.
    #[serde(default)]
    pub inject: Option<InjectConfig>,
    /// Tenant filtering; off when absent.
    #[serde(default)]
    pub tenancy: Option<TenancyConfig>,
    /// Where the namespace snapshot comes from; required when a feature needs it.
    #[serde(default)]
    pub snapshot: Option<SnapshotSource>,
    #[serde(default = "default_max_json_body_bytes")]
    pub max_json_body_bytes: usize,
    /// Neither injection nor tenancy, on purpose: read endpoints pass unchanged.
    /// Without it a configuration with neither is refused, so that a lost or
    /// misspelt `pluginConfig` fails closed instead of forwarding the node's
    /// credentials for every path.
    #[serde(default)]
    pub pass_through: bool,
    /// Without tenancy, the path classes beyond the read endpoints that may reach
    /// the kubelet (each one is `nodes/proxy` with the node's credentials). Tenancy
    /// has its own switches (`allowPodScopedPaths`, `allowInteractivePaths`).
    #[serde(default)]
    pub allow_paths: Vec<PathClass>,
}

/// Kubelet paths beyond the read endpoints (metrics, `/stats/summary`, `/pods`,
/// `/healthz`), by what they give whoever reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PathClass {
    /// `/containerLogs/{ns}/{pod}/{container}`: any container's logs.
    ContainerLogs,
    /// `/stats/{ns}/{pod}/{uid}/{container}` (kubelet ≤ 1.20 with cAdvisor JSON
    /// endpoints on), `/stats/`, `/stats/container`, `/spec/`.
    CadvisorJson,
    /// `/exec`, `/attach`, `/run`, `/portForward`: a shell or tunnel into any pod.
    Exec,
    /// `/logs/`: the node's log files.
    NodeLogs,
    /// `/configz`, `/debug/…` (pprof, log level), `/flagz`, `/statusz`.
    Debug,
    /// `/checkpoint/{ns}/{pod}/{container}`: writes a container's memory to disk.
    Checkpoint,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InjectConfig {
    /// Namespace label key (`app.kubernetes.io/team`) → Prometheus label name (`team`).
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub on_conflict: OnConflict,
}

/// What to do when a scraped series already carries a label we would inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Rename the scraped label to `exported_<name>` (Prometheus' `honor_labels: false`).
    #[default]
    Exported,
    /// Keep the scraped value and skip that injected label.
    Keep,
    /// Replace the scraped value with the injected one.
    Overwrite,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TenancyConfig {
    pub tenant: TenantSource,
    /// Namespace label whose value names the tenant owning the namespace.
    #[serde(default)]
    pub namespace_label: Option<String>,
    /// Tenant → namespaces, independent of any snapshot.
    #[serde(default)]
    pub static_namespaces: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub non_namespaced_series: NonNamespacedSeries,
    #[serde(default)]
    pub empty_namespace_series: EmptyNamespaceSeries,
    /// Allow `/containerLogs/{ns}/…` and `/stats/{ns}/…` for the tenant's namespaces.
    #[serde(default)]
    pub allow_pod_scoped_paths: bool,
    /// Also allow `/exec`, `/attach`, `/run` and `/portForward` for the tenant's
    /// namespaces (only together with `allowPodScopedPaths`). These give a shell in
    /// the tenant's pods through the node's credentials, so they need their own opt-in.
    #[serde(default)]
    pub allow_interactive_paths: bool,
    /// Status of a denied path: 404 (as a kubelet answers a path it does not
    /// serve, what agents that probe optional endpoints expect) or 403.
    #[serde(default = "default_denied_status")]
    pub denied_status: u16,
    /// A request header set by a trusted Envoy filter (the control plane's
    /// `ext_authz`) that names the caller's *virtual cluster*: such a request sees
    /// only that cluster's pods (the snapshot's `virtualPods`), under their virtual
    /// names, instead of a tenant's namespaces.
    #[serde(default)]
    pub virtual_cluster_header: Option<String>,
}

/// Where the tenant of a request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum TenantSource {
    /// A request header set by a trusted Envoy filter (e.g. `jwt_authn`) names the
    /// tenant.
    Header(String),
    /// Fixed for the listener.
    Static(String),
    /// A request header set by a trusted Envoy filter names the caller's
    /// *namespace* (a ServiceAccount token's `kubernetes.io.namespace` claim); the
    /// tenant is that namespace's `namespaceLabel` value in the snapshot. A name
    /// alone proves nothing (anyone allowed to create namespaces can pick it), so
    /// an unknown or unlabelled namespace has no tenant.
    NamespaceOf(HeaderName),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderName {
    pub header: String,
}

impl TenantSource {
    /// The request header the tenant (or the caller's namespace) is read from.
    pub fn header(&self) -> Option<&str> {
        match self {
            TenantSource::Header(h) | TenantSource::NamespaceOf(HeaderName { header: h }) => {
                Some(h)
            }
            TenantSource::Static(_) => None,
        }
    }
}

/// Series without a `namespace` label (node, machine and kubelet-internal series).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonNamespacedSeries {
    #[default]
    Keep,
    Drop,
}

/// Series with `namespace=""` (cadvisor's system cgroups such as `id="/system.slice"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyNamespaceSeries {
    #[default]
    Drop,
    Keep,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SnapshotSource {
    /// Envoy cluster of the control plane.
    pub cluster: String,
    /// `:authority` of the snapshot request; the cluster name when absent.
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_snapshot_path")]
    pub path: String,
    /// Long-poll wait the control plane may hold the request for.
    #[serde(default = "default_poll_timeout_ms")]
    pub poll_timeout_ms: u64,
    /// Beyond this age without a successful fetch, tenant mode fails closed.
    #[serde(default = "default_max_staleness_seconds")]
    pub max_staleness_seconds: u64,
    /// Ask for this node's snapshot: `?node=<Envoy's node id>` (`--service-node`,
    /// the node's name in the DaemonSet), so that the control plane sends the
    /// virtual pods of this node only.
    #[serde(default)]
    pub per_node: bool,
}

fn default_max_json_body_bytes() -> usize {
    DEFAULT_MAX_JSON_BODY_BYTES
}
fn default_denied_status() -> u16 {
    404
}
fn default_snapshot_path() -> String {
    "/v1/snapshot".to_owned()
}
fn default_poll_timeout_ms() -> u64 {
    30_000
}
fn default_max_staleness_seconds() -> u64 {
    300
}

/// A configuration that could not be used, with the offending field named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl Config {
    /// Parses and validates a configuration. An empty input is the empty config,
    /// which is refused like `{}`: a filter with neither feature on must say so
    /// (`passThrough`), or Envoy would forward every path with the node's
    /// credentials because a configuration went missing.
    pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
        let json: &[u8] = if json.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            json
        };
        // serde would also accept a JSON array for a struct; a config is an object.
        if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(invalid("the configuration must be a JSON object"));
        }
        let de = &mut serde_json::Deserializer::from_slice(json);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                invalid(inner.to_string())
            } else {
                invalid(format!("{path}: {inner}"))
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_mode()?;
        if let Some(inject) = &self.inject {
            validate_inject(inject)?;
        }
        if let Some(tenancy) = &self.tenancy {
            validate_tenancy(tenancy)?;
        }
        if self.needs_snapshot() {
            let Some(source) = &self.snapshot else {
                return Err(invalid(
                    "snapshot: required because inject or tenancy.namespaceLabel reads namespace labels",
                ));
            };
            validate_snapshot(source)?;
        }
        if self.max_json_body_bytes == 0 {
            return Err(invalid("maxJsonBodyBytes: must be positive"));
        }
        Ok(())
    }

    /// Exactly one way of working must be chosen, on purpose.
    fn validate_mode(&self) -> Result<(), ConfigError> {
        match (&self.inject, &self.tenancy, self.pass_through) {
            (None, None, false) => Err(invalid(
                "needs inject or tenancy (or passThrough: true for neither); refusing to forward the node's credentials unconfigured",
            )),
            (Some(_), _, true) | (_, Some(_), true) => Err(invalid(
                "passThrough: only without inject and tenancy",
            )),
            (_, Some(_), false) if !self.allow_paths.is_empty() => Err(invalid(
                "allowPaths: not with tenancy (use tenancy.allowPodScopedPaths and allowInteractivePaths)",
            )),
            _ => Ok(()),
        }
    }

    /// True when some feature reads namespace labels, i.e. the filter must have a
    /// snapshot before it can answer. Tenancy from `staticNamespaces` alone does not.
    pub fn needs_snapshot(&self) -> bool {
        self.inject.is_some()
            || self
                .tenancy
                .as_ref()
                .is_some_and(|t| t.namespace_label.is_some())
    }
}

fn validate_inject(inject: &InjectConfig) -> Result<(), ConfigError> {
    if inject.labels.is_empty() {
        return Err(invalid("inject.labels: at least one label is required"));
    }
    let mut seen = BTreeMap::new();
    for (key, name) in &inject.labels {
        if key.is_empty() {
            return Err(invalid("inject.labels: empty namespace label key"));
        }
        if let Err(why) = labels::check_injectable_name(name) {
            let hint = labels::sanitize_name(key);
            return Err(invalid(format!(
                "inject.labels.{key}: {name:?} {why} (a valid name for this key would be {hint:?})"
            )));
        }
        if let Some(other) = seen.insert(name.as_str(), key.as_str()) {
            return Err(invalid(format!(
                "inject.labels: {other:?} and {key:?} both map to label {name:?}"
            )));
        }
    }
    Ok(())
}

fn validate_tenancy(tenancy: &TenancyConfig) -> Result<(), ConfigError> {
    let tenant = match &tenancy.tenant {
        TenantSource::Static(t) => t,
        source => source.header().unwrap_or_default(),
    };
    if tenant.is_empty() {
        return Err(invalid("tenancy.tenant: must not be empty"));
    }
    let header_name = |h: &str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if let Some(h) = tenancy.tenant.header() {
        if !header_name(h) {
            return Err(invalid(format!(
                "tenancy.tenant: {h:?} is not a valid header name"
            )));
        }
    }
    if let Some(h) = &tenancy.virtual_cluster_header {
        if !header_name(h) || Some(h.as_str()) == tenancy.tenant.header() {
            return Err(invalid(format!(
                "tenancy.virtualClusterHeader: {h:?} is not a valid header name of its own"
            )));
        }
    }
    if matches!(tenancy.tenant, TenantSource::NamespaceOf(_)) && tenancy.namespace_label.is_none() {
        return Err(invalid(
            "tenancy.tenant.namespaceOf: requires namespaceLabel (the label that names a namespace's tenant)",
        ));
    }
    if !matches!(tenancy.denied_status, 403 | 404) {
        return Err(invalid("tenancy.deniedStatus: must be 404 or 403"));
    }
    if tenancy.namespace_label.as_deref() == Some("") {
        return Err(invalid("tenancy.namespaceLabel: must not be empty"));
    }
    if tenancy.namespace_label.is_none() && tenancy.static_namespaces.is_empty() {
        return Err(invalid(
            "tenancy: needs namespaceLabel or staticNamespaces to know which namespaces a tenant owns",
        ));
    }
    if tenancy.allow_interactive_paths && !tenancy.allow_pod_scoped_paths {
        return Err(invalid(
            "tenancy.allowInteractivePaths: requires allowPodScopedPaths",
        ));
    }
    Ok(())
}

fn validate_snapshot(source: &SnapshotSource) -> Result<(), ConfigError> {
    if source.cluster.is_empty() {
        return Err(invalid("snapshot.cluster: must not be empty"));
    }
    if !source.path.starts_with('/') {
        return Err(invalid("snapshot.path: must start with '/'"));
    }
    if source.poll_timeout_ms == 0 || source.poll_timeout_ms > 60_000 {
        return Err(invalid("snapshot.pollTimeoutMs: must be 1..=60000"));
    }
    // A healthy long poll confirms the snapshot only when it returns, so a
    // limit shorter than one poll would fail tenants closed while all is well.
    if source.max_staleness_seconds.saturating_mul(1000) <= source.poll_timeout_ms {
        return Err(invalid(
            "snapshot.maxStalenessSeconds: must be longer than pollTimeoutMs",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        Config::parse(json.as_bytes()).unwrap_err().to_string()
    }

    const SNAPSHOT: &str = r#""snapshot": {"cluster": "cp"}"#;

    #[test]
    fn a_config_without_a_mode_is_refused() {
        for empty in ["", " \n", "{}"] {
            let e = err(empty);
            assert!(e.contains("needs inject or tenancy"), "{empty:?}: {e}");
        }
        let c = Config::parse(br#"{"passThrough": true}"#).unwrap();
        assert!(c.inject.is_none() && c.tenancy.is_none() && c.pass_through);
        assert_eq!(c.max_json_body_bytes, DEFAULT_MAX_JSON_BODY_BYTES);
        let e = err(&format!(
            r#"{{"passThrough": true, "inject": {{"labels": {{"team": "team"}}}}, {SNAPSHOT}}}"#
        ));
        assert!(e.contains("passThrough"), "{e}");
        let e = err(
            r#"{"allowPaths": ["exec"], "tenancy": {"tenant": {"static": "a"}, "staticNamespaces": {"a": []}}}"#,
        );
        assert!(e.contains("allowPaths"), "{e}");
        let c =
            Config::parse(br#"{"passThrough": true, "allowPaths": ["containerLogs", "debug"]}"#)
                .unwrap();
        assert_eq!(c.allow_paths, [PathClass::ContainerLogs, PathClass::Debug]);
        assert!(err(r#"{"passThrough": true, "allowPaths": ["shell"]}"#).contains("allowPaths"));
    }

    #[test]
    fn tenant_from_the_callers_namespace_needs_the_tenant_label() {
        let c = Config::parse(
            format!(
                r#"{{"tenancy": {{"tenant": {{"namespaceOf": {{"header": "x-ns"}}}}, "namespaceLabel": "tenant"}}, {SNAPSHOT}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let tenant = &c.tenancy.unwrap().tenant;
        assert_eq!(tenant.header(), Some("x-ns"));
        assert!(matches!(tenant, TenantSource::NamespaceOf(_)));
        let e = err(
            r#"{"tenancy": {"tenant": {"namespaceOf": {"header": "x-ns"}}, "staticNamespaces": {"a": ["b"]}}}"#,
        );
        assert!(
            e.contains("namespaceOf") && e.contains("namespaceLabel"),
            "{e}"
        );
        let e = err(
            r#"{"tenancy": {"tenant": {"namespaceOf": {"header": "bad header"}}, "namespaceLabel": "t"}, "snapshot": {"cluster": "cp"}}"#,
        );
        assert!(e.contains("header"), "{e}");
    }

    #[test]
    fn denied_status_is_404_or_403() {
        let with = |status: &str| {
            format!(
                r#"{{"tenancy": {{"tenant": {{"static": "a"}}, "staticNamespaces": {{"a": []}}{status}}}}}"#
            )
        };
        let c = Config::parse(with("").as_bytes()).unwrap();
        assert_eq!(c.tenancy.unwrap().denied_status, 404);
        let c = Config::parse(with(r#", "deniedStatus": 403"#).as_bytes()).unwrap();
        assert_eq!(c.tenancy.unwrap().denied_status, 403);
        for bad in ["200", "500", "401"] {
            let e = err(&with(&format!(r#", "deniedStatus": {bad}"#)));
            assert!(e.contains("tenancy.deniedStatus"), "{bad}: {e}");
        }
    }

    #[test]
    fn full_config_parses_with_defaults() {
        let c = Config::parse(
            br#"{"inject": {"labels": {"team": "team"}},
                 "tenancy": {"tenant": {"header": "x-tenant"}, "namespaceLabel": "tenant"},
                 "snapshot": {"cluster": "cp"}}"#,
        )
        .unwrap();
        let inject = c.inject.unwrap();
        assert_eq!(inject.on_conflict, OnConflict::Exported);
        let t = c.tenancy.unwrap();
        assert_eq!(t.tenant, TenantSource::Header("x-tenant".into()));
        assert_eq!(t.non_namespaced_series, NonNamespacedSeries::Keep);
        assert_eq!(t.empty_namespace_series, EmptyNamespaceSeries::Drop);
        assert!(!t.allow_pod_scoped_paths);
        let s = c.snapshot.unwrap();
        assert_eq!(
            (s.path.as_str(), s.poll_timeout_ms, s.max_staleness_seconds),
            ("/v1/snapshot", 30_000, 300)
        );
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        assert!(err(r#"{"injct": {}}"#).contains("injct"));
        let e = err(
            r#"{"tenancy": {"tenant": {"static": "a"}, "staticNamespaces": {}, "nonNamespacedSerie": "keep"}}"#,
        );
        assert!(
            e.contains("tenancy") && e.contains("nonNamespacedSerie"),
            "{e}"
        );
        let e = err(r#"{"tenancy": {"tenant": {"cookie": "a"}, "staticNamespaces": {"a": []}}}"#);
        assert!(e.contains("tenancy.tenant") && e.contains("cookie"), "{e}");
        let e = err(&format!(
            r#"{{"inject": {{"labels": {{"a": "a"}}, "onConflict": "merge"}}, {SNAPSHOT}}}"#
        ));
        assert!(
            e.contains("inject.onConflict") && e.contains("merge"),
            "{e}"
        );
    }

    #[test]
    fn invalid_label_names_are_rejected_with_a_sanitized_hint() {
        let e = err(&format!(
            r#"{{"inject": {{"labels": {{"app.kubernetes.io/team": "app.kubernetes.io/team"}}}}, {SNAPSHOT}}}"#
        ));
        assert!(e.contains("inject.labels.app.kubernetes.io/team"), "{e}");
        assert!(e.contains("app_kubernetes_io_team"), "{e}");
        for bad in ["__team", "namespace", "9lives", ""] {
            let json = format!(r#"{{"inject": {{"labels": {{"k": "{bad}"}}}}, {SNAPSHOT}}}"#);
            assert!(Config::parse(json.as_bytes()).is_err(), "{bad:?} accepted");
        }
        let e = err(&format!(
            r#"{{"inject": {{"labels": {{"a": "team", "b": "team"}}}}, {SNAPSHOT}}}"#
        ));
        assert!(e.contains("both map"), "{e}");
    }

    #[test]
    fn snapshot_source_is_required_only_when_labels_are_read() {
        assert!(err(r#"{"inject": {"labels": {"team": "team"}}}"#).contains("snapshot"));
        assert!(
            err(r#"{"tenancy": {"tenant": {"static": "a"}, "namespaceLabel": "tenant"}}"#)
                .contains("snapshot")
        );
        let c = Config::parse(
            br#"{"tenancy": {"tenant": {"static": "a"}, "staticNamespaces": {"a": ["ns"]}}}"#,
        )
        .unwrap();
        assert!(!c.needs_snapshot());
    }

    #[test]
    fn staleness_limit_must_outlast_one_long_poll() {
        let with = |poll_ms: u64, stale_s: u64| {
            format!(
                r#"{{"inject": {{"labels": {{"team": "team"}}}},
                    "snapshot": {{"cluster": "cp", "pollTimeoutMs": {poll_ms},
                                  "maxStalenessSeconds": {stale_s}}}}}"#
            )
        };
        assert!(err(&with(30_000, 30)).contains("snapshot.maxStalenessSeconds"));
        assert!(err(&with(1_000, 0)).contains("snapshot.maxStalenessSeconds"));
        assert!(Config::parse(with(1_000, 2).as_bytes()).is_ok());
    }
    #[test]
    fn tenancy_needs_a_way_to_own_namespaces() {
        assert!(err(r#"{"tenancy": {"tenant": {"static": "a"}}}"#).contains("namespaceLabel"));
        assert!(err(
            r#"{"tenancy": {"tenant": {"header": "bad header"}, "staticNamespaces": {"a": []}}}"#
        )
        .contains("header"));
        assert!(err(
            r#"{"tenancy": {"tenant": {"static": "a"}, "staticNamespaces": {"a": []}, "allowInteractivePaths": true}}"#
        )
        .contains("allowPodScopedPaths"));
    }

    #[test]
    fn malformed_json_is_an_error_not_a_default() {
        assert!(Config::parse(b"{").is_err());
        assert!(Config::parse(b"[]").is_err());
        assert!(err(r#"{"passThrough": true, "maxJsonBodyBytes": 0}"#).contains("maxJsonBodyBytes"));
    }
}
