"""Evaluate: score the trained model on the held-out test split (the pipeline's Evaluate step).

    python -m training.evaluate [--model DIR_OR_TARGZ] [--test DIR] [--output DIR]
                                [--bootstrap-rounds N] [--seed S] [--failure-file FILE]

--model is a model.tar.gz (what the Train step produces), a directory holding one, or a directory holding
model.joblib. --test is read through the data contract. Writes <output>/evaluation.json in SageMaker's
model-quality format, the same metrics train.py computes (training.train.evaluate): the Evaluate step's
property file, which the QualityGate reads and the Register step attaches to the package.

Exit codes: 0 written; 4 (contracts.EXIT_DATA_REJECTED) the test data was rejected ("data rejected: ..." on
stderr and in --failure-file, the processing job's ExitMessage); 2 bad arguments; 1 anything else (no model,
a model of another table). A failed run leaves no evaluation.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib

import contracts
from training import data_contract
from training.staging import failure_file, run_step, staged_files
from training.train import LABEL_THRESHOLD, TrainParams, evaluate, headline

DEFAULT_MODEL = "/opt/ml/processing/input/model"
DEFAULT_TEST = "/opt/ml/processing/input/test"
DEFAULT_OUTPUT = "/opt/ml/processing/output/evaluation"

Progress = Callable[[str], None]


class ModelUnusable(Exception):
    """No model where one was expected, or one that does not fit the declared table."""


@dataclass(frozen=True)
class EvaluateResult:
    evaluation: dict[str, Any]
    evaluation_path: Path


def load_model(path: Path) -> Any:
    """The fitted pipeline from model.joblib, a model.tar.gz, or a directory holding either."""
    if path.is_dir():
        if (path / contracts.MODEL_FILE).is_file():
            return joblib.load(path / contracts.MODEL_FILE)
        archives = sorted(path.glob("*.tar.gz"))
        if len(archives) != 1:
            raise ModelUnusable(
                f"{path} holds neither {contracts.MODEL_FILE} nor exactly one model archive "
                f"(found {[a.name for a in archives] or 'none'}); pass the Train step's {contracts.MODEL_ARCHIVE}")
        path = archives[0]
    if not path.is_file():
        raise ModelUnusable(f"{path} does not exist; pass the Train step's {contracts.MODEL_ARCHIVE} or its model dir")
    if path.name == contracts.MODEL_FILE:
        return joblib.load(path)
    try:
        with tarfile.open(path, "r:*") as archive:
            # Read the one member by name: nothing is extracted, so no member can land outside a folder.
            member = archive.extractfile(contracts.MODEL_FILE)
            if member is None:
                raise KeyError(contracts.MODEL_FILE)
            with member:
                return joblib.load(member)
    except KeyError:
        raise ModelUnusable(f"{path} has no {contracts.MODEL_FILE} at its root; was it made by training/train.py?"
                            ) from None
    except tarfile.TarError as exc:
        raise ModelUnusable(f"{path} is not a model archive ({exc})") from None


def evaluate_model(model_path: Path, test_dir: Path, output_dir: Path, *, bootstrap_rounds: int | None = None,
                   seed: int | None = None, progress: Progress | None = None) -> EvaluateResult:
    """Score the model on the test table and write output_dir/evaluation.json (only on success)."""
    defaults = TrainParams()
    rounds = defaults.bootstrap_rounds if bootstrap_rounds is None else bootstrap_rounds
    seed = defaults.seed if seed is None else seed
    say = progress or (lambda _message: None)
    evaluation_path = output_dir / contracts.EVALUATION_FILE
    with staged_files([evaluation_path]) as staged:
        model = load_model(model_path)
        trained_on = [str(name) for name in getattr(model, "feature_names_in_", [])]
        if trained_on != list(data_contract.FEATURES):
            raise ModelUnusable(
                f"the model was trained on columns {trained_on}, the data contract declares "
                f"{list(data_contract.FEATURES)}: retrain it with this commit's training/train.py")
        table = data_contract.read_holdout(test_dir)
        features, target = table.features_and_target()
        say(f"evaluate: {table.rows} test rows from {len(table.files)} file(s), {rounds} bootstrap resamples")
        proba = model.predict_proba(features)[:, 1]
        evaluation = evaluate(target, proba, LABEL_THRESHOLD, rounds, seed)
        staged[evaluation_path].write_text(json.dumps(evaluation, indent=2) + "\n")
    return EvaluateResult(evaluation, evaluation_path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainParams()
    parser.add_argument("--model", type=Path, default=Path(DEFAULT_MODEL),
                        help=f"model.tar.gz, or a directory with it or model.joblib (default {DEFAULT_MODEL})")
    parser.add_argument("--test", type=Path, default=Path(DEFAULT_TEST),
                        help=f"directory of the test split's CSV files (default {DEFAULT_TEST})")
    parser.add_argument("--output", type=Path, default=Path(DEFAULT_OUTPUT),
                        help=f"where evaluation.json goes (default {DEFAULT_OUTPUT})")
    parser.add_argument("--bootstrap-rounds", "--bootstrap_rounds", dest="bootstrap_rounds", type=int,
                        default=defaults.bootstrap_rounds)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--failure-file", type=Path, default=None,
                        help=f"where a failure's message goes (default {contracts.EXIT_MESSAGE_FILE} inside a "
                             "SageMaker container, nowhere elsewhere)")
    args = parser.parse_args(argv)
    if args.bootstrap_rounds < 2:
        parser.error(f"--bootstrap-rounds {args.bootstrap_rounds}: need at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> None:
        result = evaluate_model(args.model, args.test, args.output, bootstrap_rounds=args.bootstrap_rounds,
                                seed=args.seed, progress=lambda message: print(message, flush=True))
        print(headline(result.evaluation).replace("holdout", "test", 1), flush=True)
        print(f"wrote {result.evaluation_path}", flush=True)

    return run_step(work, failure=failure_file(args.failure_file), failed="evaluation failed",
                    expected=(ModelUnusable,))


if __name__ == "__main__":
    sys.exit(main())
