#!/usr/bin/env python3
"""A fake `ssh` for tests: records its argv, then runs the "remote" command locally.

The `fake_ssh` fixture installs this script as `ssh` in a temp bin dir. It parses argv the
way OpenSSH does (options, then the destination, then more options, then the command words;
`--` ends options), appends one JSON line per call to the file named by ESCP_FAKESSH_LOG,
and then, like real ssh, joins the command words with single spaces. That string is run
with `sh -c` only when ESCP_FAKESSH_SHELL=1; otherwise it is split with shlex and exec'd
directly (no shell), with stdin/stdout/stderr passed through and SSH_CONNECTION /
SSH_CLIENT set as a real sshd session would set them.

ESCP_FAKESSH_MODE selects the behaviour:
  run     (default) run the command as described above
  banner  write a junk banner line to stdout first, then run
  missing act as if the remote program is not installed: "command not found", exit 127
  refuse  "Permission denied (publickey)." on stderr, exit 255
  exit0   exit 0 at once, no output
  hang    sleep (ESCP_FAKESSH_HANG_SECONDS, default 60) without output, then exit 255
  junk    write random bytes (ESCP_FAKESSH_JUNK_BYTES, default 4096; seed
          ESCP_FAKESSH_SEED) to stdout instead of running, exit 0
ESCP_FAKESSH_HOME, if set, is the directory the command runs in (real ssh: the home dir).

Standard library only: it runs as a standalone program.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import sys
import time

# OpenSSH 9.x getopt string: "1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:P:Q:R:S:TVw:W:XYy"
OPTS_WITH_ARG = frozenset("bceilmopBDEFIJLOPQRSwW")
FLAGS = frozenset("1246afgknqstvxACGKMNTVXYy")

MODES = ("run", "banner", "missing", "refuse", "exit0", "hang", "junk")
BANNER = b"*** Welcome to fakessh: authorised use only. Last login: never ***\n"
SSH_CONNECTION = "127.0.0.1 50000 127.0.0.1 22"
SSH_CLIENT = "127.0.0.1 50000 22"


class UsageError(Exception):
    pass


def parse_argv(args: list[str]) -> dict[str, object]:
    """Split ssh arguments into options, destination and command words (as OpenSSH does)."""
    options: list[list[str | None]] = []
    host: str | None = None
    command: list[str] = []
    i = 0
    terminated = False
    while i < len(args):
        arg = args[i]
        if not terminated and arg == "--":
            terminated = True
            i += 1
            continue
        if not terminated and arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                ch = arg[j]
                if ch in OPTS_WITH_ARG:
                    if j + 1 < len(arg):
                        value = arg[j + 1 :]
                    else:
                        i += 1
                        if i >= len(args):
                            raise UsageError(f"option requires an argument -- {ch}")
                        value = args[i]
                    options.append(["-" + ch, value])
                    break
                if ch in FLAGS:
                    options.append(["-" + ch, None])
                    j += 1
                    continue
                raise UsageError(f"unknown option -- {ch}")
            i += 1
            continue
        if host is None:
            host = arg
            i += 1
            # OpenSSH re-reads options after the destination unless `--` was seen
            continue
        command = args[i:]
        break
    if host is None:
        raise UsageError("no destination")
    user: str | None = None
    hostname = host
    if "@" in host:
        user, hostname = host.rsplit("@", 1)
    for opt, arg_value in options:
        if opt == "-l" and user is None:
            user = arg_value
    port = next((v for o, v in reversed(options) if o == "-p"), None)
    return {
        "options": options,
        "destination": host,
        "user": user,
        "host": hostname,
        "port": port,
        "command": command,
        "remote_command": " ".join(command),
    }


def log_call(record: dict[str, object]) -> None:
    path = os.environ.get("ESCP_FAKESSH_LOG")
    if not path:
        return
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write of an O_APPEND file: lines never interleave
    finally:
        os.close(fd)


def not_found(name: str) -> int:
    sys.stderr.write(f"bash: line 1: {name}: command not found\n")
    sys.stderr.flush()
    return 127


def run_command(parsed: dict[str, object]) -> int:
    options = parsed["options"]
    assert isinstance(options, list)
    remote = parsed["remote_command"]
    assert isinstance(remote, str)
    if not remote:
        sys.stderr.write("fakessh: no remote command (an interactive shell is not supported)\n")
        return 255
    env = dict(os.environ)
    env["SSH_CONNECTION"] = SSH_CONNECTION
    env["SSH_CLIENT"] = SSH_CLIENT
    for name in ("ESCP_FAKESSH_MODE", "ESCP_FAKESSH_SHELL"):
        env.pop(name, None)  # do not leak the fault into nested fake ssh calls
    if any(opt == "-n" for opt, _ in options):
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    home = os.environ.get("ESCP_FAKESSH_HOME")
    if home:
        os.chdir(home)
    if os.environ.get("ESCP_FAKESSH_SHELL") == "1":
        argv = ["sh", "-c", remote]
    else:
        try:
            argv = shlex.split(remote)
        except ValueError as e:
            sys.stderr.write(f"fakessh: cannot split remote command: {e}\n")
            return 255
        if not argv:
            return 0
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        return not_found(argv[0])
    except PermissionError:
        sys.stderr.write(f"bash: line 1: {argv[0]}: Permission denied\n")
        return 126


def main(args: list[str]) -> int:
    if args[:1] == ["-V"]:
        sys.stderr.write("OpenSSH_9.2p1 fakessh, OpenSSL 3.0 (fake)\n")
        return 0
    mode = os.environ.get("ESCP_FAKESSH_MODE", "run") or "run"
    try:
        parsed = parse_argv(args)
    except UsageError as e:
        log_call({"argv": args, "error": str(e), "mode": mode, "pid": os.getpid()})
        sys.stderr.write(f"ssh: {e}\nusage: ssh [-46AaCfGgKkMNnqsTtVvXxYy] destination [command]\n")
        return 255
    log_call({"argv": args, "mode": mode, "pid": os.getpid(), **parsed})
    if mode not in MODES:
        sys.stderr.write(f"fakessh: unknown ESCP_FAKESSH_MODE {mode!r}\n")
        return 255
    out = sys.stdout.buffer
    if mode == "refuse":
        sys.stderr.write(f"{parsed['destination']}: Permission denied (publickey).\n")
        return 255
    if mode == "exit0":
        return 0
    if mode == "missing":
        command = parsed["command"]
        assert isinstance(command, list)
        return not_found(str(command[0]) if command else "escp")
    if mode == "hang":
        time.sleep(float(os.environ.get("ESCP_FAKESSH_HANG_SECONDS", "60")))
        return 255
    if mode == "junk":
        seed = os.environ.get("ESCP_FAKESSH_SEED")
        rng = random.Random(seed)
        out.write(rng.randbytes(int(os.environ.get("ESCP_FAKESSH_JUNK_BYTES", "4096"))))
        out.flush()
        return 0
    if mode == "banner":
        out.write(BANNER)
        out.flush()
    return run_command(parsed)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(255)
