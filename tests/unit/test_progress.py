"""The progress display's figures and lines, and the line that ends a transfer (escp/progress.py),
on fixed snapshots and a fake clock. The terminal and the plain-line displays of real
transfers are tested in tests/integration/test_progress_display.py."""

from __future__ import annotations

import io

from escp.progress import ProgressDisplay, RateMeter, clock_text, fit, status_text, summary_line
from escp.results import ProgressSnapshot, TransferResult
from escp.units import format_bytes, format_rate

MB = 1_000_000


def snap(done: int, known: int, files_done: int, files_known: int, walk_done: bool,
         current: bytes = b"run42/a.bin") -> ProgressSnapshot:
    return ProgressSnapshot(done, known, files_done, files_known, walk_done, current)


def test_one_unit_system_for_sizes_and_rates() -> None:
    assert format_bytes(150 * MB) == "150.00 MB"
    assert format_rate(35.35 * MB) == "35.35 MB/s"
    assert format_bytes(512) == "512 B"
    assert format_bytes(2.5e12) == "2.50 TB"
    assert format_rate(125 * MB, bits=True) == "1.00 Gbit/s"


def test_while_the_walk_goes_the_totals_are_marked_and_there_is_no_percent() -> None:
    text = status_text(snap(150 * MB, 300 * MB, 12, 40, False), 35.35 * MB, bits=False)
    assert text == "150.00 MB/300.00 MB+  35.35 MB/s  12/40+ files"
    assert "%" not in text and "ETA" not in text


def test_once_the_walk_is_complete_percent_and_eta() -> None:
    text = status_text(snap(150 * MB, 300 * MB, 12, 40, True), 30 * MB, bits=False)
    assert text == " 50%  150.00 MB/300.00 MB  30.00 MB/s  ETA 0:05  12/40 files"
    assert "Mbit/s" in status_text(snap(1, 2, 0, 1, True), MB, bits=True)


def test_no_rate_yet_no_rate_shown() -> None:
    assert status_text(snap(0, 0, 0, 0, False), None, bits=False) == "0 B/0 B+  0/0+ files"


def test_clock_text() -> None:
    assert clock_text(5) == "0:05"
    assert clock_text(3 * 3600 + 61) == "3:01:01"


def test_a_long_name_is_cut_from_the_left_to_fit_the_terminal() -> None:
    line = fit("50%  1.00 MB/2.00 MB", "/very/long/path/to/the/file.bin", 40)
    assert len(line) <= 40 and line.endswith("file.bin") and "..." in line
    assert fit("x" * 50, "name", 40) == "x" * 40


def test_rate_over_the_last_seconds() -> None:
    meter = RateMeter()
    assert meter.add(0.0, 0) is None
    assert meter.add(1.0, 10 * MB) == 10 * MB
    for t in range(2, 21):  # 10 MB/s for 20 s, then it stops
        meter.add(float(t), t * 10 * MB)
    assert meter.add(30.0, 200 * MB) < 10 * MB  # the stall shows within the window


def test_plain_lines_name_the_elapsed_time_and_the_file() -> None:
    now = [100.0]
    s = [snap(0, 0, 0, 0, False)]
    out = io.StringIO()
    d = ProgressDisplay(lambda: s[0], out, terminal=False, interval=10, clock=lambda: now[0])
    d.draw()
    now[0] += 90
    s[0] = snap(45 * MB, 100 * MB, 1, 2, True, b"tree/b\x1b[2J.bin")
    d.draw()
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("progress 1:30   45%  45.00 MB/100.00 MB  ")
    assert lines[1].endswith("1/2 files  tree/b\\x1b[2J.bin")  # a hostile name cannot drive the terminal


def test_terminal_line_is_redrawn_in_place_and_erased() -> None:
    out = io.StringIO()
    d = ProgressDisplay(lambda: snap(1, 2, 0, 1, True), out, terminal=True)
    d.draw()
    d.close()
    assert out.getvalue().startswith("\r\x1b[K") and out.getvalue().endswith("\r\x1b[K")
    assert "\n" not in out.getvalue()


def test_nothing_is_drawn_before_the_session_exists() -> None:
    out = io.StringIO()
    d = ProgressDisplay(lambda: None, out, terminal=True)
    d.draw()
    d.close()
    assert out.getvalue() == ""


def test_summary_line() -> None:
    r = TransferResult(files_ok=3, bytes_payload=1_000_000_000, seconds=4.0)
    assert summary_line(r, bits=False) == "Complete: 1.00 GB in 3 files at 250.00 MB/s in 4.00 s"
    r.files_failed = 1
    assert summary_line(r, bits=True).endswith("at 2.00 Gbit/s in 4.00 s (1 failed)")  # type: ignore[union-attr]
    # every file failed: no "Complete: 0 B in 0 files"
    assert summary_line(TransferResult(files_failed=4, seconds=1.0), bits=False) is None
    assert summary_line(TransferResult(seconds=0.1), bits=False) == "Complete: 0 B in 0 files at 0.00 B/s in 0.10 s"


def test_summary_line_counts_skipped_files_apart() -> None:
    r = TransferResult(files_ok=3, files_skipped=2, bytes_skipped=2_000_000, bytes_payload=1_000, seconds=1.0)
    assert summary_line(r, bits=False) == ("Complete: 1.00 kB in 1 files at 1.00 kB/s in 1.00 s; "
                                          "skipped 2 files, 2.00 MB not sent")
