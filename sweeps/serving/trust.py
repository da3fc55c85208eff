"""Which model versions the endpoint loads: decided from registry tags and files, before anything is deserialized.

Loading a pickle or cloudpickle file runs whatever code its author put in it, so a registry
alias must not be enough to get code run on the serving hosts. A version is loaded only when

- it carries this project's lineage tags (`sweeps.sweep`, `sweeps.trial`, `sweeps.dataset_digest`,
  as `sweeps select` registers them), unless `serve.require_lineage` is false;
- its MLmodel file (YAML, read with `safe_load`) declares the scikit-learn flavor, and a
  `python_function` flavor, if any, that loads through `mlflow.sklearn` (not a cloudpickled
  PythonModel);
- its serialization format is one of `serve.trusted_formats` (by default only skops, the format
  the project logs); a missing format means pickle, as MLflow reads it;
- for skops, every type the file holds is one skops trusts by default or one named in
  `serve.skops_trusted_types`. The model's own `skops_trusted_types` in MLmodel is ignored: it
  is written by whoever wrote the model.

Only then is the file loaded: skops with our list of trusted types, pickle formats (opted in)
with MLflow's own loader.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities.model_registry import ModelVersion

from sweeps.errors import UntrustedModel
from sweeps.tracking.names import TAG_DIGEST, TAG_SWEEP, TAG_TRIAL

__all__ = [
    "FORMATS",
    "LINEAGE_TAGS",
    "PICKLE_FORMATS",
    "ModelTrust",
    "TrustedFile",
    "check_lineage",
    "check_model_dir",
    "load_trusted",
]

log = logging.getLogger(__name__)

SKOPS = "skops"
PICKLE_FORMATS = ("pickle", "cloudpickle")
FORMATS = (SKOPS, *PICKLE_FORMATS)
LINEAGE_TAGS = (TAG_SWEEP, TAG_TRIAL, TAG_DIGEST)
MLMODEL = "MLmodel"
MAX_MLMODEL_BYTES = 1024 * 1024
_SKLEARN_LOADER = "mlflow.sklearn"
_SHOWN = 10  # names listed in a refusal


@dataclass(frozen=True)
class ModelTrust:
    """What a version must satisfy to be loaded (from `serve.trusted_formats`, `require_lineage`, ...)."""

    formats: frozenset[str] = frozenset({SKOPS})
    require_lineage: bool = True
    skops_types: tuple[str, ...] = ()

    @classmethod
    def of(cls, formats: Collection[str], require_lineage: bool, skops_types: Sequence[str]) -> ModelTrust:
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown:
            raise ValueError(f"trusted formats must be among {list(FORMATS)}, got {unknown}.")
        return cls(frozenset(formats), require_lineage, tuple(skops_types))


@dataclass(frozen=True)
class TrustedFile:
    """A model file that passed the checks, and how to load it."""

    path: Path
    serialization_format: str
    skops_types: tuple[str, ...] = ()


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n[:80]) for n in names[:_SHOWN])
    return f"[{shown}{f', ... {len(names) - _SHOWN} more' if len(names) > _SHOWN else ''}]"


def check_lineage(version: ModelVersion, trust: ModelTrust) -> None:
    """Refuse a version without this project's lineage tags (unless lineage is not required)."""
    if not trust.require_lineage:
        return
    tags = version.tags or {}
    missing = [tag for tag in LINEAGE_TAGS if not str(tags.get(tag, "")).strip()]
    if missing:
        raise UntrustedModel(
            f"Model {version.name!r} version {version.version} lacks the lineage tag(s) {missing} that "
            f"`sweeps select` writes (every one of {list(LINEAGE_TAGS)} is required), so it was not registered by "
            "this project and is not loaded. Register it with `sweeps select`, or set serve.require_lineage=false "
            "to serve versions from elsewhere."
        )


def _read_mlmodel(model_dir: Path, where: str) -> dict[str, Any]:
    path = model_dir / MLMODEL
    if path.is_symlink() or not path.is_file():
        raise UntrustedModel(f"{where} has no {MLMODEL} file (or it is a link); it is not an MLflow model.")
    size = path.stat().st_size
    if size > MAX_MLMODEL_BYTES:
        raise UntrustedModel(f"{where}: {MLMODEL} must be at most {MAX_MLMODEL_BYTES} bytes, got {size}.")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise UntrustedModel(f"{where}: {MLMODEL} is not readable YAML ({type(exc).__name__}).") from None
    if not isinstance(document, dict) or not isinstance(document.get("flavors"), dict):
        raise UntrustedModel(f"{where}: {MLMODEL} must be a mapping with a 'flavors' mapping.")
    return document


def _model_file(model_dir: Path, name: Any, where: str) -> Path:
    """The flavor's model file: a regular file inside the model folder, reached without links."""
    if not isinstance(name, str) or not name.strip():
        raise UntrustedModel(f"{where}: the sklearn flavor names no model file (pickled_model={name!r}).")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise UntrustedModel(f"{where}: the model file {name!r} must be a path inside the model folder.")
    path = model_dir / relative
    root = model_dir.resolve()
    if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(root):
        raise UntrustedModel(f"{where}: the model file {name!r} is missing, not a regular file, or a link.")
    return path


def _skops_types(path: Path, trust: ModelTrust, declared: Any, where: str) -> tuple[str, ...]:
    """Check the types a skops file holds (read from its schema, nothing constructed) against ours."""
    import skops.io  # imported here: the endpoint's other modules do not need it

    try:
        found = list(skops.io.get_untrusted_types(file=path))
    except Exception as exc:  # a torn or planted file: zip, JSON and schema errors alike
        raise UntrustedModel(f"{where}: {path.name} is not a readable skops file ({type(exc).__name__}).") from None
    untrusted = sorted(set(found) - set(trust.skops_types))
    if untrusted:
        note = " (the model's own skops_trusted_types are not taken into account)" if declared else ""
        raise UntrustedModel(
            f"{where}: {path.name} holds type(s) {_listed(untrusted)} that skops does not trust by default{note}; "
            "not loaded. Name them in serve.skops_trusted_types only if you know what they do."
        )
    return tuple(sorted(set(found)))


def check_model_dir(model_dir: Path, trust: ModelTrust, where: str) -> TrustedFile:
    """Refuse a downloaded model folder whose files would run code when loaded; nothing is deserialized."""
    document = _read_mlmodel(model_dir, where)
    flavors: Mapping[str, Any] = document["flavors"]
    sklearn = flavors.get("sklearn")
    if not isinstance(sklearn, dict):
        raise UntrustedModel(
            f"{where} has flavor(s) {_listed(sorted(map(str, flavors)))}, not 'sklearn'; the endpoint serves only "
            "scikit-learn models logged with mlflow.sklearn."
        )
    pyfunc = flavors.get("python_function")
    if pyfunc is not None:
        loader = pyfunc.get("loader_module") if isinstance(pyfunc, dict) else None
        if loader != _SKLEARN_LOADER:
            raise UntrustedModel(
                f"{where}: its python_function flavor loads with {str(loader)[:80]!r}, not {_SKLEARN_LOADER!r} "
                "(a custom or cloudpickled Python model); not loaded."
            )
    fmt = sklearn.get("serialization_format") or "pickle"  # what MLflow assumes when it is missing
    if fmt not in trust.formats:
        risk = " which runs code from the file when it is loaded;" if fmt in PICKLE_FORMATS else ";"
        raise UntrustedModel(
            f"{where} is serialized as {str(fmt)[:40]!r},{risk} this endpoint loads only {sorted(trust.formats)} "
            "(serve.trusted_formats). Not loaded."
        )
    path = _model_file(model_dir, sklearn.get("pickled_model"), where)
    if fmt != SKOPS:
        return TrustedFile(path, fmt)
    return TrustedFile(path, fmt, _skops_types(path, trust, sklearn.get("skops_trusted_types"), where))


def load_trusted(model_dir: Path, checked: TrustedFile) -> Any:
    """Load a file `check_model_dir` accepted: skops with the checked types, pickle formats through MLflow."""
    if checked.serialization_format == SKOPS:
        import skops.io

        return skops.io.load(checked.path, trusted=list(checked.skops_types))
    import mlflow.sklearn  # the opted-in pickle formats: MLflow's own loader, as `mlflow models serve` would

    log.warning("loading %s, a %s file: allowed by serve.trusted_formats", checked.path, checked.serialization_format)
    return mlflow.sklearn.load_model(str(model_dir))
