"""The concurrency scenario (harness/concurrency.py) end to end at a tiny scale: sessions
through the private sshd (with MaxStartups raised in its config), every copy checked, the
record and the report complete. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness import concurrency, sshd


def test_three_sessions_and_one_through_the_private_sshd(tmp_path: Path) -> None:
    if sshd.unavailable_reason():
        pytest.skip(sshd.unavailable_reason() or "")
    out = tmp_path / "out"
    assert concurrency.main(["--sessions", "3", "--size", "300K", "--repeats", "2", "--out", str(out)]) == 0
    doc = json.loads((out / "concurrency.json").read_text())
    assert doc["config"]["route"] == "ssh" and doc["config"]["ports"] == [1232, 1241]
    assert doc["config"]["max_startups"] == sshd.PrivateSshd.MAX_STARTUPS
    (row,) = doc["rows"]
    assert row["sessions"] == 3 and row["bytes"] == 3 * 300 * 1024 and row["all_exact"]
    assert [r["order"][0] for r in row["rounds"]] == ["single", "concurrent"]  # the order alternates
    for r in row["rounds"]:
        c = r["concurrent"]
        assert c["exact"] == 3 and not c["failures"] and len(c["sessions_detail"]) == 3
        t = c["completion_s"]
        assert 0 < t["min"] <= t["median"] <= t["p90"] <= t["max"] <= c["makespan_s"]
        assert r["single"]["exact"] and r["ratio"] == pytest.approx(r["concurrent_MiB_s"] / r["single_MiB_s"])
    md = (out / "concurrency.md").read_text()
    assert "| 3 | 1 (single first) | 3/3 |" in md and "| 3 | 2 (concurrent first) | 3/3 |" in md


def test_the_private_sshd_allows_many_logins_at_once() -> None:
    """sshd's own MaxStartups (10:30:100) starts refusing new logins once 10 are
    unauthenticated at once: the private sshd's effective setting is raised (sshd -T)."""
    if sshd.unavailable_reason():
        pytest.skip(sshd.unavailable_reason() or "")
    server = sshd.PrivateSshd().start()
    try:
        r = subprocess.run([str(sshd.SSHD), "-T", "-f", str(server.dir / "sshd_config")], capture_output=True,
                           text=True, timeout=30)
    finally:
        server.stop()
    assert r.returncode == 0, r.stderr
    assert "maxstartups 256:30:256" in r.stdout.splitlines()
