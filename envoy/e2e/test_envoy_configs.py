"""Every Envoy configuration the project ships passes `envoy --mode validate` (which
also loads the filter into V8 and runs its configuration check)."""

import subprocess
import sys

import yaml

import stack
from conftest import WORK


def validate(config_path):
    r = subprocess.run(
        [stack.ENVOY, "--mode", "validate", "-c", config_path, "--disable-hot-restart"],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "OK" in r.stdout + r.stderr
    return r.stdout + r.stderr


def test_local_yaml_validates_with_the_example_plugin_configurations():
    s = stack.Stack(stack.clean_dir(WORK / "validate-local"))
    s.prepare()
    out = validate(s.envoy_config)
    # Both plugin configurations were accepted by the filter itself.
    assert out.count("kubelet-scope: configured:") >= 2, out


def test_a_bad_plugin_configuration_fails_validation():
    s = stack.Stack(
        stack.clean_dir(WORK / "validate-bad"),
        tenant_config={"tenancy": {"tenant": {"header": "x"}, "namespaceLable": "tenant"}},
    )
    s.prepare()
    r = subprocess.run(
        [stack.ENVOY, "--mode", "validate", "-c", s.envoy_config, "--disable-hot-restart"],
        capture_output=True, text=True,
    )
    assert r.returncode != 0
    assert "namespaceLable" in r.stdout + r.stderr


def test_bench_yaml_validates_with_the_benchmark_plugin_configuration():
    sys.path.insert(0, str(stack.REPO / "envoy" / "bench"))
    import bench_envoy

    s = stack.Stack(
        stack.clean_dir(WORK / "validate-bench"),
        tenant_config=bench_envoy.bench_plugin_config(), template=bench_envoy.TEMPLATE,
    )
    s.prepare()
    out = validate(s.envoy_config)
    assert "kubelet-scope: configured:" in out, out


# Where the DaemonSet mounts things -> what stands in for them here.
def daemonset_mounts(workdir, s):
    token_dir = workdir / "kubelet-proxy-token"
    token_dir.mkdir(exist_ok=True)
    (token_dir / "token").write_text(stack.NODE_TOKEN)
    return {
        "/etc/kubelet-proxy/tls/tls.crt": s.kubelet_cert,
        "/etc/kubelet-proxy/tls/tls.key": s.dir / "kubelet.key",
        "/etc/kubelet-proxy/jwks/jwks.json": s.dir / "jwks.json",
        "/etc/kubelet-proxy/envoy/kubelet-token-sds.yaml": workdir / "kubelet-token-sds.yaml",
        "/etc/kubelet-scope/filter/kubelet_scope_filter.wasm": stack.WASM,
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt": s.kubelet_cert,
        # Last: a prefix of the token file's path.
        "/var/run/secrets/kubelet-proxy": token_dir,
    }


def map_paths(text, mounts):
    for path, local in mounts.items():
        assert path in text, f"{path} no longer used: update the mapping"
        text = text.replace(path, str(local))
    return text


def test_the_daemonset_envoy_configuration_validates():
    documents = list(yaml.safe_load_all((stack.REPO / "deploy" / "kubelet-proxy.yaml").read_text()))
    config_map = next(d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kubelet-proxy-envoy")
    workdir = stack.clean_dir(WORK / "validate-daemonset")
    s = stack.Stack(workdir)
    s.prepare()
    mounts = daemonset_mounts(workdir, s)
    sds = config_map["data"]["kubelet-token-sds.yaml"]
    (workdir / "kubelet-token-sds.yaml").write_text(sds.replace("/var/run/secrets/kubelet-proxy", str(workdir / "kubelet-proxy-token")))
    envoy_yaml = workdir / "envoy.yaml"
    envoy_yaml.write_text(map_paths(config_map["data"]["envoy.yaml"], mounts))
    out = validate(envoy_yaml)
    assert out.count("kubelet-scope: configured:") >= 2, out
    # Every file the Envoy configuration reads is mounted by the DaemonSet.
    daemonset = next(d for d in documents if d["kind"] == "DaemonSet")
    mounted = [m["mountPath"] for m in daemonset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]]
    for path in mounts:
        if not path.startswith("/var/run/secrets/kubernetes.io/"):
            assert any(path == m or path.startswith(m + "/") for m in mounted), path
