"""Which of a sweep's trials MLflow has whole, and which child runs are torn, read as cheaply as the store allows.

`MlflowClient.search_runs` builds every run whole (tags, params, metrics): 13.6 s and 470 MB for
the 20,000 child runs of a sweep on SQLite, minutes at 100,000. A resume needs much less: each
child run's trial number, and whether it is whole. A SQL store this process opens answers that in
one query (`sweeps._compat.mlflow_sql.run_states`); a tracking server started with `--app-name
sweeps` answers it from its own store (`LOGGED_PATH`, trial numbers as ranges); any other store
(a plain `mlflow server`, an untested MLflow) is listed through the public API. Every path reads
the runs as they are now, never a count the sweep kept, so a run deleted or torn behind the
sweep's back is found and written again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mlflow import MlflowClient

from sweeps._compat.mlflow_sql import is_whole, run_states, sql_store
from sweeps.errors import TrackingCallFailed
from sweeps.tracking.http import LOGGED_PATH, PROTOCOL, TrackingHttp, from_ranges
from sweeps.tracking.lookup import trial_runs
from sweeps.tracking.names import KIND_TRIAL, TAG_KIND, TAG_SWEEP, TAG_TRIAL, TAG_TRIAL_KEY

__all__ = [
    "PATH_SEARCH",
    "PATH_SERVER",
    "PATH_SQL",
    "READ_TAGS",
    "LoggedTrials",
    "logged_trials",
    "tally",
    "trial_tags",
]

log = logging.getLogger(__name__)

PATH_SQL, PATH_SERVER, PATH_SEARCH = "sql", "server", "search"
# Tags read from each child run: its trial number, and its trial key (what a torn run is repaired by).
READ_TAGS = (TAG_TRIAL, TAG_TRIAL_KEY)


@dataclass(frozen=True)
class LoggedTrials:
    """Trial numbers with a whole run, torn runs by trial key (run ids), and how the store was read."""

    whole: frozenset[int]
    torn: Mapping[str, str]
    path: str


def trial_tags(sweep: str) -> dict[str, str]:
    """The tags every child run of `sweep` carries (what `trial_runs` searches by)."""
    return {TAG_KIND: KIND_TRIAL, TAG_SWEEP: sweep}


def tally(runs: Iterable[tuple[str | None, str | None, str, bool]], path: str) -> LoggedTrials:
    """`(trial number tag, trial key tag, run id, whole)` per child run, as `LoggedTrials`.

    A run without a readable trial number (or, torn, without a trial key) was not written by a
    sweep: it is left alone, as the writers never look it up.
    """
    whole: set[int] = set()
    torn: dict[str, str] = {}
    for number, key, run_id, is_whole_run in runs:
        if is_whole_run:
            if number is not None and number.isdecimal():
                whole.add(int(number))
        elif key is not None:
            torn[key] = run_id
    return LoggedTrials(frozenset(whole), torn, path)


def _from_server(uri: str, experiment_id: str, sweep: str) -> LoggedTrials | None:
    """The server extension's answer; None when the server has no such route (a plain server, an older extension)."""
    http = TrackingHttp(uri)
    try:
        answer = http.call("GET", LOGGED_PATH, params={"experiment_id": experiment_id, "sweep": sweep}, retry=False)
    except TrackingCallFailed as exc:
        # 404: no extension, or one from before this route; 400 NOT_IMPLEMENTED: a store it cannot
        # read in SQL. Either way the public API still answers. Anything else is the caller's to retry.
        if exc.status == 404 or (exc.status == 400 and "NOT_IMPLEMENTED" in str(exc)):
            log.info("tracking server %s cannot list logged runs in bulk (%s): searching runs instead", uri, exc)
            return None
        raise
    finally:
        http.close()
    if not isinstance(answer, dict) or answer.get("protocol") != PROTOCOL:
        raise TrackingCallFailed(
            f"GET {uri}{LOGGED_PATH} must answer protocol {PROTOCOL} with 'whole' and 'torn', but got "
            f"{str(answer)[:200]!r}"
        )
    try:
        whole = from_ranges(answer["whole"])
        torn = {str(k): str(v) for k, v in dict(answer["torn"]).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise TrackingCallFailed(f"GET {uri}{LOGGED_PATH} answered a malformed body: {exc}") from exc
    return LoggedTrials(frozenset(whole), torn, PATH_SERVER)


def logged_trials(uri: str, client: MlflowClient, experiment_id: str, sweep: str) -> LoggedTrials:
    """What MLflow at `uri` has of `sweep`'s child runs in experiment `experiment_id`, by the cheapest read."""
    started = time.perf_counter()
    found: LoggedTrials | None = None
    if uri.startswith(("http://", "https://")):
        found = _from_server(uri, experiment_id, sweep)
    elif (store := sql_store(client)) is not None:
        states = run_states(store, experiment_id, trial_tags(sweep), READ_TAGS)
        found = tally(((s.tags[0], s.tags[1], s.run_id, s.whole) for s in states), PATH_SQL)
    if found is None:
        runs = trial_runs(client, experiment_id, sweep)
        found = tally(((r.data.tags.get(TAG_TRIAL), r.data.tags.get(TAG_TRIAL_KEY), r.info.run_id,
                        is_whole(r.info.status, bool(r.data.metrics))) for r in runs), PATH_SEARCH)
    log.info("sweep %s: %d trials logged whole, %d torn runs (read by %s in %.2f s)", sweep, len(found.whole),
             len(found.torn), found.path, time.perf_counter() - started)
    return found
