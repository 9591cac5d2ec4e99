"""`make demo`: the model lifecycle end to end on this machine, against an AWS emulator.

    python -m local.demo [--data DIR] [--thresholds '{"auc": 0.999}'] [--workdir .demo] [--plain]

Build (the stack's model-build pipeline, run step by step on this machine: Prepare -> Train -> Evaluate ->
QualityGate -> Register) -> Approval (the auto-approval handler decides) -> Deploy (endpoint, smoke-tested
through the real model) -> Serve (predictions from the deployed artifact). The pipeline trains on the
synthetic sample table, or with --data on every file in DIR (uploaded to the stack's data prefix).
Exit codes: 0 served; 3 the model did not pass (the QualityGate or the approval); 4 the data was rejected;
1 anything else; 2 bad arguments; 130 interrupted. Everything started is stopped in every case.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from local.emulator import EmulatorError
from local.runner import (
    DEFAULT_WORKDIR,
    EXIT_INTERRUPTED,
    RESULT_FILE,
    Console,
    DemoOptions,
    DemoResult,
    DemoRun,
    StageFailed,
    check_data_folder,
    print_summary,
)


def parse_thresholds(text: str) -> dict[str, float]:
    """--thresholds: a JSON object of metric -> minimum in [0, 1]."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f'not JSON ({exc.msg}); e.g. --thresholds \'{{"auc": 0.999}}\'') from None
    if not isinstance(value, dict) or not value:
        raise argparse.ArgumentTypeError('expected a non-empty JSON object, e.g. {"auc": 0.999}')
    bars: dict[str, float] = {}
    for metric, bar in value.items():
        if isinstance(bar, bool) or not isinstance(bar, int | float) or not 0 <= bar <= 1:
            raise argparse.ArgumentTypeError(f"{metric}: {bar!r} is not a number between 0 and 1")
        bars[str(metric)] = float(bar)
    return bars


def data_folder(text: str) -> Path:
    """--data: refused here (exit 2, before anything starts) when the run would refuse it."""
    path = Path(text)
    try:
        check_data_folder(path)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=data_folder, default=None, metavar="DIR",
                        help="train on the CSV files in DIR (default: the synthetic sample table)")
    parser.add_argument("--thresholds", type=parse_thresholds, default=None,
                        help="quality gate and approval bars instead of the dev profile's, e.g. '{\"auc\": 0.999}' "
                             "to see a model that does not pass")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="work directory, emptied at start (default: .demo)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--plain", action="store_true", help="plain lines, no spinner, even on a terminal")
    return parser.parse_args(argv)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so the same cleanup path stops everything we started.
    raise KeyboardInterrupt(f"signal {signum}")


def run(options: DemoOptions, console: Console) -> tuple[int, DemoResult | None]:
    """Run the demo, print its summary and write it to <workdir>/demo-result.json; returns (exit code, result)."""
    demo = DemoRun(options, console)
    try:
        result = demo.run()
    except StageFailed as exc:
        print_summary(console, demo.result, f"stopped at {exc.stage}")
        console.print(f"demo: {exc}")
        return _recorded(demo, demo.result, f"stopped at {exc.stage}", exc.exit_code)
    except KeyboardInterrupt:
        print_summary(console, demo.result, "interrupted")
        console.print("demo: interrupted; everything it started is stopped")
        return _recorded(demo, demo.result, "interrupted", EXIT_INTERRUPTED)
    except (EmulatorError, ValueError) as exc:
        console.print(f"demo: error: {exc}")
        return _recorded(demo, demo.result, f"error: {exc}", 1)
    print_summary(console, result, "ok")
    return _recorded(demo, result, "ok", 0)


def _recorded(demo: DemoRun, result: DemoResult, outcome: str, code: int) -> tuple[int, DemoResult]:
    # Only into a work directory the run prepared (a refused --workdir is never written to).
    if demo.prepared_workdir is not None:
        (demo.prepared_workdir / RESULT_FILE).write_text(json.dumps(result.summary(outcome, code), indent=2) + "\n")
    return code, result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    # A shell starts background jobs with SIGINT ignored; the demo must still stop cleanly on it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    console = Console(sys.stdout, interactive=False if args.plain else None)
    options = DemoOptions(workdir=args.workdir, thresholds=args.thresholds, region=args.region, data_dir=args.data)
    code, _ = run(options, console)
    return code


if __name__ == "__main__":
    sys.exit(main())
