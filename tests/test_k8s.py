"""The Kubernetes manifests: both overlays render with `kubectl kustomize`,
every object validates strictly against Kubernetes' own OpenAPI schemas,
and the rules the issue sets hold on the rendered objects (not on the
files as written): probes, resources, locked-down containers, secrets by
reference only, replicas and spreading in prod, network policies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
VALIDATE = str(Path(sys.executable).with_name("kubernetes-validate"))
SERVICES = {
    "quota": "eap.quota.v1.QuotaService",
    "matcher": "eap.matcher.v1.MatcherService",
    "calendar": "eap.calendar.v1.CalendarService",
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


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_deployments_are_probed_bounded_and_locked_down(overlay: str) -> None:
    objects = _objects(overlay)
    deployments = _of(objects, "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert container["args"] == [name]
        assert container["readinessProbe"]["grpc"] == {"port": 50051, "service": SERVICES[name]}
        assert container["livenessProbe"]["grpc"] == {"port": 50051, "service": "liveness"}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": 50051, "metrics": 9464}
        secrets = {
            e["valueFrom"]["secretKeyRef"]["name"].rsplit("-", 1)[0]
            if overlay == "dev"
            else e["valueFrom"]["secretKeyRef"]["name"]
            for e in container["env"]
            if "valueFrom" in e
        }
        assert "eap-database" in secrets
    services = _of(objects, "Service")
    for name in SERVICES:
        assert {p["name"] for p in services[name]["spec"]["ports"]} == {"grpc", "metrics"}
    assert set(_of(objects, "PodDisruptionBudget")) == set(SERVICES)
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

    quota = callers("quota-from-matcher-and-calendar")
    assert quota == [
        {
            "podSelector": {
                "matchExpressions": [
                    {
                        "key": "app.kubernetes.io/name",
                        "operator": "In",
                        "values": ["matcher", "calendar"],
                    }
                ]
            }
        }
    ]
    for name in ("matcher-from-clients-and-calendar", "calendar-from-clients-and-matcher"):
        assert {"podSelector": {"matchLabels": {"eap.io/client": "true"}}} in callers(name)
    dev = _of(_objects("dev"), "NetworkPolicy")
    for store in ("postgres", "redis"):
        (peer,) = [p for r in dev[f"{store}-from-services"]["spec"]["ingress"] for p in r["from"]]
        assert peer["podSelector"]["matchExpressions"][0]["values"] == ["service", "migration"]
