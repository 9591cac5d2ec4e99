"""training/train.py: the default run is good enough to approve, and its evaluation is SageMaker's format."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

import contracts
from training import TRAINING_METADATA_FILE
from training.train import TrainParams, evaluate, main, make_dataset, train

METRICS = ("accuracy", "precision", "recall", "f1", "auc")


def _evaluation(output_dir: Path) -> dict:
    return json.loads((output_dir / contracts.EVALUATION_FILE).read_text())


def test_default_training_reaches_holdout_auc_of_at_least_0_85(trained_model_dir: tuple[Path, Path]) -> None:
    auc = _evaluation(trained_model_dir[1])["binary_classification_metrics"]["auc"]["value"]
    assert auc >= 0.85


def test_default_training_is_not_trivially_separable(trained_model_dir: tuple[Path, Path]) -> None:
    # A perfect score would mean the label leaks into the features: the data would teach nothing.
    auc = _evaluation(trained_model_dir[1])["binary_classification_metrics"]["auc"]["value"]
    assert auc < 0.97


def test_evaluation_has_every_metric_with_value_and_standard_deviation(trained_model_dir: tuple[Path, Path]) -> None:
    metrics = _evaluation(trained_model_dir[1])["binary_classification_metrics"]
    for name in METRICS:
        assert set(metrics[name]) == {"value", "standard_deviation"}, name
        assert 0.0 < metrics[name]["value"] <= 1.0, name
        # Bootstrap spread on a 2,000-row holdout: present, and small.
        assert 0.0 < metrics[name]["standard_deviation"] < 0.1, name


def test_evaluation_confusion_matrix_counts_every_holdout_row(trained_model_dir: tuple[Path, Path]) -> None:
    output_dir = trained_model_dir[1]
    matrix = _evaluation(output_dir)["binary_classification_metrics"]["confusion_matrix"]
    holdout_rows = json.loads((output_dir / TRAINING_METADATA_FILE).read_text())["holdout_rows"]
    assert set(matrix) == {"0", "1"} and all(set(row) == {"0", "1"} for row in matrix.values())
    assert sum(n for row in matrix.values() for n in row.values()) == holdout_rows


def test_evaluation_roc_curve_runs_from_origin_to_one(trained_model_dir: tuple[Path, Path]) -> None:
    roc = _evaluation(trained_model_dir[1])["binary_classification_metrics"]["receiver_operating_characteristic_curve"]
    fpr, tpr = roc["false_positive_rates"], roc["true_positive_rates"]
    assert len(fpr) == len(tpr) > 10
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert fpr == sorted(fpr) and tpr == sorted(tpr)


def test_evaluation_metrics_agree_with_the_saved_model(trained_model_dir: tuple[Path, Path]) -> None:
    # Recompute the holdout the way train() splits it, score it with the saved artifact: same numbers.
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    model_dir, output_dir = trained_model_dir
    params = TrainParams()
    frame = make_dataset(params.n_rows, params.seed)
    features, target = frame.drop(columns=[contracts.TARGET_COLUMN]), frame[contracts.TARGET_COLUMN].to_numpy()
    _, x_test, _, y_test = train_test_split(features, target, test_size=params.test_size,
                                            random_state=params.seed, stratify=target)
    model = joblib.load(model_dir / contracts.MODEL_FILE)
    proba = model.predict_proba(x_test)[:, 1]
    metrics = _evaluation(output_dir)["binary_classification_metrics"]
    assert metrics["auc"]["value"] == pytest.approx(roc_auc_score(y_test, proba), abs=1e-6)
    assert metrics["confusion_matrix"]["1"]["1"] == int(((proba >= 0.5) & (y_test == 1)).sum())


def test_evaluate_lays_out_confusion_matrix_as_actual_then_predicted() -> None:
    y_true = np.array([0, 0, 0, 1, 1])
    proba = np.array([0.1, 0.2, 0.7, 0.3, 0.9])
    metrics = evaluate(y_true, proba, bootstrap_rounds=10)["binary_classification_metrics"]
    assert metrics["confusion_matrix"] == {"0": {"0": 2, "1": 1}, "1": {"0": 1, "1": 1}}
    assert metrics["accuracy"]["value"] == pytest.approx(0.6)
    assert metrics["precision"]["value"] == pytest.approx(0.5)
    assert metrics["recall"]["value"] == pytest.approx(0.5)
    assert metrics["auc"]["value"] == pytest.approx(5 / 6, abs=1e-6)


def test_synthetic_dataset_is_deterministic_per_seed() -> None:
    pd.testing.assert_frame_equal(make_dataset(500, 7), make_dataset(500, 7))
    assert not make_dataset(500, 7).equals(make_dataset(500, 8))


def test_synthetic_dataset_has_mixed_customer_columns_and_a_plausible_churn_rate() -> None:
    frame = make_dataset(4000, 1)
    expected = {"tenure_months", "monthly_charges", "total_charges", "contract_type", "payment_method",
                "internet_service", "support_calls", "paperless_billing", "senior_citizen", contracts.TARGET_COLUMN}
    assert expected <= set(frame.columns)
    assert frame["contract_type"].dtype == object and pd.api.types.is_numeric_dtype(frame["monthly_charges"])
    assert 0.15 < frame[contracts.TARGET_COLUMN].mean() < 0.40
    # The relationship the model should learn is there: month-to-month customers churn more.
    by_contract = frame.groupby("contract_type")[contracts.TARGET_COLUMN].mean()
    assert by_contract["month-to-month"] > 2 * by_contract["two-year"]


def test_training_from_a_channel_uses_its_csv_files(tmp_path: Path) -> None:
    channel = tmp_path / "train"
    channel.mkdir()
    frame = make_dataset(1200, 3)[["tenure_months", "contract_type", "support_calls", contracts.TARGET_COLUMN]]
    frame.iloc[:600].to_csv(channel / "part-0.csv", index=False)
    frame.iloc[600:].to_csv(channel / "part-1.csv", index=False)

    result = train(channel, tmp_path / "model", tmp_path / "output", TrainParams(bootstrap_rounds=5))

    assert list(result.model.feature_names_in_) == ["tenure_months", "contract_type", "support_calls"]
    metadata = json.loads(result.metadata_path.read_text())
    assert metadata["data_source"] == str(channel) and metadata["rows"] == 1200


def test_channel_without_the_target_column_fails_naming_it(tmp_path: Path) -> None:
    channel = tmp_path / "train"
    channel.mkdir()
    make_dataset(200, 3).drop(columns=[contracts.TARGET_COLUMN]).to_csv(channel / "data.csv", index=False)
    with pytest.raises(ValueError, match="no 'churn' column"):
        train(channel, tmp_path / "model", tmp_path / "output")


def test_channel_with_non_binary_target_fails_saying_what_it_found(tmp_path: Path) -> None:
    channel = tmp_path / "train"
    channel.mkdir()
    frame = make_dataset(200, 3)
    frame[contracts.TARGET_COLUMN] = frame[contracts.TARGET_COLUMN].map(lambda v: "yes" if v else "no")
    frame.to_csv(channel / "data.csv", index=False)
    with pytest.raises(ValueError, match=r"must hold both 0 and 1.*'no', 'yes'"):
        train(channel, tmp_path / "model", tmp_path / "output")


def test_empty_channel_fails_naming_the_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no \*\.csv files in training channel"):
        train(tmp_path, tmp_path / "model", tmp_path / "output")


def test_invalid_hyperparameters_are_rejected_with_the_allowed_range() -> None:
    with pytest.raises(ValueError, match=r"test_size=0\.9 \(use 0\.05\.\.0\.5\).*c=0\.0"):
        TrainParams(test_size=0.9, c=0.0)


def test_progress_callback_hears_each_phase(tmp_path: Path) -> None:
    messages: list[str] = []
    train(None, tmp_path / "model", tmp_path / "output", TrainParams(n_rows=500, bootstrap_rounds=5),
          progress=messages.append)
    assert [m.split(":", 1)[0] for m in messages[:3]] == ["data", "fit", "evaluate"]


def test_cli_reads_sagemaker_dirs_and_hyperparameter_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", str(tmp_path / "output"))

    # SageMaker passes hyperparameter names verbatim: underscores as well as dashes.
    assert main(["--n_rows", "600", "--bootstrap-rounds", "5"]) == 0

    assert (tmp_path / "model" / contracts.MODEL_FILE).is_file()
    metadata = json.loads((tmp_path / "output" / TRAINING_METADATA_FILE).read_text())
    assert metadata["rows"] == 600
    assert "holdout auc=" in capsys.readouterr().out


def test_cli_reports_bad_data_as_an_error_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--train", str(tmp_path / "absent"), "--model-dir", str(tmp_path / "m"),
                 "--output-dir", str(tmp_path / "o")])
    assert code == 2
    assert "training failed:" in capsys.readouterr().err
