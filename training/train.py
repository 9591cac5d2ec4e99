"""Train the churn classifier and write its evaluation (SageMaker script mode).

    python -m training.train [--train DIR] [--validation DIR] [--model-dir DIR] [--output-dir DIR]
                             [--<hyperparameter> VALUE ...]          (SageMaker: python training/train.py ...)

The same script runs in a SageMaker training job (the pipeline's Train step), in CodeBuild or GitHub Actions
(compute `build`) and in the embedded run, so it reads the SageMaker training contract, with local defaults
when those variables are unset:

  SM_CHANNEL_TRAIN       CSV files of the churn table (read by the data contract, training/data_contract.py);
                         unset: the deterministic synthetic table (training/sample_data.py)
  SM_CHANNEL_VALIDATION  CSV files to evaluate on; unset: a stratified holdout of --test-size of the training rows
  SM_MODEL_DIR           model.joblib (a plain scikit-learn Pipeline) and code/inference.py: the files of the
                         model.tar.gz the scikit-learn image serves
  SM_OUTPUT_DATA_DIR     evaluation.json (SageMaker model-quality statistics) and training_metadata.json

Hyperparameters arrive as command-line flags, the way SageMaker passes them (`--max_iter 500`).
Outputs appear only when training succeeds; a failed run leaves no model and no evaluation behind.
Exit codes: 0 trained; 4 (contracts.EXIT_DATA_REJECTED) the data was rejected ("data rejected: ..." on stderr
and, inside a training job, in $SM_OUTPUT_DIR/failure, which SageMaker reports as FailureReason); 2 bad
hyperparameters or arguments; 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn
from numpy.typing import ArrayLike
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import contracts
from training import DEFAULT_MODEL_DIR, DEFAULT_OUTPUT_DIR, TRAINING_METADATA_FILE, data_contract
from training.sample_data import make_dataset, sample_csv
from training.staging import run_step, staged_files

# make_dataset: the synthetic table as a DataFrame, for the tests and the embedded run's requests.
__all__ = ["TrainParams", "TrainResult", "build_pipeline", "evaluate", "headline", "main", "make_dataset", "train"]

Progress = Callable[[str], None]

# code/inference.py finds the numeric columns through these step names (it cannot import this
# module inside the serving container); the round-trip tests keep the two files in step.
PREPROCESS_STEP = "preprocess"
NUMERIC_TRANSFORMER = "numeric"
CATEGORICAL_TRANSFORMER = "categorical"
CLASSIFIER_STEP = "classifier"

# Probability at or above which a customer is labelled as churning; code/inference.py labels with
# the same value, so the evaluated confusion matrix is the one the endpoint produces.
LABEL_THRESHOLD = 0.5
# Points kept from the ROC curve: enough to draw it in Studio, small enough to read in a diff.
ROC_POINTS = 101
# Shipped beside the model (code/inference.py), as register.py does.
INFERENCE_SOURCE = Path(__file__).with_name(contracts.INFERENCE_SCRIPT)


@dataclass(frozen=True)
class TrainParams:
    """Hyperparameters; every field is also a command-line flag (`--n-rows` or `--n_rows`)."""

    n_rows: int = 8000
    """Rows of the synthetic table (unused with a training channel)."""
    seed: int = 42
    """Seed of the synthetic table, the holdout split and the bootstrap."""
    test_size: float = 0.25
    """Share of each class held out for evaluation when there is no validation channel."""
    c: float = 1.0
    """Inverse L2 regularisation strength of the logistic regression."""
    max_iter: int = 1000
    bootstrap_rounds: int = 100
    """Resamples of the holdout for the metrics' standard deviations."""

    def __post_init__(self) -> None:
        problems = []
        if self.n_rows < 100:
            problems.append(f"n_rows={self.n_rows} (need at least 100)")
        if not 0.05 <= self.test_size <= 0.5:
            problems.append(f"test_size={self.test_size} (use 0.05..0.5)")
        if self.c <= 0:
            problems.append(f"c={self.c} (must be > 0)")
        if self.max_iter < 1:
            problems.append(f"max_iter={self.max_iter} (must be >= 1)")
        if self.bootstrap_rounds < 2:
            problems.append(f"bootstrap_rounds={self.bootstrap_rounds} (need at least 2)")
        if problems:
            raise ValueError("invalid hyperparameters: " + "; ".join(problems))


@dataclass(frozen=True)
class TrainResult:
    model: Pipeline
    evaluation: dict[str, Any]
    model_path: Path
    evaluation_path: Path
    metadata_path: Path


def build_pipeline(numeric: Sequence[str], categorical: Sequence[str], params: TrainParams) -> Pipeline:
    preprocess = ColumnTransformer(
        [
            (NUMERIC_TRANSFORMER,
             Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
             list(numeric)),
            (CATEGORICAL_TRANSFORMER,
             Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                       ("encode", OneHotEncoder(handle_unknown="ignore"))]),
             list(categorical)),
        ]
    )
    classifier = LogisticRegression(C=params.c, max_iter=params.max_iter)
    return Pipeline([(PREPROCESS_STEP, preprocess), (CLASSIFIER_STEP, classifier)])


def _point_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall, f1 for each row of (resamples x rows) label arrays."""
    tp = ((y_pred == 1) & (y_true == 1)).sum(axis=-1)
    fp = ((y_pred == 1) & (y_true == 0)).sum(axis=-1)
    fn = ((y_pred == 0) & (y_true == 1)).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "accuracy": (y_pred == y_true).mean(axis=-1),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def evaluate(y_true: ArrayLike, proba: ArrayLike, threshold: float = LABEL_THRESHOLD,
             bootstrap_rounds: int = 100, seed: int = 42) -> dict[str, Any]:
    """Holdout metrics in SageMaker's model-quality statistics format.

    Standard deviations come from bootstrap resamples of the holdout: cheap, and honest about how
    much a metric would move on another sample of the same size.
    """
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    y_pred = (proba >= threshold).astype(int)

    values = {name: float(v) for name, v in _point_metrics(y_true, y_pred).items()}
    values["auc"] = float(roc_auc_score(y_true, proba))

    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(y_true), size=(bootstrap_rounds, len(y_true)))
    spread = {name: float(np.std(v)) for name, v in _point_metrics(y_true[samples], y_pred[samples]).items()}
    aucs = [roc_auc_score(y_true[s], proba[s]) for s in samples if 0 < y_true[s].sum() < len(s)]
    spread["auc"] = float(np.std(np.asarray(aucs, dtype=float))) if aucs else 0.0

    fpr, tpr, _ = roc_curve(y_true, proba)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).round().astype(int))

    def count(actual: int, predicted: int) -> int:
        return int(((y_true == actual) & (y_pred == predicted)).sum())

    metrics: dict[str, Any] = {
        name: {"value": round(values[name], 6), "standard_deviation": round(spread[name], 6)}
        for name in ("accuracy", "precision", "recall", "f1", "auc")
    }
    # Outer key: actual label; inner key: predicted label (SageMaker's layout).
    metrics["confusion_matrix"] = {str(a): {str(p): count(a, p) for p in (0, 1)} for a in (0, 1)}
    metrics["receiver_operating_characteristic_curve"] = {
        "false_positive_rates": [round(float(x), 6) for x in fpr[keep]],
        "true_positive_rates": [round(float(x), 6) for x in tpr[keep]],
    }
    return {"binary_classification_metrics": metrics}


def headline(evaluation: Mapping[str, Any]) -> str:
    metrics = evaluation["binary_classification_metrics"]
    parts = [f"{name}={metrics[name]['value']:.4f}" for name in ("auc", "accuracy", "precision", "recall", "f1")]
    return "holdout " + " ".join(parts)


def train(train_dir: Path | None, model_dir: Path, output_dir: Path, params: TrainParams | None = None,
          progress: Progress | None = None, *, validation_dir: Path | None = None) -> TrainResult:
    """Fit the pipeline on the training rows, evaluate it, write the model and evaluation files.

    Evaluates on `validation_dir`'s table when given, else on a stratified holdout of params.test_size.
    Every file appears only if the whole run succeeds (earlier copies are removed first).
    """
    params = params or TrainParams()
    say = progress or (lambda _message: None)
    model_path = model_dir / contracts.MODEL_FILE
    evaluation_path = output_dir / contracts.EVALUATION_FILE
    metadata_path = output_dir / TRAINING_METADATA_FILE
    serving_code = model_dir / "code" / contracts.INFERENCE_SCRIPT
    with staged_files([model_path, serving_code, evaluation_path, metadata_path]) as staged:
        if train_dir is None:
            # No parentheses or commas: the value goes into CustomerMetadataProperties, which forbids them.
            data_source = f"synthetic:training.sample_data/n_rows={params.n_rows}/seed={params.seed}"
            # The sample's CSV through the contract, as the pipeline reads it from the data prefix.
            table = data_contract.read_text(sample_csv(params.n_rows, params.seed).decode("utf-8"), data_source)
        else:
            data_source = str(train_dir)
            table = data_contract.read_dir(train_dir)
        features, target = table.features_and_target()
        ignored = table.ignored_columns
        say(f"data: {table.rows} rows x {features.shape[1]} features from {data_source}, "
            f"churn rate {target.mean():.1%}" + (f"; ignored columns: {', '.join(ignored)}" if ignored else ""))

        if validation_dir is None:
            data_contract.check_split_sizes(table.class_counts(), {"holdout": params.test_size}, where=data_source)
            rows = data_contract.stratified_split(table.labels, {"holdout": params.test_size}, params.seed)
            x_fit, y_fit = features.iloc[rows["train"]], target[rows["train"]]
            x_eval, y_eval = features.iloc[rows["holdout"]], target[rows["holdout"]]
            evaluated_on = f"stratified holdout of {params.test_size:.0%}"
        else:
            data_contract.check_split_sizes(table.class_counts(), {}, where=data_source, min_rows=0)
            x_fit, y_fit = features, target
            x_eval, y_eval = data_contract.read_holdout(validation_dir).features_and_target()
            evaluated_on = f"validation channel {validation_dir}"

        numeric = list(contracts.feature_names(contracts.NUMERIC))
        categorical = list(contracts.feature_names(contracts.CATEGORICAL))
        model = build_pipeline(numeric, categorical, params)
        say(f"fit: logistic regression on {len(x_fit)} rows ({len(numeric)} numeric, {len(categorical)} categorical)")
        model.fit(x_fit, y_fit)

        say(f"evaluate: {len(x_eval)} rows ({evaluated_on}), {params.bootstrap_rounds} bootstrap resamples")
        proba = model.predict_proba(x_eval)[:, 1]
        evaluation = evaluate(y_eval, proba, LABEL_THRESHOLD, params.bootstrap_rounds, params.seed)

        joblib.dump(model, staged[model_path])
        # SageMaker packs SM_MODEL_DIR as model.tar.gz: with the serving code beside the model it is the
        # archive register.py builds, which the scikit-learn image serves as it is.
        shutil.copyfile(INFERENCE_SOURCE, staged[serving_code])
        staged[evaluation_path].write_text(json.dumps(evaluation, indent=2) + "\n")
        metadata = {
            "data_source": data_source,
            "rows": table.rows,
            "holdout_rows": len(x_eval),
            "evaluated_on": evaluated_on,
            "ignored_columns": list(ignored),
            "features": {"numeric": numeric, "categorical": categorical},
            "params": asdict(params),
            "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__, "pandas": pd.__version__},
        }
        staged[metadata_path].write_text(json.dumps(metadata, indent=2) + "\n")
    say(f"wrote {model_path} and {evaluation_path}")
    return TrainResult(model, evaluation, model_path, evaluation_path, metadata_path)


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=environ.get("SM_CHANNEL_TRAIN") or None,
                        help="training channel directory (default: SM_CHANNEL_TRAIN; unset: synthetic data)")
    parser.add_argument("--validation", type=Path, default=environ.get("SM_CHANNEL_VALIDATION") or None,
                        help="validation channel directory (default: SM_CHANNEL_VALIDATION; unset: a holdout)")
    parser.add_argument("--model-dir", type=Path, default=Path(environ.get("SM_MODEL_DIR") or DEFAULT_MODEL_DIR))
    parser.add_argument("--output-dir", type=Path,
                        default=Path(environ.get("SM_OUTPUT_DATA_DIR") or DEFAULT_OUTPUT_DIR))
    # The training toolkit sets SM_OUTPUT_DIR; SageMaker reports the first 1 KB of <it>/failure as FailureReason.
    failure = Path(environ["SM_OUTPUT_DIR"]) / "failure" if environ.get("SM_OUTPUT_DIR") else None
    parser.add_argument("--failure-file", type=Path, default=failure,
                        help="where a failure's message goes (default: $SM_OUTPUT_DIR/failure in a training job)")
    defaults = TrainParams()
    for name, value in asdict(defaults).items():
        # SageMaker passes hyperparameter names verbatim: accept both spellings.
        flags = {f"--{name.replace('_', '-')}", f"--{name}"}
        parser.add_argument(*sorted(flags), dest=name, type=type(value), default=value)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv, os.environ)
    try:
        params = TrainParams(**{name: getattr(args, name) for name in asdict(TrainParams())})
    except ValueError as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        return 2

    def work() -> None:
        result = train(args.train, args.model_dir, args.output_dir, params,
                       progress=lambda m: print(m, flush=True), validation_dir=args.validation)
        print(headline(result.evaluation), flush=True)

    return run_step(work, failure=args.failure_file, failed="training failed")


if __name__ == "__main__":
    sys.exit(main())
