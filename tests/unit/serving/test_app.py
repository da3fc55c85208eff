"""The Serve application's builder (`serve deploy`): bad args are one clear line per field, no Ray started."""

from __future__ import annotations

import pytest

from sweeps.errors import ConfigError


def test_bad_application_args_name_the_field_without_pydantic_boilerplate() -> None:
    from sweeps.serving.app import build_app

    message = (
        r"^serve application args: port: Input should be greater than or equal to 1 \(got 0\)\n"
        r"serve application args: replica: Extra inputs are not permitted \(got 2\)$"
    )
    with pytest.raises(ConfigError, match=message) as info:
        build_app({"port": 0, "replica": 2})
    assert "For further information" not in str(info.value)
