//! Which virtual clusters exist and how to reach their apiservers:
//! `--virtual-clusters FILE`, a YAML (or JSON) document
//!
//! ```yaml
//! virtualClusters:
//! - name: k8s1                      # the tenant its tokens become
//!   hostNamespace: vcluster-k8s1    # where its pods run on the host
//!   # issuer: https://…            # its tokens' `iss`; default: asked from its
//!   #                               # apiserver (/.well-known/openid-configuration)
//!   # audiences: [kubelet-scope]   # default: --authz-audience; [] = the apiserver's
//!   # kubeconfigSecret: {name: vc-k8s1, key: config}   # the default, in hostNamespace
//!   # kubeconfigFile: /path         # instead of the Secret
//!   # server: https://k8s1.vcluster-k8s1.svc           # instead of the kubeconfig's
//!   # tlsServerName: …              # the name its certificate must carry
//! ```
//!
//! vcluster writes the kubeconfig of its syncer into the Secret `vc-<name>` of its
//! host namespace (key `config`), with the server `https://localhost:8443`, which
//! only its own pod reaches: a Secret whose kubeconfig points at a loopback address
//! is refused until `server` names the vcluster's Service.
//!
//! Owns the file format, its validation and turning an entry into a client of that
//! apiserver (reading the Secret through the host's client). It does not decide what
//! a virtual cluster's tokens are worth: that is `issuers`'.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Names a [`Reviewer`](super::token_review::Reviewer) may not take: they name the
/// host's and the snapshot's in metrics.
pub const RESERVED_NAMES: [&str; 2] = ["host", "snapshot"];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    virtual_clusters: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Entry {
    name: String,
    host_namespace: String,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    audiences: Option<Vec<String>>,
    #[serde(default)]
    kubeconfig_secret: Option<SecretRef>,
    #[serde(default)]
    kubeconfig_file: Option<PathBuf>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    tls_server_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRef {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

/// One virtual cluster, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualCluster {
    pub name: String,
    pub host_namespace: String,
    pub issuer: Option<String>,
    /// `None`: the server's `--authz-audience`.
    pub audiences: Option<Vec<String>>,
    pub kubeconfig: KubeconfigSource,
    pub server: Option<axum::http::Uri>,
    pub tls_server_name: Option<String>,
}

/// Where a virtual cluster's kubeconfig is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigSource {
    /// A key of a Secret of the host cluster (in the virtual cluster's host namespace).
    Secret {
        namespace: String,
        name: String,
        key: String,
    },
    File(PathBuf),
}

impl std::fmt::Display for KubeconfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KubeconfigSource::Secret {
                namespace,
                name,
                key,
            } => write!(f, "Secret {namespace}/{name} key {key:?}"),
            KubeconfigSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// A DNS-1123 label, as namespaces and vcluster names are.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Parses and validates the file's text; the error names the entry and the field.
pub fn parse(text: &str) -> Result<Vec<VirtualCluster>, String> {
    let file: File = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let mut names = BTreeSet::new();
    file.virtual_clusters
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let at = format!("virtualClusters[{i}] ({:?})", e.name);
            if !is_dns_label(&e.name) {
                return Err(format!("{at}: name must be a DNS label"));
            }
            if RESERVED_NAMES.contains(&e.name.as_str()) {
                return Err(format!("{at}: the name {:?} is reserved", e.name));
            }
            if !names.insert(e.name.clone()) {
                return Err(format!("{at}: a second virtual cluster of that name"));
            }
            if !is_dns_label(&e.host_namespace) {
                return Err(format!("{at}: hostNamespace must be a namespace name"));
            }
            if e.issuer.as_deref().is_some_and(str::is_empty) {
                return Err(format!(
                    "{at}: issuer is empty (leave it out to discover it)"
                ));
            }
            if let Some(a) = &e.audiences {
                if a.iter().any(String::is_empty) {
                    return Err(format!("{at}: an empty audience"));
                }
            }
            let kubeconfig = match (e.kubeconfig_secret, e.kubeconfig_file) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "{at}: kubeconfigSecret or kubeconfigFile, not both"
                    ))
                }
                (None, Some(path)) => KubeconfigSource::File(path),
                (secret, None) => {
                    let secret = secret.unwrap_or_default();
                    KubeconfigSource::Secret {
                        namespace: e.host_namespace.clone(),
                        name: secret.name.unwrap_or_else(|| format!("vc-{}", e.name)),
                        key: secret.key.unwrap_or_else(|| "config".into()),
                    }
                }
            };
            let server = match e.server {
                Some(s) => Some(
                    s.parse::<axum::http::Uri>()
                        .ok()
                        .filter(|u| u.scheme_str() == Some("https") && u.host().is_some())
                        .ok_or_else(|| format!("{at}: server {s:?} is not an https:// URL"))?,
                ),
                None => None,
            };
            Ok(VirtualCluster {
                name: e.name,
                host_namespace: e.host_namespace,
                issuer: e.issuer,
                audiences: e.audiences,
                kubeconfig,
                server,
                tls_server_name: e.tls_server_name,
            })
        })
        .collect()
}

/// Reads and validates `path`.
pub fn read(path: &Path) -> Result<Vec<VirtualCluster>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A client of the virtual cluster's apiserver, and a fingerprint of what it was
/// built from (to tell whether a reload changed anything). `host` reads the
/// kubeconfig Secret.
pub async fn client(
    vc: &VirtualCluster,
    host: Option<&Client>,
) -> Result<(Client, Vec<u8>), String> {
    let text = match &vc.kubeconfig {
        KubeconfigSource::File(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?,
        KubeconfigSource::Secret {
            namespace,
            name,
            key,
        } => {
            let host = host.ok_or("no host client to read the kubeconfig Secret with")?;
            let secret = Api::<Secret>::namespaced(host.clone(), namespace)
                .get(name)
                .await
                .map_err(|e| format!("{}: {e}", vc.kubeconfig))?;
            let bytes = secret
                .data
                .and_then(|mut d| d.remove(key))
                .ok_or_else(|| format!("{}: no such key", vc.kubeconfig))?;
            String::from_utf8(bytes.0).map_err(|_| format!("{}: not UTF-8", vc.kubeconfig))?
        }
    };
    let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|e| format!("{}: {e}", vc.kubeconfig))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("{}: {e}", vc.kubeconfig))?;
    match &vc.server {
        Some(server) => config.cluster_url = server.clone(),
        None if matches!(vc.kubeconfig, KubeconfigSource::Secret { .. })
            && is_loopback(&config.cluster_url) =>
        {
            return Err(format!(
                "{}: the kubeconfig's server {} is reachable only from the vcluster's own pod \
                 (vcluster's default): set `server` to its Service, e.g. https://{}.{}.svc",
                vc.kubeconfig, config.cluster_url, vc.name, vc.host_namespace
            ));
        }
        None => {}
    }
    if let Some(name) = &vc.tls_server_name {
        config.tls_server_name = Some(name.clone());
    }
    let fingerprint = {
        let mut h = Sha256::new();
        h.update(text.as_bytes());
        h.update(config.cluster_url.to_string().as_bytes());
        h.finalize().to_vec()
    };
    let client = Client::try_from(config).map_err(|e| format!("{}: {e}", vc.kubeconfig))?;
    Ok((client, fingerprint))
}

fn is_loopback(url: &axum::http::Uri) -> bool {
    matches!(
        url.host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']')),
        Some("localhost" | "127.0.0.1" | "::1")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_entry_reads_vclusters_own_secret() {
        let vcs =
            parse("virtualClusters:\n- {name: k8s1, hostNamespace: vcluster-k8s1}\n").unwrap();
        assert_eq!(
            vcs,
            [VirtualCluster {
                name: "k8s1".into(),
                host_namespace: "vcluster-k8s1".into(),
                issuer: None,
                audiences: None,
                kubeconfig: KubeconfigSource::Secret {
                    namespace: "vcluster-k8s1".into(),
                    name: "vc-k8s1".into(),
                    key: "config".into()
                },
                server: None,
                tls_server_name: None,
            }]
        );
        assert_eq!(parse("virtualClusters: []").unwrap(), []);
    }

    #[test]
    fn every_field_is_read() {
        let vcs = parse(
            r#"{"virtualClusters": [{"name": "a", "hostNamespace": "h", "issuer": "https://a",
                "audiences": [], "kubeconfigFile": "/k", "server": "https://a.h.svc:443",
                "tlsServerName": "a"}]}"#,
        )
        .unwrap();
        let a = &vcs[0];
        assert_eq!(a.issuer.as_deref(), Some("https://a"));
        assert_eq!(a.audiences.as_deref(), Some(&[][..]));
        assert_eq!(a.kubeconfig, KubeconfigSource::File("/k".into()));
        assert_eq!(
            a.server.as_ref().unwrap().to_string(),
            "https://a.h.svc:443/"
        );
        assert_eq!(a.tls_server_name.as_deref(), Some("a"));
        let s = parse("virtualClusters:\n- {name: a, hostNamespace: h, kubeconfigSecret: {name: reviewer, key: kc}}").unwrap();
        assert_eq!(
            s[0].kubeconfig,
            KubeconfigSource::Secret {
                namespace: "h".into(),
                name: "reviewer".into(),
                key: "kc".into()
            }
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, expected) in [
            ("virtualClusters:\n- {name: A, hostNamespace: h}", "DNS label"),
            ("virtualClusters:\n- {name: host, hostNamespace: h}", "reserved"),
            (
                "virtualClusters:\n- {name: a, hostNamespace: h}\n- {name: a, hostNamespace: g}",
                "second",
            ),
            ("virtualClusters:\n- {name: a, hostNamespace: H_}", "hostNamespace"),
            ("virtualClusters:\n- {name: a, hostNamespace: h, issuer: ''}", "issuer"),
            ("virtualClusters:\n- {name: a, hostNamespace: h, audiences: ['']}", "audience"),
            (
                "virtualClusters:\n- {name: a, hostNamespace: h, kubeconfigFile: /k, kubeconfigSecret: {}}",
                "not both",
            ),
            ("virtualClusters:\n- {name: a, hostNamespace: h, server: 'http://x'}", "https://"),
            ("virtualClusters:\n- {name: a, hostNamespace: h, hostnamespace: h}", "hostnamespace"),
            ("virtualCluster: []", "virtualCluster"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    /// The `virtual-clusters.yaml` of the ConfigMap `kubelet-scope-virtual-clusters`
    /// in a manifest of deploy/.
    fn shipped(manifest: &str) -> String {
        let path = format!("{}/../deploy/{manifest}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&text)
            .map(|doc| serde_norway::Value::deserialize(doc).unwrap())
            .collect();
        docs.iter()
            .find(|doc| doc["metadata"]["name"] == "kubelet-scope-virtual-clusters")
            .and_then(|doc| {
                doc["data"]["virtual-clusters.yaml"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no virtual clusters in {path}"))
    }

    #[test]
    fn the_shipped_lists_are_valid() {
        assert_eq!(parse(&shipped("base/control-plane.yaml")).unwrap(), []);
        let example = parse(&shipped("examples/virtual-cluster.yaml")).unwrap();
        assert_eq!(example[0].name, "k8s1");
        assert_eq!(
            example[0].server.as_ref().unwrap().to_string(),
            "https://k8s1.vcluster-k8s1.svc/"
        );
    }

    #[test]
    fn loopback_servers_are_recognised() {
        for (url, loopback) in [
            ("https://localhost:8443", true),
            ("https://127.0.0.1:8443", true),
            ("https://[::1]:8443", true),
            ("https://k8s1.vcluster-k8s1.svc", false),
        ] {
            assert_eq!(is_loopback(&url.parse().unwrap()), loopback, "{url}");
        }
    }
}
