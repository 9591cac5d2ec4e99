"""training/evaluate.py: the test split scored in train's format, from the archive the Train step produces;
and the three job scripts run on the scikit-learn image's Python with only its packages."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pandas as pd
import pytest

import contracts
from training import model_build
from training.evaluate import ModelUnusable, evaluate_model, load_model, main
from training.prepare import prepare
from training.sample_data import sample_csv
from training.train import TrainParams, train

ROOT = Path(__file__).resolve().parent.parent
IMAGE_PYTHON = ROOT / ".venv-image" / "bin" / "python"


def _splits(tmp_path: Path, rows: int = 1500) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "churn.csv").write_bytes(sample_csv(rows, 21))
    prepare(data, tmp_path / "splits")
    return tmp_path / "splits"


def _archive(model_dir: Path, destination: Path) -> Path:
    """model.tar.gz as SageMaker makes it from SM_MODEL_DIR: the directory's contents at the root."""
    archive = destination / contracts.MODEL_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    return archive


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(splits, model dir, train output dir) of one run on prepared splits."""
    root = tmp_path_factory.mktemp("evaluate")
    splits = _splits(root)
    train(splits / "train", root / "model", root / "output", TrainParams(bootstrap_rounds=20),
          validation_dir=splits / "validation")
    return splits, root / "model", root / "output"


def test_evaluation_of_the_validation_split_is_exactly_what_train_wrote(trained: tuple[Path, Path, Path],
                                                                        tmp_path: Path) -> None:
    splits, model_dir, train_output = trained
    result = evaluate_model(model_dir, splits / "validation", tmp_path, bootstrap_rounds=20)
    assert result.evaluation_path.read_bytes() == (train_output / contracts.EVALUATION_FILE).read_bytes()


def test_model_archive_and_model_dir_give_the_same_evaluation(trained: tuple[Path, Path, Path],
                                                              tmp_path: Path) -> None:
    splits, model_dir, _ = trained
    archive = _archive(model_dir, tmp_path)
    (tmp_path / "in").mkdir()
    shutil.copy(archive, tmp_path / "in")  # the pipeline hands a folder holding Train's model.tar.gz
    by_dir = evaluate_model(model_dir, splits / "test", tmp_path / "a").evaluation
    by_archive = evaluate_model(archive, splits / "test", tmp_path / "b").evaluation
    by_folder = evaluate_model(tmp_path / "in", splits / "test", tmp_path / "c").evaluation
    assert by_dir == by_archive == by_folder
    assert set(by_dir["binary_classification_metrics"]) >= {"auc", "accuracy", "confusion_matrix"}


def test_cli_writes_evaluation_json_under_output(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    splits, model_dir, _ = trained
    assert main(["--model", str(model_dir), "--test", str(splits / "test"), "--output", str(tmp_path)]) == 0
    evaluation = json.loads((tmp_path / contracts.EVALUATION_FILE).read_text())
    rows = sum(n for row in evaluation["binary_classification_metrics"]["confusion_matrix"].values()
               for n in row.values())
    assert rows == 300  # the test split: 20% of 1,500 rows
    assert "test auc=" in capsys.readouterr().out


def test_archive_without_a_model_is_refused_by_name(tmp_path: Path) -> None:
    archive = tmp_path / contracts.MODEL_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(ROOT / "training" / contracts.INFERENCE_SCRIPT, arcname="code/inference.py")
    with pytest.raises(ModelUnusable, match=r"has no model\.joblib at its root"):
        load_model(archive)


def test_missing_model_exits_1_naming_what_to_pass(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    splits, _, _ = trained
    code = main(["--model", str(tmp_path / "none"), "--test", str(splits / "test"), "--output", str(tmp_path / "o"),
                 "--failure-file", str(tmp_path / "message")])
    assert code == 1
    assert "evaluation failed:" in capsys.readouterr().err
    assert "pass the Train step's model.tar.gz" in (tmp_path / "message").read_text()


def test_model_of_another_table_is_refused(tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(pd.DataFrame({"age": [1, 2, 3, 4], "tenure": [0, 1, 0, 1]}), [0, 1, 0, 1])
    joblib.dump(model, tmp_path / contracts.MODEL_FILE)
    (tmp_path / "test").mkdir()
    with pytest.raises(ModelUnusable, match=r"trained on columns \['age', 'tenure'\].*retrain it"):
        evaluate_model(tmp_path, tmp_path / "test", tmp_path / "out")


def test_rejected_test_data_exits_4_and_leaves_no_evaluation(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    splits, model_dir, _ = trained
    test_dir = tmp_path / "test"
    shutil.copytree(splits / "test", test_dir)
    out = tmp_path / "out"
    assert main(["--model", str(model_dir), "--test", str(test_dir), "--output", str(out)]) == 0
    csv_file = test_dir / "test.csv"
    csv_file.write_text(csv_file.read_text().replace(",0\n", ",no\n", 1))

    code = main(["--model", str(model_dir), "--test", str(test_dir), "--output", str(out),
                 "--failure-file", str(tmp_path / "message")])

    assert code == contracts.EXIT_DATA_REJECTED
    assert not (out / contracts.EVALUATION_FILE).exists()
    assert (tmp_path / "message").read_text().startswith(f"{contracts.DATA_REJECTED_MARKER} {csv_file}, column 'churn'")
    assert "label other than 0 or 1: 'no'" in capsys.readouterr().err


# --- On the image's Python ----------------------------------------------------------------------------
def _sourcedir(destination: Path) -> Path:
    """The sourcedir.tar.gz the build uploads, unpacked as the training toolkit and the processing entrypoint do."""
    destination.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(model_build.package_source())) as archive:
        archive.extractall(destination, filter="data")
    return destination


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # Only the image's packages: the job's environment, not this venv's.
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(env.pop("code")), **env}
    return subprocess.run([str(IMAGE_PYTHON), *args], cwd=cwd, env=base, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.skipif(not IMAGE_PYTHON.exists(),
                    reason=".venv-image is absent: build it with `make image-env` (local/image_env.py)")
def test_prepare_train_evaluate_run_on_the_image_python_with_only_its_packages(tmp_path: Path) -> None:
    code = _sourcedir(tmp_path / "code")
    version = _run(["-c", "import sys; print(sys.version_info[:2])"], tmp_path, code=str(code))
    assert version.stdout.strip() == "(3, 10)"
    data = tmp_path / "data"
    data.mkdir()
    (data / "churn.csv").write_bytes(sample_csv(600, 8))

    prepared = _run(["-m", "training.prepare", "--input", str(data), "--output", str(tmp_path / "processing")],
                    tmp_path, code=str(code))
    assert prepared.returncode == 0, prepared.stderr
    # Script mode, as the training toolkit runs it: the entry script by path, from the code directory.
    trained = _run(["training/train.py", "--bootstrap_rounds", "10"], code, code=str(code),
                   SM_CHANNEL_TRAIN=str(tmp_path / "processing" / "train"),
                   SM_CHANNEL_VALIDATION=str(tmp_path / "processing" / "validation"),
                   SM_MODEL_DIR=str(tmp_path / "model"), SM_OUTPUT_DATA_DIR=str(tmp_path / "output"),
                   SM_OUTPUT_DIR=str(tmp_path / "sm-output"))
    assert trained.returncode == 0, trained.stderr
    archive = _archive(tmp_path / "model", tmp_path)
    evaluated = _run(["-m", "training.evaluate", "--model", str(archive), "--test",
                      str(tmp_path / "processing" / "test"), "--output", str(tmp_path / "evaluation")],
                     tmp_path, code=str(code))
    assert evaluated.returncode == 0, evaluated.stderr

    auc = json.loads((tmp_path / "evaluation" / contracts.EVALUATION_FILE).read_text())[
        "binary_classification_metrics"]["auc"]["value"]
    assert auc > 0.8


@pytest.mark.skipif(not IMAGE_PYTHON.exists(),
                    reason=".venv-image is absent: build it with `make image-env` (local/image_env.py)")
def test_prepare_rejection_on_the_image_python_exits_4(tmp_path: Path) -> None:
    code = _sourcedir(tmp_path / "code")
    (tmp_path / "data").mkdir()
    done = _run(["-m", "training.prepare", "--input", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
                 "--failure-file", str(tmp_path / "message")], tmp_path, code=str(code))
    assert done.returncode == contracts.EXIT_DATA_REJECTED
    assert (tmp_path / "message").read_text().startswith(f"{contracts.DATA_REJECTED_MARKER} {tmp_path / 'data'}: ")
