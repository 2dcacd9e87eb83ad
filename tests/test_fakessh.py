"""Tests of the fake ssh (tests/fakessh.py): argv parsing and recording, and every mode."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import FakeSsh
from tests.fakessh import BANNER, FLAGS, OPTS_WITH_ARG, SSH_CONNECTION, UsageError, parse_argv


def ssh(*args: str, input: bytes | None = b"", timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    """Run `ssh` as found on PATH (the fake one while the fixture is active)."""
    return subprocess.run(["ssh", *args], input=input, capture_output=True, timeout=timeout)


# ---- argv parsing (in-process) ----


def test_parse_options_destination_command() -> None:
    p = parse_argv(["-p", "2222", "-i/k", "-oBatchMode=yes", "-46q", "u@h", "escp", "--server", "-v"])
    assert p["options"] == [
        ["-p", "2222"],
        ["-i", "/k"],
        ["-o", "BatchMode=yes"],
        ["-4", None],
        ["-6", None],
        ["-q", None],
    ]
    assert (p["user"], p["host"], p["port"], p["destination"]) == ("u", "h", "2222", "u@h")
    assert p["command"] == ["escp", "--server", "-v"]
    assert p["remote_command"] == "escp --server -v"


def test_parse_options_after_destination_and_double_dash() -> None:
    p = parse_argv(["h", "-l", "bob", "-T", "cmd", "-p", "1"])
    assert p["options"] == [["-l", "bob"], ["-T", None]]
    assert p["user"] == "bob" and p["port"] is None
    assert p["command"] == ["cmd", "-p", "1"]
    p = parse_argv(["-x", "--", "-weird-host", "-p", "1"])
    assert p["host"] == "-weird-host" and p["command"] == ["-p", "1"]


@pytest.mark.parametrize("argv", [[], ["-p"], ["-Z", "h"], ["-v"]])
def test_parse_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_argv(argv)


words = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8)
opts = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(sorted(OPTS_WITH_ARG)), words).map(lambda t: ["-" + t[0], t[1]]),
        st.sampled_from(sorted(FLAGS)).map(lambda c: ["-" + c, None]),
    ),
    max_size=6,
)


@given(opts, st.lists(words, max_size=5))
def test_parse_roundtrip(options: list[list[str | None]], command: list[str]) -> None:
    argv = [x for o in options for x in o if x is not None] + ["--", "host", *command]
    p = parse_argv(argv)
    assert p["options"] == options
    assert p["host"] == "host"
    assert p["command"] == command
    assert p["remote_command"] == " ".join(command)


# ---- the installed program ----


def test_fixture_puts_fake_first_on_path(fake_ssh: FakeSsh) -> None:
    assert shutil.which("ssh") == str(fake_ssh.program)
    assert os.environ["ESCP_FAKESSH_LOG"] == str(fake_ssh.log)
    assert fake_ssh.calls() == []


def test_records_full_argv(fake_ssh: FakeSsh) -> None:
    argv = ["-p", "2222", "-o", "BatchMode=yes", "-F", "/dev/null", "-T", "-vv", "alice@remote", "echo", "hi"]
    r = ssh(*argv)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hi\n"
    ssh("-q", "other", "true")
    calls = fake_ssh.calls()
    assert len(calls) == 2
    c = calls[0]
    assert c["argv"] == argv
    assert c["user"] == "alice" and c["host"] == "remote" and c["port"] == "2222"
    assert ["-o", "BatchMode=yes"] in c["options"] and ["-v", None] in c["options"]
    assert c["command"] == ["echo", "hi"] and c["remote_command"] == "echo hi"
    assert c["mode"] == "run"
    assert fake_ssh.argvs()[1] == ["-q", "other", "true"]


def test_words_joined_with_spaces_like_real_ssh(fake_ssh: FakeSsh) -> None:
    # real ssh loses the word boundaries: 'a b' becomes two remote words
    r = ssh("h", "printf", "%s|", "a b", "c")
    assert r.stdout == b"a|b|c|"


def test_no_shell_unless_asked(fake_ssh: FakeSsh, tmp_path: Path) -> None:
    r = ssh("h", "echo", "$SSH_CONNECTION;", "echo", "x")
    assert r.stdout == b"$SSH_CONNECTION; echo x\n"
    fake_ssh.set_shell()
    r = ssh("h", "echo", "$SSH_CONNECTION;", "echo", "x")
    assert r.stdout == (SSH_CONNECTION + "\nx\n").encode()


def test_ssh_connection_env(fake_ssh: FakeSsh) -> None:
    r = ssh("h", "printenv", "SSH_CONNECTION")
    assert r.stdout.decode().strip() == "127.0.0.1 50000 127.0.0.1 22"


def test_binary_passthrough(fake_ssh: FakeSsh) -> None:
    data = os.urandom(1 << 20) + b"\x00\r\n\xff"
    r = ssh("h", "cat", input=data)
    assert r.returncode == 0 and r.stdout == data


def test_exit_status_and_stderr_pass_through(fake_ssh: FakeSsh) -> None:
    fake_ssh.set_shell()
    r = ssh("h", "echo err >&2; exit 9")
    assert r.returncode == 9 and r.stderr == b"err\n"


def test_dash_n_gives_empty_stdin(fake_ssh: FakeSsh) -> None:
    assert ssh("-n", "h", "cat", input=b"data").stdout == b""


def test_home_dir(fake_ssh: FakeSsh, tmp_path: Path) -> None:
    fake_ssh.set_home(tmp_path)
    assert ssh("h", "pwd").stdout.decode().strip() == str(tmp_path)


def test_program_not_found_in_run_mode(fake_ssh: FakeSsh) -> None:
    r = ssh("h", "/nonexistent/escp", "--server")
    assert r.returncode == 127 and b"command not found" in r.stderr and r.stdout == b""


def test_usage_error_is_logged(fake_ssh: FakeSsh) -> None:
    r = ssh("-p")
    assert r.returncode == 255
    (c,) = fake_ssh.calls()
    assert c["argv"] == ["-p"] and "argument" in c["error"]


def test_version(fake_ssh: FakeSsh) -> None:
    r = ssh("-V")
    assert r.returncode == 0 and b"OpenSSH" in r.stderr


def test_concurrent_calls_all_logged(fake_ssh: FakeSsh) -> None:
    procs = [
        subprocess.Popen(["ssh", f"h{i}", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for i in range(8)
    ]
    assert all(p.wait(timeout=30) == 0 for p in procs)
    assert sorted(c["host"] for c in fake_ssh.calls()) == sorted(f"h{i}" for i in range(8))


# ---- modes ----


def test_mode_banner(fake_ssh: FakeSsh) -> None:
    fake_ssh.set_mode("banner")
    r = ssh("h", "echo", "payload")
    assert r.returncode == 0
    assert r.stdout == BANNER + b"payload\n"
    assert fake_ssh.calls()[0]["mode"] == "banner"


def test_mode_is_not_inherited_by_the_remote_command(fake_ssh: FakeSsh) -> None:
    fake_ssh.set_mode("banner")
    fake_ssh.set_shell()
    r = ssh("h", 'echo "${ESCP_FAKESSH_MODE-unset}"')
    assert r.stdout == BANNER + b"unset\n"


def test_mode_missing(fake_ssh: FakeSsh) -> None:
    fake_ssh.set_mode("missing")
    r = ssh("h", "escp", "--server")
    assert r.returncode == 127
    assert r.stdout == b""
    assert b"escp: command not found" in r.stderr


def test_mode_refuse(fake_ssh: FakeSsh) -> None:
    fake_ssh.set_mode("refuse")
    r = ssh("h", "echo", "never")
    assert r.returncode == 255
    assert r.stdout == b""
    assert b"Permission denied (publickey)." in r.stderr


def test_mode_exit0(fake_ssh: FakeSsh) -> None:
    fake_ssh.set_mode("exit0")
    r = ssh("h", "echo", "never", input=b"ignored")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_mode_hang(fake_ssh: FakeSsh) -> None:
    fake_ssh.set_mode("hang")
    t0 = time.monotonic()
    p = subprocess.Popen(["ssh", "h", "echo", "never"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(timeout=1.0)
    p.kill()
    out, _ = p.communicate(timeout=10)
    assert out == b""
    assert time.monotonic() - t0 < 30


def test_mode_hang_is_bounded(fake_ssh: FakeSsh) -> None:
    fake_ssh.set_mode("hang")
    env = fake_ssh.env(ESCP_FAKESSH_HANG_SECONDS="0.2")
    r = subprocess.run(["ssh", "h", "true"], env=env, capture_output=True, timeout=30)
    assert r.returncode == 255 and r.stdout == b""


def test_mode_junk(fake_ssh: FakeSsh) -> None:
    fake_ssh.set_mode("junk")
    r = ssh("h", "echo", "never")
    assert r.returncode == 0
    assert len(r.stdout) == 4096 and b"never" not in r.stdout
    env = fake_ssh.env(ESCP_FAKESSH_SEED="7", ESCP_FAKESSH_JUNK_BYTES="100")
    a = subprocess.run(["ssh", "h", "x"], env=env, capture_output=True, timeout=30).stdout
    b = subprocess.run(["ssh", "h", "x"], env=env, capture_output=True, timeout=30).stdout
    assert len(a) == 100 and a == b


def test_unknown_mode(fake_ssh: FakeSsh) -> None:
    fake_ssh.set_mode("bogus")
    r = ssh("h", "echo", "never")
    assert r.returncode == 255 and r.stdout == b""
