"""MLflow Model Registry operations: register, find, promote and roll back by alias, list versions.

Aliases only (`champion`, `challenger`, `previous`), never stages. Every function takes an
explicit `MlflowClient`. A version's honest test metrics live in its tags `sweeps.test_<metric>`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode

from sweeps.errors import ConfigError, ModelNotFound, RegistryError
from sweeps.tracking.names import TAG_POLICY, TAG_SWEEP, TAG_TEST_PREFIX, TAG_TRIAL, recorded_test_metrics

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "ModelRef",
    "PromotionResult",
    "VersionInfo",
    "find_version",
    "list_versions",
    "parse_model_uri",
    "promote",
    "promote_if_better",
    "register_version",
    "resolve_version",
    "rollback",
]

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
_PAGE = 1000


@dataclass(frozen=True)
class ModelRef:
    """A registry model named by alias (followed on promotion) or by fixed version."""

    name: str
    alias: str | None = None
    version: int | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def parse_model_uri(uri: str) -> ModelRef:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION`; anything else is a config error."""
    match = _URI.match(uri.strip())
    if not match:
        raise ConfigError(
            f"a model URI must look like 'models:/NAME@ALIAS' or 'models:/NAME/VERSION', got {uri!r}."
        )
    version = match["version"]
    return ModelRef(match["name"], match["alias"], int(version) if version else None)


def resolve_version(client: MlflowClient, ref: ModelRef) -> ModelVersion:
    """The model version `ref` names now; ModelNotFound when the registry has none."""
    try:
        if ref.alias:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        return client.get_model_version(ref.name, str(ref.version))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            what = f"alias {ref.alias!r}" if ref.alias else f"version {ref.version}"
            raise ModelNotFound(
                f"the registry at {client.tracking_uri} has no {what} of model {ref.name!r} ({ref.uri}); "
                f"register and promote a model first (MLflow said: {exc.message.splitlines()[0]})."
            ) from None
        raise


@dataclass(frozen=True)
class PromotionResult:
    """What an alias move did: which version is champion now and which one was before."""

    name: str
    version: int
    promoted: bool
    champion: int | None
    previous: int | None
    reason: str


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as `sweeps models` shows it."""

    name: str
    version: int
    aliases: tuple[str, ...]
    test_metrics: dict[str, float] = field(default_factory=dict)
    sweep: str | None = None
    trial: str | None = None
    policy: str | None = None
    run_id: str | None = None
    source: str | None = None
    created: datetime | None = None
    description: str | None = None


def _code(exc: MlflowException, code: int) -> bool:
    return bool(exc.error_code == ErrorCode.Name(code))


def _version(version: int | str) -> int:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise RegistryError(f"a model version must be a positive integer, got {version!r}.")
    return int(text)


def _aliases(client: MlflowClient, name: str) -> dict[str, int]:
    """Alias -> version of a registered model; RegistryError when the model does not exist."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if _code(exc, RESOURCE_DOES_NOT_EXIST):
            raise RegistryError(f"registered model {name!r} not found (tracking URI {client.tracking_uri}).") from exc
        raise
    return {alias: int(version) for alias, version in (model.aliases or {}).items()}


def _get_version(client: MlflowClient, name: str, version: int) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _code(exc, RESOURCE_DOES_NOT_EXIST):
            raise RegistryError(f"version {version} of registered model {name!r} not found.") from exc
        raise


def _model_id(model_uri: str) -> str | None:
    """The logged-model id of a `models:/<model_id>` URI (MLflow 3), else None."""
    rest = model_uri.removeprefix("models:/")
    return rest if rest != model_uri and rest and "/" not in rest and "@" not in rest else None


def register_version(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str | None,
    *,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> ModelVersion:
    """Register `model_uri` as a new version of `name`, creating the registered model if needed."""
    if not name.strip():
        raise RegistryError(f"a registered model name must not be empty, got {name!r}.")
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if not _code(exc, RESOURCE_ALREADY_EXISTS):
            raise
    source, model_id = model_uri, _model_id(model_uri)
    if model_id is not None:
        # Resolve `models:/<model_id>` with this client: MLflow's SQL registry would resolve it
        # through the global tracking URI, which need not be the client's.
        logged = client.get_logged_model(model_id)
        source, run_id = logged.artifact_location, run_id or logged.source_run_id
    version = client.create_model_version(
        name=name,
        source=source,
        run_id=run_id,
        tags={k: str(v) for k, v in (tags or {}).items()},
        description=description,
        model_id=model_id,
    )
    log.info("registered %s version %s from %s", name, version.version, model_uri)
    return version


def _search_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    quote = '"' if "'" in name else "'"
    versions: list[ModelVersion] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(f"name = {quote}{name}{quote}", max_results=_PAGE, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def find_version(client: MlflowClient, name: str, tags_match: Mapping[str, Any]) -> ModelVersion | None:
    """The lowest version of `name` whose tags contain every `tags_match` item, else None.

    This is what makes registration idempotent: match on `sweeps.sweep`, `sweeps.policy` and
    `sweeps.trial` before registering again. A model that does not exist yet matches nothing.
    """
    if not tags_match:
        raise RegistryError("find_version needs at least one tag to match, got none.")
    wanted = {k: str(v) for k, v in tags_match.items()}
    matches = [v for v in _search_versions(client, name) if all(v.tags.get(k) == value for k, value in wanted.items())]
    return min(matches, key=lambda v: int(v.version)) if matches else None


def _test_metric(version: ModelVersion, metric: str) -> float | None:
    raw = version.tags.get(f"{TAG_TEST_PREFIX}{metric}")
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _move_champion(client: MlflowClient, name: str, version: int, current: int | None) -> None:
    # Order matters for readers polling the champion: `previous` first, so there is never a
    # moment where the old champion is reachable by no alias.
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, str(current))
    client.set_registered_model_alias(name, CHAMPION, str(version))


def promote_if_better(
    client: MlflowClient,
    name: str,
    version: int | str,
    metric: str,
    direction: Literal["minimize", "maximize"],
    *,
    force: bool = False,
    min_improvement: float = 0.0,
) -> PromotionResult:
    """Give `version` the alias `challenger`; make it `champion` if it beats the champion.

    It is promoted when there is no champion, when its tag `sweeps.test_<metric>` beats the
    champion's by more than `min_improvement` times the champion's value (a relative margin, so
    noise-level gains and ties keep the champion; 0 means strictly better), or with `force`. The
    former champion then carries `previous`. A version that already is champion is left as it is.
    """
    if direction not in ("minimize", "maximize"):
        raise RegistryError(f"direction must be 'minimize' or 'maximize', got {direction!r}.")
    if not (math.isfinite(min_improvement) and min_improvement >= 0):
        raise RegistryError(f"min_improvement must be a finite number >= 0, got {min_improvement!r}.")
    number = _version(version)
    candidate = _get_version(client, name, number)
    aliases = _aliases(client, name)
    champion = aliases.get(CHAMPION)
    tag = f"{TAG_TEST_PREFIX}{metric}"
    if champion == number:
        return PromotionResult(
            name, number, False, champion, aliases.get(PREVIOUS), f"version {number} is already champion"
        )
    if champion is None or force:
        client.set_registered_model_alias(name, CHALLENGER, str(number))
        reason = (
            f"version {number} is the first champion of {name!r}"
            if champion is None
            else f"version {number} forced over champion version {champion}"
        )
    else:
        new_value = _test_metric(candidate, metric)
        if new_value is None:
            raise RegistryError(
                f"version {number} of {name!r} needs a finite tag {tag!r} to be compared with champion "
                f"version {champion}, got {candidate.tags.get(tag)!r}; pass force to promote anyway."
            )
        old_value = _test_metric(_get_version(client, name, champion), metric)
        if old_value is None:
            raise RegistryError(
                f"champion version {champion} of {name!r} has no finite tag {tag!r} to compare against; "
                "pass force to promote anyway."
            )
        client.set_registered_model_alias(name, CHALLENGER, str(number))
        gain = old_value - new_value if direction == "minimize" else new_value - old_value
        margin = min_improvement * abs(old_value)
        comparison = (
            f"test {metric} {new_value:.6g} vs champion version {champion}'s {old_value:.6g} ({direction}): "
            f"{'better' if gain > 0 else 'not better'} by {abs(gain):.3g}"
        )
        rule = f"registry.min_improvement {min_improvement:g} x {abs(old_value):.6g} = {margin:.3g}"
        if gain <= margin:
            needed = "strictly better" if margin == 0 else f"more than the margin {rule}"
            reason = f"version {number} stays challenger: {comparison}, which is not {needed}"
            return PromotionResult(name, number, False, champion, aliases.get(PREVIOUS), reason)
        reason = f"version {number} promoted: {comparison}" + (f", over the margin {rule}" if margin > 0 else "")
    _move_champion(client, name, number, champion)
    log.info("%s: %s", name, reason)
    previous = champion if champion is not None else aliases.get(PREVIOUS)
    return PromotionResult(name, number, True, number, previous, reason)


def promote(client: MlflowClient, name: str, version: int | str) -> PromotionResult:
    """Make `version` champion unconditionally; the former champion becomes `previous`."""
    number = _version(version)
    _get_version(client, name, number)
    aliases = _aliases(client, name)
    champion = aliases.get(CHAMPION)
    if champion == number:
        return PromotionResult(
            name, number, False, champion, aliases.get(PREVIOUS), f"version {number} is already champion"
        )
    _move_champion(client, name, number, champion)
    previous = champion if champion is not None else aliases.get(PREVIOUS)
    reason = f"version {number} promoted by hand" + (f" over version {champion}" if champion is not None else "")
    log.info("%s: %s", name, reason)
    return PromotionResult(name, number, True, number, previous, reason)


def rollback(client: MlflowClient, name: str) -> PromotionResult:
    """Make the `previous` version champion again; the rolled-back version loses `champion`.

    `previous` is removed afterwards, so a second rollback without a new promotion is an error
    rather than a flip back to the version just rolled back.
    """
    aliases = _aliases(client, name)
    previous = aliases.get(PREVIOUS)
    if previous is None:
        raise RegistryError(
            f"cannot roll back {name!r}: no version carries the alias {PREVIOUS!r} (aliases: {aliases or 'none'})."
        )
    champion = aliases.get(CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, str(previous))
    client.delete_registered_model_alias(name, PREVIOUS)
    reason = f"rolled back to version {previous}" + (f" from version {champion}" if champion is not None else "")
    log.info("%s: %s", name, reason)
    return PromotionResult(name, previous, True, previous, None, reason)


def _info(version: ModelVersion, aliases: tuple[str, ...]) -> VersionInfo:
    tags = version.tags or {}
    metrics = recorded_test_metrics(tags)
    created = datetime.fromtimestamp(version.creation_timestamp / 1000, tz=UTC) if version.creation_timestamp else None
    return VersionInfo(
        name=version.name,
        version=int(version.version),
        aliases=aliases,
        test_metrics=metrics,
        sweep=tags.get(TAG_SWEEP),
        trial=tags.get(TAG_TRIAL),
        policy=tags.get(TAG_POLICY),
        run_id=version.run_id or None,
        source=version.source,
        created=created,
        description=version.description or None,
    )


def list_versions(client: MlflowClient, name: str) -> list[VersionInfo]:
    """Every version of `name`, oldest first, with aliases, test metrics and lineage tags."""
    aliases = _aliases(client, name)
    by_version: dict[int, list[str]] = {}
    for alias, number in aliases.items():
        by_version.setdefault(number, []).append(alias)
    order = {CHAMPION: 0, CHALLENGER: 1, PREVIOUS: 2}
    versions = sorted(_search_versions(client, name), key=lambda v: int(v.version))
    return [
        _info(v, tuple(sorted(by_version.get(int(v.version), []), key=lambda a: (order.get(a, 3), a))))
        for v in versions
    ]
