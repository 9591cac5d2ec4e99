"""Prepare: validate the team's CSV files against the data contract and split them (the pipeline's first step).

    python -m training.prepare [--input DIR] [--output DIR] [--test-size F] [--validation-size F] [--seed N]
                               [--source-uri S3URI] [--resource-config FILE] [--failure-file FILE]

Reads every *.csv file under --input (recursively; other files are listed and ignored), checks them against
contracts.CHURN_FEATURES (training/data_contract.py) and writes stratified, disjoint splits with the declared
columns and `churn` only:

  <output>/train/train.csv  <output>/validation/validation.csv  <output>/test/test.csv
  <output>/report/data_report.json   (rows, per-split counts, churn rate, files read, ignored columns)

With several processing instances (the data sharded by S3 key) each instance splits its own shard and names
its files by host (train/train-algo-2.csv, ...), from --resource-config.

Exit codes: 0 written; 4 (contracts.EXIT_DATA_REJECTED) the data was rejected: the message, starting with
"data rejected:", goes to stderr and to --failure-file, which SageMaker returns as the processing job's
ExitMessage; 2 bad arguments; 1 anything else. A failed run leaves no split behind.
Standard library only, so the step starts in a blink.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import contracts
from training import data_contract
from training.data_contract import Table
from training.staging import failure_file, run_step, staged_files

DEFAULT_INPUT = "/opt/ml/processing/input/data"
DEFAULT_OUTPUT = "/opt/ml/processing/output"
# Where a processing container finds its host name and the job's hosts.
DEFAULT_RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"
DEFAULT_TEST_SIZE = 0.2
DEFAULT_VALIDATION_SIZE = 0.2
DEFAULT_SEED = 42
TRAIN, VALIDATION, TEST = contracts.DATA_SPLITS

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Host:
    """This instance and how many share the job (one unless the data is sharded across instances)."""

    name: str = "algo-1"
    count: int = 1

    @classmethod
    def from_resource_config(cls, path: Path) -> Host:
        """Read SageMaker's resourceconfig.json; absent (a laptop, CodeBuild): the only host."""
        if not path.is_file():
            return cls()
        config = json.loads(path.read_text())
        return cls(str(config["current_host"]), max(1, len(config.get("hosts") or [])))

    def file_name(self, stem: str, suffix: str) -> str:
        return f"{stem}{suffix}" if self.count == 1 else f"{stem}-{self.name}{suffix}"


@dataclass(frozen=True)
class PrepareResult:
    report: dict[str, Any]
    files: dict[str, Path]
    """Split (and "report") -> the file written."""


def prepare(input_dir: Path, output_dir: Path, *, test_size: float = DEFAULT_TEST_SIZE,
            validation_size: float = DEFAULT_VALIDATION_SIZE, seed: int = DEFAULT_SEED,
            source_uri: str | None = None, host: Host | None = None,
            progress: Progress | None = None) -> PrepareResult:
    """Validate input_dir's CSV files and write the splits and the report under output_dir."""
    host = host or Host()
    say = progress or (lambda _message: None)
    files = {split: output_dir / split / host.file_name(split, ".csv") for split in contracts.DATA_SPLITS}
    files[contracts.DATA_REPORT_OUTPUT] = (output_dir / contracts.DATA_REPORT_OUTPUT
                                           / host.file_name(Path(contracts.DATA_REPORT_FILE).stem, ".json"))
    with staged_files(files.values()) as staged:
        shard = (f" (instance {host.name} of {host.count}, the data sharded by S3 key: give the prefix at least "
                 f"as many files as processing instances, or use fewer instances)") if host.count > 1 else ""
        table = data_contract.read_dir(input_dir, source_uri, context=shard)
        fractions = {TEST: test_size, VALIDATION: validation_size}
        data_contract.check_split_sizes(table.class_counts(), fractions, where=source_uri or str(input_dir))
        counts = table.class_counts()
        ignored = f"; ignored columns: {', '.join(table.ignored_columns)}" if table.ignored_columns else ""
        say(f"data: {table.rows} rows from {len(table.files)} file(s), churn rate {counts[1] / table.rows:.1%}"
            f"{ignored}")

        splits = data_contract.stratified_split(table.labels, fractions, seed)
        header = list(table.cells)
        for split in contracts.DATA_SPLITS:
            with staged[files[split]].open("w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(header)
                writer.writerows(table.subset(splits[split]))
        report = _report(table, splits, files, output_dir, host,
                         {"test_size": test_size, "validation_size": validation_size, "seed": seed})
        staged[files[contracts.DATA_REPORT_OUTPUT]].write_text(json.dumps(report, indent=2) + "\n")
    say("split (stratified, seed {}): {}".format(
        seed, ", ".join(f"{split} {len(splits[split])}" for split in contracts.DATA_SPLITS)))
    return PrepareResult(report, files)


def _report(table: Table, splits: Mapping[str, list[int]], files: Mapping[str, Path], output_dir: Path,
            host: Host, settings: Mapping[str, Any]) -> dict[str, Any]:
    labels = table.labels

    def split_summary(split: str) -> dict[str, Any]:
        rows = splits[split]
        positives = sum(labels[i] for i in rows)
        return {"rows": len(rows), "churn_rate": round(positives / len(rows), 6),
                "file": files[split].relative_to(output_dir).as_posix()}

    return {**table.report(), "splits": {split: split_summary(split) for split in contracts.DATA_SPLITS},
            "host": host.name, "hosts": host.count, **settings}


def _fraction(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not low < value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside ({low}, {high}]")
        return value

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=Path(DEFAULT_INPUT),
                        help=f"directory of CSV files, read recursively (default {DEFAULT_INPUT})")
    parser.add_argument("--output", type=Path, default=Path(DEFAULT_OUTPUT),
                        help=f"where the train/validation/test/report folders go (default {DEFAULT_OUTPUT})")
    parser.add_argument("--test-size", type=_fraction(0.0, 0.5), default=DEFAULT_TEST_SIZE,
                        help="share of each class held out for the Evaluate step (0..0.5]")
    parser.add_argument("--validation-size", type=_fraction(0.0, 0.5), default=DEFAULT_VALIDATION_SIZE,
                        help="share of each class held out for the Train step's validation metrics (0..0.5]")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--source-uri", default=None,
                        help="the S3 prefix the input was downloaded from, so messages name files as you know them")
    parser.add_argument("--resource-config", type=Path, default=Path(DEFAULT_RESOURCE_CONFIG),
                        help="SageMaker's host list; absent: a single host")
    parser.add_argument("--failure-file", type=Path, default=None,
                        help=f"where a rejection's message goes (default {contracts.EXIT_MESSAGE_FILE} inside a "
                             "SageMaker container, nowhere elsewhere)")
    args = parser.parse_args(argv)
    if args.test_size + args.validation_size >= 0.8:
        parser.error(f"--test-size {args.test_size} + --validation-size {args.validation_size} leave too little "
                     "to train on: keep their sum below 0.8")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> None:
        host = Host.from_resource_config(args.resource_config)
        result = prepare(args.input, args.output, test_size=args.test_size, validation_size=args.validation_size,
                         seed=args.seed, source_uri=args.source_uri, host=host,
                         progress=lambda message: print(message, flush=True))
        for path in result.files.values():
            print(f"wrote {path}", flush=True)

    return run_step(work, failure=failure_file(args.failure_file), failed="prepare failed")


if __name__ == "__main__":
    sys.exit(main())
