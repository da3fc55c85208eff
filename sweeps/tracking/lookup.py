"""Finding runs by the tracking conventions: a sweep's parent run, a trial's child run, a sweep's trials."""

from __future__ import annotations

from collections.abc import Mapping

from mlflow import MlflowClient
from mlflow.entities import Run

from sweeps.records import trial_key
from sweeps.tracking.names import KIND_SWEEP, KIND_TRIAL, TAG_DIGEST, TAG_KIND, TAG_PARENT, TAG_SWEEP, TAG_TRIAL_KEY

__all__ = ["find_sweep_run", "find_trial_run", "search_runs", "trial_runs"]

_PAGE = 5000


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def search_runs(client: MlflowClient, experiment_ids: list[str], tags: Mapping[str, str]) -> list[Run]:
    """Runs carrying every tag of `tags`, newest first, all pages."""
    query = " AND ".join(f"tags.`{k}` = '{_quoted(v)}'" for k, v in tags.items())
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=query, order_by=["attributes.start_time DESC"], max_results=_PAGE,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def trial_runs(client: MlflowClient, experiment_id: str, sweep: str) -> list[Run]:
    """Every child run of `sweep`."""
    return search_runs(client, [experiment_id], {TAG_KIND: KIND_TRIAL, TAG_SWEEP: sweep})


def find_sweep_run(client: MlflowClient, experiment_id: str, sweep: str, digest: str | None = None) -> Run | None:
    """The sweep's parent run (the newest, preferring one with the same dataset digest), else None."""
    runs = search_runs(client, [experiment_id], {TAG_KIND: KIND_SWEEP, TAG_SWEEP: sweep})
    same_data = [r for r in runs if digest is None or r.data.tags.get(TAG_DIGEST) == digest]
    candidates = same_data or runs
    return candidates[0] if candidates else None


def find_trial_run(
    client: MlflowClient, experiment_id: str, sweep: str, number: int, parent_run_id: str | None = None
) -> Run | None:
    """The trial's child run by its trial key (preferring a child of `parent_run_id`), else None."""
    runs = search_runs(client, [experiment_id], {TAG_KIND: KIND_TRIAL, TAG_TRIAL_KEY: trial_key(sweep, number)})
    children = [r for r in runs if parent_run_id is not None and r.data.tags.get(TAG_PARENT) == parent_run_id]
    candidates = children or runs
    return candidates[0] if candidates else None
