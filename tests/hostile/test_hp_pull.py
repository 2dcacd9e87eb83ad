"""A hostile REMOTE SENDER against a pulling escp: the HP cases that apply to a receiver
(HP-1 .. HP-11, HP-14), and the pull-specific ones (the scp CVE-2019-6111 class: a
file that was not requested, a name outside the glob, an extra top-level name, a
directory where a file was asked, names with `..`).

The remote is tests/hostile/tx_peer.py, run as the pulling escp's ssh (`-S`): it speaks
our bootstrap and frames as a sending server and sends what the test scripts. Oracles
(reliability-tests.md 6.0): E (one-line error with its cause, the right exit code, no
traceback), C (nothing outside the destination changes), P (no partial file, nothing
published but what may be) and T (every process of the run gone, in the fixture).
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from escp.protocol import wire as W
from tests.cases import case
from tests.helpers import Run, free_port_base, run_escp
from tests.hostile.oracles import Sentinels, check_e, check_p, check_t

TX_PEER = Path(__file__).resolve().parent / "tx_peer.py"
B = W.MIN_BLOCK
Pull = Callable[..., tuple[Run, dict]]


@pytest.fixture
def pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tag: str) -> Pull:
    """call(sources, dest, script, *flags) -> (Run, record): the real escp pulls
    `hostile.invalid:SRC` for each source from tx_peer.py running `script`."""
    wrapper = tmp_path / "hostile-ssh"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.join([sys.executable, str(TX_PEER)])} \"$@\"\n")
    wrapper.chmod(0o755)

    def call(sources: list[str], dest: Path, script: dict, *flags: str) -> tuple[Run, dict]:
        run_id = uuid.uuid4().hex
        record, script_file = tmp_path / f"record-{run_id}.json", tmp_path / f"script-{run_id}.json"
        script_file.write_text(json.dumps({**script, "record": str(record)}))
        monkeypatch.setenv("ESCP_HOSTILE_TX", str(script_file))
        r = run_escp("-S", str(wrapper), "--escp_port", str(free_port_base()), "--blocksize",
                     "256K", *flags, *(f"hostile.invalid:{s}" for s in sources), str(dest), timeout=240)
        check_t(tag)
        return r, json.loads(record.read_text()) if record.exists() else {}

    return call


def file(name: bytes, data: bytes = b"payload", **fields: object) -> dict:
    return {"name": name.hex(), "kind": W.KIND_FILE, "data": data.hex(), **fields}


def directory(name: bytes, **fields: object) -> dict:
    return {"name": name.hex(), "kind": W.KIND_DIR, **fields}


def refused(r: Run, s: Sentinels, name: str | None = None, allowed: dict[bytes, bytes] | None = None,
            cause: str = "protocol") -> str:
    line = check_e(r.code, r.stderr, cause=cause, codes=(1,), name=name)
    s.check_c()
    check_p(s.dest, allowed)
    return line


# --- the request is what the client asks for: a sending server, sent the sources ----------------
def test_the_remote_is_asked_to_send_and_listen(pull: Pull, sentinels: Sentinels) -> None:
    r, rec = pull(["/data/a.txt", "/data/*.h5"], sentinels.dest, {"entries": [file(b"a.txt")]})
    assert r.code == 0, r.stderr
    assert rec["server_role"] == "sender" and rec["server_link"] == "listener" and rec["report"], rec
    assert [bytes.fromhex(x) for x in rec["sources"]] == [b"/data/a.txt", b"/data/*.h5"]
    check_p(sentinels.dest, {b"a.txt": b"payload"})
    sentinels.check_c()


# --- HP-1 names -------------------------------------------------------------------------
BAD_NAMES = [b"/etc/x", b"../x", b"a.txt/../../x", b"a.txt/./../x", b".", b"..", b"//x", b"x\0y", b"a.txt/",
             b"../dest2/x", b"L" * 256]


@case("HP-1")
@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[2:-1][:30] for n in BAD_NAMES])
def test_bad_names_from_a_remote_sender(pull: Pull, sentinels: Sentinels, name: bytes) -> None:
    r, _ = pull(["/data/a.txt"], sentinels.dest, {"entries": [file(name)]})
    refused(r, sentinels)


@case("HP-1", "HP-2")
def test_names_climbing_out_one_component_at_a_time(pull: Pull, sentinels: Sentinels) -> None:
    script = {"entries": [directory(b"d"), directory(b"d/sub"), file(b"d/sub/../../../dest2/x")], "top_dir": True}
    r, _ = pull(["/data/d"], sentinels.dest, script, "-r")
    refused(r, sentinels)


# --- HP-2 only what was asked for (CVE-2019-6111) ------------------------------------------------
@case("HP-2")
@pytest.mark.parametrize("count", [None, 5], ids=["honest-count", "count-lies"])
def test_extra_top_level_name_refused(pull: Pull, sentinels: Sentinels, count: int | None) -> None:
    script: dict = {"entries": [file(b"a.txt", b"asked"), file(b"evil.sh", b"rm -rf ~")]}
    if count is not None:
        script["count"] = count  # the remote claims it has five sources: it was asked for one
    r, _ = pull(["/data/a.txt"], sentinels.dest, script)
    line = refused(r, sentinels, name="evil.sh", allowed={b"a.txt": b"asked"})
    assert "not requested" in line or "more top-level names" in line


@case("HP-2")
@pytest.mark.parametrize("name", [b"passwd", b".bashrc", b"run.h5.sh"])
def test_name_outside_the_glob_refused(pull: Pull, sentinels: Sentinels, name: bytes) -> None:
    script = {"entries": [file(b"run.h5", b"asked"), file(name, b"not asked")], "count": 2}
    r, _ = pull(["/data/*.h5"], sentinels.dest, script)
    refused(r, sentinels, name=os.fsdecode(name), allowed={b"run.h5": b"asked"})


@case("HP-2")
def test_directory_where_a_file_was_announced(pull: Pull, sentinels: Sentinels) -> None:
    # asked for a.txt with -r; the remote said at set-up it is a file, then sends a tree
    script = {"entries": [directory(b"a.txt"), file(b"a.txt/authorized_keys", b"ssh-ed25519 AAAA evil")],
              "count": 1, "top_dir": False}
    r, _ = pull(["/data/a.txt"], sentinels.dest, script, "-r")
    refused(r, sentinels, name="a.txt")
    assert not (sentinels.dest / "a.txt").exists()


@case("HP-2")
def test_directory_without_r_refused(pull: Pull, sentinels: Sentinels) -> None:
    script = {"entries": [directory(b"d"), file(b"d/x")], "count": 1, "top_dir": True}
    r, _ = pull(["/data/d"], sentinels.dest, script)
    refused(r, sentinels, name="d")
    assert not (sentinels.dest / "d").exists()


@case("HP-2")
def test_name_below_a_file_refused(pull: Pull, sentinels: Sentinels) -> None:
    script = {"entries": [file(b"a.txt", b"asked"), file(b"a.txt/x")], "count": 1}
    r, _ = pull(["/data/a.txt"], sentinels.dest, script, "-r")
    refused(r, sentinels, name="a.txt/x", allowed={b"a.txt": b"asked"})


@case("HP-2")
def test_renamed_single_file_refuses_a_second_name(pull: Pull, sentinels: Sentinels) -> None:
    script = {"entries": [file(b"a.txt", b"asked"), file(b"b.txt")], "count": 1}
    r, _ = pull(["/data/a.txt"], sentinels.dest / "newname", script)
    refused(r, sentinels, name="b.txt", allowed={b"newname": b"asked"})


@case("HP-2")
def test_data_for_a_file_never_announced(pull: Pull, sentinels: Sentinels) -> None:
    r, _ = pull(["/data/a.txt"], sentinels.dest, {"entries": [file(b"a.txt", b"asked")], "stray": 7})
    refused(r, sentinels, allowed={b"a.txt": b"asked"})


@case("HP-2")
def test_filelist_pull_refuses_names_outside_the_list(pull: Pull, sentinels: Sentinels, tmp_path: Path) -> None:
    listing = tmp_path / "list.yaml"
    listing.write_text("- [/data/a.txt, x/a.txt]\n")
    script = {"entries": [directory(b"x"), file(b"x/a.txt", b"asked"), file(b"x/b.txt")]}
    wrapper_args = ["--filelist", str(listing)]
    r, _ = pull([""], sentinels.dest, script, *wrapper_args)
    refused(r, sentinels, name="x/b.txt", allowed={b"x/a.txt": b"asked"})


# --- HP-3 links --------------------------------------------------------------------------
@case("HP-3")
def test_planted_symlink_in_the_local_destination_is_never_followed(pull: Pull, sentinels: Sentinels) -> None:
    os.symlink("../dest2", sentinels.dest / "evil")
    sentinels.before = sentinels.snapshot()
    script = {"entries": [directory(b"evil"), file(b"evil/x", b"pwned")], "count": 1, "top_dir": True}
    r, _ = pull(["/data/evil"], sentinels.dest, script, "-r")
    check_e(r.code, r.stderr, cause="I/O", codes=(1, 3))
    sentinels.check_c()
    assert os.path.islink(sentinels.dest / "evil")
    check_p(sentinels.dest)


@case("HP-3")
@pytest.mark.parametrize("kind", [2, 255])
def test_link_kinds_refused(pull: Pull, sentinels: Sentinels, kind: int) -> None:
    r, _ = pull(["/data/a.txt"], sentinels.dest, {"entries": [{"name": b"a.txt".hex(), "kind": kind}]})
    refused(r, sentinels)


# --- HP-4 .. HP-10 the same receiver rules, in the pulling client ---------------------------------
@case("HP-4")
def test_same_name_twice_refused(pull: Pull, sentinels: Sentinels) -> None:
    r, _ = pull(["/data/a.txt"], sentinels.dest, {"entries": [file(b"a.txt", b"one"), file(b"a.txt", b"two")]})
    refused(r, sentinels, allowed={b"a.txt": b"one"})


@case("HP-5")
def test_setuid_bits_stripped_without_preserve(pull: Pull, sentinels: Sentinels) -> None:
    r, _ = pull(["/data/a.txt"], sentinels.dest, {"entries": [file(b"a.txt", b"x", mode=0o6777)]})
    assert r.code == 0, r.stderr
    assert stat.S_IMODE(os.stat(sentinels.dest / "a.txt").st_mode) & 0o7000 == 0


@case("HP-6")
def test_block_beyond_the_declared_size_refused(pull: Pull, sentinels: Sentinels) -> None:
    r, _ = pull(["/data/a.txt"], sentinels.dest, {"entries": [file(b"a.txt", b"12345", blocks=[[B, "00"]])]})
    refused(r, sentinels)


@case("HP-7")
def test_missing_blocks_leave_nothing_published(pull: Pull, sentinels: Sentinels) -> None:
    content = os.urandom(2 * B + 5)
    entry = file(b"a.txt", content, blocks=[[0, content[:B].hex()]], end_blocks=3)
    r, _ = pull(["/data/a.txt"], sentinels.dest, {"entries": [entry]})
    check_e(r.code, r.stderr, cause="integrity", codes=(1, 3), name="a.txt")
    sentinels.check_c()
    check_p(sentinels.dest)


@case("HP-8", "HP-9")
def test_duplicated_and_swapped_blocks(pull: Pull, sentinels: Sentinels) -> None:
    content = os.urandom(2 * B)
    dup = file(b"a.txt", content, blocks=[[0, content[:B].hex()], [0, content[B:].hex()]])
    r, _ = pull(["/data/a.txt"], sentinels.dest, {"entries": [dup]})
    refused(r, sentinels)
    swapped = file(b"a.txt", content, blocks=[[0, content[B:].hex()], [B, content[:B].hex()]])
    r, _ = pull(["/data/a.txt"], sentinels.dest, {"entries": [swapped]})
    check_e(r.code, r.stderr, cause="integrity", codes=(1, 3), name="a.txt")
    check_p(sentinels.dest)


@case("HP-10", "HP-14")
def test_wrong_digest_and_control_characters_in_a_name(pull: Pull, sentinels: Sentinels) -> None:
    name = b"\x1b[31mred\x9b2J.h5"
    r, _ = pull(["/data/*.h5"], sentinels.dest, {"entries": [file(name, b"x", digest="00" * 16)]})
    line = check_e(r.code, r.stderr, cause="integrity", codes=(1, 3))
    assert "\\x1b" in line, line  # shown escaped, never raw
    sentinels.check_c()
    check_p(sentinels.dest)


@case("HP-11")
def test_unknown_frame_type_refused(pull: Pull, sentinels: Sentinels) -> None:
    r, _ = pull(["/data/a.txt"], sentinels.dest, {"entries": [], "meta_raw": ["63" + "00" * 8]})
    refused(r, sentinels)
