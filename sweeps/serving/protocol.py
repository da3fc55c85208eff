"""MLflow's scoring protocol: parse and validate an /invocations body into a float matrix.

Pure functions, no Ray and no model: the endpoint, the tests and the benchmark share them.
Every rejection is a `ProtocolError` carrying the HTTP status, an MLflow error code and a
message that names the problem, the value received and where it was found.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sweeps.errors import BadRequest, InvalidInput, PayloadTooLarge, ProtocolError, UnsupportedMediaType

__all__ = [
    "CONTENT_TYPES",
    "MAX_MESSAGE",
    "PAYLOAD_KEYS",
    "Limits",
    "MediaType",
    "ParsedRequest",
    "check_content_length",
    "encode_error",
    "encode_predictions",
    "match_columns",
    "parse_content_type",
    "parse_request",
    "text_problem",
    "value_problem",
]

PAYLOAD_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CONTENT_TYPES = ("application/json", "text/csv")
LEGACY_FORMATS = ("pandas-split", "pandas-records")
_LEGACY_SPLIT_KEYS = frozenset({"columns", "data", "index"})
_MAX_SHOWN = 60  # characters of a bad value quoted back in a message
_MAX_NAMES = 10  # column names listed in a message
MAX_MESSAGE = 4096  # characters of an error message: an answer stays small whatever the request held


@dataclass(frozen=True)
class Limits:
    """Request size limits (from `ServeConfig.max_rows` and `max_body_bytes`)."""

    max_rows: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class MediaType:
    """A parsed Content-Type: `kind` is json or csv; `legacy_format` is MLflow 1.x's `format=`."""

    kind: str
    legacy_format: str | None = None


@dataclass(frozen=True)
class ParsedRequest:
    """Rows as float64, columns in the model's order; `legacy` asks for a bare-list answer."""

    features: np.ndarray
    legacy: bool = False

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _name(name: str) -> str:
    """A column name quoted in a message, cut to `_MAX_SHOWN` characters."""
    return repr(name if len(name) <= _MAX_SHOWN else name[: _MAX_SHOWN - 3] + "...")


def _names(names: Sequence[str]) -> str:
    """Column names listed in a message: at most `_MAX_NAMES` of them, each cut by `_name`."""
    more = f", ... {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else ""
    return f"[{', '.join(_name(name) for name in names[:_MAX_NAMES])}{more}]"


def check_content_length(header: str | None, limits: Limits) -> None:
    """Refuse a declared body size over the limit before reading it."""
    if header is None:
        return
    try:
        declared = int(header)
    except ValueError:
        raise BadRequest(f"Content-Length must be an integer, got {header!r}.") from None
    if declared > limits.max_body_bytes:
        raise PayloadTooLarge(_too_large_message(declared, limits))


def _too_large_message(size: int, limits: Limits) -> str:
    return (
        f"The request body must be at most {limits.max_body_bytes} bytes (serve.max_body_bytes), "
        f"got {size}; split the rows over several requests."
    )


def parse_content_type(header: str | None) -> MediaType:
    """Read the Content-Type header; anything but JSON or CSV in UTF-8 is a 415."""
    if not header or not header.strip():
        raise UnsupportedMediaType(
            f"A Content-Type header is required; use one of {list(CONTENT_TYPES)} "
            "(or 'application/json; format=pandas-split' for MLflow 1.x clients)."
        )
    mime, *raw_params = (part.strip() for part in header.split(";"))
    mime = mime.lower()
    if mime not in CONTENT_TYPES:
        raise UnsupportedMediaType(f"Content-Type must be one of {list(CONTENT_TYPES)}, got {header!r}.")
    legacy_format = None
    for raw in raw_params:
        if not raw:
            continue
        key, _, value = raw.partition("=")
        key, value = key.strip().lower(), value.strip().strip('"').lower()
        if key == "charset":
            if value not in ("utf-8", "utf8"):
                raise UnsupportedMediaType(f"Only charset=utf-8 is supported, got Content-Type {header!r}.")
        elif key == "format" and mime == "application/json":
            if value not in LEGACY_FORMATS:
                raise UnsupportedMediaType(
                    f"The format parameter must be one of {list(LEGACY_FORMATS)}, got {header!r}."
                )
            legacy_format = value
        else:
            raise UnsupportedMediaType(f"Unknown Content-Type parameter {key!r} in {header!r}.")
    return MediaType("json" if mime == "application/json" else "csv", legacy_format)


def parse_request(body: bytes, content_type: str | None, columns: Sequence[str], limits: Limits) -> ParsedRequest:
    """Parse a scoring request for a model whose signature names `columns` (float features)."""
    media = parse_content_type(content_type)
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLarge(_too_large_message(len(body), limits))
    if media.kind == "csv":
        return ParsedRequest(_parse_csv(body, columns, limits))
    return _parse_json(body, media, columns, limits)


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"The body must be UTF-8 text; byte {exc.start} is not valid UTF-8.", error_code="MALFORMED_REQUEST"
        ) from None


def _parse_json(body: bytes, media: MediaType, columns: Sequence[str], limits: Limits) -> ParsedRequest:
    document = _load_json(body)
    if media.legacy_format == "pandas-records":
        if not isinstance(document, list):
            raise BadRequest(
                f"With format=pandas-records the body must be a JSON list of records, got a {_json_type(document)}."
            )
        return ParsedRequest(_records(document, "body", columns, limits), legacy=True)
    if not isinstance(document, dict):
        raise BadRequest(
            f"The body must be a JSON object with exactly one of {list(PAYLOAD_KEYS)}, got a {_json_type(document)}."
        )
    keys = [k for k in document if k in PAYLOAD_KEYS]
    if not keys and "data" in document and set(document) <= _LEGACY_SPLIT_KEYS:
        # MLflow 1.x: pandas-split orientation at the top level, answered with a bare list.
        return ParsedRequest(_split(document, "body", columns, limits), legacy=True)
    if media.legacy_format == "pandas-split":
        raise BadRequest(
            "With format=pandas-split the body must be an object with 'columns' and 'data', "
            f"got keys {sorted(document)}."
        )
    key = _payload_key(document, keys)
    payload = document[key]
    if key == "dataframe_split":
        return ParsedRequest(_split(payload, key, columns, limits))
    if key == "inputs" and isinstance(payload, dict):
        return ParsedRequest(_columnar(payload, key, columns, limits))
    return ParsedRequest(_records(payload, key, columns, limits))


def _load_json(body: bytes) -> Any:
    text = _decode(body)
    if not text.strip():
        raise BadRequest('The body is empty; send a JSON object such as {"dataframe_split": ...}.')
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
            error_code="MALFORMED_REQUEST",
        ) from None
    except RecursionError:
        raise BadRequest("The body is not valid JSON: nested too deeply.", error_code="MALFORMED_REQUEST") from None
    except ValueError:  # Python's limit on integer digits, hit inside the JSON reader
        raise BadRequest(
            f"The body holds an integer literal longer than {sys.get_int_max_str_digits()} digits, which cannot "
            "be read; send features as ordinary numbers.",
            error_code="MALFORMED_REQUEST",
        ) from None


def _payload_key(document: dict[str, Any], keys: list[str]) -> str:
    """The one payload key of a modern request; `params` may come with it but must be empty."""
    if len(keys) != 1:
        got = f"keys {sorted(document)}" if document else "an empty object"
        raise BadRequest(f"The body must have exactly one of the keys {list(PAYLOAD_KEYS)}, got {got}.")
    stray = sorted(set(document) - {keys[0], "params"})
    if stray:
        raise BadRequest(f"Unexpected top-level key(s) {stray} next to {keys[0]!r}; only 'params' may accompany it.")
    if document.get("params") not in (None, {}):
        raise InvalidInput(f"This model takes no params, got params={_shown(document['params'])}.")
    return keys[0]


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _check_rows(count: int, where: str, limits: Limits) -> None:
    if count == 0:
        raise InvalidInput(f"{where} has no rows; send at least one row.")
    if count > limits.max_rows:
        raise PayloadTooLarge(
            f"{where} has {count} rows, more than the limit of {limits.max_rows} (serve.max_rows); "
            "split it into smaller requests."
        )


def match_columns(given: Sequence[Any], columns: Sequence[str], where: str, *, ignore_extra: bool = False) -> list[int]:
    """Position in `given` of each model column; names may come in any order.

    A request may not carry columns the model does not know; a batch file may (`ignore_extra`):
    its id and other columns are carried through to the output.
    """
    if any(not isinstance(name, str) for name in given):
        bad = next(name for name in given if not isinstance(name, str))
        raise InvalidInput(f"Column names in {where} must be strings, got {_shown(bad)}.")
    seen: dict[str, int] = {}
    for i, name in enumerate(given):
        if name in seen:
            raise InvalidInput(f"Column {_name(name)} appears more than once in {where}.")
        seen[name] = i
    missing = [c for c in columns if c not in seen]
    known = set(columns)
    unknown = [] if ignore_extra else [c for c in given if c not in known]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing column(s) {_names(missing)}")
        if unknown:
            parts.append(f"unknown column(s) {_names(unknown)}")
        raise InvalidInput(f"{where}: {' and '.join(parts)}; the model expects {list(columns)}.")
    return [seen[c] for c in columns]


def _split(payload: Any, where: str, columns: Sequence[str], limits: Limits) -> np.ndarray:
    if not isinstance(payload, dict):
        raise BadRequest(f"{where} must be an object with 'columns' and 'data', got a {_json_type(payload)}.")
    stray = sorted(set(payload) - _LEGACY_SPLIT_KEYS)
    if stray:
        raise BadRequest(f"{where} has unexpected key(s) {stray}; expected 'columns', 'data' and optionally 'index'.")
    if "columns" not in payload or "data" not in payload:
        raise BadRequest(f"{where} must have both 'columns' and 'data', got keys {sorted(payload)}.")
    given, data = payload["columns"], payload["data"]
    if not isinstance(given, list):
        raise BadRequest(f"{where}.columns must be a list of column names, got a {_json_type(given)}.")
    if not isinstance(data, list):
        raise BadRequest(f"{where}.data must be a list of rows, got a {_json_type(data)}.")
    _check_rows(len(data), where, limits)
    order = match_columns(given, columns, where)
    for i, row in enumerate(data):
        if not isinstance(row, list):
            raise BadRequest(f"{where}.data[{i}] must be a list of {len(given)} values, got a {_json_type(row)}.")
        if len(row) != len(given):
            raise InvalidInput(f"{where}.data[{i}] has {len(row)} values but there are {len(given)} columns.")
    matrix = _to_matrix(data, list(given), where)
    return matrix if order == list(range(len(columns))) else matrix[:, order]


def _records(payload: Any, where: str, columns: Sequence[str], limits: Limits) -> np.ndarray:
    if not isinstance(payload, list):
        raise BadRequest(
            f"{where} must be a list of records (objects keyed by column name), got a {_json_type(payload)}."
        )
    _check_rows(len(payload), where, limits)
    wanted = set(columns)
    rows = []
    for i, record in enumerate(payload):
        if not isinstance(record, dict):
            hint = " (positional rows are ambiguous: name each value's column)" if isinstance(record, list) else ""
            raise BadRequest(f"{where}[{i}] must be an object keyed by column name, got a {_json_type(record)}{hint}.")
        if record.keys() != wanted:
            match_columns(list(record), columns, f"{where}[{i}]")
        rows.append([record[c] for c in columns])
    return _to_matrix(rows, list(columns), where)


def _columnar(payload: dict[str, Any], where: str, columns: Sequence[str], limits: Limits) -> np.ndarray:
    match_columns(list(payload), columns, where)
    lengths = set()
    for name in columns:
        values = payload[name]
        if not isinstance(values, list):
            raise BadRequest(f"{where}[{name!r}] must be a list of values, got a {_json_type(values)}.")
        lengths.add(len(values))
    if len(lengths) != 1:
        counts = {name: len(payload[name]) for name in columns}
        raise InvalidInput(f"The columns of {where} must all have the same length, got {counts}.")
    _check_rows(lengths.pop(), where, limits)
    return _to_matrix(list(zip(*(payload[name] for name in columns), strict=True)), list(columns), where)


_NUMBER_TYPES = frozenset({int, float})


def _to_matrix(rows: Sequence[Sequence[Any]], names: list[str], where: str) -> np.ndarray:
    """Rows of JSON numbers as float64; ints accepted, everything else named and refused."""
    kinds = {type(v) for row in rows for v in row}
    if kinds <= _NUMBER_TYPES:
        try:
            matrix = np.array(rows, dtype=np.float64)
        except OverflowError:
            pass  # an int beyond float range: the slow path names it
        else:
            if np.isfinite(matrix).all():
                return matrix
    return _checked_matrix(rows, names, where, value_problem)


def _checked_matrix(
    rows: Sequence[Sequence[Any]], names: list[str], where: str, problem_of: Callable[[Any], str | None]
) -> np.ndarray:
    """Value by value: the first bad one raises, naming its column and row."""
    matrix = np.empty((len(rows), len(names)), dtype=np.float64)
    for i, row in enumerate(rows):
        for j, (name, value) in enumerate(zip(names, row, strict=True)):
            problem = problem_of(value)
            if problem:
                raise InvalidInput(f"{where}: column {name!r} at row {i}: {problem}.")
            matrix[i, j] = float(value)
    return matrix


def value_problem(value: Any) -> str | None:
    """Why a JSON (or typed) value cannot be a feature, else None."""
    if value is None:
        return "missing value (null)"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {_json_type(value)} {_shown(value)}"
    try:
        number = float(value)
    except OverflowError:
        return f"the number {_shown(value)} is too large for a float"
    if not math.isfinite(number):
        return f"expected a finite number, got {number!r}"
    return None


def _parse_csv(body: bytes, columns: Sequence[str], limits: Limits) -> np.ndarray:
    text = _decode(body)
    try:
        lines = [row for row in csv.reader(io.StringIO(text), strict=True) if row]
    except csv.Error as exc:
        raise BadRequest(f"The body is not valid CSV: {exc}.", error_code="MALFORMED_REQUEST") from None
    if not lines:
        raise BadRequest("The CSV body is empty; send a header line naming the columns, then one line per row.")
    header = [name.strip() for name in lines[0]]
    rows = lines[1:]
    _check_rows(len(rows), "CSV body", limits)
    order = match_columns(header, columns, "CSV header")
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise InvalidInput(f"CSV row {i} (line {i + 2}) has {len(row)} fields but the header has {len(header)}.")
    try:
        matrix = np.array(rows, dtype=np.float64)
    except ValueError:
        matrix = _checked_matrix(rows, header, "CSV body", text_problem)
    if not np.isfinite(matrix).all():
        matrix = _checked_matrix(rows, header, "CSV body", text_problem)
    return matrix[:, order]


def text_problem(field: str) -> str | None:
    """Why a text field (CSV) cannot be a feature, else None."""
    if not field.strip():
        return "missing value (empty field)"
    try:
        number = float(field)
    except ValueError:
        return f"expected a number, got {_shown(field)}"
    if not math.isfinite(number):
        return f"expected a finite number, got {field.strip()!r}"
    return None


def encode_predictions(predictions: np.ndarray, legacy: bool) -> bytes:
    """`{"predictions": [...]}`, or the bare list MLflow 1.x clients expect."""
    values = predictions.tolist()
    return json.dumps(values if legacy else {"predictions": values}).encode()


def encode_error(error: ProtocolError) -> bytes:
    """The MLflow-style error body `{"error_code": ..., "message": ...}`, its message cut to `MAX_MESSAGE`."""
    body = error.to_json()
    message = body["message"]
    if len(message) > MAX_MESSAGE:
        body["message"] = f"{message[: MAX_MESSAGE - 40]}... ({len(message)} characters in all)"
    return json.dumps(body).encode()
