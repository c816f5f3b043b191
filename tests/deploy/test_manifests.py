"""deploy/kubernetes and deploy/compose: valid against their schemas, offline, and consistent.

Kubernetes schemas come from the kubernetes-validate wheel (every version 1.25-1.37, strict:
unknown fields are errors); 1.29 is the first release with native sidecars on by default, and
1.37 the newest the wheel ships. The compose spec is the copy check-jsonschema vendors.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ollama_keepwarm.core.config import load_config
from ollama_keepwarm.core.envconfig import parse_models

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
DEPLOYMENT = KUBERNETES / "ollama-keepwarm.yaml"
HELM_VALUES = KUBERNETES / "ollama-helm-values.yaml"
COMPOSE = REPO / "deploy" / "compose" / "compose.yaml"
VERSIONS = ["1.29.0", "1.37.0"]
CHART_KEYS = {"ollama", "initContainers", "volumes"}
"""The otwld/ollama-helm values the snippet sets (read in the chart's templates at 1.77.0)."""


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def deployment() -> dict[str, Any]:
    (found,) = [doc for doc in documents(DEPLOYMENT) if doc["kind"] == "Deployment"]
    return found


def sidecar(pod: dict[str, Any]) -> dict[str, Any]:
    (keeper,) = [c for c in pod["initContainers"] if c["name"] == "keepwarm"]
    return keeper


def image_env() -> dict[str, str]:
    """The ENV of the image's last stage, as a container starts with it."""
    text = (REPO / "deploy" / "container" / "Containerfile").read_text()
    last_stage = text[text.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    for block in re.findall(r"^ENV (.*?)(?<!\\)$", last_stage, flags=re.MULTILINE | re.DOTALL):
        env.update(dict(re.findall(r"(\w+)=(\S+)", block)))
    return env


def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def kept_models(env: dict[str, str]) -> list[str]:
    return [m["name"] for m in parse_models(env["OLLAMA_KEEPWARM_MODELS"])]


def helm_pod() -> dict[str, Any]:
    """The Deployment's pod with the chart values' sidecar and volumes put where the chart
    puts them (``initContainers`` as given, ``volumes`` after the chart's own)."""
    values = yaml.safe_load(HELM_VALUES.read_text())
    pod = copy.deepcopy(deployment())
    spec = pod["spec"]["template"]["spec"]
    spec["initContainers"] = values["initContainers"]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] == "models"] + values["volumes"]
    return pod


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates(version: str) -> None:
    """Each resource, and the chart values as a pod, pass the strict schema of ``version``."""
    for doc in [*documents(DEPLOYMENT), helm_pod()]:
        kubernetes_validate.validate(doc, version, strict=True)


def test_native_sidecars_need_kubernetes_1_29() -> None:
    """The strict schema is strict: 1.27 has no restartPolicy on an init container."""
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicy"):
        kubernetes_validate.validate(deployment(), "1.27.0", strict=True)


@pytest.mark.parametrize("source", ["deployment", "helm values"])
def test_the_sidecar_makes_ready_mean_warm(source: str) -> None:
    """A native sidecar whose readiness is /readyz and whose startup only waits for itself."""
    pod = deployment() if source == "deployment" else helm_pod()
    keeper = sidecar(pod["spec"]["template"]["spec"])
    assert keeper["restartPolicy"] == "Always"
    port_names = {port["name"] for port in keeper["ports"]}
    assert keeper["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "keepwarm"}
    # A sidecar's startupProbe holds back the Ollama container: /readyz there never passes.
    assert keeper["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert keeper["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert keeper[probe]["httpGet"]["port"] in port_names
    assert keeper["resources"]["requests"]
    assert keeper["securityContext"]["runAsNonRoot"] is True
    mounts = {m["name"] for m in keeper["volumeMounts"]}
    assert mounts <= {v["name"] for v in pod["spec"]["template"]["spec"]["volumes"]}


@pytest.mark.parametrize("source", ["deployment", "helm values"])
def test_the_sidecar_environment_is_a_valid_config(source: str) -> None:
    """The image's ENV plus the manifest's env is a configuration the keeper accepts."""
    pod = deployment() if source == "deployment" else helm_pod()
    keeper = sidecar(pod["spec"]["template"]["spec"])
    config = load_config(None, environ={**image_env(), **container_env(keeper)})
    assert config.http.host == "0.0.0.0"  # the kubelet probes the pod IP
    assert config.http.port == keeper["ports"][0]["containerPort"]
    assert config.ollama.host == "http://127.0.0.1:11434"
    assert [m.name for m in config.models] == ["llama3.1:8b", "nomic-embed-text"]


def test_the_deployment_and_the_chart_values_carry_the_same_sidecar() -> None:
    """The README's copy-paste snippet cannot drift from the manifest CI validates."""
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert set(values) <= CHART_KEYS
    assert values["initContainers"] == [sidecar(deployment()["spec"]["template"]["spec"])]
    keeper_env = container_env(values["initContainers"][0])
    assert values["ollama"]["models"]["pull"] == kept_models(keeper_env)
    assert values["ollama"]["models"]["run"] == []


def test_every_container_requests_resources_and_has_probes() -> None:
    """Requests for scheduling; Ollama itself is probed on / (started, alive)."""
    spec = deployment()["spec"]["template"]["spec"]
    for container in spec["containers"] + spec["initContainers"]:
        assert container["resources"]["requests"], container["name"]
        assert "startupProbe" in container, container["name"]
    (ollama,) = spec["containers"]
    pulled = " ".join(ollama["lifecycle"]["postStart"]["exec"]["command"])
    assert re.findall(r"ollama pull (\S+)", pulled) == kept_models(container_env(sidecar(spec)))


def test_compose_validates_against_the_compose_spec() -> None:
    """docker compose's own JSON schema, vendored by check-jsonschema (offline)."""
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    if tool is None:
        pytest.skip("check-jsonschema is not installed (it is in the test extra)")
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_starts_the_app_on_warm_models() -> None:
    """The app waits for the keeper's healthcheck, which is /readyz; the pull comes first."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    keeper = services["keepwarm"]
    assert "/readyz" in " ".join(keeper["healthcheck"]["test"])
    assert services["webui"]["depends_on"]["keepwarm"]["condition"] == "service_healthy"
    assert keeper["depends_on"]["pull"]["condition"] == "service_completed_successfully"
    assert keeper["build"]["dockerfile"] == "deploy/container/Containerfile"
    assert (COMPOSE.parent / keeper["build"]["context"] / keeper["build"]["dockerfile"]).is_file()
    env = {**image_env(), **keeper["environment"]}
    config = load_config(None, environ=env)
    assert config.ollama.host == "http://ollama:11434"
    pulled = re.findall(r"ollama pull (\S+)", " ".join(services["pull"]["entrypoint"]))
    assert pulled == kept_models(keeper["environment"])


def test_the_keeper_can_see_the_runners_and_do_nothing_else_to_them() -> None:
    """Issue 21: a shared process namespace lets it read command lines; no capability added.

    The chart cannot set it: its values file says how to patch it in instead.
    """
    spec = deployment()["spec"]["template"]["spec"]
    assert spec["shareProcessNamespace"] is True
    assert "hostPID" not in spec
    context = sidecar(spec)["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["allowPrivilegeEscalation"] is False
    assert context["runAsUser"] != 0
    assert '"shareProcessNamespace":true' in HELM_VALUES.read_text()
