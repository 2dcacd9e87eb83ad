"""Unit tests of /etc/escp.conf parsing (ESCP_CONFIG) and per-thread CPU pinning."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from escp.errors import UsageError
from escp.sysconf import apply_cpumask, load_host_config, parse_mask


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "escp.conf"
    p.write_text(text)
    return str(p)


def test_missing_file_is_no_configuration(tmp_path: Path) -> None:
    cfg = load_host_config(str(tmp_path / "absent.conf"))
    assert cfg.cpus is None and cfg.nodes is None


@pytest.mark.parametrize("value, cpus", [('"0x1"', (0,)), ('"3"', (0, 1)), ("[1, 0, 1]", (0, 1)), ('"0x0,3"', (0, 1))])
def test_cpumask_forms(tmp_path: Path, value: str, cpus: tuple[int, ...]) -> None:
    if not set(cpus) <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1")
    cfg = load_host_config(write(tmp_path, f"cpumask: {value}\nnodemask: \"0x1\"\n"))
    assert cfg.cpus == cpus and cfg.nodes == (0,)
    assert "nodemask 0" in cfg.describe()


@pytest.mark.parametrize("text, fragment", [
    ("cpumask: zz\n", "invalid hex mask"),
    ("cpumask: \"0x0\"\n", "selects nothing"),
    ("cpumask: [-1]\n", "not a number"),
    ("cpumask: [a]\n", "not a number"),
    ("cpumask: []\n", "list must name"),
    ("cpumask: {a: 1}\n", "expected a hex mask"),
    ("cpumask: true\n", "expected a hex mask"),
    ("cpumask: \"0x100000000\"\n", "none of the CPUs"),
    ("nodemask: nope\n", "nodemask: invalid hex mask"),
    ("cpus: 1\n", "unknown setting 'cpus'"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("cpumask: [1\n", "not valid YAML"),
])
def test_bad_values_are_one_line_usage_errors(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as ei:
        load_host_config(write(tmp_path, text))
    line = ei.value.one_line()
    assert fragment in line and "\n" not in line and "escp.conf" in line


def test_env_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESCP_CONFIG", write(tmp_path, "cpumask: [0]\n"))
    assert load_host_config().cpus == (0,)


def test_parse_mask_int_is_hex_mask() -> None:
    assert parse_mask(5, "cpumask", "f") == (0, 2)


def test_apply_cpumask_affects_only_the_calling_thread() -> None:
    before = os.sched_getaffinity(0)
    if len(before) < 2:
        pytest.skip("needs two CPUs")
    seen: list[set[int]] = []

    def worker() -> None:
        apply_cpumask((min(before),))
        seen.append(os.sched_getaffinity(0))

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert seen == [{min(before)}]
    assert os.sched_getaffinity(0) == before
