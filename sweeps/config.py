"""The whole configuration schema, its one loader, and dotted `key=value` overrides."""

from __future__ import annotations

import codecs
import math
import os
import reprlib
import stat
import weakref
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from sweeps.errors import ConfigError
from sweeps.safe_yaml import parse_yaml
from training.params import PARAM_CONSTRAINTS

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_CONFIG",
    "MAX_CONFIG_BYTES",
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


# The shipped configs are about 2 KB; PyYAML parses some 30 KB a second on a busy core, so 64 KB
# bounds the time a hostile file can take as well as its memory.
MAX_CONFIG_BYTES = 64 * 1024
# numpy's and scikit-learn's seeds are 32-bit; the split and the sampler also use seed + 1.
MAX_SEED = 2**32 - 2


def _takes_numbers(annotation: Any) -> bool:
    """Whether a field takes only numbers (or null), or a dict of numbers."""
    if get_origin(annotation) is dict:
        annotation = get_args(annotation)[1]
    args = set(get_args(annotation)) if get_origin(annotation) in (Union, UnionType) else {annotation}
    kinds = args - {type(None)}
    return bool(kinds) and kinds <= {int, float}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        # Pydantic reads true as 1 for a number: `sweep.num_trials=true` would run one trial. A
        # boolean given for a number goes on as its text, so pydantic refuses it where it stands
        # ("Input should be a valid integer ... (got 'true')").
        if not isinstance(data, dict):
            return data
        changed = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if field is None or not _takes_numbers(field.annotation):
                continue
            if isinstance(value, bool):
                changed[name] = str(value).lower()
            elif isinstance(value, dict) and any(isinstance(v, bool) for v in value.values()):
                changed[name] = {k: str(v).lower() if isinstance(v, bool) else v for k, v in value.items()}
        return changed


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
    seed: int = Field(42, ge=0, le=MAX_SEED)

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
    seed: int = Field(0, ge=0, le=MAX_SEED)

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


def _storage_problem(storage: str) -> str | None:
    """Why sweep state cannot be kept at `storage` (a file, or a folder it cannot write), else None."""
    if "://" in storage or not storage.strip():
        return None  # a URI or an empty string: refused by SweepConfig._local_folder
    rule = "must be a folder the sweep can write"
    path = Path(storage).absolute()
    problem = None
    for candidate in (path, *path.parents):
        try:
            info = candidate.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue  # created by the sweep, if the nearest existing folder allows
        except (OSError, ValueError) as exc:
            problem = f" cannot be checked ({getattr(exc, 'strerror', None) or exc})"
        else:
            below = "" if candidate == path else f" would be created under {str(candidate)!r}, which"
            if not stat.S_ISDIR(info.st_mode):
                problem = f"{below} is not a folder"
            elif not os.access(candidate, os.W_OK | os.X_OK):
                problem = f"{below} is not writable"
        break
    return f"{rule}, but {storage!r}{problem}." if problem else None


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
    seed: int = Field(0, ge=0, le=MAX_SEED)
    num_trials: int = Field(1000, ge=1, le=10**9)
    concurrency: int = Field(2, ge=1, le=10_000, description="Tune workers running at once.")
    batch_size: int = Field(
        64, ge=1, le=10_000,
        description="Most configs leased to a worker at once: asked from Optuna and told back together; fewer "
        "while the sweep is young (at most 1/32 of the trials finished, at least 4).",
    )
    tpe_window: int = Field(
        1000, ge=10, description="TPE learns from at most this many recent trials, bounding ask cost."
    )
    time_budget_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_failures: int = Field(3, ge=0, description="Retries of a Tune trial whose worker died.")
    storage: str = Field(
        "./sweeps-state",
        description="Folder for sweep state, on the driver's filesystem (on a multi-host cluster: a shared mount).",
    )

    @field_validator("storage")
    @classmethod
    def _local_folder(cls, storage: str) -> str:
        # The Optuna journal is appended to with file locks and Tune's experiment folder is a local
        # path: neither works on an object store, so a URI is refused here rather than turned into
        # a folder named like it (./s3:/bucket/...).
        scheme = storage.split("://", 1)[0] if "://" in storage else ""
        if scheme:
            raise ValueError(
                f"a folder path is required (on a multi-host cluster, one on a filesystem every node mounts, "
                f"e.g. /mnt/sweeps/state), but got the URI {storage!r}: the sweep's Optuna journal needs file "
                "locks and appends, which an object store does not offer."
            )
        if not storage.strip():
            raise ValueError("a folder path is required, but got an empty string.")
        return storage

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

    @field_validator("storage")
    @classmethod
    def _writable_folder(cls, storage: str, info: ValidationInfo) -> str:
        # Checked where a config comes in (`validate_tree`), before Ray starts; not when a stored one is re-read.
        problem = _storage_problem(storage) if (info.context or {}).get("check_paths") else None
        if problem:
            raise ValueError(problem)
        return storage

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


# The schemes MLflow 3 opens a tracking store and model registry for (`postgresql+psycopg2` counts
# as `postgresql`); a plugin's scheme (entry-point group `mlflow.tracking_store`) is accepted too.
_TRACKING_SCHEMES = (
    "", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc", "uc"
)


def _tracking_uri_problem(uri: str) -> str | None:
    """Why MLflow cannot track to `uri`, else None."""
    rule = (
        "must be a path or a URI MLflow can track to "
        "(file:, sqlite:, postgresql:, mysql:, mssql:, http:, https:, databricks:)"
    )
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError as exc:
        return f"{rule}, but {uri!r} is not a URI ({exc})."
    base = scheme.partition("+")[0]
    if base in _TRACKING_SCHEMES or len(scheme) == 1:  # one letter: a Windows drive
        return None
    if scheme in {e.name for e in entry_points(group="mlflow.tracking_store")}:
        return None
    return f"{rule}, but got scheme {scheme!r} in {uri!r}."


class TrackingConfig(_Strict):
    """Where MLflow records runs."""

    enabled: bool = True
    uri: str | None = Field(None, description="MLflow tracking URI; unset uses MLFLOW_TRACKING_URI or sqlite:///mlflow.db.")
    experiment: str = Field("wine-elasticnet", min_length=1)
    cost_per_cpu_hour: float = Field(0.05, ge=0, description="Price used to estimate a sweep's cost.")
    flush_timeout_s: float = Field(
        120.0, gt=0, le=86400,
        description="Once the trials end, how long an unreachable tracking server is retried before the runs still "
        "unwritten are left to `sweeps resume`.",
    )

    @field_validator("uri")
    @classmethod
    def _trackable(cls, uri: str | None) -> str | None:
        problem = _tracking_uri_problem(uri) if uri else None
        if problem:
            raise ValueError(problem)
        return uri

    @property
    def resolved_uri(self) -> str:
        if self.uri:
            return self.uri
        env = os.environ.get("MLFLOW_TRACKING_URI")
        problem = _tracking_uri_problem(env) if env else None
        if problem:
            raise ConfigError(f"environment variable MLFLOW_TRACKING_URI: {problem}")
        return env or "sqlite:///mlflow.db"


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
    trusted_formats: tuple[Literal["skops", "pickle", "cloudpickle"], ...] = Field(
        ("skops",),
        min_length=1,
        description="Serialization formats a model version may use to be loaded; pickle and cloudpickle run "
        "code from the registry when loaded, so allow them only for a registry you trust (docs/serving.md).",
    )
    require_lineage: bool = Field(
        True, description="Load only versions tagged with this project's lineage (sweep, trial, dataset digest)."
    )
    skops_trusted_types: tuple[str, ...] = Field(
        (),
        description="Types a skops model may hold beyond skops' defaults (never the model's own list).",
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, le=1024 * 1024, description="Request line plus headers; more is answered 431."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="Time a client has to send a request's headers; then 408 and closed."
    )
    max_connections: int = Field(
        1000, ge=2, le=1_000_000, description="Open connections to the HTTP front; the longest idle is closed first."
    )


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
            value = parse_yaml(raw) if raw.strip() else None
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
    where = _clip(where, 500)
    errors = exc.errors()
    for error in errors[:_MAX_ERRORS_SHOWN]:
        parts = [_clip(str(p), 80) for p in error["loc"] if not str(p).startswith("function-")]
        location = ".".join([section, *parts] if section else parts)
        message = _clip(error["msg"].removeprefix("Value error, "), 500)
        got = error.get("input")
        suffix = "" if error["type"] in ("missing", "value_error") or isinstance(got, dict) else f" (got {_shown(got)})"
        lines.append(f"{where}: {location + ': ' if location else ''}{message}{suffix}")
    if len(errors) > _MAX_ERRORS_SHOWN:
        lines.append(f"{where}: and {len(errors) - _MAX_ERRORS_SHOWN} more error(s).")
    return "\n".join(lines)


# An input is shown, never printed whole: a config can hold a megabyte string or a list of a
# million items, and an error message must cost neither the memory nor the screen.
_MAX_ERRORS_SHOWN = 20
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlevel = 3


def _clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters in the middle, keeping its start and its end (where a reason often is)."""
    if len(text) <= limit:
        return text
    head = (limit - 3) // 2
    return text[:head] + "..." + text[len(text) - (limit - 3 - head) :]


def _shown(value: Any) -> str:
    try:
        return _clip(_REPR.repr(value), 200)
    except ValueError:  # an int beyond Python's 4,300-digit limit for printing
        return f"an {type(value).__name__} too large to show"


# UTF-32 first: its little-endian mark begins with UTF-16's.
_FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _read_config_text(source: Path) -> str:
    """The config file as text: at most MAX_CONFIG_BYTES, UTF-8 (with or without a BOM), or a ConfigError saying why."""
    try:
        with source.open("rb") as handle:
            payload = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config ({exc.strerror or exc}).") from exc
    if len(payload) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: config is larger than {MAX_CONFIG_BYTES:,} bytes; a config is a few KB of YAML.")
    for bom, encoding in _FOREIGN_BOMS:
        if payload.startswith(bom):
            raise ConfigError(
                f"{source}: config is {encoding} text (it starts with a {encoding} byte-order mark); save it as UTF-8."
            )
    payload = payload.removeprefix(codecs.BOM_UTF8)
    if b"\x00" in payload:
        line = payload.count(b"\n", 0, payload.index(b"\x00")) + 1
        raise ConfigError(f"{source}: config has a NUL byte at line {line} (UTF-16 text?); save it as UTF-8.")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = payload.rfind(b"\n", 0, exc.start) + 1
        line = payload.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{source}: config is not UTF-8 text: byte 0x{payload[exc.start]:02x} at line {line}, column "
            f"{exc.start - line_start + 1} ({exc.reason}); save it as UTF-8."
        ) from None
    return text


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (default `configs/wine.yaml`), apply overrides and validate.

    Every error names the file and the field path.
    """
    source = path or DEFAULT_CONFIG
    text = _read_config_text(source)
    try:
        tree = parse_yaml(text) or {}
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
        return remember_origin(Config.model_validate(tree, context={"check_paths": True}), where)
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
