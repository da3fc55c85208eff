"""The scoring protocol, no Ray: every input format, the table of bad inputs, and /metrics text."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sweeps.errors import ProtocolError
from sweeps.serving.figures import (
    FeatureStats,
    ModelIdentity,
    VersionStats,
    histogram_quantile,
    merge_snapshots,
    summarize,
)
from sweeps.serving.prometheus import render_prometheus
from sweeps.serving.protocol import (
    Limits,
    check_content_length,
    encode_error,
    encode_predictions,
    parse_content_type,
    parse_request,
)
from training.data import FEATURES

COLUMNS = list(FEATURES)
ROWS = [
    [7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4],
    [7.8, 0.88, 0.0, 2.6, 0.098, 25.0, 67.0, 0.9968, 3.2, 0.68, 9.8],
    [11.2, 0.28, 0.56, 1.9, 0.075, 17.0, 60.0, 0.998, 3.16, 0.58, 9.8],
]
EXPECTED = np.array(ROWS)
LIMITS = Limits(max_rows=5, max_body_bytes=4096)
JSON_TYPE = "application/json"


def parse(body: Any, content_type: str | None = JSON_TYPE, limits: Limits = LIMITS) -> Any:
    """Parse `body`: bytes and str are sent as they are, anything else as JSON."""
    raw = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return parse_request(raw, content_type, COLUMNS, limits)


def records(rows: list[list[Any]] = ROWS, columns: list[str] = COLUMNS) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def csv_body(rows: list[list[Any]] = ROWS, columns: list[str] = COLUMNS) -> bytes:
    lines = [",".join(f'"{c}"' if " " in c else c for c in columns)]
    lines += [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


# --- every accepted form gives the same matrix ----------------------------------------------

SHUFFLED = list(reversed(COLUMNS))
SHUFFLED_ROWS = [list(reversed(row)) for row in ROWS]
INT_ROWS = [[int(v) if float(v).is_integer() else v for v in row] for row in ROWS]

ACCEPTED = {
    "dataframe_split": ({"dataframe_split": {"columns": COLUMNS, "data": ROWS}}, JSON_TYPE, False),
    "dataframe_split with index": (
        {"dataframe_split": {"index": [0, 1, 2], "columns": COLUMNS, "data": ROWS}},
        JSON_TYPE,
        False,
    ),
    "dataframe_split, columns shuffled": (
        {"dataframe_split": {"columns": SHUFFLED, "data": SHUFFLED_ROWS}},
        JSON_TYPE,
        False,
    ),
    "dataframe_split, ints for floats": ({"dataframe_split": {"columns": COLUMNS, "data": INT_ROWS}}, JSON_TYPE, False),
    "dataframe_records": ({"dataframe_records": records()}, JSON_TYPE, False),
    "dataframe_records, columns shuffled": ({"dataframe_records": records(SHUFFLED_ROWS, SHUFFLED)}, JSON_TYPE, False),
    "instances as records": ({"instances": records()}, JSON_TYPE, False),
    "inputs as records": ({"inputs": records()}, JSON_TYPE, False),
    "inputs as columns": ({"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(COLUMNS)}}, JSON_TYPE, False),
    "empty params allowed": ({"dataframe_records": records(), "params": {}}, JSON_TYPE, False),
    "charset utf-8": ({"dataframe_records": records()}, "application/json; charset=utf-8", False),
    "csv": (csv_body(), "text/csv", False),
    "csv, columns shuffled, ints": (csv_body([r[::-1] for r in INT_ROWS], SHUFFLED), "text/csv", False),
    "csv with BOM and CRLF": (b"\xef\xbb\xbf" + csv_body().replace(b"\n", b"\r\n"), "text/csv; charset=UTF-8", False),
    "mlflow 1.x pandas-split": ({"columns": COLUMNS, "data": ROWS}, "application/json; format=pandas-split", True),
    "mlflow 1.x split without format": ({"columns": COLUMNS, "data": ROWS}, JSON_TYPE, True),
    "mlflow 1.x pandas-records": (records(), "application/json; format=pandas-records", True),
}


@pytest.mark.parametrize(("body", "content_type", "legacy"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_every_accepted_form_parses_to_the_same_rows(body: Any, content_type: str, legacy: bool) -> None:
    parsed = parse(body, content_type)
    assert parsed.legacy is legacy
    assert parsed.features.dtype == np.float64
    np.testing.assert_array_equal(parsed.features, EXPECTED)


def test_one_row_in_columnar_inputs() -> None:
    parsed = parse({"inputs": {c: [ROWS[0][i]] for i, c in enumerate(COLUMNS)}})
    np.testing.assert_array_equal(parsed.features, EXPECTED[:1])


def test_the_row_limit_itself_is_accepted() -> None:
    assert parse({"dataframe_split": {"columns": COLUMNS, "data": ROWS[:1] * 5}}).rows == 5


# --- the table of bad inputs: status, MLflow error code, and a message naming the problem ----

BIG = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": ROWS * 40}}).encode()
MISSING = [c for c in COLUMNS if c != "alcohol"]


def with_value(value: Any, column: int = 8, row: int = 1) -> dict[str, Any]:
    rows = [list(r) for r in ROWS]
    rows[row][column] = value
    return {"dataframe_split": {"columns": COLUMNS, "data": rows}}


BAD: dict[str, tuple[Any, str | None, int, str, str]] = {
    # name: (body, content type, status, error code, message regex)
    "missing column": (
        {"dataframe_split": {"columns": MISSING, "data": [r[:-1] for r in ROWS]}},
        JSON_TYPE, 400, "INVALID_PARAMETER_VALUE", r"missing column\(s\) \['alcohol'\]; the model expects \[",
    ),
    "unknown column": (
        {"dataframe_records": [dict(r, colour=1) for r in records()]},
        JSON_TYPE, 400, "INVALID_PARAMETER_VALUE", r"dataframe_records\[0\]: unknown column\(s\) \['colour'\]",
    ),
    "missing column in one record": (
        {"dataframe_records": [*records()[:2], {c: 1.0 for c in MISSING}]},
        JSON_TYPE, 400, "INVALID_PARAMETER_VALUE", r"dataframe_records\[2\]: missing column\(s\) \['alcohol'\]",
    ),
    "duplicate column": (
        {"dataframe_split": {"columns": [*COLUMNS, "pH"], "data": [[*r, 3.0] for r in ROWS]}},
        JSON_TYPE, 400, "INVALID_PARAMETER_VALUE", r"Column 'pH' appears more than once",
    ),
    "string value": (
        with_value("3.51"), JSON_TYPE, 400, "INVALID_PARAMETER_VALUE",
        r"column 'pH' at row 1: expected a number, got string \"3\.51\"",
    ),
    "boolean value": (
        with_value(True), JSON_TYPE, 400, "INVALID_PARAMETER_VALUE",
        r"column 'pH' at row 1: expected a number, got boolean",
    ),
    "null value": (
        with_value(None), JSON_TYPE, 400, "INVALID_PARAMETER_VALUE", r"column 'pH' at row 1: missing value \(null\)",
    ),
    "nested list value": (
        with_value([1, 2]), JSON_TYPE, 400, "INVALID_PARAMETER_VALUE",
        r"column 'pH' at row 1: expected a number, got list",
    ),
    "NaN": (
        json.dumps(with_value(math.nan)).encode(), JSON_TYPE, 400, "INVALID_PARAMETER_VALUE",
        r"column 'pH' at row 1: expected a finite number, got nan",
    ),
    "Infinity": (
        json.dumps(with_value(-math.inf)).encode(), JSON_TYPE, 400, "INVALID_PARAMETER_VALUE",
        r"column 'pH' at row 1: expected a finite number, got -inf",
    ),
    "number beyond float range": (
        json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [["HUGE"] * 10 + [1]]}}).replace('"HUGE"', "1e999"),
        JSON_TYPE, 400, "INVALID_PARAMETER_VALUE",
        r"column 'fixed acidity' at row 0: expected a finite number, got inf",
    ),
    "integer beyond float range": (
        with_value(10**400, column=0, row=0), JSON_TYPE, 400, "INVALID_PARAMETER_VALUE",
        r"column 'fixed acidity' at row 0: the number 1000.* is too large for a float",
    ),
    "ragged row": (
        {"dataframe_split": {"columns": COLUMNS, "data": [ROWS[0], ROWS[1][:-1]]}},
        JSON_TYPE, 400, "INVALID_PARAMETER_VALUE", r"dataframe_split\.data\[1\] has 10 values but there are 11 columns",
    ),
    "columns of unequal length": (
        {"inputs": {c: ([1.0, 2.0] if c == "pH" else [1.0]) for c in COLUMNS}},
        JSON_TYPE, 400, "INVALID_PARAMETER_VALUE", r"columns of inputs must all have the same length",
    ),
    "empty batch (split)": (
        {"dataframe_split": {"columns": COLUMNS, "data": []}},
        JSON_TYPE, 400, "INVALID_PARAMETER_VALUE", r"dataframe_split has no rows; send at least one row",
    ),
    "empty batch (records)": (
        {"dataframe_records": []}, JSON_TYPE, 400, "INVALID_PARAMETER_VALUE", r"dataframe_records has no rows",
    ),
    "empty batch (csv header only)": (
        csv_body([]), "text/csv", 400, "INVALID_PARAMETER_VALUE", r"CSV body has no rows",
    ),
    "too many rows": (
        {"dataframe_records": records(ROWS * 2)}, JSON_TYPE, 413, "RESOURCE_LIMIT_EXCEEDED",
        r"dataframe_records has 6 rows, more than the limit of 5 \(serve\.max_rows\)",
    ),
    "body too large": (
        BIG, JSON_TYPE, 413, "RESOURCE_LIMIT_EXCEEDED",
        rf"at most 4096 bytes \(serve\.max_body_bytes\), got {len(BIG)}",
    ),
    "malformed JSON": (
        b'{"dataframe_split": {"columns": [', JSON_TYPE, 400, "MALFORMED_REQUEST",
        r"not valid JSON: Expecting value at line 1 column 34",
    ),
    "JSON nested too deeply": (
        b"[" * 2000 + b"]" * 2000, JSON_TYPE, 400, "MALFORMED_REQUEST", r"nested too deeply",
    ),
    "not UTF-8": (b'{"inputs": "\xff"}', JSON_TYPE, 400, "MALFORMED_REQUEST", r"byte 12 is not valid UTF-8"),
    "empty body": (b"", JSON_TYPE, 400, "BAD_REQUEST", r"The body is empty"),
    "several payload keys": (
        {"dataframe_records": records(), "instances": records()}, JSON_TYPE, 400, "BAD_REQUEST",
        r"exactly one of the keys .*got keys \['dataframe_records', 'instances'\]",
    ),
    "no payload key": (
        {"rows": ROWS}, JSON_TYPE, 400, "BAD_REQUEST", r"exactly one of the keys .*got keys \['rows'\]",
    ),
    "empty object": ({}, JSON_TYPE, 400, "BAD_REQUEST", r"exactly one of the keys .*got an empty object"),
    "stray key next to payload": (
        {"dataframe_records": records(), "extra": 1}, JSON_TYPE, 400, "BAD_REQUEST",
        r"Unexpected top-level key\(s\) \['extra'\] next to 'dataframe_records'",
    ),
    "params the model does not take": (
        {"dataframe_records": records(), "params": {"alpha": 1}}, JSON_TYPE, 400, "INVALID_PARAMETER_VALUE",
        r"This model takes no params, got params=\{\"alpha\": 1\}",
    ),
    "top-level list": (records(), JSON_TYPE, 400, "BAD_REQUEST", r"must be a JSON object .*got a list"),
    "positional instances": (
        {"instances": ROWS}, JSON_TYPE, 400, "BAD_REQUEST",
        r"instances\[0\] must be an object keyed by column name, got a list \(positional rows are ambiguous",
    ),
    "split without columns": (
        {"dataframe_split": {"data": ROWS}}, JSON_TYPE, 400, "BAD_REQUEST",
        r"dataframe_split must have both 'columns' and 'data', got keys \['data'\]",
    ),
    "split is a list": (
        {"dataframe_split": ROWS}, JSON_TYPE, 400, "BAD_REQUEST", r"dataframe_split must be an object .*got a list",
    ),
    "records is an object": (
        {"dataframe_records": {"a": 1}}, JSON_TYPE, 400, "BAD_REQUEST", r"dataframe_records must be a list of records",
    ),
    "pandas-split format with a payload key": (
        {"dataframe_records": records()}, "application/json; format=pandas-split", 400, "BAD_REQUEST",
        r"With format=pandas-split the body must be an object with 'columns' and 'data'",
    ),
    "pandas-records format with an object": (
        {"columns": COLUMNS, "data": ROWS}, "application/json; format=pandas-records", 400, "BAD_REQUEST",
        r"With format=pandas-records the body must be a JSON list of records, got a object",
    ),
    "csv with a non-numeric field": (
        csv_body([ROWS[0], [*ROWS[1][:8], "high", *ROWS[1][9:]]]), "text/csv", 400, "INVALID_PARAMETER_VALUE",
        r"CSV body: column 'pH' at row 1: expected a number, got \"high\"",
    ),
    "csv with an empty field": (
        csv_body([[*ROWS[0][:8], "", *ROWS[0][9:]]]), "text/csv", 400, "INVALID_PARAMETER_VALUE",
        r"CSV body: column 'pH' at row 0: missing value \(empty field\)",
    ),
    "csv with nan": (
        csv_body([[*ROWS[0][:8], "nan", *ROWS[0][9:]]]), "text/csv", 400, "INVALID_PARAMETER_VALUE",
        r"CSV body: column 'pH' at row 0: expected a finite number, got 'nan'",
    ),
    "csv with a short line": (
        csv_body([ROWS[0], ROWS[1][:5]]), "text/csv", 400, "INVALID_PARAMETER_VALUE",
        r"CSV row 1 \(line 3\) has 5 fields but the header has 11",
    ),
    "csv without the alcohol column": (
        csv_body([r[:-1] for r in ROWS], COLUMNS[:-1]), "text/csv", 400, "INVALID_PARAMETER_VALUE",
        r"CSV header: missing column\(s\) \['alcohol'\]",
    ),
    "empty csv": (b"\n\n", "text/csv", 400, "BAD_REQUEST", r"The CSV body is empty"),
    "csv with an open quote": (
        csv_body()[:-1] + b',"9.4\n', "text/csv", 400, "MALFORMED_REQUEST", r"not valid CSV: unexpected end of data",
    ),
    "no content type": (
        {"dataframe_records": records()}, None, 415, "BAD_REQUEST", r"A Content-Type header is required",
    ),
    "wrong content type": (
        {"dataframe_records": records()}, "text/plain", 415, "BAD_REQUEST",
        r"Content-Type must be one of \['application/json', 'text/csv'\], got 'text/plain'",
    ),
    "form content type": (
        b"a=1", "application/x-www-form-urlencoded", 415, "BAD_REQUEST", r"Content-Type must be one of",
    ),
    "charset other than utf-8": (
        {"dataframe_records": records()}, "application/json; charset=latin-1", 415, "BAD_REQUEST",
        r"Only charset=utf-8 is supported",
    ),
    "unknown format": (
        {"dataframe_records": records()}, "application/json; format=pandas-table", 415, "BAD_REQUEST",
        r"format parameter must be one of \['pandas-split', 'pandas-records'\]",
    ),
    "unknown content-type parameter": (
        csv_body(), "text/csv; header=present", 415, "BAD_REQUEST", r"Unknown Content-Type parameter 'header'",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("body", "content_type", "status", "code", "message"), BAD.values(), ids=BAD.keys())
def test_bad_input_is_refused_with_status_code_and_message(
    body: Any, content_type: str | None, status: int, code: str, message: str
) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        parse(body, content_type)
    assert (info.value.status, info.value.error_code) == (status, code)
    assert json.loads(encode_error(info.value)) == {"error_code": code, "message": info.value.message}


def test_content_length_over_the_limit_is_refused_before_reading() -> None:
    check_content_length(None, LIMITS)
    check_content_length("4096", LIMITS)
    with pytest.raises(ProtocolError, match=r"at most 4096 bytes \(serve\.max_body_bytes\), got 4097") as info:
        check_content_length("4097", LIMITS)
    assert info.value.status == 413
    with pytest.raises(ProtocolError, match=r"Content-Length must be an integer, got 'lots'"):
        check_content_length("lots", LIMITS)


def test_content_type_parameters_are_case_insensitive() -> None:
    media = parse_content_type("Application/JSON; Format=Pandas-Split; charset=UTF-8")
    assert (media.kind, media.legacy_format) == ("json", "pandas-split")


def test_answers_are_mlflow_shaped() -> None:
    predictions = np.array([5.148534500770791, 6.0])
    assert json.loads(encode_predictions(predictions, legacy=False)) == {"predictions": [5.148534500770791, 6.0]}
    assert json.loads(encode_predictions(predictions, legacy=True)) == [5.148534500770791, 6.0]


# --- the figures behind /metrics and /monitoring ----------------------------------------------

CARD = {c: FeatureStats(mean=float(np.mean(EXPECTED[:, i])), std=1.0, min=0.0, max=50.0) for i, c in enumerate(COLUMNS)}
MODEL = ModelIdentity("wine", "3", "run-3", "digest-3")


def observed(batches: list[np.ndarray], latencies: list[float]) -> VersionStats:
    stats = VersionStats(MODEL, COLUMNS, CARD)
    for batch in batches:
        stats.observe_rows(batch, batch[:, -1] / 2)
    for seconds in latencies:
        stats.observe_request(200, seconds)
    return stats


def test_snapshots_of_replicas_merge_to_the_whole() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(loc=EXPECTED[0], scale=0.5, size=(60, len(COLUMNS)))
    batches = np.array_split(rows, 9)
    whole = summarize(observed(batches, [0.001] * 9).snapshot())
    parts = [observed(batches[i::3], [0.001] * 3).snapshot() for i in range(3)]
    merged = merge_snapshots(parts)
    assert len(merged) == 1
    merged_figures = summarize(merged[0])
    assert merged_figures["requests"] == whole["requests"] == 9
    assert merged_figures["rows"] == 60
    for key in ("mean", "std", "min", "max"):
        assert merged_figures["predictions"][key] == pytest.approx(whole["predictions"][key], rel=1e-12)
    assert whole["predictions"]["std"] == pytest.approx(np.std(rows[:, -1] / 2), rel=1e-12)
    alcohol = merged_figures["drift"]["alcohol"]
    assert alcohol["mean_shift"] == pytest.approx(np.mean(rows[:, -1]) - CARD["alcohol"].mean, rel=1e-9)
    assert alcohol["std_ratio"] == pytest.approx(np.std(rows[:, -1]), rel=1e-9)
    assert alcohol["out_of_range"] == 0.0


def test_a_constant_stream_has_zero_spread() -> None:
    stats = observed([EXPECTED[:1]] * 1000, [])
    figures = summarize(stats.snapshot())
    assert figures["predictions"]["std"] == 0.0
    assert figures["drift"]["pH"]["std_ratio"] == 0.0


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    bounds = [0.001, 0.002, 0.005]
    assert histogram_quantile(0.5, bounds, [0, 10, 0, 0]) == pytest.approx(0.0015)
    assert histogram_quantile(0.99, bounds, [0, 0, 0, 4]) == 0.005
    assert histogram_quantile(0.5, bounds, [0, 0, 0, 0]) is None


def test_prometheus_text_parses_and_is_labelled_by_version() -> None:
    old = VersionStats(ModelIdentity("wine", "2", "run-2", "digest-2"), COLUMNS, CARD)
    old.observe_request(200, 0.004)
    current = observed([EXPECTED], [0.002, 0.003])
    current.observe_request(400, 0.0005, "INVALID_PARAMETER_VALUE")
    text = render_prometheus(merge_snapshots([old.snapshot(), current.snapshot()]), MODEL)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {(s.labels["version"], s.labels["code"]): s.value for s in families["sweeps_requests"].samples}
    assert requests == {("2", "200"): 1, ("3", "200"): 2, ("3", "400"): 1}
    info = {s.labels["version"]: s.value for s in families["sweeps_model_info"].samples}
    assert info == {"2": 0, "3": 1}
    errors = [s for s in families["sweeps_errors"].samples if s.labels["version"] == "3"]
    assert [(s.labels["error_code"], s.value) for s in errors] == [("INVALID_PARAMETER_VALUE", 1)]
    counts = [s for s in families["sweeps_request_duration_seconds"].samples if s.name.endswith("_count")]
    assert {s.labels["version"]: s.value for s in counts} == {"2": 1, "3": 3}
    shift = {s.labels["feature"]: s.value for s in families["sweeps_feature_mean_shift"].samples}
    assert set(shift) == set(COLUMNS)
    assert shift["alcohol"] == pytest.approx(0.0, abs=1e-12)
    assert re.search(r'^sweeps_model_loaded 1\.0$', text, flags=re.MULTILINE)
