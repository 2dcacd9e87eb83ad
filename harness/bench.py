"""`nox -s bench` / `python -m harness bench`: generate datasets, start the loopback sshd,
run every scenario of a profile, write results under reports/<run-id>/ and render the report.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from harness import datasets, peers, publish, report, results, runner, scenarios, sshd

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m harness bench", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick", help="quick (default, < 10 min) or full")
    ap.add_argument("--scenarios", type=Path, default=scenarios.DEFAULT_FILE)
    ap.add_argument("--only", action="append", default=[],
                    help="scenario name or sweep-group glob, or a tag such as 'wan' (repeatable); selects "
                         "on-demand scenarios too")
    ap.add_argument("--escp-cmd", help="escp argv prefix (default: python -m escp -q; the route adds --local or "
                    "the ssh options)")
    ap.add_argument(
        "--escp-plain", action="store_true", help="the escp command is a stand-in (e.g. 'cp -r'): pass only SRC DEST"
    )
    ap.add_argument("--repeats", type=int, help="override timed repeats of every scenario")
    ap.add_argument("--no-budget", action="store_true", help="ignore the profile's per-scenario time budget")
    ap.add_argument("--no-ssh", action="store_true", help="do not start the private sshd (ssh peers skipped)")
    ap.add_argument(
        "--escp-local", action="store_true",
        help="escp always runs --local, even in scenarios whose peers go over ssh (mixed-route ratios)",
    )
    ap.add_argument("--no-instrumented", action="store_true", help="skip the extra escp --stats --trace run")
    ap.add_argument(
        "--no-pyspy", action="store_true", help="do not sample the instrumented run with py-spy"
    )
    ap.add_argument("--datasets", type=Path, default=REPO / "datasets")
    ap.add_argument("--reports", type=Path, default=REPO / "reports")
    ap.add_argument("--scratch", type=Path, help="where destinations go (default datasets/_scratch/<run-id>)")
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--publish", type=Path, metavar="DIR",
                    help="afterwards publish the run there (e.g. reports/example; see harness/publish.py)")
    return ap.parse_args(argv)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # run the cleanup in finally blocks


def compile_escp() -> None:
    """Byte-compile this checkout's escp, as an installed package is: with no .pyc (an editable
    install under PYTHONDONTWRITEBYTECODE) every escp process compiles its modules from source
    at start-up, ~30-50 ms per process here, and more for a traced run's extra modules."""
    import compileall

    if not compileall.compile_dir(str(peers.REPO / "escp"), quiet=1):
        print("warning: could not byte-compile escp/ (start-up times include compiling)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    t0 = time.perf_counter()
    run_id = args.run_id or results.new_run_id()
    run_dir = args.reports / run_id
    prof = scenarios.load(args.scenarios, args.profile)
    selected = [s for s in prof.scenarios
                if (not args.only and not s.on_demand) or any(s.matches(g) for g in args.only)]
    if not selected:
        print(f"no scenario matches {args.only}", file=sys.stderr)
        return 2

    escp = peers.EscpCommand.from_string(args.escp_cmd, args.escp_plain)
    problem = escp.available()
    if problem:
        print(f"escp is not runnable: {problem}\n(use --escp-cmd 'cp -r' --escp-plain to test the harness)", file=sys.stderr)
        return 2

    run_dir.mkdir(parents=True, exist_ok=False)
    print(f"run {run_id}: profile {args.profile}, {len(selected)} scenarios, escp = {escp.describe()}")
    compile_escp()

    t_ds = time.perf_counter()
    needed = {s.dataset for s in selected}
    sets = {name: datasets.ensure_dataset(args.datasets, name, prof.datasets[name]) for name in sorted(needed)}
    datasets_s = time.perf_counter() - t_ds

    wants_ssh = any(p in peers.SSH_PEERS for s in selected for p in s.peers)
    server: sshd.PrivateSshd | None = None
    reason: str | None = None
    if wants_ssh:
        reason = "disabled (--no-ssh)" if args.no_ssh else sshd.unavailable_reason()
        if reason is None:
            try:
                server = sshd.PrivateSshd().start()
                print(f"private sshd on 127.0.0.1:{server.port}")
            except (RuntimeError, OSError) as e:
                reason = str(e)
        if reason:
            print(f"ssh peers skipped: {reason}")

    scratch = args.scratch or args.datasets / "_scratch" / run_id
    ctx = runner.RunContext(
        run_id=run_id,
        escp=escp,
        scratch=scratch,
        artifacts=run_dir / "artifacts",
        sshd=server,
        sshd_reason=reason,
        ssh_route=not args.escp_local,
        instrumented=not args.no_instrumented,
        pyspy=not args.no_pyspy,
        repeats_override=args.repeats,
        budget_s=None if args.no_budget else prof.scenario_budget_s,
        extra_config={"profile": args.profile},
    )
    meta: dict[str, Any] = {
        "schema": results.SCHEMA,
        "kind": "escp-bench-run",
        "run_id": run_id,
        "profile": args.profile,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": results.git_info(),
        "machine": results.machine_info(),
        "escp_command": escp.describe(),
        "sshd": f"127.0.0.1:{server.port}"
        if server
        else (f"unavailable: {reason}" if wants_ssh else "not needed (no ssh peer in these scenarios)"),
        "escp_route": (
            "over the private sshd (-F <its client config> -D <this checkout's escp>) in scenarios with an "
            "ssh peer, --local in the others"
            if server and not args.escp_local and not escp.local_only
            else "--local in every scenario" + ("" if server else " (no sshd: only local peers are compared)")
        ),
        "datasets_s": round(datasets_s, 2),
        "datasets": {n: {"spec": d.spec, "bytes": d.total_bytes, "files": d.file_count} for n, d in sets.items()},
        "scenarios": [],
    }
    try:
        for sc in selected:
            print(f"scenario {sc.name}: {sc.dataset}, escp {' '.join(sc.escp.argv())} vs {', '.join(sc.peers)}")
            rec = runner.run_scenario(ctx, sc, sets[sc.dataset])
            results.write_json(results.scenario_path(run_dir, sc.name), rec)
            meta["scenarios"].append(sc.name)
    finally:
        if server is not None:
            server.stop()
        runner.cleanup_scratch(scratch)
        meta["elapsed_s"] = round(time.perf_counter() - t0, 1)
        results.write_json(run_dir / results.RUN_FILE, meta)


    path = report.render(run_dir)
    print(f"total {meta['elapsed_s']} s (datasets {meta['datasets_s']} s)")
    print(f"report: {path}")
    if args.publish:
        print(f"published as {publish.publish(run_dir, args.publish)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
