"""Every Envoy configuration the project ships passes `envoy --mode validate` (which
also loads the filter into V8 and runs its configuration check).

World: Envoy's validation mode only."""

import subprocess
import sys

import stack
from conftest import WORK


def envoy_validate(config_path):
    """`envoy --mode validate` on `config_path`: the finished process."""
    return subprocess.run(
        [stack.ENVOY, "--mode", "validate", "-c", config_path, "--disable-hot-restart"],
        capture_output=True,
        text=True,
    )


def validate(config_path):
    r = envoy_validate(config_path)
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
    r = envoy_validate(s.envoy_config)
    assert r.returncode != 0
    assert "namespaceLable" in r.stdout + r.stderr


def test_bench_yaml_validates_with_the_benchmark_plugin_configuration():
    sys.path.insert(0, str(stack.REPO / "envoy" / "bench"))
    import bench_envoy

    s = stack.Stack(
        stack.clean_dir(WORK / "validate-bench"),
        tenant_config=bench_envoy.bench_plugin_config(),
        template=bench_envoy.TEMPLATE,
    )
    s.prepare()
    out = validate(s.envoy_config)
    assert "kubelet-scope: configured:" in out, out
