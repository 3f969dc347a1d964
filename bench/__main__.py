"""python -m bench [--smoke] [--busy] [--only NAME ...] [--json PATH] [--profile DIR]
[--logs DIR]"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from bench import procs, report
from bench.harness import Context
from bench.scenarios import SCENARIOS, SMOKE_BUDGET_S

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a check in seconds")
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"run only these scenarios: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--busy",
        action="store_true",
        help="run one CPU-bound process beside each scenario, as a host busy with other work",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample each sessiond with py-spy into DIR/<scenario>.txt (collapsed stacks)",
    )
    parser.add_argument(
        "--logs",
        type=Path,
        metavar="DIR",
        help="keep every child's log as DIR/<scenario>-<child>.log",
    )
    return parser


def raise_file_limit() -> None:
    """Thousands of streams need thousands of sockets; children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run_one(
    module: ModuleType, smoke: bool, profile: Path | None, logs: Path | None
) -> report.Result:
    result = report.Result(module.NAME, module.TITLE)
    budget = SMOKE_BUDGET_S if smoke else module.BUDGET_S
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"sessiond-bench-{module.NAME}-") as folder:
        ctx = Context(module.NAME, smoke, Path(folder), profile, logs)
        gc.disable()  # no collector pauses inside the client's timings
        try:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                runner.run(asyncio.wait_for(module.run(ctx, result), budget))
        except TimeoutError:
            result.failed = f"did not finish within its {budget:g} s budget"
        except Exception as exc:
            result.failed = f"{type(exc).__name__}: {exc}"
            result.details["traceback"] = traceback.format_exc()
        finally:
            gc.enable()
            result.errors += ctx.close()
            result.details |= ctx.notes
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_file_limit()
    names = args.only or list(SCENARIOS)
    load_before = ", ".join(f"{x:.1f}" for x in report.machine()["load_average"])
    results = []
    started = time.perf_counter()
    for name in names:
        print(f"{name}: {SCENARIOS[name].TITLE} …", file=sys.stderr, flush=True)
        with procs.busy(args.busy):
            result = run_one(SCENARIOS[name], args.smoke, args.profile, args.logs)
        result.details["busy"] = args.busy
        status = f"FAILED: {result.failed}" if result.failed else "done"
        print(f"{name}: {status} in {result.seconds:.1f} s", file=sys.stderr, flush=True)
        results.append(result)
    seconds = time.perf_counter() - started
    info = report.machine()
    load = ", ".join(f"{x:.1f}" for x in info["load_average"])
    print(
        f"\nsessiond bench{' (smoke)' if args.smoke else ''}"
        f"{', one CPU-bound process beside' if args.busy else ''}: {info['cpus']} CPUs, "
        f"{info['memory_gib']} GiB, Python {info['python']}, {seconds:.0f} s; "
        f"load average {load_before} before, {load} after\n"
    )
    print(report.table(results))
    for result in results:
        for problem in result.errors:
            print(f"  {result.name}: {problem}")
    report.write_json(args.json, results, args.smoke, seconds)
    print(f"\nresults: {args.json}")
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
