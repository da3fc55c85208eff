"""The whole configuration schema, its one loader, and dotted `key=value` overrides."""

from __future__ import annotations

import math
import os
import weakref
from importlib.resources import files
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from sweeps.errors import ConfigError
from training.objective import PARAM_CONSTRAINTS

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_CONFIG",
    "ChoiceParam",
    "Config",
    "ConstraintPolicy",
    "DataConfig",
    "FloatParam",
    "IntParam",
    "KneePolicy",
    "LexicographicPolicy",
    "Metric",
    "ModelConfig",
    "Objective",
    "RegistryConfig",
    "ServeConfig",
    "SplitConfig",
    "SweepConfig",
    "TrackingConfig",
    "WeightedPolicy",
    "apply_overrides",
    "config_origin",
    "format_validation_error",
    "load_config",
    "remember_origin",
    "validate_tree",
]


def _config_dir() -> Path:
    """The shipped YAML: `sweeps/configs` in an installed wheel, else the checkout's top-level `configs/`.

    The wheel maps `configs/` into the package (pyproject's package-dir); a checkout, editable
    install included, reads the folder the user edits.
    """
    shipped = files("sweeps").joinpath("configs")
    if isinstance(shipped, Path) and shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parent.parent / "configs"


CONFIG_DIR = _config_dir()
DEFAULT_CONFIG = CONFIG_DIR / "wine.yaml"
Metric = Literal["rmse", "mae", "r2", "nonzero_coefs", "fit_seconds"]
MODEL_PARAMS = tuple(PARAM_CONSTRAINTS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the wine data comes from and how it is cleaned."""

    path: Path | None = Field(
        default_factory=lambda: Path(p) if (p := os.environ.get("SWEEPS_DATA_PATH")) else None,
        description="Local CSV file or folder with the UCI file names; unset: $SWEEPS_DATA_PATH, else UCI.",
    )
    wine: Literal["red", "white", "both"] = "white"
    drop_duplicates: bool = True
    invalid_rows: Literal["error", "drop"] = "error"
    cache_dir: Path | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # null or "" (`data.path=`, as MLproject passes it) is unset: $SWEEPS_DATA_PATH, else download.
        return (os.environ.get("SWEEPS_DATA_PATH") or None) if value in ("", None) else value


class SplitConfig(_Strict):
    """Seeded train / validation / test fractions."""

    validation: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    seed: int = 42

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitConfig:
        if self.validation + self.test >= 1:
            raise ValueError(
                "`validation + test < 1` must hold, but got "
                f"(validation={self.validation}, test={self.test})."
            )
        return self


class ModelConfig(_Strict):
    """ElasticNet parameters of a single training run (and fixed values in a sweep)."""

    alpha: float = 0.5
    l1_ratio: float = 0.5
    max_iter: int = 1000
    tol: float = 1e-4
    seed: int = 0

    @field_validator(*PARAM_CONSTRAINTS)
    @classmethod
    def _within_constraints(cls, value: float, info: ValidationInfo) -> float:
        problem = PARAM_CONSTRAINTS[str(info.field_name)].problem(str(info.field_name), value)
        if problem:
            raise ValueError(problem)
        return value


class FloatParam(_Strict):
    """A float drawn uniformly, or log-uniformly, from [low, high]."""

    type: Literal["uniform", "loguniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"`low <= high` must hold, but got (low={self.low}, high={self.high}).")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs `low > 0`, but got (low={self.low}).")
        return self


class IntParam(_Strict):
    """An integer from [low, high] with a step, optionally on a log scale."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"`low <= high` must hold, but got (low={self.low}, high={self.high}).")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError(
                f"int with log=true needs `low >= 1` and `step == 1`, but got (low={self.low}, step={self.step})."
            )
        return self


class ChoiceParam(_Strict):
    """One of a fixed list of values."""

    type: Literal["choice"]
    choices: list[float | int | str | bool] = Field(min_length=1)


SearchParam = Annotated[FloatParam | IntParam | ChoiceParam, Field(discriminator="type")]


class Objective(_Strict):
    """A metric to optimise and its direction."""

    metric: Metric
    direction: Literal["minimize", "maximize"] = "minimize"


def _default_space() -> dict[str, SearchParam]:
    return {
        "alpha": FloatParam(type="loguniform", low=1e-4, high=10.0),
        "l1_ratio": FloatParam(type="uniform", low=0.0, high=1.0),
    }


class SweepConfig(_Strict):
    """Search space, objectives, sampler and budget of a sweep."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    search_space: dict[str, SearchParam] = Field(default_factory=_default_space)
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="rmse", direction="minimize")], min_length=1
    )
    sampler: Literal["auto", "tpe", "nsga2", "random"] = Field(
        "auto", description="auto = TPE on a bounded window of history (multi-objective TPE for several objectives)."
    )
    seed: int = 0
    num_trials: int = Field(1000, ge=1)
    concurrency: int = Field(2, ge=1, description="Tune workers running at once.")
    batch_size: int = Field(
        64, ge=1, description="Configs evaluated per Tune trial: asked from Optuna and told back together."
    )
    tpe_window: int = Field(
        1000, ge=10, description="TPE learns from at most this many recent trials, bounding ask cost."
    )
    time_budget_s: float | None = Field(None, gt=0)
    max_failures: int = Field(3, ge=0, description="Retries of a Tune trial whose worker died.")
    storage: str = Field("./sweeps-state", description="Folder (or shared path) for sweep state.")

    @field_validator("search_space")
    @classmethod
    def _known_params(cls, space: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(space) - set(MODEL_PARAMS))
        if unknown:
            raise ValueError(f"search_space keys must be ElasticNet params {list(MODEL_PARAMS)}, got {unknown}.")
        if not space:
            raise ValueError("search_space must name at least one parameter.")
        for name, spec in space.items():
            values = spec.choices if isinstance(spec, ChoiceParam) else [spec.low, spec.high]
            problems = [p for p in (PARAM_CONSTRAINTS[name].problem(name, v) for v in values) if p]
            if problems:
                raise ValueError(f"search_space.{name} reaches outside what ElasticNet accepts, so its trials "
                                 f"would fail: {problems[0]}")
        return space

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, objectives: list[Objective]) -> list[Objective]:
        metrics = [o.metric for o in objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objective metrics must be distinct, got {metrics}.")
        return objectives

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


class TrackingConfig(_Strict):
    """Where MLflow records runs."""

    enabled: bool = True
    uri: str | None = Field(None, description="MLflow tracking URI; unset uses MLFLOW_TRACKING_URI or sqlite:///mlflow.db.")
    experiment: str = Field("wine-elasticnet", min_length=1)
    cost_per_cpu_hour: float = Field(0.05, ge=0, description="Price used to estimate a sweep's cost.")

    @property
    def resolved_uri(self) -> str:
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


class LexicographicPolicy(_Strict):
    """Best on the first objective, ties broken by the next."""

    kind: Literal["lexicographic"]
    order: list[Metric] | None = None


class ConstraintPolicy(_Strict):
    """Best on `metric` among trials that satisfy every bound."""

    kind: Literal["constraint"]
    metric: Metric
    max: dict[Metric, float] = Field(default_factory=dict)
    min: dict[Metric, float] = Field(default_factory=dict)


class KneePolicy(_Strict):
    """Closest to the ideal point after min-max normalising each objective."""

    kind: Literal["knee"]


class WeightedPolicy(_Strict):
    """Lowest weighted sum of min-max normalised objectives."""

    kind: Literal["weighted"]
    weights: dict[Metric, float]

    @field_validator("weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {weights}.")
        return weights


Policy = Annotated[
    LexicographicPolicy | ConstraintPolicy | KneePolicy | WeightedPolicy, Field(discriminator="kind")
]


class RegistryConfig(_Strict):
    """Which model name to register under and how the winner is chosen and promoted."""

    model_name: str = Field("wine-elasticnet", min_length=1)
    policy: Policy = Field(default_factory=lambda: KneePolicy(kind="knee"))
    promote_metric: Metric = "rmse"
    min_improvement: float = Field(
        0.001,
        ge=0,
        allow_inf_nan=False,
        description="A challenger becomes champion only when its test promote_metric beats the champion's by more "
        "than this fraction of the champion's value (0.001 = 0.1%); 0 promotes any strict improvement.",
    )


class ServeConfig(_Strict):
    """The Ray Serve endpoint."""

    model_uri: str | None = Field(None, description="Unset serves models:/<registry.model_name>@champion.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    replicas: int = Field(1, ge=1)
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.002, ge=0)
    max_ongoing_requests: int = Field(64, ge=1)
    max_queued_requests: int = Field(256, ge=1)
    max_rows: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    alias_poll_s: float = Field(5.0, gt=0, description="How often the alias is re-read for hot swap.")
    access_log: bool = Field(False, description="Ray Serve's per-request access log (costs throughput).")


class Config(_Strict):
    """Everything one command needs; built only through `load_config`."""

    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @model_validator(mode="after")
    def _policy_uses_objectives(self) -> Config:
        metrics = {o.metric for o in self.sweep.objectives}
        policy = self.registry.policy
        named: set[str] = set()
        if isinstance(policy, WeightedPolicy):
            named = set(policy.weights)
        elif isinstance(policy, LexicographicPolicy) and policy.order:
            named = set(policy.order)
        elif isinstance(policy, ConstraintPolicy):
            named = {policy.metric}
        stray = sorted(named - metrics)
        if stray:
            raise ValueError(
                f"registry.policy names metric(s) {stray} that are not sweep objectives {sorted(metrics)}."
            )
        return self


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section.")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key=value` overrides (values parsed as YAML) to a raw config tree."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} must look like key=value (e.g. sweep.num_trials=100).")
        if key in MODEL_PARAMS:
            key = f"model.{key}"
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({_yaml_problem(exc)}).") from exc
        text_field = _text_field(key)
        if text_field is not None and value is not None and not isinstance(value, str):
            value = raw.strip()  # `sweep.name=off` is the name "off", not the boolean YAML reads
        elif text_field is False and value is None and raw.strip():
            value = raw.strip()  # a name that cannot be unset: `registry.model_name=null` is "null"
        _set_dotted(tree, key, value)
    return tree


def _text_field(dotted: str) -> bool | None:
    """Whether the field at `dotted` takes text (True: also null, False: text only); None for any other type.

    YAML reads `off`, `yes`, `no`, `on`, `true`, dates and numbers as other types; a field that
    takes only text keeps the value as written, while `data.drop_duplicates=false` stays a boolean.
    """
    model: type[BaseModel] = Config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return None
            model = annotation
            continue
        args = set(get_args(annotation)) if get_origin(annotation) in (Union, UnionType) else {annotation}
        kinds = args - {type(None)}
        if kinds and kinds <= {str, Path}:
            return type(None) in args
    return None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line: what is wrong and where (its own text spans several lines)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def format_validation_error(exc: ValidationError, where: str, section: str | None = None) -> str:
    """Pydantic's errors as `where: field.path: message (got value)`, one line each, no boilerplate.

    `section` prefixes the field path when the model validated is one section of the config
    (`serve` for `ServeConfig`), so the path reads as it would in the YAML file.
    """
    lines = []
    for error in exc.errors():
        parts = [str(p) for p in error["loc"] if not str(p).startswith("function-")]
        location = ".".join([section, *parts] if section else parts)
        message = error["msg"].removeprefix("Value error, ")
        got = error.get("input")
        suffix = "" if error["type"] in ("missing", "value_error") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{where}: {location + ': ' if location else ''}{message}{suffix}")
    return "\n".join(lines)


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (default `configs/wine.yaml`), apply overrides and validate.

    Every error names the file and the field path.
    """
    source = path or DEFAULT_CONFIG
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config ({exc.strerror or exc}).") from exc
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({_yaml_problem(exc)}).") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(tree).__name__}.")
    where = str(source)
    if overrides:
        apply_overrides(tree, list(overrides))
        where = f"{source} with overrides {list(overrides)}"
    return validate_tree(tree, where)


def validate_tree(tree: dict[str, Any], where: str) -> Config:
    """Validate a raw config tree; every error names `where` (the file, or what the tree came from) and the field.

    `where` stays with the Config as its origin (`config_origin`), so later errors can name it.
    """
    try:
        return remember_origin(Config.model_validate(tree), where)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from exc


# Where each live Config came from ("configs/multi.yaml with overrides [...]"), by object identity:
# a Config is frozen and compared by value, so its origin is kept beside it, not in it.
_ORIGINS: dict[int, str] = {}


def remember_origin(config: Config, where: str) -> Config:
    """Record `where` as the origin of `config` (kept while `config` lives); returns `config`."""
    if id(config) not in _ORIGINS:
        weakref.finalize(config, _ORIGINS.pop, id(config), None)
    _ORIGINS[id(config)] = where
    return config


def config_origin(config: Config) -> str | None:
    """The file (and overrides) `config` was loaded from, as its loader named it; None when built otherwise."""
    return _ORIGINS.get(id(config))
