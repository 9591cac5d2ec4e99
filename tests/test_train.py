"""training/train.py: the default run is good enough to approve, its evaluation is SageMaker's format, it reads
channels through the data contract, and a failed run leaves nothing a later step could pick up."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

import contracts
from training import TRAINING_METADATA_FILE
from training import train as train_module
from training.data_contract import DataRejected, stratified_split
from training.register import INFERENCE_SOURCE, build_model_archive
from training.sample_data import sample_csv
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

    model_dir, output_dir = trained_model_dir
    params = TrainParams()
    frame = make_dataset(params.n_rows, params.seed)
    target = frame[contracts.TARGET_COLUMN].to_numpy()
    holdout = stratified_split(target.tolist(), {"holdout": params.test_size}, params.seed)["holdout"]
    x_test, y_test = frame.drop(columns=[contracts.TARGET_COLUMN]).iloc[holdout], target[holdout]
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


def _channel(directory: Path, rows: int = 1200, seed: int = 3, parts: int = 1) -> Path:
    """A channel of the sample table split over `parts` files, with an extra id column the contract ignores."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = sample_csv(rows, seed).decode().splitlines()
    header, body = lines[0], lines[1:]
    size = -(-len(body) // parts)
    for part in range(parts):
        chunk = body[part * size:(part + 1) * size]
        numbered = [f"{part}-{i},{line}" for i, line in enumerate(chunk)]
        (directory / f"part-{part}.csv").write_text("\n".join([f"customer_id,{header}", *numbered]) + "\n")
    return directory


def test_training_from_a_channel_uses_all_its_csv_files(tmp_path: Path) -> None:
    channel = _channel(tmp_path / "train", parts=2)

    result = train(channel, tmp_path / "model", tmp_path / "output", TrainParams(bootstrap_rounds=5))

    assert list(result.model.feature_names_in_) == list(contracts.feature_names())
    metadata = json.loads(result.metadata_path.read_text())
    assert metadata["data_source"] == str(channel) and metadata["rows"] == 1200
    assert metadata["ignored_columns"] == ["customer_id"]


def test_column_kinds_come_from_the_declaration(tmp_path: Path) -> None:
    # contract_type written as digits is still a category; has_partner (0/1) is still numeric.
    channel = tmp_path / "train"
    channel.mkdir()
    frame = make_dataset(1200, 3)
    months = {"month-to-month": 1, "one-year": 12, "two-year": 24}
    frame["contract_type"] = frame["contract_type"].map(lambda name: months[name])
    frame.to_csv(channel / "data.csv", index=False)

    model = train(channel, tmp_path / "model", tmp_path / "output", TrainParams(bootstrap_rounds=5)).model

    transformers = {name: list(columns) for name, _, columns in model.named_steps["preprocess"].transformers_}
    assert transformers["numeric"] == list(contracts.feature_names(contracts.NUMERIC))
    assert transformers["categorical"] == list(contracts.feature_names(contracts.CATEGORICAL))
    encoder = model.named_steps["preprocess"].named_transformers_["categorical"].named_steps["encode"]
    assert list(encoder.categories_[0]) == ["1", "12", "24"]


def test_validation_channel_is_what_the_evaluation_scores(tmp_path: Path) -> None:
    train_dir = _channel(tmp_path / "train", rows=900, seed=3)
    validation_dir = _channel(tmp_path / "validation", rows=300, seed=4)

    result = train(train_dir, tmp_path / "model", tmp_path / "output", TrainParams(bootstrap_rounds=5),
                   validation_dir=validation_dir)

    matrix = result.evaluation["binary_classification_metrics"]["confusion_matrix"]
    assert sum(n for row in matrix.values() for n in row.values()) == 300
    metadata = json.loads(result.metadata_path.read_text())
    assert (metadata["rows"], metadata["holdout_rows"]) == (900, 300)
    assert metadata["evaluated_on"] == f"validation channel {validation_dir}"


def test_model_dir_holds_what_registers_model_archive_holds(tmp_path: Path) -> None:
    # SageMaker tars SM_MODEL_DIR into model.tar.gz: it must carry the files register.py's archive carries.
    model_dir = tmp_path / "model"
    train(None, model_dir, tmp_path / "output", TrainParams(n_rows=500, bootstrap_rounds=5))

    in_model_dir = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    with tarfile.open(build_model_archive(model_dir, tmp_path)) as archive:
        assert in_model_dir == sorted(archive.getnames()) == ["code/inference.py", contracts.MODEL_FILE]
    assert (model_dir / "code" / contracts.INFERENCE_SCRIPT).read_bytes() == INFERENCE_SOURCE.read_bytes()


def _outputs(*directories: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for d in directories if d.exists() for p in d.rglob("*") if p.is_file())


def test_a_run_rejected_for_its_data_leaves_no_model_and_no_evaluation(tmp_path: Path) -> None:
    model_dir, output_dir = tmp_path / "model", tmp_path / "output"
    train(None, model_dir, output_dir, TrainParams(n_rows=500, bootstrap_rounds=5))
    assert _outputs(model_dir, output_dir)  # an earlier run's files, which a later register would pick up

    bad = _channel(tmp_path / "train")
    lines = (bad / "part-0.csv").read_text().splitlines()
    cells = lines[5].split(",")
    cells[1] = "ten months"  # after customer_id: tenure_months
    lines[5] = ",".join(cells)
    (bad / "part-0.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataRejected, match=r"column 'tenure_months': 1 cell\(s\) are not numbers"):
        train(bad, model_dir, output_dir, TrainParams(bootstrap_rounds=5))

    assert _outputs(model_dir, output_dir) == []


def test_a_run_that_fails_after_writing_the_model_leaves_no_model(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_module.shutil, "copyfile", disk_full)  # after joblib.dump, before the rest
    with pytest.raises(OSError, match="No space left"):
        train(None, tmp_path / "model", tmp_path / "output", TrainParams(n_rows=500, bootstrap_rounds=5))

    assert _outputs(tmp_path / "model", tmp_path / "output") == []


def test_channel_without_the_target_column_fails_naming_it(tmp_path: Path) -> None:
    channel = tmp_path / "train"
    channel.mkdir()
    make_dataset(200, 3).drop(columns=[contracts.TARGET_COLUMN]).to_csv(channel / "data.csv", index=False)
    with pytest.raises(DataRejected, match="the target column is missing from the header") as caught:
        train(channel, tmp_path / "model", tmp_path / "output")
    assert caught.value.file == str(channel / "data.csv")


def test_channel_with_non_binary_target_fails_saying_what_it_found(tmp_path: Path) -> None:
    channel = tmp_path / "train"
    channel.mkdir()
    frame = make_dataset(200, 3)
    frame[contracts.TARGET_COLUMN] = frame[contracts.TARGET_COLUMN].map(lambda v: "yes" if v else "no")
    frame.to_csv(channel / "data.csv", index=False)
    with pytest.raises(DataRejected, match=r"200 row\(s\) have a label other than 0 or 1: '(yes|no)' \(row 2\)"):
        train(channel, tmp_path / "model", tmp_path / "output")


def test_empty_channel_fails_naming_the_directory(tmp_path: Path) -> None:
    with pytest.raises(DataRejected, match="no CSV files") as caught:
        train(tmp_path, tmp_path / "model", tmp_path / "output")
    assert caught.value.file == str(tmp_path)


def test_too_small_a_channel_to_hold_out_an_evaluation_is_rejected(tmp_path: Path) -> None:
    channel = _channel(tmp_path / "train", rows=60)
    with pytest.raises(DataRejected, match=r"only 60 data row\(s\); training needs at least 100"):
        train(channel, tmp_path / "model", tmp_path / "output")


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


def test_cli_reads_sagemaker_channels_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(_channel(tmp_path / "train", rows=900)))
    monkeypatch.setenv("SM_CHANNEL_VALIDATION", str(_channel(tmp_path / "validation", rows=300, seed=4)))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", str(tmp_path / "output"))

    assert main(["--bootstrap_rounds", "5", "--max_iter", "200"]) == 0

    metadata = json.loads((tmp_path / "output" / TRAINING_METADATA_FILE).read_text())
    assert (metadata["rows"], metadata["holdout_rows"], metadata["params"]["max_iter"]) == (900, 300, 200)
    assert (tmp_path / "model" / "code" / contracts.INFERENCE_SCRIPT).is_file()


def test_cli_exits_4_on_rejected_data_with_the_message_in_sagemakers_failure_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SM_OUTPUT_DIR", str(tmp_path / "sm-output"))
    code = main(["--train", str(tmp_path / "absent"), "--model-dir", str(tmp_path / "m"),
                 "--output-dir", str(tmp_path / "o")])

    assert code == contracts.EXIT_DATA_REJECTED
    message = (tmp_path / "sm-output" / "failure").read_text()
    assert message.startswith(f"{contracts.DATA_REJECTED_MARKER} {tmp_path / 'absent'}: no such file or directory")
    err = capsys.readouterr().err
    assert err.strip() == message and "Traceback" not in err


def test_cli_reports_bad_hyperparameters_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--c", "0", "--model-dir", str(tmp_path / "m"), "--output-dir", str(tmp_path / "o")])
    assert code == 2
    assert "training failed: invalid hyperparameters: c=0.0" in capsys.readouterr().err
