"""cluster.yaml is a valid Ray cluster-launcher file, by the schema and the checks of the installed ray."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"
SCHEMA_PATH = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
# Sections the on-prem block of cluster.yaml says to delete before uncommenting it.
ON_PREM_DROPS = ("provider", "auth", "initialization_commands", "available_node_types", "head_node_type", "max_workers")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CLUSTER_YAML.read_text(encoding="utf-8"))
    return loaded


def _launch_checks(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does before touching a cloud: fill defaults, then validate."""
    prepared: dict[str, Any] = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _on_prem_block() -> dict[str, Any]:
    lines = CLUSTER_YAML.read_text(encoding="utf-8").splitlines()
    begin, end = lines.index("# >>> on-prem"), lines.index("# <<< on-prem")
    block = [line.removeprefix("#").removeprefix(" ") for line in lines[begin + 1 : end]]
    loaded: dict[str, Any] = yaml.safe_load("\n".join(block))
    return loaded


def test_cluster_yaml_matches_ray_schema(schema: dict[str, Any], config: dict[str, Any]) -> None:
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(config, schema)


def test_cluster_yaml_passes_ray_up_validation(config: dict[str, Any]) -> None:
    prepared = _launch_checks(config)
    workers = prepared["available_node_types"]["ray.worker.cpu"]
    assert (workers["min_workers"], workers["max_workers"]) == (0, 10)
    assert prepared["available_node_types"]["ray.head.default"]["max_workers"] == 0


def test_misspelled_key_is_rejected(schema: dict[str, Any], config: dict[str, Any]) -> None:
    config["head_node_typ"] = config.pop("head_node_type")
    with pytest.raises(jsonschema.ValidationError, match=r"Additional properties are not allowed \('head_node_typ'"):
        jsonschema.validate(config, schema)


def test_wrong_type_is_rejected(schema: dict[str, Any], config: dict[str, Any]) -> None:
    config["available_node_types"]["ray.worker.cpu"]["max_workers"] = "ten"
    with pytest.raises(jsonschema.ValidationError, match=r"'ten' is not of type 'integer'"):
        jsonschema.validate(config, schema)


def test_fractional_cpu_resource_is_rejected_by_ray_up(config: dict[str, Any]) -> None:
    config["available_node_types"]["ray.head.default"]["resources"]["CPU"] = 1.5
    with pytest.raises(jsonschema.ValidationError, match=r"1.5 is not of type 'integer'"):
        _launch_checks(config)


def test_unknown_head_node_type_is_rejected_by_ray_up(config: dict[str, Any]) -> None:
    config["head_node_type"] = "ray.head.gpu"
    with pytest.raises(ValueError, match=r"`head_node_type` must be one of `available_node_types`"):
        _launch_checks(config)


def test_on_prem_alternative_is_valid(schema: dict[str, Any], config: dict[str, Any]) -> None:
    on_prem = {key: value for key, value in config.items() if key not in ON_PREM_DROPS} | _on_prem_block()
    assert on_prem["provider"]["type"] == "local"
    jsonschema.validate(on_prem, schema)
    prepared = _launch_checks(on_prem)
    assert prepared["max_workers"] == len(on_prem["provider"]["worker_ips"])


def test_setup_installs_the_project_with_its_constraints(config: dict[str, Any]) -> None:
    assert any("-c ~/sweeps/constraints.txt ~/sweeps" in command for command in config["setup_commands"])
    assert config["file_mounts"] == {"~/sweeps": "."}


def test_head_runs_mlflow_server_with_the_extension_on_postgres(config: dict[str, Any]) -> None:
    server = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c)
    assert '--app-name sweeps --host "$HEAD_IP" --port 5000' in server
    assert "--backend-store-uri postgresql+psycopg://mlflow@127.0.0.1:5432/mlflow" in server
    assert "--artifacts-destination /mnt/sweeps/" in server
    postgres = next(c for c in config["head_start_ray_commands"] if "initdb" in c)
    assert "-D /mnt/sweeps/postgres" in postgres
    assert "listen_addresses=127.0.0.1" in postgres
    assert any("install -y -qq postgresql" in c for c in config["head_setup_commands"])
    assert "s3://" not in " ".join(str(v) for v in config.get("setup_commands", []))
    assert "--volume /mnt/sweeps:/mnt/sweeps" in config["docker"]["run_options"]
