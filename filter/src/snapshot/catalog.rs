//! The compiled form of (configuration, snapshot): everything a request needs,
//! computed once per snapshot so that the per-line cost is at most one hash lookup.
//!
//! A [`Catalog`] is immutable and shared (`Rc`) by every request of a VM; a
//! [`RequestScope`] adds the request's tenant to it: a tenant of the host (by
//! namespace), or a virtual cluster, which sees its own pods only, under the names
//! it knows them by ([`VirtualPodEntry`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

/// The namespace lookup runs once per series: foldhash is several times faster
/// than SipHash on short keys and, seeded per process, still resists crafted
/// namespace names colliding on purpose.
type Hasher = foldhash::fast::RandomState;

use crate::config::{Config, EmptyNamespaceSeries, InjectConfig, NonNamespacedSeries, OnConflict};
use crate::prometheus::labels::escape_value_into;
use crate::snapshot::{Snapshot, VirtualPod};

/// One label to inject, rendered once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedLabel {
    /// A valid Prometheus label name (checked by the config).
    pub name: Box<[u8]>,
    /// `name="escaped value"`.
    pub rendered: Box<[u8]>,
}

/// What the catalog knows about one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceEntry {
    /// The labels to inject, sorted by name; empty when the namespace carries none
    /// of the configured keys.
    pub labels: Box<[InjectedLabel]>,
    /// `,a="x",b="y"`: the whole injection for the common case of no conflict.
    pub suffix: Box<[u8]>,
    /// Tenants that own the namespace (label value, static lists).
    pub tenants: Box<[Box<str>]>,
}

impl NamespaceEntry {
    pub fn owned_by(&self, tenant: &str) -> bool {
        self.tenants.iter().any(|t| &**t == tenant)
    }
}

/// Injection settings shared by every namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectionRules {
    pub on_conflict: OnConflict,
    /// Every label name any namespace may inject (the config's values): a scraped
    /// label whose name is not in here can never conflict.
    pub names: Box<[Box<[u8]>]>,
}

/// Filtering settings for series that name no tenant namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenancyRules {
    pub non_namespaced: NonNamespacedSeries,
    pub empty_namespace: EmptyNamespaceSeries,
}

/// A host pod of a virtual cluster: its virtual names, as a body writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualPodEntry {
    pub cluster: Box<str>,
    pub namespace: Box<[u8]>,
    pub name: Box<[u8]>,
    pub uid: Box<[u8]>,
    /// The host pod's UID, which cgroup paths (`id` labels) embed.
    pub host_uid: Box<[u8]>,
    /// The same as Prometheus label values (escaped), rendered once.
    pub label_namespace: Box<[u8]>,
    pub label_name: Box<[u8]>,
    pub label_uid: Box<[u8]>,
    /// What a series' values may hold of the host pod, with what replaces it: its
    /// UID in a cgroupfs and in a systemd path (`_` for `-`), and dockershim's
    /// `_<pod>_<namespace>_<uid>_` in a container name; each searcher built once.
    pub host_uid_needle: Needle,
    pub uid_systemd_needle: Needle,
    pub uid_systemd: Box<[u8]>,
    pub docker_needle: Needle,
    pub docker_virtual: Box<[u8]>,
}

/// A byte string and its `memmem` searcher (building one costs more than a search:
/// a series' values are searched for the same few strings again and again).
#[derive(Debug, Clone)]
pub struct Needle {
    pub finder: memchr::memmem::Finder<'static>,
}

impl Needle {
    fn new(bytes: &[u8]) -> Needle {
        Needle {
            finder: memchr::memmem::Finder::new(bytes).into_owned(),
        }
    }
}

impl PartialEq for Needle {
    fn eq(&self, other: &Needle) -> bool {
        self.finder.needle() == other.finder.needle()
    }
}

impl Eq for Needle {}

impl VirtualPodEntry {
    /// `pod`, the host pod `host_name` of `host_namespace`.
    fn new(host_namespace: &str, host_name: &str, pod: &VirtualPod) -> VirtualPodEntry {
        let label = |v: &str| {
            let mut out = Vec::with_capacity(v.len());
            escape_value_into(v, &mut out);
            out.into_boxed_slice()
        };
        let systemd = |v: &str| v.replace('-', "_").into_bytes().into_boxed_slice();
        let docker = |name: &str, ns: &str, uid: &str| format!("_{name}_{ns}_{uid}_").into_bytes();
        VirtualPodEntry {
            cluster: pod.cluster.as_str().into(),
            namespace: pod.namespace.as_bytes().into(),
            name: pod.name.as_bytes().into(),
            uid: pod.uid.as_bytes().into(),
            host_uid: pod.host_uid.as_bytes().into(),
            label_namespace: label(&pod.namespace),
            label_name: label(&pod.name),
            label_uid: label(&pod.uid),
            host_uid_needle: Needle::new(pod.host_uid.as_bytes()),
            uid_systemd_needle: Needle::new(&systemd(&pod.host_uid)),
            uid_systemd: systemd(&pod.uid),
            docker_needle: Needle::new(&docker(host_name, host_namespace, &pod.host_uid)),
            docker_virtual: docker(&pod.name, &pod.namespace, &pod.uid).into(),
        }
    }
}

/// One host namespace's virtual pods, by host pod name.
type VirtualPodsOf = HashMap<Box<[u8]>, VirtualPodEntry, Hasher>;

/// Where a namespace's entry is in its [`Catalog`]: what a caller keeps to
/// skip the hash lookup when the next series names the same namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryId(usize);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// Namespace name → its index in `entries`.
    namespaces: HashMap<Box<[u8]>, EntryId, Hasher>,
    entries: Vec<NamespaceEntry>,
    tenants: HashSet<Box<str>, Hasher>,
    injection: Option<InjectionRules>,
    tenancy: Option<TenancyRules>,
    /// Host namespace → host pod name → the pod as its virtual cluster knows it.
    virtual_pods: HashMap<Box<[u8]>, VirtualPodsOf, Hasher>,
}

impl Catalog {
    /// Compiles a validated config with the current snapshot, if any.
    pub fn new(config: &Config, snapshot: Option<&Snapshot>) -> Catalog {
        let mut namespaces: HashMap<Box<[u8]>, EntryId, Hasher> = HashMap::default();
        let mut entries: Vec<NamespaceEntry> = Vec::new();
        let mut tenants: HashSet<Box<str>, Hasher> = HashSet::default();

        if let Some(snapshot) = snapshot {
            for (name, ns) in &snapshot.namespaces {
                let mut entry = NamespaceEntry::default();
                if let Some(inject) = &config.inject {
                    (entry.labels, entry.suffix) = injected_labels(inject, &ns.labels);
                }
                if let Some(key) = config
                    .tenancy
                    .as_ref()
                    .and_then(|t| t.namespace_label.as_ref())
                {
                    if let Some(tenant) = ns.labels.get(key).filter(|t| !t.is_empty()) {
                        entry.tenants = vec![tenant.as_str().into()].into();
                        tenants.insert(tenant.as_str().into());
                    }
                }
                namespaces.insert(name.as_bytes().into(), EntryId(entries.len()));
                entries.push(entry);
            }
        }

        if let Some(tenancy) = &config.tenancy {
            for (tenant, owned) in &tenancy.static_namespaces {
                tenants.insert(tenant.as_str().into());
                for ns in owned {
                    let id = *namespaces.entry(ns.as_bytes().into()).or_insert_with(|| {
                        entries.push(NamespaceEntry::default());
                        EntryId(entries.len() - 1)
                    });
                    let Some(entry) = entries.get_mut(id.0) else {
                        continue;
                    };
                    if !entry.owned_by(tenant) {
                        let mut list = entry.tenants.to_vec();
                        list.push(tenant.as_str().into());
                        entry.tenants = list.into();
                    }
                }
            }
        }

        let mut virtual_pods: HashMap<_, VirtualPodsOf, Hasher> = HashMap::default();
        for (key, pod) in snapshot.map(|s| &s.virtual_pods).into_iter().flatten() {
            if let Some((ns, name)) = key.split_once('/') {
                virtual_pods
                    .entry(ns.as_bytes().into())
                    .or_default()
                    .insert(name.as_bytes().into(), VirtualPodEntry::new(ns, name, pod));
            }
        }

        Catalog {
            namespaces,
            entries,
            tenants,
            virtual_pods,
            injection: config.inject.as_ref().map(|inject| InjectionRules {
                on_conflict: inject.on_conflict,
                names: inject
                    .labels
                    .values()
                    .map(|n| n.as_bytes().into())
                    .collect(),
            }),
            tenancy: config.tenancy.as_ref().map(|t| TenancyRules {
                non_namespaced: t.non_namespaced_series,
                empty_namespace: t.empty_namespace_series,
            }),
        }
    }

    pub fn namespace(&self, name: &[u8]) -> Option<&NamespaceEntry> {
        self.namespace_id(name).and_then(|id| self.entry(id))
    }

    pub fn namespace_id(&self, name: &[u8]) -> Option<EntryId> {
        self.namespaces.get(name).copied()
    }

    /// The entry `id` (from this catalog's [`namespace_id`](Self::namespace_id)).
    pub fn entry(&self, id: EntryId) -> Option<&NamespaceEntry> {
        self.entries.get(id.0)
    }

    /// True when `tenant` owns at least one namespace (or is listed statically).
    pub fn knows_tenant(&self, tenant: &str) -> bool {
        self.tenants.contains(tenant)
    }

    pub fn injection(&self) -> Option<&InjectionRules> {
        self.injection.as_ref()
    }

    pub fn tenancy(&self) -> Option<TenancyRules> {
        self.tenancy
    }

    /// The host pod `name` of host namespace `namespace`, if a virtual cluster's
    /// syncer made it.
    pub fn virtual_pod(&self, namespace: &[u8], name: &[u8]) -> Option<&VirtualPodEntry> {
        self.virtual_pods.get(namespace)?.get(name)
    }
}

/// The labels `inject` takes from a namespace's `labels`, rendered and sorted by
/// name, and their concatenation `,a="x",b="y"`.
fn injected_labels(
    inject: &InjectConfig,
    labels: &BTreeMap<String, String>,
) -> (Box<[InjectedLabel]>, Box<[u8]>) {
    let mut rendered_labels: Vec<InjectedLabel> = inject
        .labels
        .iter()
        .filter_map(|(key, prom_name)| {
            let value = labels.get(key)?;
            let mut rendered = Vec::with_capacity(prom_name.len() + value.len() + 3);
            rendered.extend_from_slice(prom_name.as_bytes());
            rendered.extend_from_slice(b"=\"");
            escape_value_into(value, &mut rendered);
            rendered.push(b'"');
            Some(InjectedLabel {
                name: prom_name.as_bytes().into(),
                rendered: rendered.into(),
            })
        })
        .collect();
    rendered_labels.sort_by(|a, b| a.name.cmp(&b.name));
    let mut suffix = Vec::new();
    for label in &rendered_labels {
        suffix.push(b',');
        suffix.extend_from_slice(&label.rendered);
    }
    (rendered_labels.into(), suffix.into())
}

/// What one request may see: the catalog plus the request's tenant.
///
/// `tenant` is `Some` exactly when tenancy is configured (the caller resolved the
/// tenant before building the scope); then only the tenant's namespaces are visible.
///
/// A virtual cluster's scope (`virtual_cluster`) sees only the host pods its syncer
/// made, found by [`RequestScope::virtual_pod`], and nothing else namespaced.
#[derive(Debug, Clone)]
pub struct RequestScope {
    catalog: Rc<Catalog>,
    tenant: Option<Box<str>>,
    virtual_cluster: Option<Box<str>>,
}

/// The decision for one namespace value found in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Visible,
    Hidden,
}

impl RequestScope {
    pub fn new(catalog: Rc<Catalog>, tenant: Option<&str>) -> RequestScope {
        let tenant = if catalog.tenancy.is_some() {
            tenant.map(Into::into)
        } else {
            None
        };
        RequestScope {
            catalog,
            tenant,
            virtual_cluster: None,
        }
    }

    /// The scope of a tenant that is the virtual cluster `cluster` (tenancy must be
    /// configured; without it the scope sees everything, as [`RequestScope::new`]'s).
    pub fn for_virtual_cluster(catalog: Rc<Catalog>, cluster: &str) -> RequestScope {
        let virtual_cluster = catalog.tenancy.is_some().then(|| cluster.into());
        RequestScope {
            catalog,
            tenant: None,
            virtual_cluster,
        }
    }

    /// A request's scope: its virtual cluster's when it names one (not empty), else
    /// its tenant's.
    pub fn of_request(
        catalog: Rc<Catalog>,
        tenant: Option<&str>,
        virtual_cluster: Option<&str>,
    ) -> RequestScope {
        match virtual_cluster.filter(|v| !v.is_empty()) {
            Some(cluster) => RequestScope::for_virtual_cluster(catalog, cluster),
            None => RequestScope::new(catalog, tenant),
        }
    }

    /// True when names must be translated for a virtual cluster.
    pub fn is_virtual(&self) -> bool {
        self.virtual_cluster.is_some()
    }

    /// The host pod `name` of host namespace `namespace` as this scope's virtual
    /// cluster knows it; `None` for any other pod, and in every other scope.
    pub fn virtual_pod(&self, namespace: &[u8], name: &[u8]) -> Option<&VirtualPodEntry> {
        let cluster = self.virtual_cluster.as_deref()?;
        self.catalog
            .virtual_pod(namespace, name)
            .filter(|p| &*p.cluster == cluster)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// True when bodies must be filtered for a tenant.
    pub fn filtering(&self) -> bool {
        self.catalog.tenancy.is_some()
    }

    /// Visibility of an object or series that has `namespace` (raw bytes, as found in
    /// the body), or none when `None`. Without tenancy everything is visible.
    /// Under tenancy with no resolved tenant nothing namespaced is visible.
    pub fn visibility(&self, namespace: Option<&[u8]>) -> Visibility {
        self.lookup(namespace).0
    }

    /// [`visibility`](Self::visibility) and the namespace's catalog entry, from one
    /// hash lookup: the per-series cost of the Prometheus rewriter.
    pub fn lookup(&self, namespace: Option<&[u8]>) -> (Visibility, Option<EntryId>) {
        let id = namespace.and_then(|ns| self.catalog.namespace_id(ns));
        let entry = id.and_then(|id| self.catalog.entry(id));
        let Some(rules) = self.catalog.tenancy else {
            return (Visibility::Visible, id);
        };
        let visible = match namespace {
            None => rules.non_namespaced == NonNamespacedSeries::Keep,
            Some([]) => rules.empty_namespace == EmptyNamespaceSeries::Keep,
            // A virtual cluster sees a pod's data only through `virtual_pod`.
            Some(_) => match (&self.tenant, entry) {
                (Some(tenant), Some(entry)) => entry.owned_by(tenant),
                _ => false,
            },
        };
        let visibility = if visible {
            Visibility::Visible
        } else {
            Visibility::Hidden
        };
        (visibility, id)
    }

    /// Visibility of a namespaced object that is never "non-namespaced" (JSON pods):
    /// a missing namespace is hidden regardless of `nonNamespacedSeries`.
    pub fn namespace_visible(&self, namespace: &[u8]) -> bool {
        !namespace.is_empty() && self.visibility(Some(namespace)) == Visibility::Visible
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(config: &str, snapshot: &str) -> Catalog {
        Catalog::new(
            &Config::parse(config.as_bytes()).unwrap(),
            Some(&Snapshot::parse(snapshot.as_bytes()).unwrap()),
        )
    }

    const SNAP: &str = r#"{"version":"1","generatedAt":"t","namespaces":{
        "shop":{"labels":{"team":"front\"end","tenant":"acme","cost":"42"}},
        "db":{"labels":{"tenant":"acme"}},
        "other":{"labels":{"tenant":"globex","team":"ops"}}}}"#;

    #[test]
    fn suffixes_are_rendered_once_sorted_and_escaped() {
        let c = catalog(
            r#"{"inject":{"labels":{"team":"team","cost":"cost_centre"}},"snapshot":{"cluster":"cp"}}"#,
            SNAP,
        );
        let shop = c.namespace(b"shop").unwrap();
        assert_eq!(&*shop.suffix, br#",cost_centre="42",team="front\"end""#);
        assert_eq!(shop.labels.len(), 2);
        assert!(c.namespace(b"db").unwrap().suffix.is_empty());
        assert!(c.namespace(b"nope").is_none());
        assert_eq!(c.injection().unwrap().names.len(), 2);
    }

    #[test]
    fn tenants_come_from_the_label_and_static_lists() {
        let c = catalog(
            r#"{"tenancy":{"tenant":{"header":"x-tenant"},"namespaceLabel":"tenant",
                 "staticNamespaces":{"acme":["shared"],"initech":["db"]}},
                "snapshot":{"cluster":"cp"}}"#,
            SNAP,
        );
        let owners = |ns: &str| c.namespace(ns.as_bytes()).map(|e| e.tenants.to_vec());
        assert_eq!(owners("shop"), Some(vec!["acme".into()]));
        assert_eq!(owners("shared"), Some(vec!["acme".into()]));
        assert_eq!(owners("db"), Some(vec!["acme".into(), "initech".into()]));
        assert_eq!(owners("other"), Some(vec!["globex".into()]));
        assert!(c.knows_tenant("globex") && c.knows_tenant("initech"));
        assert!(!c.knows_tenant("nobody"));

        let acme = RequestScope::new(Rc::new(c), Some("acme"));
        assert!(acme.filtering());
        assert_eq!(acme.visibility(Some(b"shop")), Visibility::Visible);
        assert_eq!(acme.visibility(Some(b"other")), Visibility::Hidden);
        assert_eq!(acme.visibility(Some(b"unknown")), Visibility::Hidden);
        assert_eq!(acme.visibility(Some(b"")), Visibility::Hidden);
        assert_eq!(acme.visibility(None), Visibility::Visible);
        assert!(!acme.namespace_visible(b""));
    }

    #[test]
    fn without_tenancy_everything_is_visible() {
        let c = catalog(
            r#"{"inject":{"labels":{"team":"team"}},"snapshot":{"cluster":"cp"}}"#,
            SNAP,
        );
        let scope = RequestScope::new(Rc::new(c), Some("ignored"));
        assert!(!scope.filtering());
        assert_eq!(scope.visibility(Some(b"other")), Visibility::Visible);
    }
}
