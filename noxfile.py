"""nox sessions for escp: tests, lint, typecheck, datasets, bench, profile, regress, plots, verdicts, flatc.

Sessions run in the CURRENT environment (no virtualenvs: default_venv_backend = "none"): the
dev machine has every package installed, and CI installs them first with
`pip install -e '.[dev]'`. Pass extra arguments after `--`, e.g. `nox -s bench -- --profile full`.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]

PY = "python3"


def run_module(session: nox.Session, module: str, *args: str) -> None:
    """`python3 -m MODULE ARGS... POSARGS...` in the current environment."""
    session.run(PY, "-m", module, *args, *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and integration tests (timings are never asserted)."""
    run_module(session, "pytest", "-n", "2", "-q")


@nox.session
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".", *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    session.run("mypy", "escp", "harness", *session.posargs)


@nox.session
def datasets(session: nox.Session) -> None:
    """Generate the benchmark datasets (reused when the manifest matches): -- --profile full."""
    run_module(session, "harness", "datasets")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmark (quick profile by default; -- --profile full); prints the report path."""
    run_module(session, "harness", "bench")


@nox.session
def profile(session: nox.Session) -> None:
    """py-spy profile of escp copying a dataset into profiles/<run-id>/."""
    run_module(session, "harness", "profile")


@nox.session
def regress(session: nox.Session) -> None:
    """Compare the latest run (or -- RUN_DIR) with reports/baseline; non-zero exit on a regression."""
    run_module(session, "harness", "regress")


@nox.session
def plots(session: nox.Session) -> None:
    """Re-render report.md, index.html and plots from stored results (latest run or -- RUN_DIR)."""
    run_module(session, "harness", "report")


@nox.session
def verdicts(session: nox.Session) -> None:
    """The verdict matrix (root): injected bottlenecks x 3 runs, each verdict checked (-- --example to
    refresh reports/example/verdicts.md)."""
    run_module(session, "harness", "verdicts")


@nox.session
def flatc(session: nox.Session) -> None:
    """Regenerate the FlatBuffers Python code from escp/protocol/schema/escp.fbs."""
    session.run("flatc", "--python", "--gen-onefile", "-o", "escp/protocol/fb", "escp/protocol/schema/escp.fbs", external=True)
