"""Config schema: every rule's message, overrides, and every YAML under configs/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import ValidationError

from sweeps.config import (
    CONFIG_DIR,
    DEFAULT_CONFIG,
    Config,
    DataConfig,
    Metric,
    ServeConfig,
    TrackingConfig,
    format_validation_error,
    load_config,
)
from sweeps.errors import ConfigError
from training.objective import METRICS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def raises_at(path: Path, message: str) -> pytest.RaisesExc[ConfigError]:
    """Expect a ConfigError naming `path` followed by `message` (a regex)."""
    return pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: {message}")


# --- every YAML loads ------------------------------------------------------------------------


def _is_serve_app(path: Path) -> bool:
    tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    return isinstance(tree, dict) and "applications" in tree


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_loads(path: Path) -> None:
    if _is_serve_app(path):
        # A Ray Serve config file (`serve deploy`): checked against Ray Serve's own schema.
        from ray.serve.schema import ServeDeploySchema

        schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        assert schema.applications
        return
    assert isinstance(load_config(path), Config)


def test_default_and_smoke_configs() -> None:
    default = load_config()
    assert DEFAULT_CONFIG.name == "wine.yaml"
    assert default.data.wine == "white"
    assert default.data.invalid_rows == "error"
    assert default.data.drop_duplicates is True
    smoke = load_config(CONFIG_DIR / "smoke.yaml")
    assert smoke.sweep.num_trials < default.sweep.num_trials
    assert smoke.sweep.multi_objective


def test_metric_literal_matches_the_objective() -> None:
    assert get_args(Metric) == METRICS


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


# --- file-level errors -----------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with raises_at(missing, r"cannot read config \(No such file or directory\)\.$"):
        load_config(missing)


def test_bad_yaml_is_one_line_with_its_position(tmp_path: Path) -> None:
    path = write(tmp_path, "sweep:\n  num_trials: [1, 2\n")
    with raises_at(path, r"not valid YAML \(.* at line \d+, column \d+\)\.$"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    with raises_at(path, r"top level must be a mapping, got list\.$"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("colour: red\n", "colour"),
        ("sweep:\n  budget: 3\n", r"sweep\.budget"),
        ("data:\n  wine_type: red\n", r"data\.wine_type"),
    ],
)
def test_unknown_field_names_file_and_field_path(tmp_path: Path, text: str, location: str) -> None:
    path = write(tmp_path, text)
    with raises_at(path, rf"{location}: Extra inputs are not permitted"):
        load_config(path)


def test_every_error_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  alpha: -1\n  l1_ratio: 2\n")
    with pytest.raises(ConfigError, match=r"model\.alpha: .*\n.*model\.l1_ratio: ") as info:
        load_config(path)
    assert len(str(info.value).splitlines()) == 2


def test_format_validation_error_puts_a_section_before_the_field() -> None:
    with pytest.raises(ValidationError, match=r"2 validation errors for ServeConfig") as info:
        ServeConfig.model_validate({"port": 0, "host": None})
    text = format_validation_error(info.value, "command line --port 0", section="serve")
    assert text.splitlines() == [
        "command line --port 0: serve.host: Input should be a valid string (got None)",
        "command line --port 0: serve.port: Input should be greater than or equal to 1 (got 0)",
    ]
    assert "For further information" not in text


# --- rules -----------------------------------------------------------------------------------

RULES = [
    (
        "sweep:\n  search_space:\n    alpha: {type: uniform, low: 2.0, high: 1.0}\n",
        r"sweep\.search_space\.alpha\.uniform: `low <= high` must hold, but got \(low=2\.0, high=1\.0\)\.",
    ),
    (
        "sweep:\n  search_space:\n    alpha: {type: uniform, low: .nan, high: 1.0}\n",
        r"sweep\.search_space\.alpha\.uniform: `low <= high` must hold, but got \(low=nan, high=1\.0\)\.",
    ),
    (
        "sweep:\n  search_space:\n    alpha: {type: loguniform, low: 0, high: 1.0}\n",
        r"sweep\.search_space\.alpha\.loguniform: loguniform needs `low > 0`, but got \(low=0\.0\)\.",
    ),
    (
        "sweep:\n  search_space:\n    max_iter: {type: int, low: 10, high: 1}\n",
        r"sweep\.search_space\.max_iter\.int: `low <= high` must hold, but got \(low=10, high=1\)\.",
    ),
    (
        "sweep:\n  search_space:\n    max_iter: {type: int, low: 0, high: 100, log: true}\n",
        r"sweep\.search_space\.max_iter\.int: int with log=true needs `low >= 1` and `step == 1`, "
        r"but got \(low=0, step=1\)\.",
    ),
    (
        "sweep:\n  search_space:\n    max_iter: {type: int, low: 1, high: 100, step: 2, log: true}\n",
        r"sweep\.search_space\.max_iter\.int: int with log=true needs `low >= 1` and `step == 1`, "
        r"but got \(low=1, step=2\)\.",
    ),
    (
        "sweep:\n  search_space:\n    max_iter: {type: int, low: 1, high: 100, step: 0}\n",
        r"sweep\.search_space\.max_iter\.int\.step: Input should be greater than or equal to 1 \(got 0\)",
    ),
    (
        "sweep:\n  search_space:\n    tol: {type: choice, choices: []}\n",
        r"sweep\.search_space\.tol\.choice\.choices: List should have at least 1 item",
    ),
    (
        "sweep:\n  search_space:\n    alpha: {type: normal, low: 0, high: 1}\n",
        r"sweep\.search_space\.alpha: Input tag 'normal' found using 'type' does not match any of the expected tags",
    ),
    (
        "sweep:\n  search_space:\n    gamma: {type: uniform, low: 0, high: 1}\n",
        r"sweep\.search_space: search_space keys must be ElasticNet params "
        r"\['alpha', 'l1_ratio', 'max_iter', 'tol'\], got \['gamma'\]\.",
    ),
    ("sweep:\n  search_space: {}\n", r"sweep\.search_space: search_space must name at least one parameter\."),
    (
        "sweep:\n  objectives:\n    - {metric: rmse}\n    - {metric: rmse, direction: maximize}\n",
        r"sweep\.objectives: objective metrics must be distinct, got \['rmse', 'rmse'\]\.",
    ),
    ("sweep:\n  objectives: []\n", r"sweep\.objectives: List should have at least 1 item"),
    (
        "sweep:\n  objectives: [{metric: accuracy}]\n",
        r"sweep\.objectives\.0\.metric: Input should be 'rmse', 'mae', 'r2', 'nonzero_coefs' or 'fit_seconds' "
        r"\(got 'accuracy'\)",
    ),
    (
        "sweep:\n  objectives: [{metric: rmse, direction: up}]\n",
        r"sweep\.objectives\.0\.direction: Input should be 'minimize' or 'maximize' \(got 'up'\)",
    ),
    ("sweep:\n  num_trials: 0\n", r"sweep\.num_trials: Input should be greater than or equal to 1 \(got 0\)"),
    ("sweep:\n  sampler: grid\n", r"sweep\.sampler: Input should be 'auto', 'tpe', 'nsga2' or 'random' \(got 'grid'\)"),
    ("sweep:\n  name: has space\n", r"sweep\.name: String should match pattern"),
    (
        "split: {validation: 0.6, test: 0.5}\n",
        r"split: `validation \+ test < 1` must hold, but got \(validation=0\.6, test=0\.5\)\.",
    ),
    ("split: {validation: 0}\n", r"split\.validation: Input should be greater than 0 \(got 0\)"),
    (
        "model: {l1_ratio: 1.5}\n",
        r"model\.l1_ratio: The 'l1_ratio' parameter of ElasticNet must be a float in the range \[0\.0, 1\.0\]\. "
        r"Got 1\.5 instead\.",
    ),
    (
        "model: {max_iter: 0}\n",
        r"model\.max_iter: The 'max_iter' parameter of ElasticNet must be an int in the range \[1, 1000000\]\. "
        r"Got 0 instead\.",
    ),
    (
        "sweep:\n  search_space:\n    alpha: {type: uniform, low: -5, high: -1}\n",
        r"sweep\.search_space: search_space\.alpha reaches outside what ElasticNet accepts, so its trials would fail: "
        r"The 'alpha' parameter of ElasticNet must be a float in the range \[0\.0, inf\)\. Got -5\.0 instead\.",
    ),
    (
        "sweep:\n  search_space:\n    l1_ratio: {type: choice, choices: [0.5, 2]}\n",
        r"sweep\.search_space: search_space\.l1_ratio reaches outside what ElasticNet accepts, so its trials would "
        r"fail: The 'l1_ratio' parameter of ElasticNet must be a float in the range \[0\.0, 1\.0\]\. Got 2 instead\.",
    ),
    ("data: {wine: rose}\n", r"data\.wine: Input should be 'red', 'white' or 'both' \(got 'rose'\)"),
    ("data: {invalid_rows: ignore}\n", r"data\.invalid_rows: Input should be 'error' or 'drop' \(got 'ignore'\)"),
    ("serve: {port: 70000}\n", r"serve\.port: Input should be less than or equal to 65535 \(got 70000\)"),
    (
        "registry:\n  policy: {kind: weighted, weights: {mae: 1.0}}\n",
        r"registry\.policy names metric\(s\) \['mae'\] that are not sweep objectives \['rmse'\]\.",
    ),
    (
        "registry:\n  policy: {kind: constraint, metric: r2}\n",
        r"registry\.policy names metric\(s\) \['r2'\] that are not sweep objectives \['rmse'\]\.",
    ),
    (
        "registry:\n  policy: {kind: lexicographic, order: [rmse, nonzero_coefs]}\n",
        r"registry\.policy names metric\(s\) \['nonzero_coefs'\] that are not sweep objectives \['rmse'\]\.",
    ),
    (
        "sweep:\n  objectives: [{metric: rmse}, {metric: mae}]\n"
        "registry:\n  policy: {kind: weighted, weights: {rmse: -1.0, mae: 0.5}}\n",
        r"registry\.policy\.weighted\.weights: weights must be non-negative with a positive sum, "
        r"got \{'rmse': -1\.0, 'mae': 0\.5\}\.",
    ),
    (
        "sweep:\n  objectives: [{metric: rmse}, {metric: mae}]\n"
        "registry:\n  policy: {kind: weighted, weights: {rmse: 0, mae: 0}}\n",
        r"registry\.policy\.weighted\.weights: weights must be non-negative with a positive sum",
    ),
    ("registry:\n  policy: {kind: best}\n", r"registry\.policy: Input tag 'best' found using 'kind' does not match"),
    (
        "sweep: {storage: 's3://bucket/sweeps'}\n",
        r"sweep\.storage: a folder path is required \(on a multi-host cluster, one on a filesystem every "
        r"node mounts, e\.g\. /mnt/sweeps/state\), but got the URI 's3://bucket/sweeps': the sweep's Optuna journal "
        r"needs file locks and appends, which an object store does not offer\.",
    ),
    ("sweep: {storage: 'file:///tmp/state'}\n", r"sweep\.storage: a folder path is required .* 'file:///"),
    ("sweep: {storage: '  '}\n", r"sweep\.storage: a folder path is required, but got an empty string"),
    (
        "tracking: {flush_timeout_s: 0}\n",
        r"tracking\.flush_timeout_s: Input should be greater than 0 \(got 0\)",
    ),
]


@pytest.mark.parametrize(("text", "message"), RULES, ids=[m.split(":")[0].replace("\\", "") for _, m in RULES])
def test_rule_messages(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with raises_at(path, message):
        load_config(path)


def test_valid_policies_and_spaces_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "sweep:\n"
        "  search_space:\n"
        "    alpha: {type: loguniform, low: 1.0e-4, high: 1.0}\n"
        "    max_iter: {type: int, low: 100, high: 10000, log: true}\n"
        "    tol: {type: choice, choices: [1.0e-4, 1.0e-3]}\n"
        "  objectives: [{metric: rmse}, {metric: r2, direction: maximize}]\n"
        "registry:\n"
        "  policy: {kind: constraint, metric: rmse, max: {rmse: 0.8}, min: {r2: 0.2}}\n",
    )
    config = load_config(path)
    assert set(config.sweep.search_space) == {"alpha", "max_iter", "tol"}
    assert config.sweep.multi_objective


# --- overrides -------------------------------------------------------------------------------


def test_dotted_overrides_are_typed_as_yaml() -> None:
    config = load_config(
        None,
        [
            "sweep.num_trials=100",
            "data.drop_duplicates=false",
            "data.path=../shared/data",
            "tracking.uri=sqlite:///elsewhere.db",
            "sweep.objectives=[{metric: mae}, {metric: nonzero_coefs}]",
            "registry.policy={kind: knee}",
            "split.seed=7",
        ],
    )
    assert config.sweep.num_trials == 100
    assert config.data.drop_duplicates is False
    assert config.data.path == Path("../shared/data")
    assert config.tracking.uri == "sqlite:///elsewhere.db"
    assert [o.metric for o in config.sweep.objectives] == ["mae", "nonzero_coefs"]
    assert config.registry.policy.kind == "knee"
    assert config.split.seed == 7


@pytest.mark.parametrize("word", ["off", "on", "yes", "no", "true", "False", "y", "n"])
def test_text_fields_take_yaml_boolean_words_as_text(word: str) -> None:
    config = load_config(None, [f"sweep.name={word}", f"registry.model_name={word}", f"tracking.experiment={word}"])
    assert (config.sweep.name, config.registry.model_name, config.tracking.experiment) == (word, word, word)


def test_text_fields_take_numbers_and_dates_as_written_while_booleans_stay_booleans() -> None:
    config = load_config(
        None,
        ["sweep.name=2024-01-01", "registry.model_name=007", "tracking.uri=on", "sweep.storage=1e3",
         "data.drop_duplicates=false", "serve.access_log=yes", "sweep.name=0x10"],
    )
    assert config.sweep.name == "0x10"
    assert (config.registry.model_name, config.tracking.uri, config.sweep.storage) == ("007", "on", "1e3")
    assert config.data.drop_duplicates is False
    assert config.serve.access_log is True
    assert load_config(None, ["sweep.name=null"]).sweep.name is None, "an optional name is unset by null"
    assert load_config(None, ["registry.model_name=null"]).registry.model_name == "null"


def test_bare_model_params_set_the_model() -> None:
    config = load_config(None, ["alpha=0.25", "l1_ratio=0.1", "max_iter=50", "tol=1e-12"])
    model = config.model
    assert (model.alpha, model.l1_ratio, model.max_iter, model.tol) == (0.25, 0.1, 50, 1e-12)


def test_override_reaches_into_a_search_space() -> None:
    config = load_config(None, ["sweep.search_space.alpha.high=2.0"])
    assert config.sweep.search_space["alpha"].high == 2.0  # type: ignore[union-attr]


def test_overrides_are_validated_the_same_way() -> None:
    where = re.escape(f"{DEFAULT_CONFIG} with overrides ['alpha=-1']")
    message = r"model\.alpha: The 'alpha' parameter of ElasticNet must be a float in the range \[0\.0, inf\)\. Got -1"
    with pytest.raises(ConfigError, match=rf"^{where}: {message}"):
        load_config(None, ["alpha=-1"])
    with pytest.raises(ConfigError, match=r"with overrides \['wine=red'\]: wine: Extra inputs are not permitted"):
        load_config(None, ["wine=red"])  # only the model's params are bare


@pytest.mark.parametrize("item", ["alpha", "=1", "sweep..num_trials=1", ".alpha=1", "sweep.=1"])
def test_malformed_override(item: str) -> None:
    with pytest.raises(ConfigError, match=rf"^override {re.escape(repr(item))} must look like key=value"):
        load_config(None, [item])


def test_override_into_a_value_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^override 'model\.alpha\.low': 'alpha' is not a section\.$"):
        load_config(None, ["model.alpha.low=1"])


def test_override_value_must_be_yaml() -> None:
    message = r"^override 'alpha=\[1': value is not valid YAML \(.* at line 1, column \d+\)\.$"
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["alpha=[1"])


@pytest.mark.parametrize("item", ["data.path=", "data.path=''", "data.path=null"])
def test_empty_data_path_means_download(monkeypatch: pytest.MonkeyPatch, item: str) -> None:
    monkeypatch.delenv("SWEEPS_DATA_PATH", raising=False)
    assert load_config(None, [item]).data.path is None


@pytest.mark.parametrize("text", ["data: {wine: red}\n", "data: {path: null}\n", "data: {path: ''}\n"])
def test_unset_data_path_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> None:
    monkeypatch.setenv("SWEEPS_DATA_PATH", str(tmp_path))
    path = write(tmp_path, text)
    assert load_config(path).data.path == tmp_path
    assert load_config(None, ["data.path="]).data.path == tmp_path  # configs/wine.yaml has path: null
    assert load_config(None, ["data.path=elsewhere"]).data.path == Path("elsewhere")
    assert DataConfig().path == tmp_path


def test_tracking_uri_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert TrackingConfig().resolved_uri == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert TrackingConfig().resolved_uri == "http://127.0.0.1:5000"
    assert TrackingConfig(uri="sqlite:///x.db").resolved_uri == "sqlite:///x.db"


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(ValueError, match="frozen"):
        config.model.alpha = 1.0  # type: ignore[misc]


def test_min_improvement_is_a_relative_margin_at_least_zero() -> None:
    assert load_config().registry.min_improvement == 0.001
    with pytest.raises(ConfigError, match=r"registry\.min_improvement: Input should be greater than or equal to 0"):
        load_config(None, ["registry.min_improvement=-0.01"])
