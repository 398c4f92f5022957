"""The Kubernetes manifests: both overlays render with `kubectl kustomize`,
every object validates strictly against Kubernetes' own OpenAPI schemas,
and the rules the issue sets hold on the rendered objects (not on the
files as written): probes, resources, locked-down containers, secrets by
reference only, replicas and spreading in prod, network policies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
VALIDATE = str(Path(sys.executable).with_name("kubernetes-validate"))
SERVICES = {
    "quota": "eap.quota.v1.QuotaService",
    "matcher": "eap.matcher.v1.MatcherService",
    "calendar": "eap.calendar.v1.CalendarService",
    "notifier": "eap.notifier.v1.NotifierService",
}


def _kubectl() -> str:
    return require_tool("kubectl", "it renders the kustomize overlays")


def _render(overlay: str) -> str:
    run = subprocess.run(
        [_kubectl(), "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def _objects(overlay: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(_render(overlay)) if d]


def _of(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_object_validates_strictly(overlay: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(_render(overlay))
    run = subprocess.run([VALIDATE, "--strict", str(rendered)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "passed" in run.stdout
    # Kubernetes' schemas know no Prometheus Operator kinds; those two (and
    # only those) are checked by test_monitoring_objects below instead.
    unchecked = {
        m.group(1)
        for m in re.finditer(r"Couldn't find schema for kind (\w+)", run.stdout + run.stderr)
    }
    # cert-manager's kinds come with the prod overlay only.
    operators = {"ServiceMonitor", "PrometheusRule"}
    assert unchecked == operators | ({"Certificate", "Issuer"} if overlay == "prod" else set())


def test_monitoring_objects() -> None:
    objects = _objects("prod")
    (monitor,) = _of(objects, "ServiceMonitor").values()
    selected = monitor["spec"]["selector"]["matchExpressions"][0]
    assert selected["key"] == "app.kubernetes.io/name" and set(selected["values"]) == set(SERVICES)
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    services = _of(objects, "Service")
    assert all("metrics" in {p["name"] for p in services[n]["spec"]["ports"]} for n in SERVICES)
    (rules,) = _of(objects, "PrometheusRule").values()
    written = yaml.safe_load(
        (ROOT / "deploy/k8s/base/monitoring/prometheus-rules.yaml").read_text()
    )
    assert rules["spec"] == written["spec"]
    dashboard = _of(objects, "ConfigMap")["eap-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dashboard["data"]["eap-suite.json"])
    assert board == json.loads((ROOT / "deploy/k8s/base/monitoring/dashboard.json").read_text())


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_deployments_are_probed_bounded_and_locked_down(overlay: str) -> None:
    objects = _objects(overlay)
    deployments = _of(objects, "Deployment")
    assert set(deployments) == {*SERVICES, "edge"}
    edge = deployments.pop("edge")["spec"]["template"]["spec"]
    assert edge["securityContext"]["runAsNonRoot"] is True
    assert edge["automountServiceAccountToken"] is False
    (render,) = edge["initContainers"]
    assert render["args"] == ["edge", "config", "--cluster", "--out", "/etc/envoy"]
    (envoy,) = edge["containers"]
    assert envoy["image"].startswith("envoyproxy/envoy:v1.40")  # the wheel's version
    for probe in ("readinessProbe", "livenessProbe"):
        assert envoy[probe]["httpGet"] == {"path": "/ready", "port": "ready"}
    for container in (render, envoy):
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert container["args"] == [name]
        # Probes on the plaintext health port: kubelet speaks no TLS.
        assert container["readinessProbe"]["grpc"] == {"port": 50052, "service": SERVICES[name]}
        assert container["livenessProbe"]["grpc"] == {"port": 50052, "service": "liveness"}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": 50051, "metrics": 9464, "probes": 50052}
        # Secrets arrive as files, never as environment values.
        assert not any("valueFrom" in e for e in container.get("env", []))
        files = {e["name"]: e["value"] for e in container["env"]}
        assert files["DATABASE_URL_FILE"] == "/var/run/secrets/eap-database/DATABASE_URL"
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        if overlay == "dev":  # generated, with a content hash suffix
            secrets = {n.rsplit("-", 1)[0] if n != "eap-jwt" else n for n in secrets}
        assert {"eap-database", "eap-jwt"} <= secrets
        assert f"eap-tls-{name}" in {
            v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v
        }
    services = _of(objects, "Service")
    for name in SERVICES:
        assert {p["name"] for p in services[name]["spec"]["ports"]} == {"grpc", "metrics"}
    assert set(_of(objects, "PodDisruptionBudget")) == {*SERVICES, "edge"}
    assert set(_of(objects, "HorizontalPodAutoscaler")) == {"matcher", "quota"}
    job = _of(objects, "Job")["eap-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


def test_prod_commits_no_secret_and_spreads_two_replicas_or_more() -> None:
    objects = _objects("prod")
    assert _of(objects, "Secret") == {}
    for deployment in _of(objects, "Deployment").values():
        assert deployment["spec"]["replicas"] >= 2
        pod = deployment["spec"]["template"]["spec"]
        assert pod["affinity"]["podAntiAffinity"]
        assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    for autoscaler in _of(objects, "HorizontalPodAutoscaler").values():
        assert autoscaler["spec"]["minReplicas"] >= 2
    assert {o["metadata"]["namespace"] for o in objects} == {"eap"}
    # Every service's certificate is cert-manager's, for the names it is called by.
    certificates = _of(objects, "Certificate")
    for name in SERVICES:
        spec = certificates[f"eap-tls-{name}"]["spec"]
        assert spec["secretName"] == f"eap-tls-{name}" and name in spec["dnsNames"]
        assert set(spec["usages"]) == {"server auth", "client auth"}


def test_dev_runs_its_own_stores_with_no_passwords() -> None:
    objects = _objects("dev")
    assert set(_of(objects, "StatefulSet")) == {"postgres", "redis"}
    for secret in _of(objects, "Secret").values():
        assert not any("password" in k.lower() for k in secret["data"])
    for deployment in _of(objects, "Deployment").values():
        assert deployment["spec"]["replicas"] == 1


def test_network_policies_let_only_the_right_callers_in() -> None:
    policies = _of(_objects("prod"), "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"]["podSelector"] == {}

    def callers(name: str) -> list[dict[str, Any]]:
        return [peer for rule in policies[name]["spec"]["ingress"] for peer in rule["from"]]

    # The calendar books group sessions through the matcher: only the
    # matcher spends quota; the edge reads an employee's own entitlement.
    edge = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "edge"}}}
    assert callers("quota-from-matcher-and-edge") == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "matcher"}}},
        edge,
    ]
    for name in ("matcher-from-clients-and-calendar", "calendar-from-clients-and-matcher"):
        assert {"podSelector": {"matchLabels": {"eap.io/client": "true"}}} in callers(name)
        assert edge in callers(name)
    # From outside the namespace, only through the edge: no service admits
    # another namespace's pods on its gRPC port.
    for policy in policies.values():
        for rule in policy["spec"].get("ingress", []):
            if {"port": "grpc"} in rule.get("ports", []):
                assert not any("namespaceSelector" in peer for peer in rule["from"])
    # The edge takes browsers' calls from anywhere, on its http port alone.
    assert policies["edge-from-anywhere"]["spec"]["ingress"] == [{"ports": [{"port": "http"}]}]
    # Only Prometheus's pods reach the metrics ports, and only those ports.
    assert callers("metrics-from-monitoring") == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    assert [r["ports"] for r in policies["metrics-from-monitoring"]["spec"]["ingress"]] == [
        [{"port": "metrics"}]
    ]
    dev = _of(_objects("dev"), "NetworkPolicy")
    for store in ("postgres", "redis"):
        (peer,) = [p for r in dev[f"{store}-from-services"]["spec"]["ingress"] for p in r["from"]]
        assert peer["podSelector"]["matchExpressions"][0]["values"] == ["service", "migration"]


def _checkov() -> str:
    local = ROOT / ".venv-checkov" / "bin" / "checkov"
    if local.exists():
        return str(local)
    return require_tool("checkov", "it scans the manifests (make test installs it)", "EAP_CHECKOV")


def test_security_scan_finds_nothing_unjustified(tmp_path: Path) -> None:
    checkov = _checkov()
    for overlay in ("dev", "prod"):
        (tmp_path / f"{overlay}.yaml").write_text(_render(overlay))
    run = subprocess.run(
        [checkov, "-d", str(tmp_path), "--framework", "kubernetes", "--compact"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "Failed checks: 0" in run.stdout
    # Every skip carries its reason (checkov.io/skipN: CHECK=why).
    for overlay in ("dev", "prod"):
        for obj in _objects(overlay):
            for key, value in (obj["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    check, _, why = value.partition("=")
                    assert check.startswith("CKV_K8S_") and len(why) > 20, (key, value)


def test_the_architecture_diagram_matches_the_network_policies() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    diagram = text[text.index("```mermaid") : text.index("```", text.index("```mermaid") + 3)]
    names = {"Q": "quota", "M": "matcher", "C": "calendar"}
    drawn = {
        (names[a], names[b])
        for a, b in re.findall(r"^\s*([QMC])\b.*?-->(?:\|[^|]*\|)?\s*([QMC])\b", diagram, re.M)
    }
    allowed = set()
    for policy in _of(_objects("prod"), "NetworkPolicy").values():
        target = policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        if target not in SERVICES:
            continue
        for rule in policy["spec"].get("ingress", []):
            for peer in rule["from"]:
                selector = peer.get("podSelector", {})
                callers = selector.get("matchLabels", {}).get("app.kubernetes.io/name")
                values = [callers] if callers else []
                for expression in selector.get("matchExpressions", []):
                    values += expression["values"]
                allowed |= {(caller, target) for caller in values if caller in SERVICES}
    assert drawn == allowed
