"""Which model versions the endpoint loads: planted pickles refused before any byte is unpickled."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import skops.io
import yaml
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag
from sklearn.linear_model import ElasticNet
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sweeps.errors import UnsupportedModel, UntrustedModel
from sweeps.serving.trust import LINEAGE_TAGS, ModelTrust, check_lineage, check_model_dir, load_trusted
from sweeps.tracking.names import TAG_DIGEST, TAG_SWEEP, TAG_TRIAL

WHERE = "Model 'wine' version 7"
LINEAGE = {TAG_SWEEP: "nightly", TAG_TRIAL: "12", TAG_DIGEST: "abc123"}


def _touch(path: str) -> None:
    Path(path).write_text("the payload ran", encoding="utf-8")


class Payload:
    """Unpickling this object creates the marker file: what a planted model does, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_touch, (self.marker,))


class Custom:
    """A type skops does not trust by default."""

    def __init__(self) -> None:
        self.weight = 1.0


def pipeline() -> Pipeline:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=30)
    return Pipeline([("scaler", StandardScaler()), ("model", ElasticNet(alpha=0.01))]).fit(x, y)


def model_dir(
    root: Path,
    serialization: str | None,
    *,
    payload: bytes | None = None,
    sklearn: dict[str, Any] | None = None,
    pyfunc_loader: str | None = "mlflow.sklearn",
    flavors: dict[str, Any] | None = None,
) -> Path:
    """A model folder as MLflow writes it, with `payload` as the model file."""
    folder = root / "model"
    folder.mkdir()
    name = "model.skops" if serialization == "skops" else "model.pkl"
    (folder / name).write_bytes(payload if payload is not None else skops.io.dumps(pipeline()))
    flavor: dict[str, Any] = {"pickled_model": name, "sklearn_version": "1.9.1", "code": None}
    if serialization is not None:
        flavor["serialization_format"] = serialization
    flavor.update(sklearn or {})
    document: dict[str, Any] = {"flavors": flavors if flavors is not None else {"sklearn": flavor}}
    if pyfunc_loader is not None and flavors is None:
        document["flavors"]["python_function"] = {"loader_module": pyfunc_loader, "model_path": name}
    (folder / "MLmodel").write_text(yaml.safe_dump(document), encoding="utf-8")
    return folder


def version(tags: dict[str, str]) -> ModelVersion:
    return ModelVersion("wine", "7", 0, tags=[ModelVersionTag(k, v) for k, v in tags.items()])


# --- what is refused, before anything is unpickled ---------------------------------------------


def test_the_planted_payload_is_live(tmp_path: Path) -> None:
    # The control: unpickling the planted model does run its payload, so "marker absent" means something.
    marker = tmp_path / "pwned"
    cloudpickle.loads(cloudpickle.dumps(Payload(marker)))
    assert marker.read_text(encoding="utf-8") == "the payload ran"



@pytest.mark.parametrize("fmt", ["cloudpickle", "pickle"])
def test_a_planted_pickle_is_refused_and_its_payload_never_runs(tmp_path: Path, fmt: str) -> None:
    marker = tmp_path / "pwned"
    dumps = cloudpickle.dumps if fmt == "cloudpickle" else pickle.dumps
    folder = model_dir(tmp_path, fmt, payload=dumps(Payload(marker)))
    with pytest.raises(UntrustedModel, match=rf"^{WHERE} is serialized as '{fmt}', which runs code from the file"):
        check_model_dir(folder, ModelTrust(), WHERE)
    assert not marker.exists()


def test_a_model_without_a_serialization_format_is_a_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = model_dir(tmp_path, None, payload=pickle.dumps(Payload(marker)))
    message = r"serialized as 'pickle'.*loads only \['skops'\] \(serve.trusted_formats\)"
    with pytest.raises(UntrustedModel, match=message):
        check_model_dir(folder, ModelTrust(), WHERE)
    assert not marker.exists()


def test_a_cloudpickled_python_model_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    flavors = {"python_function": {"loader_module": "mlflow.pyfunc.model", "python_model": "model.pkl"}}
    folder = model_dir(tmp_path, "cloudpickle", payload=cloudpickle.dumps(Payload(marker)), flavors=flavors)
    with pytest.raises(UntrustedModel, match=r"has flavor\(s\) \['python_function'\], not 'sklearn'"):
        check_model_dir(folder, ModelTrust(), WHERE)
    assert not marker.exists()


def test_a_skops_flavor_next_to_a_custom_pyfunc_loader_is_refused(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, "skops", pyfunc_loader="mlflow.pyfunc.model")
    with pytest.raises(UntrustedModel, match=r"python_function flavor loads with 'mlflow.pyfunc.model'"):
        check_model_dir(folder, ModelTrust(), WHERE)


def test_a_skops_file_with_an_untrusted_type_is_refused_even_if_its_mlmodel_trusts_it(tmp_path: Path) -> None:
    custom = f"{Custom.__module__}.Custom"
    folder = model_dir(tmp_path, "skops", payload=skops.io.dumps([Custom()]), sklearn={"skops_trusted_types": [custom]})
    message = rf"holds type\(s\) \['{custom}'\] that skops does not trust by default \(the model's own"
    with pytest.raises(UntrustedModel, match=message):
        check_model_dir(folder, ModelTrust(), WHERE)
    checked = check_model_dir(folder, ModelTrust(skops_types=(custom,)), WHERE)  # named by the operator
    assert checked.skops_types == (custom,)


def test_a_pickle_named_like_a_skops_file_is_not_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = model_dir(tmp_path, "skops", payload=pickle.dumps(Payload(marker)))
    with pytest.raises(UntrustedModel, match=r"model.skops is not a readable skops file \(BadZipFile\)"):
        check_model_dir(folder, ModelTrust(), WHERE)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../outside.skops", r"must be a path inside the model folder"),
        ("/etc/passwd", r"must be a path inside the model folder"),
        ("missing.skops", r"'missing.skops' is missing, not a regular file, or a link"),
        (None, r"the sklearn flavor names no model file \(pickled_model=None\)"),
    ],
)
def test_the_model_file_must_be_a_plain_file_in_the_folder(tmp_path: Path, name: str | None, message: str) -> None:
    folder = model_dir(tmp_path, "skops", sklearn={"pickled_model": name})
    with pytest.raises(UntrustedModel, match=message):
        check_model_dir(folder, ModelTrust(), WHERE)


def test_a_model_file_that_is_a_link_is_refused(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, "skops", sklearn={"pickled_model": "link.skops"})
    os.symlink(folder / "model.skops", folder / "link.skops")
    with pytest.raises(UntrustedModel, match=r"'link.skops' is missing, not a regular file, or a link"):
        check_model_dir(folder, ModelTrust(), WHERE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("!!python/object/apply:os.system ['touch pwned']", r"MLmodel is not readable YAML \(ConstructorError\)"),
        ("[1, 2]", r"MLmodel must be a mapping with a 'flavors' mapping"),
        ("flavors: 3", r"MLmodel must be a mapping with a 'flavors' mapping"),
        ("a: [", r"MLmodel is not readable YAML \(ParserError\)"),
    ],
)
def test_an_mlmodel_file_is_read_as_plain_yaml(tmp_path: Path, text: str, message: str) -> None:
    folder = model_dir(tmp_path, "skops")
    (folder / "MLmodel").write_text(text, encoding="utf-8")
    with pytest.raises(UntrustedModel, match=message):
        check_model_dir(folder, ModelTrust(), WHERE)


def test_untrusted_model_is_an_unsupported_model() -> None:
    assert issubclass(UntrustedModel, UnsupportedModel)
    assert UntrustedModel.exit_code == 2


# --- lineage ------------------------------------------------------------------------------------


def test_a_version_without_the_lineage_tags_is_refused_and_named() -> None:
    message = (
        rf"^Model 'wine' version 7 lacks the lineage tag\(s\) \['{TAG_TRIAL}', '{TAG_DIGEST}'\] that `sweeps select` "
        r"writes .* set serve.require_lineage=false"
    )
    with pytest.raises(UntrustedModel, match=message):
        check_lineage(version({TAG_SWEEP: "nightly", TAG_DIGEST: " "}), ModelTrust())


def test_lineage_is_all_three_tags() -> None:
    assert LINEAGE_TAGS == (TAG_SWEEP, TAG_TRIAL, TAG_DIGEST)
    check_lineage(version(LINEAGE), ModelTrust())
    check_lineage(version({}), ModelTrust(require_lineage=False))


# --- what is accepted, and loads -----------------------------------------------------------------


def test_skops_with_lineage_is_accepted_and_loads_the_same_pipeline(tmp_path: Path) -> None:
    check_lineage(version(LINEAGE), ModelTrust())
    folder = model_dir(tmp_path, "skops")
    checked = check_model_dir(folder, ModelTrust(), WHERE)
    assert (checked.path, checked.serialization_format, checked.skops_types) == (folder / "model.skops", "skops", ())
    loaded = load_trusted(folder, checked)
    rows = np.random.default_rng(1).normal(size=(5, 3))
    np.testing.assert_array_equal(loaded.predict(rows), pipeline().predict(rows))


def test_cloudpickle_loads_only_when_opted_in(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, "cloudpickle", payload=cloudpickle.dumps(pipeline()))
    trust = ModelTrust.of(["skops", "cloudpickle"], True, [])
    checked = check_model_dir(folder, trust, WHERE)
    rows = np.ones((2, 3))
    np.testing.assert_array_equal(load_trusted(folder, checked).predict(rows), pipeline().predict(rows))


def test_trust_of_refuses_an_unknown_format() -> None:
    message = r"trusted formats must be among \['skops', 'pickle', 'cloudpickle'\], got \['dill'\]"
    with pytest.raises(ValueError, match=message):
        ModelTrust.of(["dill"], True, [])
