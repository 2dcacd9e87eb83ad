"""./dev on a Python without ensurepip or pip: its venv is made --without-pip and pip is
bootstrapped from the wheel that a PyPI-like JSON API lists, checked against its sha256.

The "PyPI" here is a small HTTP server on 127.0.0.1 (ESCP_DEV_PYPI) serving a real pip wheel
found on this machine (ensurepip's bundled one, or Debian's python3-pip-whl), with a relative
download URL as mirrors give. ESCP_DEV_NO_ENSUREPIP=1 forces the path. The project in the
test is a stub whose pyproject.toml pip cannot read, so the escp[dev] install step fails at
once without touching the network; the install itself is exercised by every CI run.
"""

from __future__ import annotations

import glob
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO


def pip_wheel() -> Path:
    import ensurepip

    found = glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl"))
    found += glob.glob("/usr/share/python-wheels/pip-*.whl")
    if not found:
        pytest.skip("no pip wheel on this machine to serve (ensurepip's bundled one or python3-pip-whl)")
    return Path(sorted(found)[-1])


@pytest.fixture
def fake_pypi(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A JSON API for pip on 127.0.0.1 serving one wheel; `digest` may be changed by the test."""
    wheel = pip_wheel()
    state: dict[str, object] = {"digest": hashlib.sha256(wheel.read_bytes()).hexdigest(), "requests": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            state["requests"] = int(state["requests"]) + 1  # type: ignore[call-overload]
            if self.path == "/pypi/pip/json":
                body = json.dumps({"urls": [{"packagetype": "bdist_wheel", "filename": wheel.name,
                                             "url": f"../../files/{wheel.name}",
                                             "digests": {"sha256": state["digest"]}}]}).encode()
            elif self.path == f"/files/{wheel.name}":
                body = wheel.read_bytes()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    state["wheel"] = wheel
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run_dev(project: Path, pypi: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update(ESCP_DEV_NO_ENSUREPIP="1", ESCP_DEV_PYPI=pypi, ESCP_DEV_PYTHON=sys.executable,
               PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull)
    return subprocess.run(["sh", str(project / "dev"), "true"], env=env, capture_output=True, text=True,
                          timeout=180)


def stub_project(tmp_path: Path) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    shutil.copy2(REPO / "dev", project / "dev")
    (project / "pyproject.toml").write_text("this is = not [valid toml\n")
    return project


def test_without_ensurepip_pip_comes_from_its_checked_wheel(tmp_path: Path, fake_pypi: dict[str, object]) -> None:
    project = stub_project(tmp_path)
    r = run_dev(project, str(fake_pypi["url"]))
    assert "created" in r.stderr and "without pip (no ensurepip)" in r.stderr, r.stderr
    assert "installing pip into" in r.stderr, r.stderr
    pip = subprocess.run([str(project / ".venv" / "bin" / "python"), "-m", "pip", "--version"],
                         capture_output=True, text=True, timeout=60)
    version = Path(str(fake_pypi["wheel"])).name.split("-")[1]
    assert pip.returncode == 0 and pip.stdout.startswith(f"pip {version} "), (pip.stdout, pip.stderr)
    assert str(project / ".venv") in pip.stdout  # inside the venv, not the interpreter's own
    # the stub project cannot be installed: ./dev says so, fails, and records nothing
    assert r.returncode != 0
    assert not (project / ".venv" / ".escp-dev-installed").exists()


def test_a_pip_wheel_that_does_not_match_its_sha256_is_refused(tmp_path: Path,
                                                               fake_pypi: dict[str, object]) -> None:
    fake_pypi["digest"] = "0" * 64
    project = stub_project(tmp_path)
    r = run_dev(project, str(fake_pypi["url"]))
    assert r.returncode != 0
    assert "does not match its sha256" in r.stderr, r.stderr
    assert int(fake_pypi["requests"]) == 2  # type: ignore[call-overload]  # the JSON page and the wheel
    assert not list((project / ".venv").glob("lib/python*/site-packages/pip"))
