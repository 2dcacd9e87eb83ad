"""The verdict matrix's parts that need no root: the ssh stand-in's reading of ssh's argv, the
launcher, the expectation check and the table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import ssh_standin, verdicts
from harness.peers import REPO, escp_env


@pytest.mark.parametrize("argv,command", [
    (["-x", "-T", "-oForwardX11=no", "-oClearAllForwardings=yes", "--", "localhost", "'/usr/bin/escp' --server"],
     "'/usr/bin/escp' --server"),
    (["-p", "2222", "-i", "/k", "-l", "root", "host", "escp", "--server"], "escp --server"),
    (["-p2222", "-4", "host", "a b", "c"], "a b c"),  # words joined with spaces, as ssh does
])
def test_stand_in_finds_the_remote_command(argv: list[str], command: str) -> None:
    assert ssh_standin.remote_command(argv) == command


@pytest.mark.parametrize("argv", [["-x"], ["-x", "--", "host"]])
def test_stand_in_refuses_a_missing_destination_or_command(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        ssh_standin.remote_command(argv)


def test_stand_in_runs_the_command_locally_through_a_shell(tmp_path: Path) -> None:
    ssh = ssh_standin.write_script(tmp_path)
    r = subprocess.run([str(ssh), "-T", "--", "somehost", "echo", "$SSH_CONNECTION"], capture_output=True, text=True,
                       env=escp_env(), cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ssh_standin.SSH_CONNECTION  # the receiver will bind 127.0.0.1


def test_launcher_sets_the_affinity_and_becomes_the_command() -> None:
    cpu = sorted(os.sched_getaffinity(0))[0]
    probe = "import os; print(os.getpid(), sorted(os.sched_getaffinity(0)))"
    r = subprocess.run([sys.executable, "-m", "harness.launch", "--cpus", str(cpu), "--", sys.executable, "-c", probe],
                       capture_output=True, text=True, env=escp_env(), cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split(maxsplit=1)[1].strip() == f"[{cpu}]"
    bad = subprocess.run([sys.executable, "-m", "harness.launch", "--cgroup", "/nonexistent/cgroup.procs", "--",
                          "true"], capture_output=True, text=True, env=escp_env(), cwd=REPO, timeout=60)
    assert bad.returncode == 126 and "harness.launch" in bad.stderr


def test_expectations_check_class_side_and_what_they_name() -> None:
    exp = verdicts.Expect("network-bound", "sender", "link-saturated", "send")
    v: dict[str, Any] = {"kind": "network-bound", "side": "sender", "cause": "link-saturated", "stage": "send"}
    assert exp.matches(v)
    assert not exp.matches(v | {"cause": "window-limited"})
    assert not exp.matches(v | {"side": "receiver"})
    assert verdicts.Expect("disk-bound", "receiver", None, "write").matches(
        {"kind": "disk-bound", "side": "receiver", "cause": "", "stage": "write"})
    assert exp.text() == "network-bound, link-saturated (send, sender)"


def test_every_injection_is_named_once_and_expects_a_side() -> None:
    names = [inj.name for inj in verdicts.INJECTIONS]
    assert len(names) == len(set(names))
    assert all(inj.expect.side in ("sender", "receiver") for inj in verdicts.INJECTIONS)
    outside = {inj.expect.kind for inj in verdicts.INJECTIONS if inj.outside}
    assert outside == {"cpu-starved", "network-bound", "disk-bound"}


def test_table_counts_right_runs_and_names_skips() -> None:
    right = {"kind": "cpu-starved", "side": "receiver", "cause": "quota", "stage": "write", "evidence": "e",
             "unseen": []}
    doc = {
        "created": "now", "git": {"commit": "abc"}, "machine": {"cpu_count": 2, "kernel": "k", "loadavg": [1, 1, 1]},
        "streams": 2, "runs_each": 2, "rows": [
            {"injection": "quota-receiver", "what": "w", "expect": "x", "outside": True, "skipped": None,
             "size_mib": 8, "runs": [
                 {"correct": True, "verdict": right, "wall_s": 1.0, "error": None},
                 {"correct": False, "verdict": None, "wall_s": 2.0, "error": "exit 1: boom"}]},
            {"injection": "link-tbf", "what": "w", "expect": "x", "outside": True, "skipped": "needs root",
             "runs": []},
        ]}
    md = verdicts.render_markdown(doc)
    assert "| 1/2 |" in md and "cpu-starved, quota (write, receiver) x1" in md and "failed (exit 1: boom) x1" in md
    assert "skipped: needs root" in md
