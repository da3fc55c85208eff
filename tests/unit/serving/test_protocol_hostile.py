"""Hostile request bodies: each is a 4xx with a short JSON message, never an exception that becomes a 500."""

from __future__ import annotations

import json
import sys

import pytest

from sweeps.errors import BadRequest, InvalidInput, ProtocolError
from sweeps.serving.protocol import MAX_MESSAGE, Limits, check_content_length, encode_error, parse_request
from training.data import FEATURES

COLUMNS = list(FEATURES)
ROW = [7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4]
ROOMY = Limits(max_rows=10_000, max_body_bytes=64 * 1024 * 1024)
JSON_TYPE = "application/json"
DIGITS = sys.get_int_max_str_digits()


def refusal(body: bytes, content_type: str = JSON_TYPE) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_request(body, content_type, COLUMNS, ROOMY)
    return info.value


@pytest.mark.parametrize("digits", [DIGITS + 1, 10 * DIGITS])
@pytest.mark.parametrize(
    "template",
    [
        '{"dataframe_split": {"columns": %s, "data": [[%s, 0.7, 0, 1.9, 0.076, 11, 34, 0.9978, 3.51, 0.56, 9.4]]}}',
        '{"dataframe_records": [{"pH": %s}]}',
        "%s",
    ],
    ids=["in a row", "in a record", "the whole body"],
)
def test_an_integer_literal_beyond_pythons_digit_limit_is_a_400(template: str, digits: int) -> None:
    literal = "7" * digits
    body = (template % (json.dumps(COLUMNS), literal) if template.count("%s") == 2 else template % literal).encode()
    error = refusal(body)
    assert isinstance(error, BadRequest)
    assert (error.status, error.error_code) == (400, "MALFORMED_REQUEST")
    assert error.message == (
        f"The body holds an integer literal longer than {DIGITS} digits, which cannot be read; "
        "send features as ordinary numbers."
    )


def test_a_long_integer_below_the_digit_limit_is_named_as_too_large_for_a_float() -> None:
    row = ["9" * 400, *map(str, ROW[1:])]
    body = '{"dataframe_split": {"columns": ' + json.dumps(COLUMNS) + ', "data": [[' + ", ".join(row) + "]]}}"
    error = refusal(body.encode())
    assert isinstance(error, InvalidInput)
    assert "column 'fixed acidity' at row 0: the number 999" in error.message
    assert "is too large for a float" in error.message


def test_a_content_length_with_thousands_of_digits_is_a_400() -> None:
    with pytest.raises(BadRequest, match=r"^Content-Length must be an integer, got '9999"):
        check_content_length("9" * (DIGITS + 1), ROOMY)


def test_half_a_million_unknown_columns_give_a_short_message() -> None:
    names = [f"col{i}" for i in range(500_000)]
    body = json.dumps({"dataframe_split": {"columns": [*COLUMNS, *names], "data": [[*ROW, *[0] * len(names)]]}})
    error = refusal(body.encode())
    assert isinstance(error, InvalidInput)
    assert error.message.startswith(
        "dataframe_split: unknown column(s) ['col0', 'col1', 'col2', 'col3', 'col4', 'col5', 'col6', 'col7', 'col8', "
        "'col9', ... 499990 more]; the model expects ["
    )
    assert len(encode_error(error)) < 2 * 1024


def test_a_megabyte_column_name_is_cut_in_the_message() -> None:
    name = "x" * 1_000_000
    body = json.dumps({"dataframe_records": [{name: 1, **dict(zip(COLUMNS, ROW, strict=True))}]})
    error = refusal(body.encode())
    assert f"unknown column(s) ['{'x' * 57}...']" in error.message
    duplicate = json.dumps({"dataframe_split": {"columns": [name, name], "data": [[1, 2]]}})
    error = refusal(duplicate.encode())
    assert error.message == f"Column '{'x' * 57}...' appears more than once in dataframe_split."


def test_many_stray_keys_give_a_short_answer() -> None:
    document = {"dataframe_split": {}, **{f"k{i}": 0 for i in range(200_000)}}
    error = refusal(json.dumps(document).encode())
    assert error.message.startswith("Unexpected top-level key(s) ['k0', ")
    answer = encode_error(error)
    assert len(answer) <= MAX_MESSAGE + 100
    assert json.loads(answer)["message"].endswith("characters in all)")


def test_encode_error_cuts_any_long_message_and_says_how_long_it_was() -> None:
    answer = json.loads(encode_error(InvalidInput("y" * 1_000_000)))
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert len(answer["message"]) <= MAX_MESSAGE
    assert answer["message"].endswith("... (1000000 characters in all)")
    assert json.loads(encode_error(InvalidInput("short")))["message"] == "short"
