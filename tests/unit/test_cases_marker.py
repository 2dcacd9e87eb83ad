"""The case() marker helper and the per-group summary."""

import pytest

from tests.cases import case, summarize


def test_case_rejects_bad_ids() -> None:
    with pytest.raises(ValueError):
        case("hp7")
    with pytest.raises(ValueError):
        case()


def test_case_mark_args() -> None:
    mark = case("HP-7", "FT-2")
    assert mark.mark.name == "case" and mark.mark.args == ("HP-7", "FT-2")


def test_summarize_counts_by_group() -> None:
    lines = summarize({"HP-1": ["passed"], "HP-2": ["passed", "failed"], "FT-1": ["skipped"]})
    assert lines == ["FT: 1 cases, 0 passed, 1 skipped (FT-1)", "HP: 2 cases, 1 passed, 1 failed (HP-2)"]


def test_summarize_does_not_hide_a_skipped_test_behind_passed_ones() -> None:
    """HP-34's fuzz test was skipped everywhere while the case read 'passed' (issue 15)."""
    lines = summarize({"HP-34": ["passed", "passed", "skipped"], "HP-33": ["passed"], "HP-1": ["skipped", "failed"]})
    assert lines == ["HP: 3 cases, 1 passed, 1 failed (HP-1), 1 partly skipped (HP-34)"]


def test_marker_is_registered(pytestconfig: pytest.Config) -> None:
    assert any(line.startswith("case(") for line in pytestconfig.getini("markers"))
