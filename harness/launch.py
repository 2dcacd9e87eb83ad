"""Start a command in given cgroups and on given CPUs: `python -m harness.launch [--cgroup
PROCS]... [--cpus 0,1] -- CMD...`.

The verdict matrix puts one side's escp into a cgroup of its own (a CPU quota) or onto a
CPU set shared with busy loops. The launcher writes its own pid into each cgroup.procs file,
sets its CPU affinity, then execs CMD: the same process becomes escp, so only that side's
escp (and what it starts, such as the ssh stand-in) is placed, from its first instruction.
For the receiver it is the remote escp program given with `escp -D '... -- python3 -m escp'`.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cgroup", action="append", default=[], metavar="PROCS",
                    help="a cgroup.procs file to join (repeatable)")
    ap.add_argument("--cpus", help="CPU list for the affinity, e.g. 0 or 0,1")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command given")
    try:
        for procs in args.cgroup:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        if args.cpus:
            os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"harness.launch: {exc}", file=sys.stderr)
        return 126
    return 0  # not reached: execvp replaced this process


if __name__ == "__main__":
    sys.exit(main())
