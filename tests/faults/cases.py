"""Case-id marker for the fault group until tests/cases.py (branch hostile) reaches main.

`case("FT-3")` returns `pytest.mark.case("FT-3")`, the same API as tests/cases.py, so
switching is a one-line import change. The marker is registered in conftest.py here.
"""

from __future__ import annotations

import re

import pytest

CASE_ID = re.compile(r"^[A-Z]{2,3}-\d+[a-z]?$")


def case(*ids: str) -> pytest.MarkDecorator:
    if not ids or not all(CASE_ID.match(i) for i in ids):
        raise ValueError(f"bad case ids {ids!r}: expected e.g. 'FT-3'")
    return pytest.mark.case(*ids)
