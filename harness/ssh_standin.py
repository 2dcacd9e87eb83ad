"""An ssh stand-in for the verdict matrix: runs the "remote" command on this host.

`escp -S <script> host:/dst` starts `<script> [ssh options] -- host 'escp --server'`; the
script (written by write_script) runs this module, which skips ssh's options the way
OpenSSH parses them, joins the command words with spaces and runs them with `/bin/sh -c`, as
sshd does, with SSH_CONNECTION set to loopback so that the receiver binds 127.0.0.1. A real
sshd would start the receiver in its own cgroup and network namespace; the stand-in lets the
matrix choose them (through the remote escp program, `-D`, and by running the sender inside
the namespace), and costs no key set-up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

OPTS_WITH_ARG = frozenset("bceilmopBDEFIJLOPQRSwW")  # OpenSSH's getopt string, options with a value
SSH_CONNECTION = "127.0.0.1 50000 127.0.0.1 22"


def remote_command(args: list[str]) -> str:
    """The command string ssh would send: the words after the destination, joined by spaces."""
    i, host = 0, None
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if arg.startswith("-") and len(arg) > 1 and host is None:
            j = 1
            while j < len(arg):
                if arg[j] in OPTS_WITH_ARG:
                    i += 1 if j + 1 < len(arg) else 2  # -p22 or -p 22
                    break
                j += 1
            else:
                i += 1
            continue
        break
    rest = args[i:]
    if not rest:
        raise SystemExit("ssh stand-in: no destination")
    host, words = rest[0], rest[1:]
    if not words:
        raise SystemExit(f"ssh stand-in: no command for {host}")
    return " ".join(words)


def write_script(directory: Path) -> Path:
    """An executable `ssh` in directory that runs this module with this Python."""
    script = directory / "ssh"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m harness.ssh_standin "$@"\n')
    script.chmod(0o755)
    return script


def main(argv: list[str] | None = None) -> int:
    command = remote_command(list(sys.argv[1:] if argv is None else argv))
    os.environ["SSH_CONNECTION"] = SSH_CONNECTION
    os.execv("/bin/sh", ["sh", "-c", command])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
