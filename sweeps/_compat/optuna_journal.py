"""Optuna internals, fenced: a journal storage that replays its own writes without reading them back.

Optuna 5.0's `JournalStorage` appends each write as one operation, then reads back every operation
it has not replayed yet (`_sync_with_backend`) and replays it (`JournalStorageReplayResult.apply_logs`).
For a new trial that replay decodes each distribution from the JSON just encoded, and creating a
trial with its params the public way first builds and validates a template `FrozenTrial`: with the
read-back of the two writes of a tell, most of a trial's journal cost in the coordinator.

`ReplayingJournalStorage` writes the same operations, field for field, and when the backend hands
back exactly the operation it just appended (it is the journal's only writer) applies that operation
itself, as `apply_logs` would; anything else read back goes to `apply_logs`. Assumed of Optuna 5.0,
beyond its public API:

- the operations that `create_new_trial` (from a RUNNING `create_trial` template),
  `set_trial_user_attr` and `set_trial_state_values` (to a finished state) append, key by key;
- what replaying them changes: `_replay_result`'s `log_number_read`, `_trials`,
  `_study_id_to_trial_ids`, `_trial_id_to_study_id`, `_last_created_trial_id_by_this_process`
  and `_worker_id_to_owned_trial_id`, under the storage's `_thread_lock`;
- `create_trial` validates a param with `BaseDistribution._contains`.

Each distribution is decoded from the JSON it is written as once, and that one object is shared by
the trials (Optuna's replay decodes an equal copy per trial; nothing modifies a distribution).
`tests/unit/_compat/test_compat_optuna_journal.py` runs the same writes through both storages and
compares the journals and the replay states. Outside `TESTED_OPTUNA`, and over a backend that keeps
snapshots, every write is Optuna's own.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.storages.journal._base import BaseJournalSnapshot
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial, TrialState, create_trial

from sweeps._compat import check_version
from sweeps._compat.optuna_tpe import TESTED_OPTUNA

__all__ = ["ReplayingJournalStorage", "replays_own_writes"]

# Distribution classes whose `create_trial` conversion is the identity (not Optuna's deprecated ones).
_PLAIN_DISTRIBUTIONS = (FloatDistribution, IntDistribution, CategoricalDistribution)


def replays_own_writes() -> bool:
    """Whether a journal storage may replay its own writes itself (only on a tested Optuna)."""
    return check_version("optuna", TESTED_OPTUNA, "Optuna's journal writes (each one read back and replayed)")


class ReplayingJournalStorage(JournalStorage):
    """A `JournalStorage` for a journal's only writer: what it writes is replayed without being read back.

    It writes exactly what `JournalStorage` writes and ends in the same state (see the module doc).
    """

    def __init__(self, log_storage: BaseJournalBackend) -> None:
        super().__init__(log_storage)
        self._replays = not isinstance(log_storage, BaseJournalSnapshot) and replays_own_writes()
        # Per param name: the distribution, its JSON, and that JSON decoded (what Optuna's replay makes of it).
        self._codec: dict[str, tuple[BaseDistribution, str, BaseDistribution]] = {}

    def create_running_trial(
        self, study_id: int, params: dict[str, Any], distributions: dict[str, BaseDistribution]
    ) -> tuple[int, int]:
        """A new RUNNING trial with `params` (external representation); returns its id and number.

        It is `create_new_trial(study_id, create_trial(state=TrialState.RUNNING, params=params,
        distributions=distributions))`, in one operation.
        """
        fields = self._running_trial_fields(study_id, params, distributions) if self._replays else None
        if fields is None:
            template = create_trial(state=TrialState.RUNNING, params=params, distributions=distributions)
            trial_id = self.create_new_trial(study_id, template_trial=template)
            return trial_id, self.get_trial_number_from_id(trial_id)
        replay = self._replay_result
        with self._thread_lock:
            log = self._append(JournalOperation.CREATE_TRIAL, fields)
            if self._read_back_is(log) and study_id in replay._studies:
                # JournalStorageReplayResult._apply_create_trial, for this operation.
                trial_id = len(replay._trials)
                trial_ids = replay._study_id_to_trial_ids[study_id]
                decoded = {name: self._codec[name][2] for name in fields["distributions"]}
                replay._trials[trial_id] = FrozenTrial(
                    trial_id=trial_id,
                    number=len(trial_ids),
                    state=TrialState.RUNNING,
                    params={name: decoded[name].to_external_repr(v) for name, v in fields["params"].items()},
                    distributions=decoded,
                    user_attrs=fields["user_attrs"],
                    system_attrs=fields["system_attrs"],
                    value=None,
                    intermediate_values={},
                    datetime_start=_local_naive(fields["datetime_start"]),
                    datetime_complete=None,
                    values=None,
                )
                trial_ids.append(trial_id)
                replay._trial_id_to_study_id[trial_id] = study_id
                replay._last_created_trial_id_by_this_process = trial_id
                replay._worker_id_to_owned_trial_id[log["worker_id"]] = trial_id
                replay.log_number_read += 1
                return trial_id, len(trial_ids) - 1
            self._sync_with_backend()
            trial_id = replay._last_created_trial_id_by_this_process
        return trial_id, self.get_trial_number_from_id(trial_id)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._replays:
            return super().set_trial_user_attr(trial_id, key, value)
        with self._thread_lock:
            log = self._append(JournalOperation.SET_TRIAL_USER_ATTR, {"trial_id": trial_id, "user_attr": {key: value}})
            trial = self._updatable(trial_id, log)
            if trial is None:
                self._sync_with_backend()
                return None
            # JournalStorageReplayResult._apply_set_trial_user_attr
            trial = copy.copy(trial)
            trial.user_attrs = {**trial.user_attrs, key: value}
            self._replay_result._trials[trial_id] = trial
            self._replay_result.log_number_read += 1
        return None

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if not self._replays or not state.is_finished():  # RUNNING (an enqueued trial popped) and WAITING
            return super().set_trial_state_values(trial_id, state, values)
        complete = datetime.now(tz=UTC).isoformat(timespec="microseconds")
        with self._thread_lock:
            fields = {"trial_id": trial_id, "state": state, "values": values, "datetime_complete": complete}
            log = self._append(JournalOperation.SET_TRIAL_STATE_VALUES, fields)
            trial = self._updatable(trial_id, log)
            if trial is None:
                self._sync_with_backend()
                return True
            # JournalStorageReplayResult._apply_set_trial_state_values, for a finished state
            trial = copy.copy(trial)
            trial.datetime_complete = _local_naive(complete)
            trial.state = TrialState(state)
            if values is not None:
                trial.values = values
            self._replay_result._trials[trial_id] = trial
            self._replay_result.log_number_read += 1
        return True

    def _running_trial_fields(
        self, study_id: int, params: dict[str, Any], distributions: dict[str, BaseDistribution]
    ) -> dict[str, Any] | None:
        """`create_new_trial`'s fields for a RUNNING template of these params; None where `create_trial`
        would convert a distribution or refuse the params (the public path then does, or raises)."""
        if params.keys() != distributions.keys():
            return None
        encoded: dict[str, str] = {}
        internal: dict[str, Any] = {}
        for name, dist in distributions.items():
            known = self._codec.get(name)
            if known is None or known[0] is not dist:
                if type(dist) not in _PLAIN_DISTRIBUTIONS:
                    return None
                as_json = distribution_to_json(dist)
                known = self._codec[name] = (dist, as_json, json_to_distribution(as_json))
            encoded[name] = known[1]
        for name, value in params.items():
            internal[name] = distributions[name].to_internal_repr(value)
            if not distributions[name]._contains(internal[name]):
                return None
        # The template's start, a naive local time, converted as `create_new_trial` converts it.
        start = datetime.now().astimezone(UTC).isoformat(timespec="microseconds")
        return {
            "study_id": study_id,
            "datetime_start": start,
            "state": TrialState.RUNNING,
            "value": None,
            "values": None,
            "distributions": encoded,
            "params": internal,
            "user_attrs": {},
            "system_attrs": {},
            "intermediate_values": {},
        }

    def _append(self, op_code: JournalOperation, fields: dict[str, Any]) -> dict[str, Any]:
        """`JournalStorage._write_log`, returning the operation appended."""
        log = {"op_code": op_code, "worker_id": self._replay_result.worker_id, **fields}
        self._backend.append_logs([log])
        return log

    def _read_back_is(self, log: dict[str, Any]) -> bool:
        """Whether what `_sync_with_backend` would replay now is `log` alone (then it is not read again)."""
        unread = self._backend.read_logs(self._replay_result.log_number_read)
        return isinstance(unread, list) and len(unread) == 1 and unread[0] is log

    def _updatable(self, trial_id: int, log: dict[str, Any]) -> FrozenTrial | None:
        """The trial `log` (just appended) updates, when it is the only operation to replay and the
        trial exists unfinished; otherwise None (`apply_logs` replays it, and raises as it does)."""
        if not self._read_back_is(log):
            return None
        trial = self._replay_result._trials.get(trial_id)
        return None if trial is None or trial.state.is_finished() else trial


def _local_naive(iso: str) -> datetime:
    """A journal's ISO time as the replay holds it: local, without a timezone."""
    return datetime.fromisoformat(iso).astimezone().replace(tzinfo=None)
