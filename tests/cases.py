"""Case-id marker shared by the reliability test groups (BI, HP, FT, LD).

Usage in a test module::

    from tests.cases import case

    @case("HP-7")
    def test_replayed_frame_is_refused(...): ...

`case(*ids)` returns ``pytest.mark.case(*ids)``; a test may carry several ids and an id
may be covered by several tests. The marker is registered by `pytest_configure` below,
loaded for the whole suite through ``pytest_plugins = ["tests.cases"]`` in
tests/conftest.py. At the end of a session a short summary per group is printed,
e.g. ``HP: 34 cases, 34 passed`` (a case passes when every test carrying it passed; one
with a skipped test and no failure is listed as partly skipped, so a check that never
runs cannot hide behind its siblings).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import pytest

CASE_ID = re.compile(r"^(?P<group>[A-Z]{2,3})-(?P<num>\d+[a-z]?)$")
_RESULTS_KEY = pytest.StashKey[dict[str, list[str]]]()


def case(*ids: str) -> pytest.MarkDecorator:
    """Mark a test as covering the given case ids ("HP-7", "FT-12", ...)."""
    if not ids:
        raise ValueError("case() needs at least one id")
    for cid in ids:
        if not CASE_ID.match(cid):
            raise ValueError(f"bad case id {cid!r}: expected e.g. 'HP-7'")
    return pytest.mark.case(*ids)


def case_ids(item: pytest.Item) -> list[str]:
    out: list[str] = []
    for mark in item.iter_markers(name="case"):
        out.extend(str(a) for a in mark.args)
    return out


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "case(*ids): reliability case ids covered by this test, e.g. case('HP-7')"
    )
    config.stash[_RESULTS_KEY] = defaultdict(list)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Under xdist the controller receives the workers' reports here too; the case ids
    # travel in user_properties (set below), since markers do not cross the wire.
    ids = [v for k, v in report.user_properties if k == "case"]
    if not ids:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        outcome = "skipped" if report.skipped else ("passed" if report.passed else "failed")
        store = _store(report)
        if store is None:
            return
        for cid in ids:
            store[str(cid)].append(outcome)
    elif report.when == "teardown" and report.failed:
        store = _store(report)
        if store is not None:
            for cid in ids:
                store[str(cid)].append("failed")


_CONFIG: list[pytest.Config] = []


def _store(report: Any) -> dict[str, list[str]] | None:
    if not _CONFIG:
        return None
    return _CONFIG[0].stash.get(_RESULTS_KEY, None)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG[:] = [session.config]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for cid in case_ids(item):
            item.user_properties.append(("case", cid))


def summarize(results: dict[str, list[str]]) -> list[str]:
    """One line per group: 'HP: 34 cases, 34 passed' (+ failed/partly skipped/skipped counts)."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for cid, outcomes in results.items():
        m = CASE_ID.match(cid)
        group = m.group("group") if m else "?"
        if "failed" in outcomes:
            verdict = "failed"
        elif "skipped" not in outcomes:
            verdict = "passed"
        elif "passed" in outcomes:
            verdict = "partly skipped"
        else:
            verdict = "skipped"
        groups[group][cid] = verdict
    lines = []
    for group in sorted(groups):
        verdicts = list(groups[group].values())
        parts = [f"{len(verdicts)} cases", f"{verdicts.count('passed')} passed"]
        for extra in ("failed", "partly skipped", "skipped"):
            if verdicts.count(extra):
                bad = sorted((c for c, v in groups[group].items() if v == extra), key=_case_key)
                parts.append(f"{verdicts.count(extra)} {extra} ({', '.join(bad)})")
        lines.append(f"{group}: " + ", ".join(parts))
    return lines


def _case_key(cid: str) -> tuple[str, int, str]:
    m = CASE_ID.match(cid)
    if not m:
        return (cid, 0, "")
    num = m.group("num")
    digits = "".join(ch for ch in num if ch.isdigit())
    return (m.group("group"), int(digits or 0), num[len(digits):])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller prints
        return
    results = config.stash.get(_RESULTS_KEY, None)
    if not results:
        return
    terminalreporter.section("reliability cases")
    for line in summarize(results):
        terminalreporter.write_line(line)
