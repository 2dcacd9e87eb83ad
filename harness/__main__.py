"""`python -m harness <command>`: datasets | bench | report | regress | profile | publish | verdicts |
concurrency."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "datasets": "harness.datasets",
    "bench": "harness.bench",
    "report": "harness.report",
    "regress": "harness.regress",
    "profile": "harness.profile",
    "publish": "harness.publish",
    "verdicts": "harness.verdicts",
    "concurrency": "harness.concurrency",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m harness {{{'|'.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
