"""deploy/ is checked without a container engine or cluster: compose against the compose-spec schema,
Kubernetes manifests against the Kubernetes schemas (kubernetes-validate, offline), systemd units with
systemd-analyze, the example configuration against the settings."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from node.cli import app as cli_app
from node.config import load_settings
from node.config_example import render_example

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
KUBERNETES_VERSION = "1.37.0"

pytestmark = pytest.mark.timeout(60)


def _cli_commands() -> set[str]:
    return {command.name or command.callback.__name__ for command in cli_app.registered_commands}


def test_example_config_is_generated_from_the_settings_and_loads() -> None:
    example = DEPLOY / "pacsnode.example.yaml"
    assert example.read_text() == render_example(), "regenerate: python -m node.config_example > deploy/pacsnode.example.yaml"
    settings = load_settings(example)
    assert settings.node.port == 11112
    text = example.read_text()
    for section in ("node:", "queue:", "delivery:", "web:", "retention:", "destinations: []", "routes: []"):
        assert section in text
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^\s+\w+:", line):
            assert lines[index - 1].strip().startswith("#"), f"key without a comment: {line.strip()}"


def test_compose_file_matches_the_compose_spec() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(compose)
    services = compose["services"]
    assert {"node", "redis", "gpu-worker", "flower"} <= set(services)
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: bind source {source} missing"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} not declared"
        if "build" in service:
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert services["node"]["command"][0] in _cli_commands()
    assert services["gpu-worker"]["command"][0] in _cli_commands()


def test_compose_schema_check_catches_mistakes() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    compose["services"]["node"]["restart_policy"] = "always"  # not a compose key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text())).validate(compose)


def _manifests() -> list[tuple[Path, dict]]:
    documents = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def test_kubernetes_manifests_match_the_kubernetes_schemas() -> None:
    documents = _manifests()
    assert {doc["kind"] for _, doc in documents} >= {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"}
    for path, doc in documents:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_kubernetes_schema_check_catches_mistakes() -> None:
    _, deployment = next((p, d) for p, d in _manifests() if d["kind"] == "Deployment")
    deployment["spec"]["replica"] = 1  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kubernetes_manifests_wire_the_node_together(tmp_path: Path) -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    by_name = {doc["metadata"]["name"]: doc for _, doc in _manifests()}
    node = by_name["pacsnode"]["spec"]["template"]["spec"]["containers"][0]
    assert node["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert node["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert node["args"][0] in _cli_commands()
    worker = by_name["pacsnode-gpu-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    config = yaml.safe_load(by_name["pacsnode-config"]["data"]["pacsnode.yaml"])
    assert config["web"]["enabled"] is True
    config_file = tmp_path / "pacsnode.yaml"
    config_file.write_text(by_name["pacsnode-config"]["data"]["pacsnode.yaml"])
    assert load_settings(config_file).node.storage_dir == Path("/var/lib/pacsnode")


def test_systemd_units_verify(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: apt-get install systemd"
    pacsnode = ROOT / ".venv" / "bin" / "pacsnode"
    units = []
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text().replace("/opt/pacsnode/venv/bin/pacsnode", str(pacsnode))
        name = unit.name.replace("@.service", "@gpu.service")
        (tmp_path / name).write_text(text)
        units.append(tmp_path / name)
    assert {u.name for u in units} == {"pacsnode.service", "pacsnode-worker@gpu.service"}
    bad = tmp_path / "bad.service"
    bad.write_text(units[0].read_text().replace("Restart=on-failure", "Restart=sometimes"))
    for unit in units + [bad]:
        result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=30)
        problems = [line for line in result.stderr.splitlines() if str(unit) in line]
        if unit is bad:
            assert problems, "systemd-analyze should have flagged the bad unit"
        else:
            assert result.returncode == 0 and not problems, problems


def test_dockerfiles_copy_what_exists_and_run_cli_commands() -> None:
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (DEPLOY / name).read_text()
        assert re.search(r"^FROM \S+", text, re.M)
        for sources in re.findall(r"^COPY (.+) \S+$", text, re.M):
            for source in sources.split():
                assert (ROOT / source).exists(), f"{name}: COPY source {source} missing"
        command = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
        assert command[0] in _cli_commands(), f"{name}: CMD {command[0]} is not a pacsnode command"
    assert "nvidia/cuda" in (DEPLOY / "Dockerfile.gpu").read_text()
