"""Lineage of a registered model: version -> selection run -> trial run -> sweep run -> dataset -> config.

Every link is looked up through an explicit `MlflowClient`; a link that cannot be found (sweep
tracking disabled, runs deleted, artifacts missing) is reported as absent with the reason, never
guessed. The sweep-side runs follow the tracking conventions: a parent run tagged
`sweeps.kind=sweep` and one child run per trial tagged `sweeps.kind=trial` and
`sweeps.trial_key=<sweep>-t00042`. Monitoring runs (`sweeps.kind=monitor`) show what the version
did in service, batch-scoring runs (`sweeps.kind=batch-scoring`) which files it scored.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from sweeps.records import trial_key
from sweeps.registry.versions import parse_model_uri, resolve_version
from sweeps.tracking.lookup import find_sweep_run, find_trial_run, search_runs
from sweeps.tracking.names import (
    CARD_ARTIFACT,
    CONFIG_ARTIFACT,
    KIND_BATCH,
    KIND_MONITOR,
    KIND_SELECTION,
    TAG_BAD_ROWS,
    TAG_DIGEST,
    TAG_ENDPOINT,
    TAG_ERRORS_PATH,
    TAG_INPUT_DIGEST,
    TAG_INPUT_PATH,
    TAG_KIND,
    TAG_MODEL_NAME,
    TAG_MODEL_VERSION,
    TAG_OUTPUT_PATH,
    TAG_PARENT,
    TAG_POLICY,
    TAG_SWEEP,
    TAG_SWEEP_RUN,
    TAG_TRIAL,
    TAG_TRIAL_RUN,
    recorded_test_metrics,
)

__all__ = ["Lineage", "Link", "resolve_lineage"]

log = logging.getLogger(__name__)

_UNTRACKED = "tracking was disabled for the sweep, or its runs are missing from this store"


@dataclass(frozen=True)
class Link:
    """One step of the chain: what it is, its id, whether it was found, and what it says."""

    kind: str
    ref: str | None
    found: bool
    facts: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Lineage:
    """The chain of one registered version, its digest check, its monitoring and batch-scoring runs."""

    model_uri: str
    name: str
    version: int
    links: tuple[Link, ...]
    monitoring: tuple[dict[str, Any], ...]
    digests: dict[str, str]
    batch_scoring: tuple[dict[str, Any], ...] = ()

    @property
    def digest_consistent(self) -> bool:
        """Every place that records the dataset digest records the same one (and at least one does)."""
        return len(set(self.digests.values())) == 1

    def link(self, kind: str) -> Link:
        return next(link for link in self.links if link.kind == kind)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"digest_consistent": self.digest_consistent}


def _get_run(client: MlflowClient, run_id: str | None) -> Run | None:
    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        log.info("run %s not found: %s", run_id, exc.message)
        return None


def _artifact(client: MlflowClient, run: Run | None, path: str) -> str | None:
    """The text of a root-level artifact of `run`, else None."""
    if run is None:
        return None
    try:
        names = {info.path for info in client.list_artifacts(run.info.run_id)}
        if path not in names:
            return None
        with tempfile.TemporaryDirectory(prefix="sweeps-lineage-") as tmp:
            local = client.download_artifacts(run.info.run_id, path, tmp)
            return Path(local).read_text(encoding="utf-8")
    except (MlflowException, OSError) as exc:
        log.warning("artifact %s of run %s unreadable: %s", path, run.info.run_id, exc)
        return None


def _run_facts(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": {k: v for k, v in run.data.tags.items() if k.startswith("sweeps.") or k == TAG_PARENT},
    }


def _version_link(version: ModelVersion) -> Link:
    tags = dict(version.tags or {})
    test_metrics = recorded_test_metrics(tags)
    facts = {
        "name": version.name,
        "version": int(version.version),
        "aliases": sorted(version.aliases or []),
        "run_id": version.run_id or None,
        "source": version.source,
        "sweep": tags.get(TAG_SWEEP),
        "trial": tags.get(TAG_TRIAL),
        "policy": tags.get(TAG_POLICY),
        "dataset_digest": tags.get(TAG_DIGEST),
        "test_metrics": test_metrics,
        "description": version.description or None,
    }
    return Link("model version", f"{version.name}/{version.version}", True, facts)


def _absent(kind: str, note: str, facts: Mapping[str, Any] | None = None) -> Link:
    return Link(kind, None, False, dict(facts or {}), note)


def _card_summary(card: Mapping[str, Any]) -> dict[str, Any]:
    split = card.get("split") or {}
    return {
        "name": card.get("name"),
        "wine": card.get("wine"),
        "sources": [
            {"source": s.get("source"), "sha256": s.get("sha256")}
            for s in card.get("sources", [])
            if isinstance(s, dict)
        ],
        "rows_raw": card.get("rows_raw"),
        "rows_clean": card.get("rows_clean"),
        "dropped": card.get("dropped"),
        "split_sizes": split.get("sizes"),
        "split_seed": split.get("seed"),
        "digest": card.get("digest"),
    }


def _dataset_inputs(run: Run | None) -> list[dict[str, Any]]:
    if run is None or run.inputs is None:
        return []
    found = []
    for item in run.inputs.dataset_inputs or []:
        dataset = item.dataset
        try:
            source = json.loads(dataset.source)
        except (TypeError, ValueError):
            source = dataset.source
        context = next((t.value for t in item.tags or [] if t.key == "mlflow.data.context"), None)
        found.append(
            {"name": dataset.name, "digest": dataset.digest, "source_type": dataset.source_type,
             "source": source, "context": context}
        )
    return found


def _dataset_link(client: MlflowClient, runs: list[Run]) -> tuple[Link, str | None]:
    """The dataset link from the first run (selection, then sweep) that carries a card or inputs."""
    for run in runs:
        text = _artifact(client, run, CARD_ARTIFACT)
        inputs = _dataset_inputs(run)
        if text is None and not inputs:
            continue
        card = _card_summary(json.loads(text)) if text is not None else {}
        digest = card.get("digest") or next((i["digest"] for i in inputs), None)
        facts = {"digest": digest, "card": card or None, "inputs": inputs, "from_run": run.info.run_id}
        note = "" if text is not None else f"no {CARD_ARTIFACT} artifact; digest from the run's dataset inputs"
        return Link("dataset", digest, True, facts, note), card.get("digest")
    return _absent("dataset", f"no run in the chain carries a {CARD_ARTIFACT} artifact or a dataset input"), None


def _described_policy(tree: Mapping[str, Any]) -> str | None:
    """The policy as the version's `sweeps.policy` tag words it (`single objective: rmse (min)`), else its kind."""
    from pydantic import ValidationError

    from sweeps.config import Config
    from sweeps.selection.policies import describe_policy

    try:
        config = Config.model_validate(dict(tree))
    except ValidationError:  # a config of another version of the schema: its kind is all we can say
        return ((tree.get("registry") or {}).get("policy") or {}).get("kind")
    return describe_policy(config.registry.policy, config.sweep.objectives)


def _config_summary(tree: Mapping[str, Any], sweep_name: str | None) -> dict[str, Any]:
    """The config's facts, in the words the rest of the chain uses.

    A sweep named by digest has no `sweep.name` in its config: the name it ran under (the
    version's tag) is shown instead, and the policy is described as the version's tag describes it.
    """
    sweep = tree.get("sweep") or {}
    return {
        "sweep": sweep.get("name") or sweep_name,
        "objectives": sweep.get("objectives"),
        "search_space": sorted((sweep.get("search_space") or {}).keys()),
        "num_trials": sweep.get("num_trials"),
        "sampler": sweep.get("sampler"),
        "policy": _described_policy(tree),
        "policy_config": (tree.get("registry") or {}).get("policy"),
        "data": tree.get("data"),
        "split": tree.get("split"),
    }


def _config_link(client: MlflowClient, runs: list[Run], storage_root: Path | None, sweep: str | None) -> Link:
    for run in runs:
        text = _artifact(client, run, CONFIG_ARTIFACT)
        if text is not None:
            tree = yaml.safe_load(text) or {}
            facts = {"from": f"artifact {CONFIG_ARTIFACT} of run {run.info.run_id}",
                     "summary": _config_summary(tree, sweep), "config": tree}
            return Link("config", f"runs:/{run.info.run_id}/{CONFIG_ARTIFACT}", True, facts)
    if storage_root is not None and sweep:
        from sweeps.sweep.state import SweepState

        state = SweepState(storage_root, sweep)
        if state.exists():
            tree = state.config().model_dump(mode="json")
            facts = {"from": f"stored sweep state {state.meta_path}", "summary": _config_summary(tree, sweep),
                     "config": tree}
            return Link("config", str(state.meta_path), True, facts)
    where = f" nor a sweep state under {storage_root}" if storage_root is not None else ""
    return _absent("config", f"no {CONFIG_ARTIFACT} artifact in the chain{where}")


def _version_runs(client: MlflowClient, kind: str, name: str, version: int) -> list[Run]:
    """Runs of `kind` about one model version, in any experiment, newest first."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    wanted = {TAG_KIND: kind, TAG_MODEL_NAME: name, TAG_MODEL_VERSION: str(version)}
    runs: list[Run] = []
    for start in range(0, len(experiments), 100):  # search_runs takes a bounded list of experiments
        runs += search_runs(client, experiments[start : start + 100], wanted)
    runs.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    return runs


def _batch_scoring(client: MlflowClient, name: str, version: int) -> list[dict[str, Any]]:
    return [
        {
            "run_id": r.info.run_id,
            "experiment_id": r.info.experiment_id,
            "start_time": r.info.start_time,
            "status": r.info.status,
            "input": r.data.tags.get(TAG_INPUT_PATH),
            "input_digest": r.data.tags.get(TAG_INPUT_DIGEST),
            "output": r.data.tags.get(TAG_OUTPUT_PATH),
            "errors": r.data.tags.get(TAG_ERRORS_PATH),
            "bad_rows": r.data.tags.get(TAG_BAD_ROWS),
            "metrics": dict(sorted(r.data.metrics.items())),
        }
        for r in _version_runs(client, KIND_BATCH, name, version)
    ]


def _monitoring(client: MlflowClient, name: str, version: int) -> list[dict[str, Any]]:
    runs = _version_runs(client, KIND_MONITOR, name, version)
    return [
        {
            "run_id": r.info.run_id,
            "experiment_id": r.info.experiment_id,
            "start_time": r.info.start_time,
            "endpoint": r.data.tags.get(TAG_ENDPOINT),
            "metrics": {k: v for k, v in sorted(r.data.metrics.items()) if not k.startswith("drift.")},
        }
        for r in runs
    ]


def _sweep_side_runs(
    client: MlflowClient, selection: Run | None, sweep: str | None, trial: str | None, digest: str | None
) -> tuple[Run | None, Run | None]:
    """(trial run, sweep run): by the selection run's link tags, else by the tracking conventions."""
    if selection is None:
        return None, None
    tags, experiment_id = selection.data.tags, selection.info.experiment_id
    sweep_run = _get_run(client, tags.get(TAG_SWEEP_RUN))
    if sweep_run is None and sweep:
        sweep_run = find_sweep_run(client, experiment_id, sweep, digest)
    trial_run = _get_run(client, tags.get(TAG_TRIAL_RUN))
    if trial_run is None and sweep and trial and trial.isdigit():
        parent = sweep_run.info.run_id if sweep_run is not None else None
        trial_run = find_trial_run(client, experiment_id, sweep, int(trial), parent)
    if sweep_run is None and trial_run is not None:
        sweep_run = _get_run(client, trial_run.data.tags.get(TAG_PARENT))
    return trial_run, sweep_run


def _run_link(kind: str, run: Run | None, absent: str, extra: Mapping[str, Any]) -> Link:
    if run is None:
        return _absent(kind, absent, extra)
    return Link(kind, run.info.run_id, True, _run_facts(run) | dict(extra))


def resolve_lineage(client: MlflowClient, model_uri: str, *, storage_root: Path | None = None) -> Lineage:
    """Follow a registered version back to its dataset and config; absent links say why.

    `storage_root` is the sweep-state folder, used for the config when no run carries it.
    """
    version = resolve_version(client, parse_model_uri(model_uri))
    tags = dict(version.tags or {})
    sweep, trial = tags.get(TAG_SWEEP), tags.get(TAG_TRIAL)
    key = trial_key(sweep, int(trial)) if sweep and trial and trial.isdigit() else None

    selection = _get_run(client, version.run_id)
    if selection is None:
        selection_link = _absent("selection run", f"version {version.version} names no run, or its run is gone")
    else:
        note = "" if selection.data.tags.get(TAG_KIND) == KIND_SELECTION else "the version's run is not a selection run"
        selection_link = Link("selection run", selection.info.run_id, True, _run_facts(selection), note)
    trial_run, sweep_run = _sweep_side_runs(client, selection, sweep, trial, tags.get(TAG_DIGEST))
    known_params = dict(selection.data.params) if selection is not None else {}
    trial_link = _run_link(
        "trial run", trial_run, f"no tracked run for trial {key or '?'}: {_UNTRACKED}",
        {"trial_key": key} | ({} if trial_run is not None else {"params": known_params}),
    )
    sweep_absent = f"no tracked run for sweep {sweep or '?'}: {_UNTRACKED}"
    sweep_link = _run_link("sweep run", sweep_run, sweep_absent, {"sweep": sweep})

    digests = {"model version": tags[TAG_DIGEST]} if tags.get(TAG_DIGEST) else {}
    for label, run in (("selection run", selection), ("trial run", trial_run), ("sweep run", sweep_run)):
        if run is not None and run.data.tags.get(TAG_DIGEST):
            digests[label] = run.data.tags[TAG_DIGEST]
    chain = [r for r in (selection, sweep_run) if r is not None]
    dataset_link, card_digest = _dataset_link(client, chain)
    if card_digest:
        digests["dataset card"] = card_digest
    for item in dataset_link.facts.get("inputs", []):
        if item.get("digest"):
            digests[f"dataset input {item['name']}"] = item["digest"]

    number = int(version.version)
    return Lineage(
        model_uri=model_uri,
        name=version.name,
        version=number,
        links=(
            _version_link(version),
            selection_link,
            trial_link,
            sweep_link,
            dataset_link,
            _config_link(client, chain, storage_root, sweep),
        ),
        monitoring=tuple(_monitoring(client, version.name, number)),
        digests=digests,
        batch_scoring=tuple(_batch_scoring(client, version.name, number)),
    )
