"""Hostile configs and overrides: refused quickly, in bounded memory, with exit 2 and the file and field named."""

from __future__ import annotations

import os
import re
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from sweeps.config import MAX_CONFIG_BYTES, Config, TrackingConfig, format_validation_error, load_config
from sweeps.errors import ConfigError
from sweeps.safe_yaml import MAX_ALIAS_CHARS, MAX_DEPTH, parse_yaml

PEAK_LIMIT = 100 * 1024 * 1024
# 1 KB that stands for 9**10 (3.5 billion) strings once its aliases are expanded.
ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefghi", "bcdefghij", strict=True))
    + "sweep:\n  search_space:\n    alpha: {type: choice, choices: *j}\n"
)


def write(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "config.yaml"
    path.write_bytes(text.encode(encoding))
    return path


def refused(path: Path, message: str, overrides: list[str] | None = None) -> ConfigError:
    """Expect `load_config` to raise a ConfigError (exit 2) naming `path` followed by `message` (a regex)."""
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}{message}") as caught:
        load_config(path, overrides)
    assert caught.value.exit_code == 2
    return caught.value


@contextmanager
def peak_memory_below(limit: int) -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak traced memory {peak / 1e6:.1f} MB, over {limit / 1e6:.0f} MB"


# --- aliases ---------------------------------------------------------------------------------------


def test_the_alias_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    assert len(ALIAS_BOMB) < 1100
    path = write(tmp_path, ALIAS_BOMB)
    with peak_memory_below(PEAK_LIMIT):
        refused(path, r": not valid YAML \(alias \*a stands for a list; an alias may stand only for a single value "
                      r".* at line 2, column 8\)\.$")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: &b {x: 1}\nother:\n  <<: *b\n", r"alias \*b stands for a mapping; .* at line 3, column 7"),
        ("a: &a [1]\nb: *a\n", r"alias \*a stands for a list; .* at line 2, column 4"),
        ("sweep: &s {seed: 1}\nsplit: *s\n", r"alias \*s stands for a mapping; .* at line 2, column 8"),
        (
            f"s: &s {'x' * 40_000}\nt: [*s, *s]\n",
            rf"aliases repeat more than {MAX_ALIAS_CHARS:,} characters in all; write the values out at line 2, "
            r"column 9",
        ),
    ],
    ids=["merge key", "alias of a list", "alias of a section", "aliased text over the budget"],
)
def test_aliases_that_can_expand_are_refused_naming_the_place(tmp_path: Path, text: str, message: str) -> None:
    refused(write(tmp_path, text), rf": not valid YAML \({message}\)\.$")


def test_an_alias_of_a_single_value_is_read() -> None:
    assert parse_yaml("a: &name wine\nb: [*name, *name]\n") == {"a": "wine", "b": ["wine", "wine"]}


def test_an_alias_bomb_in_an_override_is_refused_in_bounded_memory() -> None:
    bomb = "{" + ALIAS_BOMB.split("sweep:")[0].replace("\n", ", ").rstrip(", ") + "}"
    with peak_memory_below(PEAK_LIMIT), pytest.raises(
        ConfigError, match=r"^override 'sweep\.objectives=.*': value is not valid YAML \(alias \*a stands for a list"
    ) as caught:
        load_config(None, [f"sweep.objectives={bomb}"])
    assert caught.value.exit_code == 2


# --- nesting ---------------------------------------------------------------------------------------


# The top-level mapping is level 1, so the collection at level MAX_DEPTH + 1 is the one refused.
@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("sweep: " + "[" * 20_000 + "]" * 20_000 + "\n", 1, len("sweep: ") + MAX_DEPTH),
        ("sweep: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n", 1, len("sweep: ") + 4 * (MAX_DEPTH - 1) + 1),
        ("sweep:\n" + "".join(" " * i + "a:\n" for i in range(1, 300)), MAX_DEPTH + 1, MAX_DEPTH + 1),
    ],
    ids=["20,000 lists", "10,000 flow mappings", "300 block mappings"],
)
def test_deep_nesting_is_refused_naming_the_place(tmp_path: Path, text: str, line: int, column: int) -> None:
    refused(write(tmp_path, text), rf": not valid YAML \(nested deeper than {MAX_DEPTH} levels at line {line}, "
                                   rf"column {column}\)\.$")


def test_deep_nesting_in_an_override_is_refused() -> None:
    with pytest.raises(ConfigError, match=rf"value is not valid YAML \(nested deeper than {MAX_DEPTH} levels"):
        load_config(None, ["sweep.objectives=" + "[" * 20_000 + "]" * 20_000])


# --- values YAML cannot build ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  max_iter: " + "1" * 5_000 + "\n", r"cannot read value: Exceeds the limit \(4300 digits\)"),
        ("split:\n  seed: 2001-13-40\n", r"cannot read value: month must be in 1\.\.12 at line 2, column 9"),
    ],
    ids=["int of 5,000 digits", "impossible date"],
)
def test_values_yaml_cannot_build_are_refused(tmp_path: Path, text: str, message: str) -> None:
    refused(write(tmp_path, text), rf": not valid YAML \({message}")


def test_an_int_too_long_to_print_is_named_by_its_size(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  max_iter: 0x" + "f" * 9_000 + "\n")
    refused(path, r": model\.max_iter: The 'max_iter' parameter of ElasticNet must be an int in the range "
                  r"\[1, 1000000\]\. Got an int of 36000 bits instead\.$")


# --- encodings and size ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("latin-1", r"config is not UTF-8 text: byte 0xe9 at line 2, column 19 \(invalid continuation byte\); "
                    r"save it as UTF-8\."),
        ("cp1252", r"config is not UTF-8 text: byte 0xe9 at line 2, column 19 \(invalid continuation byte\); "
                   r"save it as UTF-8\."),
        ("utf-16", r"config is UTF-16 text \(it starts with a UTF-16 byte-order mark\); save it as UTF-8\."),
        ("utf-16-be", r"config has a NUL byte at line 1 \(UTF-16 text\?\); save it as UTF-8\."),
        ("utf-16-le", r"config has a NUL byte at line 1 \(UTF-16 text\?\); save it as UTF-8\."),
        ("utf-32", r"config is UTF-32 text \(it starts with a UTF-32 byte-order mark\); save it as UTF-8\."),
    ],
)
def test_a_config_not_in_utf8_is_refused_naming_the_problem(tmp_path: Path, encoding: str, message: str) -> None:
    path = write(tmp_path, 'tracking:\n  experiment: "caf\u00e9"\n', encoding)
    refused(path, rf": {message}$")


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + 'tracking:\n  experiment: "caf\u00e9"\n'.encode())
    assert load_config(path).tracking.experiment == "caf\u00e9"


def test_an_oversize_config_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = write(tmp_path, "# " + "x" * (MAX_CONFIG_BYTES * 50) + "\n")
    with peak_memory_below(PEAK_LIMIT // 10):
        refused(path, rf": config is larger than {MAX_CONFIG_BYTES:,} bytes; a config is a few KB of YAML\.$")


def test_a_folder_given_as_config_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, r": cannot read config \(Is a directory\)\.$")


# --- the error formatter shows a bounded part of any input ------------------------------------------


def test_a_huge_value_is_shown_shortened(tmp_path: Path) -> None:
    path = write(tmp_path, "sweep:\n  num_trials: '" + "9x" * 20_000 + "'\n")
    error = refused(path, r": sweep\.num_trials: Input should be a valid integer, unable to parse string as an "
                          r"integer \(got '9x9x[9x]*\.\.\.[9x]*9x'\)$")
    assert len(str(error)) < 1_000


def test_a_huge_list_is_shown_shortened(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  wine: [" + ", ".join(["red"] * 10_000) + "]\n")
    error = refused(path, r": data\.wine: Input should be 'red', 'white' or 'both' \(got \['red', 'red', .*\]\)$")
    assert len(str(error)) < 1_000


def test_many_errors_are_shown_as_twenty_lines_and_a_count(tmp_path: Path) -> None:
    path = write(tmp_path, "sweep:\n" + "".join(f"  extra{i}: {i}\n" for i in range(2_000)))
    error = refused(path, r": sweep\.extra0: Extra inputs are not permitted \(got 0\)\n")
    lines = str(error).splitlines()
    assert len(lines) == 21
    assert re.fullmatch(rf"{re.escape(str(path))}: and 1980 more error\(s\)\.", lines[-1])


def test_a_huge_key_is_shown_shortened() -> None:
    with pytest.raises(ValidationError) as caught:
        Config.model_validate({"sweep": {"k" * 1_000_000: 1}})
    message = format_validation_error(caught.value, "where")
    assert re.fullmatch(r"where: sweep\.k{38}\.\.\.k{39}: Extra inputs are not permitted \(got 1\)", message)


# --- numbers: bounds and no booleans ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("max_iter=1000000000000", r"model\.max_iter: The 'max_iter' parameter of ElasticNet must be an int in the "
                                   r"range \[1, 1000000\]\. Got 1000000000000 instead\."),
        ("max_iter=1000001", r"model\.max_iter: .* Got 1000001 instead\."),
        ("max_iter=10**12", r"model\.max_iter: Input should be a valid integer, unable to parse string as an integer "
                            r"\(got '10\*\*12'\)"),
        ("sweep.search_space.max_iter={type: int, low: 100, high: 10000000}",
         r"sweep\.search_space: search_space\.max_iter reaches outside what ElasticNet accepts, so its trials would "
         r"fail: The 'max_iter' parameter of ElasticNet must be an int in the range \[1, 1000000\]\. Got 10000000"),
        ("split.seed=-1", r"split\.seed: Input should be greater than or equal to 0 \(got -1\)"),
        ("sweep.seed=4294967295", r"sweep\.seed: Input should be less than or equal to 4294967294 \(got 4294967295\)"),
        ("model.seed=99999999999", r"model\.seed: Input should be less than or equal to 4294967294"),
        ("sweep.num_trials=1000000000000", r"sweep\.num_trials: Input should be less than or equal to 1000000000"),
        ("sweep.batch_size=100000000", r"sweep\.batch_size: Input should be less than or equal to 10000"),
        ("sweep.time_budget_s=.inf", r"sweep\.time_budget_s: Input should be a finite number"),
    ],
    ids=lambda v: v if "=" in v else "",
)
def test_numbers_out_of_bounds_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"with overrides \[.*\]: {message}") as caught:
        load_config(None, [override])
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("override", "field", "kind"),
    [
        ("sweep.num_trials=true", "sweep.num_trials", "integer"),
        ("sweep.concurrency=yes", "sweep.concurrency", "integer"),
        ("sweep.batch_size=on", "sweep.batch_size", "integer"),
        ("serve.port=true", "serve.port", "integer"),
        ("alpha=true", "model.alpha", "number"),
        ("split.validation=false", "split.validation", "number"),
        ("sweep.time_budget_s=true", "sweep.time_budget_s", "number"),
        ("sweep.search_space.max_iter={type: int, low: true, high: 10}", "sweep.search_space.max_iter.int.low",
         "integer"),
        ("registry.policy={kind: weighted, weights: {rmse: true}}", "registry.policy.weighted.weights.rmse",
         "number"),
    ],
    ids=lambda v: v if "=" in v else "",
)
def test_a_boolean_is_not_a_number(override: str, field: str, kind: str) -> None:
    with pytest.raises(
        ConfigError, match=rf": {re.escape(field)}: Input should be a valid {kind}, unable to parse string as an? "
                           rf"{kind} \(got '(true|false)'\)$"
    ):
        load_config(None, [override])


def test_a_boolean_still_sets_a_boolean_and_a_number_a_number() -> None:
    config = load_config(None, ["data.drop_duplicates=false", "sweep.num_trials=7", "alpha=1"])
    assert (config.data.drop_duplicates, config.sweep.num_trials, config.model.alpha) == (False, 7, 1.0)


# --- storage ---------------------------------------------------------------------------------------


def test_storage_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "passwd"
    file.write_text("root:x:0:0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"sweep\.storage: must be a folder the sweep can write, but "
                                          rf"'{re.escape(str(file))}' is not a folder\.$"):
        load_config(None, [f"sweep.storage={file}"])


def test_storage_under_a_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    file = tmp_path / "passwd"
    file.write_text("root:x:0:0\n", encoding="utf-8")
    storage = file / "a" / "b"
    with pytest.raises(ConfigError, match=rf"sweep\.storage: must be a folder the sweep can write, but "
                                          rf"'{re.escape(str(storage))}' would be created under "
                                          rf"'{re.escape(str(file))}', which is not a folder\.$"):
        load_config(None, [f"sweep.storage={storage}"])


def test_storage_in_a_folder_it_cannot_write_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    with pytest.raises(ConfigError, match=rf"'{re.escape(str(locked))}' is not writable\.$"):
        load_config(None, [f"sweep.storage={locked}"])
    with pytest.raises(ConfigError, match=rf"would be created under '{re.escape(str(locked))}', which is not "
                                          r"writable\.$"):
        load_config(None, [f"sweep.storage={locked / 'state'}"])


def test_storage_with_a_name_too_long_is_refused(tmp_path: Path) -> None:
    storage = tmp_path / ("x" * 5_000)
    with pytest.raises(ConfigError, match=r"sweep\.storage: must be a folder the sweep can write, but '.*x\.\.\.x+' "
                                          r"cannot be checked \(File name too long\)\.$") as caught:
        load_config(None, [f"sweep.storage={storage}"])
    assert len(str(caught.value)) < 1_100


def test_storage_that_does_not_exist_yet_is_accepted(tmp_path: Path) -> None:
    storage = tmp_path / "new" / "state"
    assert load_config(None, [f"sweep.storage={storage}"]).sweep.storage == str(storage)


def test_a_stored_config_is_not_checked_against_this_filesystem(tmp_path: Path) -> None:
    # A sweep.json written elsewhere is re-read as it is: only a config that comes in is checked.
    file = tmp_path / "file"
    file.touch()
    assert Config.model_validate({"sweep": {"storage": str(file)}}).sweep.storage == str(file)


# --- tracking URI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["ftp://x", "s3://bucket/mlruns", "gopher://host", "mailto:a@b.c"])
def test_a_uri_mlflow_cannot_track_to_is_refused(uri: str) -> None:
    scheme = uri.partition(":")[0]
    with pytest.raises(ConfigError, match=rf"tracking\.uri: must be a path or a URI MLflow can track to \(file:, .*\), "
                                          rf"but got scheme '{scheme}' in '{re.escape(uri)}'\.$"):
        load_config(None, [f"tracking.uri={uri}"])


@pytest.mark.parametrize(
    "uri",
    ["sqlite:///mlflow.db", "http://127.0.0.1:5000", "https://mlflow.example", "postgresql+psycopg2://u@h/db",
     "file:///tmp/mlruns", "mlruns", "databricks"],
)
def test_uris_mlflow_tracks_to_are_accepted(uri: str) -> None:
    assert load_config(None, [f"tracking.uri={uri}"]).tracking.uri == uri


def test_a_bad_tracking_uri_from_the_environment_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://x")
    with pytest.raises(ConfigError, match=r"^environment variable MLFLOW_TRACKING_URI: must be a path or a URI MLflow "
                                          r"can track to .*, but got scheme 'ftp' in 'ftp://x'\.$"):
        _ = TrackingConfig().resolved_uri


# --- the loader on its own -------------------------------------------------------------------------


def test_every_loader_failure_is_a_yaml_error() -> None:
    for text in ("a: *missing", "[" * 100, "a: " + "9" * 5000, "a: &x [1]\nb: *x"):
        with pytest.raises(yaml.YAMLError, match=r"line \d+, column \d+"):
            parse_yaml(text)
