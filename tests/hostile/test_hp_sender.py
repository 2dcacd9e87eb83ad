"""HP-1 .. HP-14: a hostile SENDER (knows the key) drives a real `escp --server`.

Every test checks the oracles of reliability-tests.md 6.0 that apply: E (the receiver
refuses with a one-line cause, no traceback, non-zero exit), C (Sentinels: nothing
outside dest changes), P (no partial file under a final name, no temp left) and T (the
receiver exits by itself within the deadline: HostileSender.wait_exit_alone).
"""

from __future__ import annotations

import os
import stat
import time

import pytest
import zstandard

from escp.protocol import messages as M
from escp.protocol import wire as W
from escp.protocol.bootstrap import encode_init
from tests.cases import case
from tests.hostile.oracles import Sentinels, check_e, check_p
from tests.hostile.peer import HostileSender, PeerStream, boot_raw, entry, file_digest

B = W.MIN_BLOCK
RSS_BOUND_KIB = 400 * 1024  # a receiver's peak RSS over its whole life (wait4), whatever the input


def session(s: Sentinels, **kw: object) -> tuple[HostileSender, PeerStream, list[PeerStream]]:
    hs = HostileSender(s.dest, **kw)  # type: ignore[arg-type]
    hs.start()
    meta, data = hs.connect_all()
    return hs, meta, data


def refused(hs: HostileSender, meta: PeerStream, s: Sentinels, *, cause: str | tuple[str, ...] = "protocol",
            allowed: dict[bytes, bytes] | None = None, dest_times: bool = True, name: str | None = None) -> str:
    """The receiver aborts the session by itself: ABORT to us, E on stderr, C, P, T."""
    msgs = hs.collect(meta, timeout=25)
    code, err = hs.wait_exit_alone()
    assert any(isinstance(m, M.Abort) for m in msgs), msgs
    line = check_e(code, err, cause=cause, name=name)
    s.check_c(dest_times=dest_times)
    check_p(s.dest, allowed)
    return line


def file_failed(hs: HostileSender, meta: PeerStream, data: list[PeerStream], s: Sentinels, entries: int,
                *, cause: str, allowed: dict[bytes, bytes] | None = None) -> M.FileResult:
    """The session completes but the file fails (exit 3 = partial / some files failed)."""
    hs.finish(meta, data, entries)
    msgs = hs.collect(meta, timeout=25)
    code, err = hs.wait()
    results = [m for m in msgs if isinstance(m, M.FileResult) and m.status != W.STATUS_OK]
    assert results, msgs
    assert W.cause_name(results[0].cause) == cause, results
    assert any(isinstance(m, M.SessionDone) for m in msgs), msgs
    check_e(code, err, cause=cause, codes=(3,))
    s.check_c()
    check_p(s.dest, allowed)
    return results[0]


# --- HP-1 names -------------------------------------------------------------------------

BAD_NAMES = [b"/etc/x", b"../x", b"a/../../x", b"a/./../x", b"./", b".", b"..", b"", b"//x", b"x\0y", b"x/",
             b"../dest2/x", b"L" * 256]


@case("HP-1")
@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[2:-1][:30] or "empty" for n in BAD_NAMES])
def test_bad_names_refused(sentinels: Sentinels, name: bytes) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, name, 5)]))
        data[0].data(0, 0, b"pwned")
        refused(hs, meta, sentinels)


@case("HP-1")
def test_names_built_up_and_out_one_component_at_a_time(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels, top_level_count=1)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"a", kind=W.KIND_DIR, mode=0o755)]))
        meta.send(M.encode_file_list([entry(1, b"a/b", kind=W.KIND_DIR, mode=0o755)]))
        meta.send(M.encode_file_list([entry(2, b"a/b/../../../dest2/x", 5)]))
        refused(hs, meta, sentinels, dest_times=False)
    assert (sentinels.dest / "a" / "b").is_dir()


@case("HP-1")
def test_backslash_names_are_literal_and_contained(sentinels: Sentinels) -> None:
    names = [b"..\\x", b"a\\..\\..\\y"]
    hs, meta, data = session(sentinels, top_level_count=2)
    with hs:
        meta.send(M.encode_file_list([entry(i, n, 3) for i, n in enumerate(names)]))
        for i in range(2):
            hs.send_file(meta, data[0], i, b"abc")
        hs.finish(meta, data, 2)
        msgs = hs.collect(meta)
        code, err = hs.wait()
    assert code == 0, err
    assert all(m.status == W.STATUS_OK for m in msgs if isinstance(m, M.FileResult)), msgs
    sentinels.check_c()
    check_p(sentinels.dest, {n: b"abc" for n in names})


@case("HP-1")
def test_destination_root_metadata_untouched_by_dot_entry(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels, flags=W.FLAG_PRESERVE)
    with hs:
        meta.send(M.encode_file_list([entry(0, b".", kind=W.KIND_DIR, mode=0o777, mtime_ns=0, atime_ns=0)]))
        refused(hs, meta, sentinels)


# --- HP-2 unrequested files -------------------------------------------------------------------------


@case("HP-2")
def test_data_for_unannounced_file_refused_promptly(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        t0 = time.monotonic()
        meta.send(M.encode_session_end(M.SessionEnd(0)))
        time.sleep(0.2)
        data[0].data(7, 0, b"unrequested")
        refused(hs, meta, sentinels)
        assert time.monotonic() - t0 < 20


@case("HP-2")
def test_second_top_level_name_refused_when_one_was_announced(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels, top_level_count=1)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"asked", 2)]))
        hs.send_file(meta, data[0], 0, b"ok")
        meta.send(M.encode_file_list([entry(1, b"unasked", 2)]))
        refused(hs, meta, sentinels, dest_times=False, allowed={b"asked": b"ok"}, name="unasked")


@case("HP-2")
def test_renamed_single_target_refuses_other_names(sentinels: Sentinels) -> None:
    target = sentinels.dest / "newname"
    hs = HostileSender(target, top_level_count=1)
    hs.start()
    meta, data = hs.connect_all()
    with hs:
        meta.send(M.encode_file_list([entry(0, b"one", 2), entry(1, b"two", 2)]))
        refused(hs, meta, sentinels)


# --- HP-3 links -----------------------------------------------------------------------------------


@case("HP-3")
@pytest.mark.parametrize("kind", [2, 3, 255])
def test_link_kinds_refused(sentinels: Sentinels, kind: int) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"lnk", 0, kind=kind)]))
        refused(hs, meta, sentinels)


@case("HP-3")
def test_directory_then_same_name_as_file_refused(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"d", kind=W.KIND_DIR, mode=0o755), entry(1, b"d", 4)]))
        refused(hs, meta, sentinels, dest_times=False)


@case("HP-3")
def test_planted_symlink_is_never_followed(sentinels: Sentinels) -> None:
    os.symlink("../dest2", sentinels.dest / "evil")
    os.symlink("../x", sentinels.dest / "evilfile")
    sentinels.before = sentinels.snapshot()
    hs, meta, data = session(sentinels, top_level_count=2)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"evil/x", 5)]))
        hs.send_file(meta, data[0], 0, b"pwned")
        meta.send(M.encode_file_list([entry(1, b"evilfile", 5)]))
        hs.send_file(meta, data[0], 1, b"plain")
        hs.finish(meta, data, 2)
        msgs = hs.collect(meta)
        code, err = hs.wait()
    res = {m.fino: m for m in msgs if isinstance(m, M.FileResult)}
    assert res[0].status == W.STATUS_FAILED and W.cause_name(res[0].cause) == "I/O", res
    assert res[1].status == W.STATUS_OK
    check_e(code, err, cause="I/O", codes=(3,))
    sentinels.check_c()
    # the planted link "evilfile" was replaced by a regular file, not written through
    assert stat.S_ISREG(os.lstat(sentinels.dest / "evilfile").st_mode)
    assert os.path.islink(sentinels.dest / "evil")
    check_p(sentinels.dest, {b"evilfile": b"plain"})


# --- HP-4 same name / same file id ------------------------------------------------------------


@case("HP-4")
def test_same_name_twice_refused(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels, top_level_count=2)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", 3)]))
        meta.send(M.encode_file_list([entry(1, b"f", 3)]))
        refused(hs, meta, sentinels)


@case("HP-4")
def test_file_id_reused_refused(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels, top_level_count=2)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", 3)]))
        meta.send(M.encode_file_list([entry(0, b"g", 3)]))
        refused(hs, meta, sentinels)


@case("HP-4")
def test_file_id_reused_after_completion_refused_and_first_copy_intact(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", 3)]))
        hs.send_file(meta, data[0], 0, b"one")
        msg = meta.recv_message()
        assert isinstance(msg, M.FileResult) and msg.status == W.STATUS_OK
        data[0].data(0, 0, b"two")
        refused(hs, meta, sentinels, dest_times=False, allowed={b"f": b"one"})


# --- HP-5 metadata -------------------------------------------------------------------------------


@case("HP-5")
@pytest.mark.parametrize("preserve", [False, True])
def test_setid_bits_and_owner(sentinels: Sentinels, preserve: bool) -> None:
    hs, meta, data = session(sentinels, flags=W.FLAG_PRESERVE if preserve else 0)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"suid", 2, mode=0o6755, uid=12345, gid=12345)]))
        hs.send_file(meta, data[0], 0, b"#!")
        hs.finish(meta, data, 1)
        hs.collect(meta)
        code, err = hs.wait()
    assert code == 0, err
    st = os.stat(sentinels.dest / "suid")
    root = os.geteuid() == 0
    if preserve and root:  # documented: only root with explicit --preserve keeps set-id bits and owners
        assert st.st_mode & 0o6000 == 0o6000 and st.st_uid == 12345
    else:
        assert st.st_mode & 0o6000 == 0, oct(st.st_mode)
        assert st.st_uid == os.geteuid()
    sentinels.check_c()


@case("HP-5")
def test_mode_000_directory_written_into_then_locked(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels, flags=W.FLAG_PRESERVE)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"d", kind=W.KIND_DIR, mode=0), entry(1, b"d/f", 2)]))
        hs.send_file(meta, data[0], 1, b"in")
        hs.finish(meta, data, 2)
        msgs = hs.collect(meta)
        code, err = hs.wait()
    d = sentinels.dest / "d"
    try:
        assert code == 0, err
        assert stat.S_IMODE(os.stat(d).st_mode) == 0
        os.chmod(d, 0o700)
        assert (d / "f").read_bytes() == b"in"
    finally:
        os.chmod(d, 0o700)
    assert any(isinstance(m, M.SessionDone) for m in msgs)
    sentinels.check_c()


@case("HP-5")
@pytest.mark.parametrize("fields", [{"mode": 0o17777}, {"mode": 1 << 20}, {"mtime_ns": (1 << 63) - 1},
                                    {"atime_ns": -(1 << 63)}], ids=["mode-bits", "mode-huge", "mtime-max",
                                                                    "atime-min"])
def test_invalid_metadata_refused(sentinels: Sentinels, fields: dict[str, int]) -> None:
    hs, meta, data = session(sentinels, flags=W.FLAG_PRESERVE)
    with hs:
        meta.send(M.encode_file_list([M.FileEntry(fino=0, name=b"f", size=1, **fields)]))
        refused(hs, meta, sentinels)


@case("HP-5")
@pytest.mark.parametrize("t", [1 << 62, -(10**18), 0])
def test_extreme_but_valid_times_applied_by_fd(sentinels: Sentinels, t: int) -> None:
    hs, meta, data = session(sentinels, flags=W.FLAG_PRESERVE)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", 1, mtime_ns=t, atime_ns=t)]))
        hs.send_file(meta, data[0], 0, b"x")
        hs.finish(meta, data, 1)
        msgs = hs.collect(meta)
        code, err = hs.wait()
    assert "Traceback" not in err
    ok = [m for m in msgs if isinstance(m, M.FileResult) and m.status == W.STATUS_OK]
    if ok:  # applied (the filesystem may clamp) ...
        assert code == 0 and (sentinels.dest / "f").read_bytes() == b"x"
        check_p(sentinels.dest, {b"f": b"x"})
    else:  # ... or the file fails cleanly
        check_e(code, err, codes=(3,))
        check_p(sentinels.dest, {})
    sentinels.check_c()


# --- HP-6 sizes, offsets, lengths ---------------------------------------------------------


def _hp6_cases() -> list[tuple[str, int, list[tuple[int, bytes, dict[str, int]]]]]:
    return [
        ("size0-then-data", 0, [(0, b"x" * 10, {})]),
        ("size10-then-11", 10, [(0, b"x" * 11, {})]),
        ("payload-longer-than-declared", 10, [(0, b"x" * 11, {"raw_len": 10})]),
        ("offset-2^63", 10, [(1 << 63, b"x" * 10, {})]),
        ("offset-max-u64", 10, [((1 << 64) - 1, b"x" * 10, {})]),
        ("offset-beyond-size", 10, [(B, b"x" * 10, {})]),
        ("offset-unaligned", 2 * B, [(5, b"x" * B, {})]),
        ("overlapping", 2 * B, [(0, b"x" * B, {}), (B // 2, b"y" * B, {})]),
        ("length-above-block", 2 * B, [(0, b"x" * (B + 1), {})]),
        ("length-0", 10, [(0, b"", {})]),
        ("length-2^32-1", 10, [(0, b"x" * 10, {"raw_len": (1 << 32) - 1})]),
        ("compressed-length-above-block", 2 * B, [(0, b"\x28\xb5\x2f\xfd", {"raw_len": 1 << 31, "flags": 1})]),
    ]


@case("HP-6")
@pytest.mark.parametrize("size,frames", [(c[1], c[2]) for c in _hp6_cases()], ids=[c[0] for c in _hp6_cases()])
def test_bad_block_geometry_refused(sentinels: Sentinels, size: int, frames: list) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", size)]))
        for off, payload, fields in frames:
            data[0].data(0, off, payload, **fields)
        refused(hs, meta, sentinels, dest_times=False)


@case("HP-6")
def test_huge_declared_size_allocates_nothing(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", 1 << 62)]))
        data[0].data(0, 0, os.urandom(B))
        meta.send(M.encode_file_end(M.FileEnd(0, W.STATUS_OK, 1, bytes(16))))
        refused(hs, meta, sentinels, dest_times=False)
    assert 0 < hs.max_rss_kib < RSS_BOUND_KIB


@case("HP-6")
@pytest.mark.parametrize("prefix", [0xFFFFFFFF, 17 + (64 << 20), 16])
def test_hostile_frame_length_prefix(sentinels: Sentinels, prefix: int) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", 10)]))
        data[0].send_raw(W.LEN_PREFIX.pack(prefix) + os.urandom(64))
        refused(hs, meta, sentinels, cause=("protocol", "integrity"), dest_times=False)
    assert 0 < hs.max_rss_kib < RSS_BOUND_KIB


# --- HP-7 .. HP-10 completeness and digests -----------------------------------------------------


@case("HP-7")
def test_blocks_never_sent_then_end(sentinels: Sentinels) -> None:
    content = os.urandom(3 * B)
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", len(content))]))
        data[0].data(0, 0, content[:B])
        data[0].data(0, 2 * B, content[2 * B :])
        meta.send(M.encode_file_end(M.FileEnd(0, W.STATUS_OK, 3, file_digest(0, content, B))))
        r = file_failed(hs, meta, data, sentinels, 1, cause="integrity")
    assert "never arrived" in r.message


@case("HP-7")
def test_end_declares_fewer_blocks_than_the_file_has(sentinels: Sentinels) -> None:
    content = os.urandom(3 * B)
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", len(content))]))
        data[0].data(0, 0, content[:B])
        meta.send(M.encode_file_end(M.FileEnd(0, W.STATUS_OK, 1, file_digest(0, content[:B], B))))
        refused(hs, meta, sentinels, dest_times=False)


@case("HP-8")
def test_same_block_twice_with_other_content(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels, streams=2)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", 2 * B)]))
        data[0].data(0, 0, b"a" * B)
        data[1].data(0, 0, b"b" * B)
        line = refused(hs, meta, sentinels, dest_times=False)
    assert "twice" in line


@case("HP-9")
def test_swapped_block_offsets_fail_the_digest(sentinels: Sentinels) -> None:
    content = os.urandom(2 * B)
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", len(content))]))
        data[0].data(0, 0, content[B:])
        data[0].data(0, B, content[:B])
        meta.send(M.encode_file_end(M.FileEnd(0, W.STATUS_OK, 2, file_digest(0, content, B))))
        file_failed(hs, meta, data, sentinels, 1, cause="integrity")


@case("HP-10")
def test_wrong_final_digest(sentinels: Sentinels) -> None:
    content = os.urandom(B + 10)
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", len(content))]))
        data[0].data(0, 0, content[:B])
        data[0].data(0, B, content[B:])
        meta.send(M.encode_file_end(M.FileEnd(0, W.STATUS_OK, 2, os.urandom(16))))
        file_failed(hs, meta, data, sentinels, 1, cause="integrity")


@case("HP-10")
def test_missing_file_end(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", 5)]))
        data[0].data(0, 0, b"hello")
        r = file_failed(hs, meta, data, sentinels, 1, cause="protocol")
    assert "without ending" in r.message


@case("HP-10")
def test_digest_of_another_file(sentinels: Sentinels) -> None:
    a, b = os.urandom(100), os.urandom(100)
    hs, meta, data = session(sentinels, top_level_count=2)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"a", 100), entry(1, b"b", 100)]))
        data[0].data(0, 0, a)
        data[0].data(1, 0, b)
        meta.send(M.encode_file_end(M.FileEnd(1, W.STATUS_OK, 1, file_digest(0, a, B))))
        meta.send(M.encode_file_end(M.FileEnd(0, W.STATUS_OK, 1, file_digest(0, a, B))))
        r = file_failed(hs, meta, data, sentinels, 2, cause="integrity", allowed={b"a": a})
    assert r.fino == 1


@case("HP-10", "HP-4")
def test_duplicate_file_end(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", 2 * B)]))
        data[0].data(0, 0, os.urandom(B))
        end = M.FileEnd(0, W.STATUS_OK, 2, bytes(16))
        meta.send(M.encode_file_end(end))
        meta.send(M.encode_file_end(end))
        refused(hs, meta, sentinels, dest_times=False)


@case("HP-10")
def test_file_end_for_unknown_file(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_end(M.FileEnd(77, W.STATUS_OK, 0, bytes(16))))
        refused(hs, meta, sentinels)


# --- HP-11 malformed protocol --------------------------------------------------------------


@case("HP-11")
@pytest.mark.parametrize("plain", [bytes([99]) + b"?", bytes([W.T_FILE_LIST]) + b"\x08\0\0\0\xff\xff",
                                   bytes([W.T_FILE_END, 1]), bytes([W.T_DATA]) + bytes(40), b"\x0f\x00",
                                   bytes([W.T_SESSION_DONE]) + bytes(12), bytes([W.T_EOS]) + bytes(3)],
                         ids=["unknown-type", "truncated-flatbuffer", "short-file-end", "unannounced-data-on-meta",
                              "keepalive-with-body", "session-done-from-sender", "short-eos"])
def test_malformed_metadata_frames(sentinels: Sentinels, plain: bytes) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send_plain(plain)
        refused(hs, meta, sentinels)


@case("HP-11")
def test_truncated_valid_file_list(sentinels: Sentinels) -> None:
    whole = M.encode_file_list([entry(i, b"name%d" % i, 1) for i in range(20)])
    hs, meta, data = session(sentinels, top_level_count=20)
    with hs:
        meta.send_plain(whole[: len(whole) // 2])
        refused(hs, meta, sentinels)


@case("HP-11")
def test_unknown_data_flag_bits(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", 5)]))
        data[0].data(0, 0, b"hello", flags=0x80)
        refused(hs, meta, sentinels, dest_times=False)


@case("HP-11")
@pytest.mark.parametrize("with_size", [True, False])
def test_zstd_bomb_is_capped(sentinels: Sentinels, with_size: bool) -> None:
    if with_size:  # the frame header declares 8 MiB: refused before decompressing
        bomb = zstandard.ZstdCompressor(level=1).compress(bytes(8 << 20))
    else:  # no declared size: 64 MiB of zeros streamed; the output cap must stop it
        co = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
        bomb = b"".join(co.compress(bytes(1 << 20)) for _ in range(64)) + co.flush()
    assert len(bomb) < B
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"f", B)]))
        data[0].data(0, 0, bomb, raw_len=B, flags=W.DATA_FLAG_ZSTD)
        refused(hs, meta, sentinels, dest_times=False)
    assert 0 < hs.max_rss_kib < RSS_BOUND_KIB


@case("HP-11")
@pytest.mark.parametrize("boot", ["version", "magic", "type", "length", "flags", "garbage-body", "key-len"])
def test_bad_bootstrap(sentinels: Sentinels, boot: str) -> None:
    hs = HostileSender(sentinels.dest)
    with hs:
        good = encode_init(hs.init)
        body = good[W.BOOT_HEADER.size :]
        raw = {
            "version": boot_raw(W.BOOT_SESSION_INIT, body, version=2),
            "magic": boot_raw(W.BOOT_SESSION_INIT, body, magic=b"SSH-"),
            "type": boot_raw(W.BOOT_SESSION_REPLY, body),
            "length": boot_raw(W.BOOT_SESSION_INIT, body, length=W.BOOT_MAX_BODY + 1),
            "garbage-body": boot_raw(W.BOOT_SESSION_INIT, os.urandom(200)),
        }.get(boot)
        if boot == "flags":
            from dataclasses import replace

            raw = encode_init(replace(hs.init, flags=1 << 30))
        if boot == "key-len":
            from dataclasses import replace

            raw = encode_init(replace(hs.init, key=b"short"))
        assert raw is not None
        hs.send_boot(raw)
        code, err = hs.wait_exit_alone()
    check_e(code, err, cause="protocol")
    sentinels.check_c(dest_times=True)
    assert not os.listdir(sentinels.dest)


# --- HP-12 floods ----------------------------------------------------------------------------


@case("HP-12")
def test_keepalive_flood_then_honest_file(sentinels: Sentinels) -> None:
    n = 100_000  # the list says 1M; 100k keeps CI time sane and already shows the bound
    hs, meta, data = session(sentinels)
    with hs:
        blob = b"".join(meta.seal(M.encode_keepalive()) for _ in range(n))
        meta.send_raw(blob)
        content = os.urandom(1000)
        meta.send(M.encode_file_list([entry(0, b"f", len(content))]))
        hs.send_file(meta, data[0], 0, content)
        hs.finish(meta, data, 1)
        msgs = hs.collect(meta, timeout=60)
        code, err = hs.wait()
    assert code == 0, err
    assert 0 < hs.max_rss_kib < RSS_BOUND_KIB
    assert any(isinstance(m, M.SessionDone) for m in msgs)
    check_p(sentinels.dest, {b"f": content})


@case("HP-12")
def test_many_tiny_metadata_frames(sentinels: Sentinels) -> None:
    n = 1000
    hs, meta, data = session(sentinels, top_level_count=n)
    with hs:
        blob = bytearray()
        for i in range(n):
            blob += meta.seal(M.encode_file_list([entry(i, b"e%d" % i, 0)]))
            blob += meta.seal(M.encode_file_end(M.FileEnd(i, W.STATUS_OK, 0, file_digest(i, b"", B))))
        meta.send_raw(bytes(blob))
        hs.finish(meta, data, n)
        msgs = hs.collect(meta, timeout=60)
        code, err = hs.wait()
    assert code == 0, err
    assert 0 < hs.max_rss_kib < RSS_BOUND_KIB
    assert sum(isinstance(m, M.FileResult) for m in msgs) == n
    assert len(os.listdir(sentinels.dest)) == n


@case("HP-12")
@pytest.mark.parametrize("count", [W.MAX_FILES_PER_LIST + 1, (1 << 32) - 1])
def test_file_list_claiming_too_many_entries(sentinels: Sentinels, count: int) -> None:
    from escp.protocol.fb import escp_generated as fb

    plain = bytearray(M.encode_file_list([entry(0, b"n", 0)]))
    body = bytes(plain[1:])
    root = fb.FileList.GetRootAs(body, 0)
    vec = root._tab.Vector(root._tab.Offset(4))  # the files vector; its u32 length sits before it
    W.LEN_PREFIX.pack_into(plain, 1 + vec - 4, count)
    hs, meta, data = session(sentinels)
    with hs:
        meta.send_plain(bytes(plain))
        refused(hs, meta, sentinels)


# --- HP-13 deadlines belong to the receiver ----------------------------------------------------


@case("HP-13")
@pytest.mark.parametrize("wish_ms", [0, (1 << 32) - 1], ids=["disable", "max"])
def test_keepalives_cannot_keep_a_dead_session_open(sentinels: Sentinels, wish_ms: int) -> None:
    """The sender asks for no deadline / the longest one and then only sends keepalives: the
    receiver's own --timeout 1 still ends the session (keepalives stretch it 5x at most)."""
    hs = HostileSender(sentinels.dest, server_args=("--timeout", "1"), idle_timeout_ms=wish_ms)
    hs.start()
    meta, data = hs.connect_all()
    with hs:
        t0 = time.monotonic()
        while not hs.exited() and time.monotonic() - t0 < 25:
            try:
                meta.send(M.encode_keepalive())
            except OSError:
                break
            time.sleep(0.2)
        code, err = hs.wait_exit_alone(5)
    assert time.monotonic() - t0 < 25
    check_e(code, err, cause="timeout")
    sentinels.check_c(dest_times=True)


@case("HP-13")
@pytest.mark.parametrize("wish_ms,expect", [(0, 5.0), (1, 5.0), (60_000, 60.0), ((1 << 32) - 1, 3600.0)])
def test_peer_deadline_wish_is_clamped(wish_ms: int, expect: float) -> None:
    """SessionInit.idle_timeout_ms is a wish: clamped to 5 s .. 1 h, never 'off'."""
    from dataclasses import replace

    from escp.protocol.bootstrap import SessionInit

    init = SessionInit(1, bytes(16), 0, B, 1, 1232, 10, b"/x", 1)
    assert replace(init, idle_timeout_ms=wish_ms).receiver_idle_timeout == expect


# --- HP-14 control characters ----------------------------------------------------------------------


@case("HP-14")
def test_control_characters_in_names_and_errors_are_escaped(sentinels: Sentinels) -> None:
    nasty = b"\x1b[2Jevil\x07\r\x9b31m"
    hs, meta, data = session(sentinels, top_level_count=2)
    with hs:
        meta.send(M.encode_file_list([entry(0, nasty, 3)]))
        data[0].data(0, 0, b"abc")
        meta.send(M.encode_file_end(M.FileEnd(0, W.STATUS_FAILED, 1, bytes(16), "src \x1b]0;t\x07 gone\r\x9b")))
        r = file_failed(hs, meta, data, sentinels, 1, cause="I/O")
    assert "gone" in r.message


@case("HP-14")
def test_control_characters_in_a_refused_name_are_escaped(sentinels: Sentinels) -> None:
    hs, meta, data = session(sentinels)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"\x1b[31m/../\x07x", 3)]))
        line = refused(hs, meta, sentinels)
    assert "\\x1b[31m" in line


# --- OP-18 / OP-19 (docs/protocol.md §14): a refused FILE_LIST leaves nothing; dummy engine names ---


@case("HP-2")
def test_refused_file_list_creates_no_directory(sentinels: Sentinels) -> None:
    """OP-18: a FILE_LIST with a top-level directory beyond the announced count is refused
    as a whole, before any of its directories is made."""
    hs, meta, data = session(sentinels, top_level_count=1)
    with hs:
        meta.send(M.encode_file_list([entry(0, b"asked", kind=W.KIND_DIR, mode=0o755),
                                      entry(1, b"unasked", kind=W.KIND_DIR, mode=0o755)]))
        refused(hs, meta, sentinels, name="unasked")
    assert not (sentinels.dest / "asked").exists()
    assert not (sentinels.dest / "unasked").exists()


@case("HP-1")
@pytest.mark.parametrize("name", [b"../x", b"/etc/x", b"a/../../x"])
def test_dummy_receiver_engine_still_checks_names(sentinels: Sentinels, name: bytes) -> None:
    """OP-19: with rx_engine dummy (nothing written) a name outside the destination is still
    a protocol error, like with the posix engine."""
    hs, meta, data = session(sentinels, rx_engine="dummy")
    with hs:
        meta.send(M.encode_file_list([entry(0, name, 5)]))
        data[0].data(0, 0, b"pwned")
        refused(hs, meta, sentinels)
