"""Shell completion, --usage and the manual page (issue 13, item 7), all generated from the
argument parser (escp/clidoc.py): every option is in them; the bash script completes options,
option values, local files, hosts and remote paths (listed over the real ssh and a private
sshd); bash-completion's own scp helper reads escp's options from `escp --usage`; zsh (driven
in a pty) completes options and remote paths; `man -l` renders the page without a warning.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from escp.cli import build_parser
from escp.clidoc import options
from tests.helpers import escp_argv, run_escp
from tests.sshd import REPO_ROOT, SshdServer, write_python_wrapper

BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")
DEADLINE = 30.0


def every_option() -> set[str]:
    return {o for a in options(build_parser()) for o in a.option_strings}


def parse_bsd_usage(text: str) -> set[str]:
    """What bash-completion's _parse_usage takes from `cmd --usage`: bracketed groups, bundled
    short flags `[-abc]` one by one, else the first long (or short) option of the group."""
    found: set[str] = set()
    for group in re.findall(r"\[\s*(-[^]]+?)\s*\]", text):
        if re.fullmatch(r"-[A-Za-z0-9?]+", group):
            found.update(f"-{c}" for c in group[1:])
        else:
            words = re.split(r"[ \t\n,/|]+", group)
            found.add(next((w for w in words if w.startswith("--")), words[0]))
    return found


@pytest.fixture(scope="module")
def escp_on_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bin directory whose `escp` runs this checkout (completion scripts call `escp --usage`)."""
    bindir = tmp_path_factory.mktemp("bin")
    write_python_wrapper(bindir / "escp", ["-m", "escp"])
    return bindir


def bash_complete(script: str, line: str, env_path: Path, cwd: Path, prelude: str = "") -> list[str]:
    """COMPREPLY of completing `line` (cursor at its end) with the script's _escp function."""
    body = f"""{prelude}
source {script}
COMP_LINE={shlex_quote(line)}; COMP_POINT=${{#COMP_LINE}}
_escp escp
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    r = subprocess.run(["bash", "--norc", "-c", body], capture_output=True, text=True, cwd=cwd, timeout=DEADLINE,
                       env={**os.environ, "PATH": f"{env_path}:{os.environ['PATH']}", "HOME": str(cwd)})
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.splitlines() if w]  # printf prints one empty line for no reply


def shlex_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


# --- --usage -------------------------------------------------------------------------------
def test_usage_is_bsd_style_with_every_option() -> None:
    r = run_escp("--usage")
    assert r.code == 0 and r.stderr == ""
    assert r.stdout.startswith("usage: escp [-346ABC")
    assert all(len(line) <= 80 for line in r.stdout.splitlines())
    assert parse_bsd_usage(r.stdout) == every_option()
    assert "--server" not in r.stdout and "--rekey-bytes" not in r.stdout  # internal flags stay hidden


def test_bash_completions_scp_helper_reads_escp_options(escp_on_path: Path, tmp_path: Path) -> None:
    """`complete -F _scp escp`, as EScp's docs suggest: _scp takes the options from `escp --usage`."""
    if not BASH_COMPLETION.exists():
        pytest.skip("bash-completion is not installed (CI installs it via .ci/run)")
    prelude = (f"source {BASH_COMPLETION}\n"
               "declare -F _scp >/dev/null || source /usr/share/bash-completion/completions/scp")
    for word, want in (("--bl", "--blocksize"), ("--progress-i", "--progress-interval"), ("-B", "-B")):
        body = f"""{prelude}
COMP_WORDS=(escp {word}); COMP_CWORD=1; COMP_LINE="escp {word}"; COMP_POINT=${{#COMP_LINE}}
_scp escp {word} escp
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
        r = subprocess.run(["bash", "--norc", "-c", body], capture_output=True, text=True, timeout=DEADLINE,
                           env={**os.environ, "PATH": f"{escp_on_path}:{os.environ['PATH']}"}, cwd=tmp_path)
        assert want in [w.strip() for w in r.stdout.splitlines()], (word, r.stdout, r.stderr)


# --- bash ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "escp.bash"
    r = subprocess.run(escp_argv("--completion", "bash"), capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=DEADLINE)
    assert r.returncode == 0, r.stderr
    path.write_text(r.stdout)
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=DEADLINE)
    return path


def test_bash_completes_every_option_and_option_values(bash_script: Path, escp_on_path: Path,
                                                       tmp_path: Path) -> None:
    assert set(w.strip() for w in bash_complete(str(bash_script), "escp -", escp_on_path, tmp_path)) \
        == every_option()
    assert bash_complete(str(bash_script), "escp --blo", escp_on_path, tmp_path) == ["--blocksize "]
    assert bash_complete(str(bash_script), "escp --ioengine po", escp_on_path, tmp_path) == \
        ["posix ", "posix::dummy "]
    assert bash_complete(str(bash_script), "escp --completion z", escp_on_path, tmp_path) == ["zsh "]
    assert bash_complete(str(bash_script), "escp -l ", escp_on_path, tmp_path) == []  # a number: nothing


def test_bash_completes_local_files_and_hosts(bash_script: Path, escp_on_path: Path, tmp_path: Path) -> None:
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "sub dir" / "f.txt").write_bytes(b"")
    cfg = tmp_path / "cfg"
    cfg.write_text("Host dtn-one dtn-two\n  HostName 127.0.0.1\nHost *.wild\n")
    assert bash_complete(str(bash_script), "escp su", escp_on_path, tmp_path) == ["sub\\ dir/"]
    assert bash_complete(str(bash_script), "escp sub\\ dir/", escp_on_path, tmp_path) == ["sub\\ dir/f.txt "]
    assert bash_complete(str(bash_script), f"escp -F {cfg} dtn", escp_on_path, tmp_path) == \
        ["dtn-one:", "dtn-two:"]
    assert bash_complete(str(bash_script), f"escp -F {cfg} -i ", escp_on_path, tmp_path)  # files after -i


def test_bash_completes_remote_paths_over_ssh(bash_script: Path, escp_on_path: Path, sshd: SshdServer,
                                              tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    (remote / "a dir").mkdir(parents=True)
    (remote / "data.bin").write_bytes(b"")
    (remote / "a dir" / "inner").write_bytes(b"")
    line = f"escp -F {sshd.config} {sshd.host}:{remote}/"
    # bash replaces the word after its last ':' (COMP_WORDBREAKS): replies carry the path part
    got = bash_complete(str(bash_script), line, escp_on_path, tmp_path)
    assert sorted(got) == [f"{remote}/a\\ dir/", f"{remote}/data.bin "], got
    got = bash_complete(str(bash_script), f"escp -F {sshd.config} {sshd.host}:{remote}/a\\ dir/i", escp_on_path,
                        tmp_path)
    assert got == [f"{remote}/a\\ dir/inner "], got


# --- zsh -------------------------------------------------------------------------------------
def zsh_complete(fpath: Path, home: Path, line: str, env_path: Path, expect: str) -> str:
    """Type `line` and Tab in an interactive zsh (in a pty); what zsh printed after that, read
    until `expect` shows (bounded)."""
    (home / ".zshrc").write_text(f"fpath=({fpath} $fpath)\nautoload -U compinit\n"
                                 f"compinit -u -d {home}/.zcompdump\nPS1='READY> '\n")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 1000, 0, 0))  # wide: no scrolled line
    env = {**os.environ, "PATH": f"{env_path}:{os.environ['PATH']}", "TERM": "dumb", "ZDOTDIR": str(home)}
    p = subprocess.Popen(["zsh", "-i"], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=home,
                         start_new_session=True)
    os.close(slave)
    out = bytearray()

    def read_until(text: str) -> None:
        end = time.monotonic() + DEADLINE
        while text not in out.decode(errors="replace"):
            assert time.monotonic() < end, f"zsh: no {text!r} in time; got {bytes(out)!r}"
            if select.select([master], [], [], 0.2)[0]:
                try:
                    out.extend(os.read(master, 65536))
                except OSError:
                    return

    try:
        read_until("READY> ")
        del out[:]
        os.write(master, line.encode() + b"\t")
        read_until(expect)
        return out.decode(errors="replace")
    finally:
        p.kill()
        p.wait(timeout=DEADLINE)
        os.close(master)


@pytest.fixture(scope="module")
def zsh_fpath(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (CI installs it via .ci/run)")
    d = tmp_path_factory.mktemp("zfunc")
    r = subprocess.run(escp_argv("--completion", "zsh"), capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=DEADLINE)
    assert r.returncode == 0, r.stderr
    (d / "_escp").write_text(r.stdout)
    subprocess.run(["zsh", "-n", str(d / "_escp")], check=True, timeout=DEADLINE)
    return d


def test_zsh_completes_options(zsh_fpath: Path, escp_on_path: Path, tmp_path: Path) -> None:
    assert "escp --blocksize " in zsh_complete(zsh_fpath, tmp_path, "escp --blo", escp_on_path, "--blocksize ")


def test_zsh_completes_remote_paths(zsh_fpath: Path, escp_on_path: Path, sshd: SshdServer, tmp_path: Path) -> None:
    (tmp_path / "remote" / "rundir").mkdir(parents=True)
    line = f"escp -F {sshd.config} {sshd.host}:{tmp_path}/remote/ru"
    want = f"{sshd.host}:{tmp_path}/remote/rundir/"
    assert want in zsh_complete(zsh_fpath, tmp_path, line, escp_on_path, want)


# --- man -------------------------------------------------------------------------------------
def test_man_page_renders_with_every_option(tmp_path: Path) -> None:
    if shutil.which("man") is None:
        pytest.skip("man-db is not installed (CI installs it via .ci/run)")
    r = run_escp("--man")
    assert r.code == 0 and r.stdout.startswith(".TH ESCP 1 ")
    page = tmp_path / "escp.1"
    page.write_text(r.stdout)
    shown = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                           env={**os.environ, "MANWIDTH": "100", "MANPAGER": "cat", "LC_ALL": "C.UTF-8"},
                           timeout=DEADLINE)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    text = re.sub(".\b", "", shown.stdout)  # overstrike bold and underline
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "SEE ALSO"):
        assert f"\n{section}\n" in text, section
    assert all(opt in text for opt in every_option()), sorted(o for o in every_option() if o not in text)
