"""Train the churn classifier and write its holdout evaluation (SageMaker script mode).

The same script runs in CodeBuild, in a SageMaker training job and in the embedded run, so it reads
the SageMaker training contract, with local defaults when those variables are unset:

  SM_CHANNEL_TRAIN    directory of CSV files with a `churn` column; unset: a synthetic churn table
  SM_MODEL_DIR        model.joblib (a plain scikit-learn Pipeline, loadable by code/inference.py)
  SM_OUTPUT_DATA_DIR  evaluation.json (SageMaker model-quality statistics) and training_metadata.json

Hyperparameters arrive as command-line flags, the way SageMaker passes them.
"""

from __future__ import annotations

import argparse
import json
import os
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
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import contracts
from training import DEFAULT_MODEL_DIR, DEFAULT_OUTPUT_DIR, TRAINING_METADATA_FILE

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


@dataclass(frozen=True)
class TrainParams:
    """Hyperparameters; every field is also a command-line flag (`--n-rows` or `--n_rows`)."""

    n_rows: int = 8000
    """Rows of the synthetic table (ignored when a training channel is given)."""
    seed: int = 42
    test_size: float = 0.25
    """Share of rows held out for evaluation."""
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


def make_dataset(n_rows: int = 8000, seed: int = 42) -> pd.DataFrame:
    """A deterministic synthetic customer-churn table with a `churn` column (0/1).

    Churn follows a logistic relationship with the usual drivers (short tenure, month-to-month
    contracts, high charges, fibre, electronic cheque, support calls) plus noise, so a linear model
    reaches a holdout AUC around 0.9: learnable, not trivially separable.
    """
    rng = np.random.default_rng(seed)
    contract = rng.choice(["month-to-month", "one-year", "two-year"], n_rows, p=[0.55, 0.25, 0.20])
    # Customers on longer contracts have, on average, stayed longer.
    tenure_scale = np.select([contract == "month-to-month", contract == "one-year"], [14.0, 30.0], 45.0)
    tenure = np.clip(np.round(rng.exponential(tenure_scale)), 0, 72).astype(int)
    internet = rng.choice(["fiber_optic", "dsl", "none"], n_rows, p=[0.44, 0.34, 0.22])
    base_charge = np.select([internet == "fiber_optic", internet == "dsl"], [80.0, 55.0], 22.0)
    monthly = np.round(np.clip(base_charge + rng.normal(0, 12, n_rows), 18, 120), 2)
    total = np.round(monthly * tenure * rng.uniform(0.95, 1.05, n_rows), 2)
    payment = rng.choice(
        ["electronic_check", "mailed_check", "bank_transfer", "credit_card"], n_rows, p=[0.34, 0.23, 0.22, 0.21]
    )
    support_calls = rng.poisson(1.3, n_rows)
    paperless = (rng.random(n_rows) < 0.6).astype(int)
    senior = (rng.random(n_rows) < 0.16).astype(int)
    partner = (rng.random(n_rows) < 0.48).astype(int)

    logit = 1.5 * (
        -2.2
        + 1.5 * (contract == "month-to-month")
        - 1.2 * (contract == "two-year")
        - 0.045 * tenure
        + 0.025 * (monthly - 65)
        + 0.7 * (internet == "fiber_optic")
        + 0.6 * (payment == "electronic_check")
        + 0.45 * support_calls
        + 0.3 * paperless
        + 0.4 * senior
        - 0.25 * partner
    ) + rng.normal(0, 0.4, n_rows)
    churn = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(int)

    return pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "contract_type": contract,
            "payment_method": payment,
            "internet_service": internet,
            "support_calls": support_calls,
            "paperless_billing": paperless,
            "senior_citizen": senior,
            "has_partner": partner,
            contracts.TARGET_COLUMN: churn,
        }
    )


def load_channel(train_dir: Path) -> pd.DataFrame:
    """All CSV files of a training channel, concatenated; errors say what is wrong with the data."""
    if not train_dir.is_dir():
        raise FileNotFoundError(f"training channel {train_dir} is not a directory (set SM_CHANNEL_TRAIN or --train)")
    files = sorted(train_dir.glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no *.csv files in training channel {train_dir}")
    frame = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    target = contracts.TARGET_COLUMN
    if target not in frame.columns:
        raise ValueError(
            f"training data in {train_dir} has no {target!r} column (columns: {', '.join(map(str, frame.columns))}); "
            f"add the label as a 0/1 column named {target!r}"
        )
    labels = set(frame[target].dropna().unique().tolist())
    empty_cells = int(frame[target].isna().sum())
    if empty_cells or not labels <= {0, 1} or len(labels) < 2:
        found = sorted(map(str, labels))
        raise ValueError(
            f"column {target!r} in {train_dir} must hold both 0 and 1 and nothing else "
            f"(found {found}{f' and {empty_cells} empty cells' if empty_cells else ''})"
        )
    frame[target] = frame[target].astype(int)
    return frame


def feature_columns(features: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, categorical) column names, by dtype."""
    numeric = [str(c) for c in features.columns if pd.api.types.is_numeric_dtype(features[c])
               and not pd.api.types.is_bool_dtype(features[c])]
    categorical = [str(c) for c in features.columns if str(c) not in numeric]
    return numeric, categorical


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
          progress: Progress | None = None) -> TrainResult:
    """Fit the pipeline, evaluate it on a stratified holdout, write model and evaluation files."""
    params = params or TrainParams()
    say = progress or (lambda _message: None)

    if train_dir is None:
        frame = make_dataset(params.n_rows, params.seed)
        # No parentheses or commas: the value goes into CustomerMetadataProperties, which forbids them.
        data_source = f"synthetic:make_dataset/n_rows={params.n_rows}/seed={params.seed}"
    else:
        frame = load_channel(train_dir)
        data_source = str(train_dir)
    say(f"data: {len(frame)} rows x {frame.shape[1] - 1} features from {data_source}, "
        f"churn rate {frame[contracts.TARGET_COLUMN].mean():.1%}")

    features = frame.drop(columns=[contracts.TARGET_COLUMN])
    target = frame[contracts.TARGET_COLUMN].to_numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=params.test_size, random_state=params.seed, stratify=target
    )
    numeric, categorical = feature_columns(features)
    model = build_pipeline(numeric, categorical, params)
    say(f"fit: logistic regression on {len(x_train)} rows ({len(numeric)} numeric, {len(categorical)} categorical)")
    model.fit(x_train, y_train)

    say(f"evaluate: {len(x_test)} holdout rows, {params.bootstrap_rounds} bootstrap resamples")
    proba = model.predict_proba(x_test)[:, 1]
    evaluation = evaluate(y_test, proba, LABEL_THRESHOLD, params.bootstrap_rounds, params.seed)

    model_dir.mkdir(parents=True, exist_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    model_path = model_dir / contracts.MODEL_FILE
    joblib.dump(model, model_path)
    evaluation_path = output_dir / contracts.EVALUATION_FILE
    evaluation_path.write_text(json.dumps(evaluation, indent=2) + "\n")
    metadata_path = output_dir / TRAINING_METADATA_FILE
    metadata = {
        "data_source": data_source,
        "rows": len(frame),
        "holdout_rows": len(x_test),
        "features": {"numeric": numeric, "categorical": categorical},
        "params": asdict(params),
        "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__, "pandas": pd.__version__},
    }
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    say(f"wrote {model_path} and {evaluation_path}")
    return TrainResult(model, evaluation, model_path, evaluation_path, metadata_path)


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=environ.get("SM_CHANNEL_TRAIN") or None,
                        help="training channel directory (default: SM_CHANNEL_TRAIN; unset: synthetic data)")
    parser.add_argument("--model-dir", type=Path, default=Path(environ.get("SM_MODEL_DIR") or DEFAULT_MODEL_DIR))
    parser.add_argument("--output-dir", type=Path,
                        default=Path(environ.get("SM_OUTPUT_DATA_DIR") or DEFAULT_OUTPUT_DIR))
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
        result = train(args.train, args.model_dir, args.output_dir, params, progress=lambda m: print(m, flush=True))
    except (ValueError, FileNotFoundError) as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        return 2
    print(headline(result.evaluation), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
