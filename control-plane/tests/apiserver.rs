//! `kubelet-scope serve` against a real kube-apiserver v1.20 + etcd (no mocks).
//!
//! Ignored by plain `cargo test`: they need the apiserver built from Debian's
//! sources by `hack/kube-apiserver.sh build` (cached in .cache/). Run them with
//! `make control-plane-it` (or `cargo test -p kubelet-scope --test apiserver -- --ignored`).
//!
//! Each test owns its cluster and its `serve`; what they share (starting them,
//! long-polls, waits on metrics) lives in `support/`. They change the cluster only
//! through the apiserver, as users do.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{pinned_kind, Scope};
use kube::{Api, Client};
use kubelet_scope_filter::snapshot::Snapshot;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use support::{eventually, Cluster, Serve, EXPORT_ARGS};

/// The issue's bound for "the snapshot follows".
const FOLLOW: Duration = Duration::from_secs(1);
/// Reconnects go through kube-rs' backoff (0.8 s doubling, jittered).
const RECOVER: Duration = Duration::from_secs(40);

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn create_ns(client: &Client, name: &str, l: &[(&str, &str)]) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(l)),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

async fn patch_labels(client: &Client, name: &str, l: serde_json::Value) {
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": l}})),
        )
        .await
        .unwrap();
}

/// Deletes a namespace and, since there is no controller-manager to do it,
/// empties its finalizers so that it really goes away.
async fn delete_ns(client: &Client, name: &str) {
    let api = Api::<Namespace>::all(client.clone());
    api.delete(name, &DeleteParams::default()).await.unwrap();
    let mut ns = api.get(name).await.unwrap();
    ns.spec.get_or_insert_default().finalizers = Some(vec![]);
    api.replace_subresource("finalize", name, &PostParams::default(), &ns)
        .await
        .unwrap();
    assert!(
        api.get_opt(name).await.unwrap().is_none(),
        "namespace {name} still exists"
    );
}

/// Makes a change while a long-poll waits on `version`; asserts the long-poll is
/// answered 200 within [`FOLLOW`] of issuing the API call; returns the new snapshot.
async fn change_and_follow<F: std::future::Future<Output = ()>>(
    serve: &Serve,
    version: &str,
    change: F,
) -> Snapshot {
    let poll = serve.long_poll(version, 30);
    // Let the request reach the server and start waiting.
    serve
        .wait_counted(
            "long-poll waiting",
            "kubelet_scope_long_polls_waiting",
            Duration::from_secs(5),
        )
        .await;
    let changed = Instant::now();
    change.await;
    let (status, answered) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("long-poll not answered")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    // Measured from issuing the API call (so it includes the apiserver's own
    // latency): the watch event can arrive before the API response does.
    let lag = answered.saturating_duration_since(changed);
    eprintln!("long-poll answered {lag:?} after the change was issued");
    assert!(
        lag < FOLLOW,
        "long-poll answered {lag:?} after the change was issued"
    );
    let s = serve.current().await;
    assert_ne!(s.version, version);
    s
}

/// etcd and apiserver `main` (with `extra_args`) holding `namespaces` (name,
/// labels), and `serve` watching it as the admin, ready.
async fn watched(
    extra_args: &str,
    namespaces: &[(&str, &[(&str, &str)])],
) -> (Cluster, Client, Serve) {
    let cluster = Cluster::start(extra_args);
    let admin = cluster.admin("main").await;
    for (name, labels) in namespaces {
        create_ns(&admin, name, labels).await;
    }
    let serve = cluster.serve(EXPORT_ARGS, cluster.port("main"));
    serve.wait_ready(Duration::from_secs(20)).await;
    (cluster, admin, serve)
}

#[tokio::test]
#[ignore = "needs a real kube-apiserver: make control-plane-it"]
async fn follows_namespace_changes_and_wakes_long_polls() {
    let (_cluster, admin, serve) = watched("", &[]).await;
    // The apiserver's bootstrap controller creates the system namespaces a moment
    // after it is ready (on a loaded machine, after the first list): they follow.
    let systems = ["default", "kube-system", "kube-public"];
    let logs = || serve.logs();
    eventually(
        "the system namespaces in the snapshot",
        RECOVER,
        logs,
        || async {
            let s = serve.current().await;
            systems.iter().all(|n| s.namespaces.contains_key(*n))
        },
    )
    .await;
    let s0 = serve.current().await;
    for system in systems {
        assert!(
            s0.namespaces.contains_key(system),
            "{system} missing: {s0:?}"
        );
    }
    let s1 = a_created_namespace_brings_exported_keys_only(&serve, &admin, &s0).await;
    let s2 = an_exported_label_change_is_followed(&serve, &admin, &s1).await;
    unexported_edits_keep_the_version(&serve, &admin, &s2).await;
    let s4 = removal_and_deletion_are_followed(&serve, &admin, &s2).await;
    metrics_show_the_snapshot_and_no_restart(&serve, &s4).await;
}

/// Create: exported keys only.
async fn a_created_namespace_brings_exported_keys_only(
    serve: &Serve,
    admin: &Client,
    s0: &Snapshot,
) -> Snapshot {
    let s1 = change_and_follow(
        serve,
        &s0.version,
        create_ns(
            admin,
            "shop",
            &[
                ("team", "frontend"),
                ("tenant", "acme"),
                ("owner", "bob"),
                ("acme.io/cost", "42"),
            ],
        ),
    )
    .await;
    assert_eq!(
        s1.namespaces["shop"].labels,
        labels(&[
            ("team", "frontend"),
            ("tenant", "acme"),
            ("acme.io/cost", "42")
        ])
    );
    s1
}

/// Relabel.
async fn an_exported_label_change_is_followed(
    serve: &Serve,
    admin: &Client,
    s1: &Snapshot,
) -> Snapshot {
    let s2 = change_and_follow(
        serve,
        &s1.version,
        patch_labels(admin, "shop", json!({"team": "checkout"})),
    )
    .await;
    assert_eq!(s2.namespaces["shop"].labels["team"], "checkout");
    s2
}

/// Unrelated label edits (unexported keys) do not bump the version: a long-poll
/// held on it times out with 304.
async fn unexported_edits_keep_the_version(serve: &Serve, admin: &Client, s2: &Snapshot) {
    patch_labels(admin, "shop", json!({"owner": "alice", "other.io/x": "1"})).await;
    let r = serve.snapshot(Some(&s2.version), Some(2)).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.etag.as_deref(), Some(s2.version.as_str()));
    let live = Api::<Namespace>::all(admin.clone())
        .get("shop")
        .await
        .unwrap();
    assert_eq!(
        live.metadata.labels.unwrap()["owner"],
        "alice",
        "the edit did happen"
    );
    assert_eq!(serve.current().await.version, s2.version);
}

/// Removing an exported label is a change, and so is deleting the namespace.
async fn removal_and_deletion_are_followed(
    serve: &Serve,
    admin: &Client,
    s2: &Snapshot,
) -> Snapshot {
    let s3 = change_and_follow(
        serve,
        &s2.version,
        patch_labels(admin, "shop", json!({"acme.io/cost": null})),
    )
    .await;
    assert!(!s3.namespaces["shop"].labels.contains_key("acme.io/cost"));

    // Delete (finalized by hand: no controller-manager here).
    let s4 = change_and_follow(serve, &s3.version, delete_ns(admin, "shop")).await;
    assert!(!s4.namespaces.contains_key("shop"));
    s4
}

async fn metrics_show_the_snapshot_and_no_restart(serve: &Serve, s4: &Snapshot) {
    let m = serve.metrics().await;
    assert!(
        m.contains(&format!(
            "kubelet_scope_snapshot_namespaces {}\n",
            s4.namespaces.len()
        )),
        "{m}"
    );
    assert!(
        m.contains(r#"kubelet_scope_http_requests_total{path="/v1/snapshot",code="304"}"#),
        "{m}"
    );
    assert!(m.contains("kubelet_scope_watch_restarts_total 0\n"), "{m}");
}

#[tokio::test]
#[ignore = "needs a real kube-apiserver: make control-plane-it"]
async fn not_ready_until_the_first_list_completes() {
    let cluster = Cluster::etcd("");
    let port = support::free_port();
    // The apiserver is not up yet: serve runs, is healthy, but not ready.
    let serve = cluster.serve(EXPORT_ARGS, port);
    let logs = || serve.logs();
    eventually(
        "watch errors counted",
        Duration::from_secs(10),
        logs,
        || async {
            serve.status("/healthz").await == Some(StatusCode::OK)
                && serve.count("kubelet_scope_watch_errors_total").await >= 1.0
        },
    )
    .await;
    assert_eq!(
        serve.status("/readyz").await,
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
    let r = serve.snapshot(None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(serve.metric("kubelet_scope_ready").await, Some(0.0));

    cluster.start_apiserver("main", Some(port));
    serve.wait_ready(RECOVER).await;
    // The apiserver creates its system namespaces just after it is ready; the
    // watch brings them in.
    eventually(
        "system namespaces",
        Duration::from_secs(10),
        logs,
        || async {
            let s = serve.current().await;
            ["default", "kube-system"]
                .iter()
                .all(|n| s.namespaces.contains_key(*n))
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a real kube-apiserver: make control-plane-it"]
async fn keeps_serving_through_an_apiserver_restart() {
    let (cluster, admin, serve) = watched("", &[("before", &[("team", "a")])]).await;
    let port = cluster.port("main");
    let s0 = serve.current().await;
    assert_eq!(s0.namespaces["before"].labels["team"], "a");

    cluster.stop("main");
    serve
        .wait_counted(
            "watch error counted",
            "kubelet_scope_watch_errors_total",
            Duration::from_secs(10),
        )
        .await;
    // Meanwhile the last snapshot stays served, long-polls keep working.
    assert_eq!(serve.current().await, s0);
    assert_eq!(serve.status("/readyz").await, Some(StatusCode::OK));
    let r = serve.snapshot(Some(&s0.version), Some(1)).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);

    cluster.start_apiserver("main", Some(port));
    patch_labels(&admin, "before", json!({"team": "b"})).await;
    create_ns(&admin, "after", &[("tenant", "t")]).await;
    eventually(
        "snapshot follows after the restart",
        RECOVER,
        || serve.logs(),
        || async {
            let s = serve.current().await;
            s.namespaces
                .get("before")
                .is_some_and(|n| n.labels["team"] == "b")
                && s.namespaces
                    .get("after")
                    .is_some_and(|n| n.labels["tenant"] == "t")
        },
    )
    .await;
    // And it is live again: the next change arrives within the bound.
    let s1 = serve.current().await;
    let s2 = change_and_follow(
        &serve,
        &s1.version,
        patch_labels(&admin, "after", json!({"team": "x"})),
    )
    .await;
    assert_eq!(s2.namespaces["after"].labels["team"], "x");
}

#[tokio::test]
#[ignore = "needs a real kube-apiserver: make control-plane-it"]
async fn relists_after_etcd_compaction_without_losing_events() {
    // Without the watch cache the apiserver serves watches straight from etcd, so a
    // resume from a compacted revision is answered `410 Gone` because of etcd
    // compaction (not because of a fresh watch cache).
    let (cluster, admin, serve) = watched(
        "--watch-cache=false",
        &[
            ("relabelled", &[("team", "a")]),
            ("deleted", &[("team", "gone")]),
        ],
    )
    .await;
    let port = cluster.port("main");
    let s0 = serve.current().await;
    assert!(s0.namespaces.contains_key("deleted"));

    // The watched apiserver goes away; changes happen through a second one on the
    // same etcd; then etcd is compacted past everything serve has seen.
    cluster.stop("main");
    cluster.start_apiserver("other", None);
    let other = cluster.admin("other").await;
    create_ns(&other, "created", &[("team", "new"), ("owner", "x")]).await;
    patch_labels(&other, "relabelled", json!({"team": "b"})).await;
    delete_ns(&other, "deleted").await;
    let revision = cluster.compact_etcd().await;
    assert!(revision > 0);

    cluster.start_apiserver("main", Some(port));
    let logs = || serve.logs();
    eventually("relist after 410", RECOVER, logs, || async {
        serve.count("kubelet_scope_watch_restarts_total").await >= 1.0
            && serve.current().await.namespaces.contains_key("created")
    })
    .await;
    let s1 = serve.current().await;
    assert_eq!(s1.namespaces["created"].labels, labels(&[("team", "new")]));
    assert_eq!(s1.namespaces["relabelled"].labels["team"], "b");
    assert!(!s1.namespaces.contains_key("deleted"), "{s1:?}");
    // The relisted map equals what the apiserver holds.
    let names: Vec<String> = Api::<Namespace>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(s1.namespaces.keys().cloned().collect::<Vec<_>>(), names);
    // …and the relist was caused by the compaction (410 Gone on the resumed watch).
    assert!(serve.logs().contains("too old"), "{}", serve.logs());
}

/// The deploy/ manifest, as typed-agnostic objects.
fn deploy_objects() -> Vec<DynamicObject> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/base/control-plane.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| DynamicObject::deserialize(doc).unwrap())
        .collect()
}

async fn apply(client: &Client, obj: &DynamicObject) {
    let types = obj.types.as_ref().expect("apiVersion/kind");
    let gvk = GroupVersionKind::try_from(types).unwrap();
    let (resource, caps) = pinned_kind(client, &gvk).await.unwrap();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            obj.metadata.namespace.as_deref().expect("namespace"),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.create(&PostParams::default(), obj).await.unwrap();
}

async fn token(client: &Client, namespace: &str, account: &str) -> String {
    token_for(client, namespace, account, "https://kubernetes.default.svc").await
}

/// A token of `namespace:account` for `audience`, as a projected volume holds it.
async fn token_for(client: &Client, namespace: &str, account: &str, audience: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.into()],
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

#[tokio::test]
#[ignore = "needs a real kube-apiserver: make control-plane-it"]
async fn works_with_exactly_the_deploy_cluster_role() {
    let objects = deploy_objects();
    the_deploy_cluster_role_is_list_watch_on_namespaces(&objects);

    let cluster = Cluster::start("");
    let admin = cluster.admin("main").await;
    // Every object of the manifest is accepted by a real apiserver.
    for obj in &objects {
        apply(&admin, obj).await;
    }
    create_ns(&admin, "shop", &[("tenant", "acme")]).await;

    an_unbound_service_account_is_refused(&cluster, &admin).await;
    let kc = the_deploy_service_account_follows(&cluster, &admin).await;
    the_deploy_token_can_do_nothing_else(&kc).await;
    the_deploy_service_account_serves_virtual_pods_by_node(&cluster, &admin, &kc).await;
    the_deploy_arguments_serve_the_snapshot_to_the_daemonset_only(&admin, &kc, &objects, &cluster)
        .await;
}

/// The Deployment's own `--allow-serviceaccount` and `--token-audience`, run with the
/// deploy ServiceAccount (its TokenReviews allowed by the auth-delegator binding):
/// the DaemonSet's token of that audience gets the snapshot; the same account's
/// token for the apiserver (what the kubelet accepts too), or another account's, not.
async fn the_deploy_arguments_serve_the_snapshot_to_the_daemonset_only(
    admin: &Client,
    kc: &Path,
    objects: &[DynamicObject],
    cluster: &Cluster,
) {
    let deployment = objects
        .iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "Deployment"))
        .expect("deploy/ has a Deployment");
    let shipped: Vec<String> = deployment.data["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let auth_args: Vec<&str> = shipped
        .iter()
        .filter(|a| a.starts_with("--allow-serviceaccount=") || a.starts_with("--token-audience="))
        .map(String::as_str)
        .collect();
    assert_eq!(
        auth_args,
        [
            "--allow-serviceaccount=kubelet-scope:kubelet-proxy",
            "--token-audience=kubelet-scope-control-plane"
        ],
        "the Deployment serves the snapshot to the DaemonSet's projected token only"
    );
    for account in ["kubelet-proxy", "prometheus"] {
        create_service_account(admin, "kubelet-scope", account).await;
    }
    let mut args = EXPORT_ARGS.to_vec();
    args.extend(&auth_args);
    let serve = Serve::start(&args, Some(kc), cluster.dir.path());
    serve.wait_ready(Duration::from_secs(20)).await;
    let audience = "kubelet-scope-control-plane";
    let daemonset = token_for(admin, "kubelet-scope", "kubelet-proxy", audience).await;
    assert_eq!(
        serve.snapshot_status_as(Some(&daemonset)).await,
        StatusCode::OK,
        "{}",
        serve.logs()
    );
    let for_the_apiserver = token(admin, "kubelet-scope", "kubelet-proxy").await;
    assert_eq!(
        serve.snapshot_status_as(Some(&for_the_apiserver)).await,
        StatusCode::UNAUTHORIZED
    );
    let other = token_for(admin, "kubelet-scope", "prometheus", audience).await;
    assert_eq!(
        serve.snapshot_status_as(Some(&other)).await,
        StatusCode::FORBIDDEN
    );
}

fn the_deploy_cluster_role_is_list_watch_on_namespaces(objects: &[DynamicObject]) {
    let role = objects
        .iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "ClusterRole"))
        .expect("deploy/ has a ClusterRole");
    assert_eq!(
        role.data["rules"],
        json!([
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}
        ]),
        "the control plane's role is list/watch on namespaces and pods, nothing else"
    );
}

/// With a virtual cluster configured, the deploy ServiceAccount watches the pods
/// vcluster's syncer made (its RBAC suffices) and serves each node its own: a
/// labelled pod in the cluster's host namespace, on node-a, is in node-a's view
/// only; one labelled the same in another namespace is in no view.
async fn the_deploy_service_account_serves_virtual_pods_by_node(
    cluster: &Cluster,
    admin: &Client,
    kc: &Path,
) {
    create_ns(admin, "vcluster-k8s1", &[]).await;
    let synced = |namespace: &str, name: &str| -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace,
                "labels": {"vcluster.loft.sh/managed-by": "k8s1"},
                "annotations": {"vcluster.loft.sh/object-name": "web-1",
                    "vcluster.loft.sh/object-namespace": "shop",
                    "vcluster.loft.sh/object-uid": "virtual-uid-1"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x"}]}
        }))
        .unwrap()
    };
    for (namespace, name) in [("vcluster-k8s1", "web-1-x-shop-x-k8s1"), ("shop", "forged")] {
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin.clone(), namespace)
            .create(&PostParams::default(), &synced(namespace, name))
            .await
            .unwrap();
    }
    let list = cluster.dir.path().join("virtual-clusters.yaml");
    let admin_kc = cluster.kubeconfig(cluster.port("main"), "admin-token", "vc-admin.kubeconfig");
    std::fs::write(
        &list,
        json!({"virtualClusters": [{"name": "k8s1", "hostNamespace": "vcluster-k8s1",
            "kubeconfigFile": admin_kc}]})
        .to_string(),
    )
    .unwrap();
    // Virtual clusters are ext_authz's: their list goes with --authz-listen.
    let authz = format!("127.0.0.1:{}", support::free_port());
    let mut args = EXPORT_ARGS.to_vec();
    args.extend([
        "--authz-listen",
        &authz,
        "--virtual-clusters",
        list.to_str().unwrap(),
    ]);
    let serve = Serve::start(&args, Some(kc), cluster.dir.path());
    serve.wait_ready(Duration::from_secs(20)).await;
    let view = |node: &'static str| {
        let url = format!("{}/v1/snapshot?node={node}", serve.base);
        async move {
            let body = reqwest::get(url).await.unwrap().bytes().await.unwrap();
            Snapshot::parse(&body).unwrap()
        }
    };
    let logs = || serve.logs();
    eventually(
        "node-a's view has the synced pod",
        FOLLOW * 10,
        logs,
        || async { view("node-a").await.virtual_pods.len() == 1 },
    )
    .await;
    let pod = &view("node-a").await.virtual_pods["vcluster-k8s1/web-1-x-shop-x-k8s1"];
    assert_eq!(
        (&*pod.cluster, &*pod.namespace, &*pod.name),
        ("k8s1", "shop", "web-1")
    );
    assert_eq!(pod.uid, "virtual-uid-1");
    assert!(view("node-b").await.virtual_pods.is_empty());
    assert_eq!(
        serve.metric("kubelet_scope_watch_errors_total").await,
        Some(0.0),
        "{}",
        serve.logs()
    );
}

/// A service account without the binding is refused: not ready, errors counted.
async fn an_unbound_service_account_is_refused(cluster: &Cluster, admin: &Client) {
    let unbound = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("unbound".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), "kubelet-scope")
        .create(&PostParams::default(), &unbound)
        .await
        .unwrap();
    let kc = cluster.kubeconfig(
        cluster.port("main"),
        &token(admin, "kubelet-scope", "unbound").await,
        "unbound.kubeconfig",
    );
    let refused = Serve::start(EXPORT_ARGS, Some(&kc), cluster.dir.path());
    refused
        .wait_counted(
            "forbidden watch counted",
            "kubelet_scope_watch_errors_total",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        refused.status("/readyz").await,
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
}

/// The deploy/ service account, bound by the deploy/ ClusterRoleBinding, works;
/// returns its kubeconfig.
async fn the_deploy_service_account_follows(cluster: &Cluster, admin: &Client) -> PathBuf {
    let kc = cluster.kubeconfig(
        cluster.port("main"),
        &token(admin, "kubelet-scope", "kubelet-scope").await,
        "scope.kubeconfig",
    );
    let serve = Serve::start(EXPORT_ARGS, Some(&kc), cluster.dir.path());
    serve.wait_ready(Duration::from_secs(20)).await;
    let s0 = serve.current().await;
    assert_eq!(s0.namespaces["shop"].labels["tenant"], "acme");
    let s1 = change_and_follow(
        &serve,
        &s0.version,
        patch_labels(admin, "shop", json!({"tenant": "globex"})),
    )
    .await;
    assert_eq!(s1.namespaces["shop"].labels["tenant"], "globex");
    assert_eq!(
        serve.metric("kubelet_scope_watch_errors_total").await,
        Some(0.0)
    );
    kc
}

/// And that token can do nothing else.
async fn the_deploy_token_can_do_nothing_else(kc: &Path) {
    let scoped = support::client_for(kc).await;
    let err = Api::<Namespace>::all(scoped.clone())
        .get("shop")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
    let err = Api::<ServiceAccount>::namespaced(scoped, "kubelet-scope")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
}

async fn create_service_account(client: &Client, namespace: &str, name: &str) {
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
}

/// `--allow-serviceaccount`: the snapshot (every namespace with its tenant) only for
/// the DaemonSet's ServiceAccount, as the real apiserver's TokenReview says.
#[tokio::test]
#[ignore = "needs a real kube-apiserver: make control-plane-it"]
async fn the_snapshot_is_only_for_the_allowed_serviceaccount() {
    let cluster = Cluster::start("");
    let admin = cluster.admin("main").await;
    create_ns(&admin, "kubelet-scope", &[]).await;
    create_ns(&admin, "shop", &[("tenant", "acme")]).await;
    for account in ["kubelet-proxy", "prometheus"] {
        create_service_account(&admin, "kubelet-scope", account).await;
    }
    let mut args = EXPORT_ARGS.to_vec();
    args.extend([
        "--allow-serviceaccount",
        "kubelet-scope:kubelet-proxy",
        "--auth-cache-seconds",
        "2",
    ]);
    let serve = cluster.serve(&args, cluster.port("main"));
    serve.wait_ready(Duration::from_secs(20)).await;
    let allowed = token(&admin, "kubelet-scope", "kubelet-proxy").await;
    let other = token(&admin, "kubelet-scope", "prometheus").await;

    assert_eq!(
        serve.snapshot_status_as(None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        serve.snapshot_status_as(Some("not-a-token")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        serve.snapshot_status_as(Some(&other)).await,
        StatusCode::FORBIDDEN
    );
    // A valid token of a user that is no ServiceAccount (the admin) is not allowed.
    assert_eq!(
        serve.snapshot_status_as(Some("admin-token")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        serve.snapshot_status_as(Some(&allowed)).await,
        StatusCode::OK
    );
    // Health and readiness name no namespace and stay open.
    assert_eq!(serve.status("/readyz").await, Some(StatusCode::OK));

    // The ServiceAccount deleted: its token is refused once the cache bounds passed
    // (ours, 2 s here, and the apiserver's own 10 s cache of token successes).
    Api::<ServiceAccount>::namespaced(admin.clone(), "kubelet-scope")
        .delete("kubelet-proxy", &DeleteParams::default())
        .await
        .unwrap();
    let logs = || serve.logs();
    eventually(
        "the deleted account's token refused",
        Duration::from_secs(20),
        logs,
        || async { serve.snapshot_status_as(Some(&allowed)).await == StatusCode::UNAUTHORIZED },
    )
    .await;
}

/// `curl` over HTTPS trusting only the test CA: (status, body).
fn curl_https(ca: &Path, url: &str, token: Option<&str>) -> (String, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .arg(url);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("authorization: Bearer {t}"));
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_owned(), body.to_owned())
}

/// `--tls-cert-file`: the snapshot over HTTPS that a client verifies against the CA
/// (the filter's Envoy cluster does), still behind the ServiceAccount check.
#[tokio::test]
#[ignore = "needs a real kube-apiserver: make control-plane-it"]
async fn the_snapshot_is_served_over_verified_tls() {
    let cluster = Cluster::start("");
    let admin = cluster.admin("main").await;
    create_ns(&admin, "kubelet-scope", &[]).await;
    create_ns(&admin, "shop", &[("tenant", "acme")]).await;
    create_service_account(&admin, "kubelet-scope", "kubelet-proxy").await;
    let dir = cluster.dir.path();
    let (cert, key) = (dir.join("serving.crt"), dir.join("serving.key"));
    let mut args = EXPORT_ARGS.to_vec();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    args.extend([
        "--allow-serviceaccount",
        "kubelet-scope:kubelet-proxy",
        "--tls-cert-file",
        cert,
        "--tls-private-key-file",
        key,
    ]);
    let serve = cluster.serve(&args, cluster.port("main"));
    let url = serve.base.replace("http://", "https://");
    let ca = dir.join("ca.crt");
    let allowed = token(&admin, "kubelet-scope", "kubelet-proxy").await;
    let logs = || serve.logs();
    eventually(
        "HTTPS /readyz 200",
        Duration::from_secs(20),
        logs,
        || async { curl_https(&ca, &format!("{url}/readyz"), None).0 == "200" },
    )
    .await;
    let (status, body) = curl_https(&ca, &format!("{url}/v1/snapshot"), Some(&allowed));
    assert_eq!(status, "200", "{body}");
    assert_eq!(
        Snapshot::parse(body.as_bytes()).unwrap().namespaces["shop"].labels["tenant"],
        "acme"
    );
    assert_eq!(
        curl_https(&ca, &format!("{url}/v1/snapshot"), None).0,
        "401"
    );
    // Plain HTTP gets no snapshot from the TLS listener.
    assert_ne!(serve.status("/v1/snapshot").await, Some(StatusCode::OK));
}
