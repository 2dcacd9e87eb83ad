from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "case(*ids): reliability case ids covered by this test, e.g. case('FT-3')")
