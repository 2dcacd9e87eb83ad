"""nox sessions for escp: tests, lint, typecheck, datasets, bench, profile, regress, plots, verdicts,
concurrency, flatc, build, flakes.

Sessions run in the CURRENT environment (no virtualenvs: default_venv_backend = "none"), which
is meant to be ./dev's .venv (`./dev nox -s bench`: ./dev creates it and installs escp[dev]
there; CI does the same). Pass extra arguments after `--`, e.g. `nox -s bench -- --profile full`.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

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
def concurrency(session: nox.Session) -> None:
    """N concurrent sessions to one host through the private sshd (8, 32, 64): completion times and
    total throughput against one session moving the same bytes (-- --sessions 8,16 --size 5M)."""
    run_module(session, "harness", "concurrency")


@nox.session
def flatc(session: nox.Session) -> None:
    """Regenerate the FlatBuffers Python code from escp/protocol/schema/escp.fbs."""
    session.run("flatc", "--python", "--gen-onefile", "-o", "escp/protocol/fb", "escp/protocol/schema/escp.fbs", external=True)


@nox.session
def flakes(session: nox.Session) -> None:
    """Flake hunt: tests/faults and tests/hostile N times quiet and N times under a CPU load it
    starts and stops; prints failures per test (-- --reps 5 --load 2; see tests/flakes.py)."""
    run_module(session, "tests.flakes")


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and wheel into dist/, install the wheel into a new, clean virtual
    environment, and run `escp -V` and a --local copy (checked byte for byte) from there."""
    version = tomllib.loads(Path("pyproject.toml").read_text())["project"]["version"]
    dist = Path("dist")
    for old in dist.glob(f"escp-{version}*"):
        old.unlink()
    session.run(PY, "-m", "build", "--outdir", str(dist), ".")
    (wheel,) = dist.glob(f"escp-{version}-*.whl")
    (sdist,) = dist.glob(f"escp-{version}.tar.gz")
    with tempfile.TemporaryDirectory(prefix="escp-build-") as tmp:
        venv = Path(tmp) / "venv"
        # no ensurepip needed: this environment's pip installs into the new one (pip >= 22.3)
        session.run(PY, "-m", "venv", "--without-pip", str(venv))
        session.run(PY, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", str(wheel))
        # only the installed wheel is importable: no PYTHONPATH, and not run from the checkout
        # (`python -m escp --server`, the local receiver, would import ./escp from there)
        clean = {"PYTHONPATH": None, "ESCP_FAULT": None}
        escp = str(venv / "bin" / "escp")
        src, dest = Path(tmp) / "small.bin", Path(tmp) / "copy" / "small.bin"
        src.write_bytes(os.urandom(300_000))
        dest.parent.mkdir()
        with session.chdir(tmp):
            where = session.run(str(venv / "bin" / "python"), "-c", "import escp; print(escp.__file__)",
                                env=clean, silent=True, external=True)
            if not str(where).strip().startswith(str(venv)):
                session.error(f"the clean environment imported escp from {where!r}, not from the wheel")
            session.run(escp, "-V", env=clean, external=True)
            session.run(escp, "--local", "-q", str(src), str(dest), env=clean, external=True)
        if dest.read_bytes() != src.read_bytes():
            session.error("the --local copy made by the installed wheel differs from its source")
    session.log(f"built {sdist} and {wheel}; the wheel installs into a clean venv and copies a file")
