"""What Istio 1.30 makes of deploy/istio/ for the gateway's Envoy, for the parts the
tests run (envoy/istio-gateway.yaml is the whole configuration, written out).

There is no istiod or istio-agent here, so this module does, for the objects and
fields deploy/istio uses and no others, what they do (read from istio/istio):

- `plugin_configuration`: pluginConfig → the filter's configuration string
  (pilot/pkg/model/extensions.go: protomarshal.ToJSON of the Struct, the legacy jsonpb:
  keys sorted, no spaces, a whole number stays a whole number);
- `wasm_extension_config`: the WasmPlugin → the ECDS resource (TypedExtensionConfig)
  as istio-agent hands it to Envoy once it fetched the module: remote code rewritten
  to the local file, its ISTIO_META_* variables stripped (pkg/wasm/convert.go);
- `agent_fallback`: the resource istio-agent hands Envoy instead when it cannot fetch
  the module: an RBAC filter denying everything, or allowing everything for
  FAIL_OPEN (pkg/wasm/convert.go, createHTTPDefaultFilter);
- `jwt_authn_config`, `rbac_config`: RequestAuthentication and AuthorizationPolicy →
  the jwt_authn and RBAC filters (pilot/pkg/security/authn/policy_applier.go,
  pilot/pkg/security/authz/model/).

Anything beyond that subset raises, so that a manifest growing a field fails here
rather than being silently left out of what the tests run.
"""

import json
import os
from pathlib import Path

import yaml

import stack

DIR = stack.REPO / "deploy" / "istio"
TEMPLATE = stack.REPO / "envoy" / "istio-gateway.yaml"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
EXTENSION_CONFIG_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
JWT_FILTER = "envoy.filters.http.jwt_authn"
# filters.EnvoyJwtFilterPayload: where Istio's jwt_authn puts a verified payload.
JWT_PAYLOAD = "payload"


def manifests():
    """Every object of deploy/istio/*.yaml, in file order."""
    docs = []
    for path in sorted(DIR.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def find(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in deploy/istio"
    return found[0]


def full_name(obj):
    return f"{obj['metadata']['namespace']}.{obj['metadata']['name']}"


def resource_name(plugin):
    """The ECDS resource and HTTP filter name of a WasmPlugin
    (WasmPluginResourceNamePrefix + <namespace>.<name>)."""
    return "extensions.istio.io/wasmplugin/" + full_name(plugin)


def plugin_configuration(plugin_config):
    """The filter's configuration string, as jsonpb marshals the Struct."""
    return json.dumps(plugin_config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


SUPPORTED_PLUGIN_FIELDS = {"selector", "url", "sha256", "type", "phase", "failStrategy"}


def wasm_extension_config(plugin, module_file):
    """The WasmPlugin's ECDS resource after istio-agent fetched the module into
    `module_file`."""
    spec = plugin["spec"]
    unsupported = set(spec) - SUPPORTED_PLUGIN_FIELDS - {"pluginConfig"}
    assert not unsupported, f"istio_xds does not translate {unsupported}"
    assert spec.get("type", "HTTP") == "HTTP"
    config = {
        "name": full_name(plugin),
        # root_id is pluginName, unset; vm_id is never set by Istio.
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            # istio-agent's rewrite of the remote (url, sha256) to the file it fetched;
            # it strips the ISTIO_META_* variables istiod put there, leaving none.
            "code": {"local": {"filename": str(module_file)}},
        },
        "failure_policy": {
            "FAIL_OPEN": "FAIL_OPEN",
            "FAIL_CLOSE": "FAIL_CLOSED",
            "FAIL_RELOAD": "FAIL_RELOAD",
        }[spec.get("failStrategy", "FAIL_CLOSE")],
    }
    # Without pluginConfig Istio still sets the field, to an empty Any: the filter then
    # gets an empty configuration.
    config["configuration"] = {}
    if spec.get("pluginConfig"):
        config["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": plugin_configuration(spec["pluginConfig"]),
        }
    return {
        "@type": EXTENSION_CONFIG_TYPE,
        "name": resource_name(plugin),
        "typed_config": {"@type": WASM_TYPE, "config": config},
    }


def agent_fallback(plugin, fail_strategy=None):
    """What istio-agent hands Envoy when it cannot fetch the module: fail open only
    for FAIL_OPEN (httpWasmFailOpen); `fail_strategy` overrides the manifest's."""
    strategy = fail_strategy or plugin["spec"].get("failStrategy", "FAIL_CLOSE")
    if strategy == "FAIL_OPEN":
        rbac = {"@type": RBAC_TYPE, "rules_stat_prefix": "wasm-default-allow"}
    else:
        # An RBAC config with an empty rule set: ALLOW with no policy, deny all.
        rbac = {"@type": RBAC_TYPE, "rules": {}, "rules_stat_prefix": "wasm-default-deny"}
    return {"@type": EXTENSION_CONFIG_TYPE, "name": resource_name(plugin), "typed_config": rbac}


def write_ecds(path, resource):
    """The file a path config source reads: a discovery response of one resource,
    replaced atomically (Envoy watches it and applies a new version)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"resources": [resource]}, indent=1))
    os.replace(tmp, path)


def jwt_authn_config(request_authentication):
    """convertToEnvoyJwtConfig for a RequestAuthentication of one rule with inline
    `jwks` and default token locations."""
    rules = request_authentication["spec"]["jwtRules"]
    assert len(rules) == 1, "istio_xds translates a single jwtRule"
    rule = rules[0]
    unsupported = set(rule) - {"issuer", "audiences", "jwks"}
    assert not unsupported, f"istio_xds does not translate {unsupported}"
    provider = {
        "issuer": rule["issuer"],
        "audiences": rule["audiences"],
        "local_jwks": {"inline_string": rule["jwks"]},
        "payload_in_metadata": JWT_PAYLOAD,
        "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "scope"]},
    }
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"origins-0": provider},
        "rules": [
            {
                "match": {"prefix": "/"},
                "requires": {
                    "requires_any": {
                        "requirements": [{"provider_name": "origins-0"}, {"allow_missing": {}}]
                    }
                },
            }
        ],
        "bypass_cors_preflight": True,
    }


def _string_matcher(value):
    """matcher.StringMatcher: "*" is any non-empty string."""
    assert value == "*", "istio_xds translates the value * only"
    return {"safe_regex": {"regex": ".+"}}


def _claim_principal(key, values):
    """requestClaimGenerator: request.auth.claims[a][b] → the payload's path a, b
    holding the value or a list with it."""
    assert key.startswith("request.auth.claims[") and key.endswith("]"), key
    claims = key[len("request.auth.claims[") : -1].split("][")
    assert len(values) == 1, "istio_xds translates one value"
    value = {"string_match": _string_matcher(values[0])}
    return {
        "metadata": {
            "filter": JWT_FILTER,
            "path": [{"key": k} for k in [JWT_PAYLOAD, *claims]],
            "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": value}}, value]}},
        }
    }


def rbac_config(policy):
    """An ALLOW AuthorizationPolicy whose rules hold only `when` conditions on
    request claims → the RBAC filter."""
    spec = policy["spec"]
    assert spec.get("action", "ALLOW") == "ALLOW"
    policies = {}
    for i, rule in enumerate(spec["rules"]):
        assert set(rule) == {"when"}, f"istio_xds translates `when` only, not {set(rule)}"
        ids = [_claim_principal(w["key"], w["values"]) for w in rule["when"]]
        name = (
            f"ns[{policy['metadata']['namespace']}]-policy[{policy['metadata']['name']}]-rule[{i}]"
        )
        policies[name] = {
            "permissions": [{"and_rules": {"rules": [{"any": True}]}}],
            "principals": [{"and_ids": {"ids": ids}}],
        }
    return {"@type": RBAC_TYPE, "rules": {"action": "ALLOW", "policies": policies}}


def cluster_name(host, port):
    """BuildSubsetKey(outbound, "", host, port)."""
    return f"outbound|{port}||{host}"
