"""The two worlds of the real-cluster Envoy tests (world: the real kubelet,
apiserver, containers and ServiceAccount tokens of hack/cluster.sh; no stand-in
anywhere); conftest's `real`, `daemonset`, `local` and `world` fixtures start them.
Two shipped configurations run here:
- `daemonset`: deploy/base/kubelet-proxy.yaml's envoy.yaml as shipped (mounts and
  addresses mapped as test_daemonset maps them), with the control plane of
  deploy/base/control-plane.yaml's arguments (TLS, --allow-serviceaccount,
  --token-audience: real TokenReviews) watching the real apiserver. Envoy reaches the
  kubelet with a real token of kubelet-scope:kubelet-proxy, bound to exactly the
  manifest's ClusterRole; tenants present real projected tokens (TokenRequest,
  audience kubelet-scope) that Envoy's jwt_authn verifies against the apiserver's own
  JWKS and issuer. Between Envoy and the kubelet sits a recording hop
  (recording_hop.py), so Envoy's output is compared with `kubelet-scope rewrite` on
  the same upstream bytes, and what reached the kubelet is known.
- `local`: envoy/local.yaml through the stack's template, pointed straight at the
  kubelet (127.0.0.1:10250, verified against the cluster's CA) with the same real
  kubelet-proxy token, and the control plane watching the real apiserver. Its
  tenants are what that file's provider accepts: the demo issuer's JWTs with a
  `tenant` claim (a real ServiceAccount token carries no such claim).

Mapped beyond test_daemonset's mapping: the kubelet's CA (the cluster's) and the
control plane's kubeconfig (the admin's). The issuer is the shipped one, kubeadm's
default (https://kubernetes.default.svc.cluster.local), as hack/cluster.sh's apiserver
issues it. test_deployed.py runs deploy/ as it ships, on the cluster itself.
"""

import test_daemonset as shipped

import stack

SHIPPED_ISSUER = shipped.ISSUER
TENANT_AUDIENCE = "kubelet-scope"
# The namespace (and ServiceAccount) a tenant's scraper runs as, in the daemonset world.
SCRAPERS = {"acme": "acme-web", "globex": "globex"}


def tenant_token(cluster, namespace, name="scraper", audiences=(TENANT_AUDIENCE,)):
    return cluster.service_account_token(namespace, name, list(audiences))


def namespace_labels(cluster):
    return {
        n["metadata"]["name"]: n["metadata"].get("labels", {})
        for n in cluster.get("/api/v1/namespaces")["items"]
    }


def tenant_namespaces(cluster, tenant):
    return {n for n, labels in namespace_labels(cluster).items() if labels.get("tenant") == tenant}


def label_namespace(cluster, name, labels):
    """Merge-patches the namespace's labels (None removes one)."""
    status, doc = cluster.api(
        "PATCH",
        f"/api/v1/namespaces/{name}",
        {"metadata": {"labels": labels}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, (status, doc)


# --- the two worlds ----------------------------------------------------------------


class World:
    """One running Envoy configuration: `get(path, tenant)` through its tenant
    listener, as the tenant's scraper."""

    def __init__(self, name, s, cluster, hop=None):
        self.name, self.s, self.cluster, self.hop = name, s, cluster, hop
        self.tokens = {}

    def auth(self, tenant):
        if self.name == "local":
            return "Bearer " + stack.jwt(tenant)
        if tenant not in self.tokens:
            self.tokens[tenant] = tenant_token(self.cluster, SCRAPERS[tenant])
        return "Bearer " + self.tokens[tenant]

    def get(
        self,
        path,
        tenant=None,
        headers=None,
        token=None,
        method="GET",
        timeout=30.0,
        listener="tenant",
    ):
        """`path` through the listener (`tenant`; `virtual`, the DaemonSet's :10445)."""
        h = dict(headers or {})
        if token:
            h["authorization"] = "Bearer " + token
        elif tenant:
            h["authorization"] = self.auth(tenant)
        tls = self.s.kubelet_cert if self.name == "daemonset" else None
        return stack.request(
            self.s.ports[listener], path, h, tls_ca=tls, method=method, timeout=timeout
        )

    def snapshot(self, control_plane_token, node=None):
        """The control plane's snapshot (`node`'s view, when given)."""
        r = stack.request(
            self.s.ports["control_plane"],
            "/v1/snapshot" + (f"?node={node}" if node else ""),
            {"authorization": "Bearer " + control_plane_token},
            tls_ca=self.s.control_plane_ca,
        )
        assert r.status == 200, r
        return r.body


def wait_serving(world, tenant):
    streak = [0]

    def ok():
        streak[0] = streak[0] + 1 if world.get("/pods", tenant).status == 200 else 0
        return streak[0] >= 4

    stack.wait_for(f"{world.name}: the filter to serve {tenant}", ok, timeout=30, interval=0.2)
