"""The documents agree with the program (issue 13, item 8): every option of the parser is
documented, and the statements users relied on and found wrong say what the code does (the
behaviours themselves are tested in tests/integration/test_scp_habits_local.py)."""

from __future__ import annotations

import re
from pathlib import Path

from escp.cli import build_parser
from escp.clidoc import options
from escp.engine.writer import TEMP_MODE

ROOT = Path(__file__).resolve().parents[2]
USAGE = (ROOT / "docs" / "usage.md").read_text()
README = (ROOT / "README.md").read_text()
SECURITY = (ROOT / "docs" / "security.md").read_text()


def mentioned(option: str, text: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(option) + r"(?![\w-])", text) is not None


def test_every_option_is_documented() -> None:
    missing = [a.option_strings for a in options(build_parser())
               if not any(mentioned(o, USAGE + README) for o in a.option_strings)]
    assert missing == []


def test_quiet_is_documented_as_never_hiding_errors() -> None:
    line = next(ln for ln in USAGE.splitlines() if ln.startswith("- `-q`"))
    assert "never hides an error" in line + USAGE[USAGE.index(line):USAGE.index(line) + 300]
    assert "nor per-file errors" not in USAGE


def test_temp_file_mode_is_the_documented_one() -> None:
    assert TEMP_MODE == 0o600
    assert "mode 0600 whatever the source's mode" in SECURITY


def test_json_dash_and_limit_semantics_are_documented() -> None:
    assert "`--json -`: standard output" in USAGE
    assert "Limits the **whole transfer**" in USAGE and "Kbit/s, as scp's `-l`" in USAGE
    assert "## For scp and rsync users" in USAGE
