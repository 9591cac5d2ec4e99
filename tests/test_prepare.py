"""training/prepare.py: validated, stratified, disjoint splits of the team's files, or a rejection writing nothing."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

import contracts
from training.data_contract import stratified_split
from training.prepare import Host, main, prepare
from training.sample_data import sample_csv
from training.staging import FAILURE_MESSAGE_BYTES, write_failure_message

SPLITS = contracts.DATA_SPLITS


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def _data(directory: Path, rows: int = 1000, seed: int = 11) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "churn.csv").write_bytes(sample_csv(rows, seed))
    return directory


def _split_files(output: Path) -> list[Path]:
    return sorted(p for p in output.rglob("*") if p.is_file())


def test_splits_are_disjoint_and_together_every_row(tmp_path: Path) -> None:
    source = _data(tmp_path / "in")
    prepare(source, tmp_path / "out")
    written = [_read(tmp_path / "out" / split / f"{split}.csv") for split in SPLITS]
    original = _read(source / "churn.csv")
    assert all(rows[0] == original[0] for rows in written)
    assert sum((Counter(map(tuple, rows[1:])) for rows in written), Counter()) == Counter(map(tuple, original[1:]))


def test_split_indices_are_disjoint_and_cover_every_row() -> None:
    labels = [i % 4 == 0 for i in range(1003)]
    splits = stratified_split([int(v) for v in labels], {"test": 0.2, "validation": 0.15}, seed=3)
    indices = [i for rows in splits.values() for i in rows]
    assert sorted(indices) == list(range(1003))


def test_every_split_keeps_the_churn_rate(tmp_path: Path) -> None:
    result = prepare(_data(tmp_path / "in", rows=2000), tmp_path / "out", test_size=0.2, validation_size=0.1)
    overall = result.report["churn_rate"]
    for split in SPLITS:
        summary = result.report["splits"][split]
        # Stratified: each class is cut by the same fraction, so rates differ by rounding only.
        assert summary["churn_rate"] == pytest.approx(overall, abs=1.0 / summary["rows"]), split
    assert {s: result.report["splits"][s]["rows"] for s in SPLITS} == {"train": 1400, "validation": 200, "test": 400}


def test_the_split_is_reproducible_per_seed(tmp_path: Path) -> None:
    source = _data(tmp_path / "in")
    prepare(source, tmp_path / "a", seed=7)
    prepare(source, tmp_path / "b", seed=7)
    prepare(source, tmp_path / "c", seed=8)
    test_a, test_b, test_c = (_read(tmp_path / d / "test" / "test.csv") for d in "abc")
    assert test_a == test_b and test_a != test_c


def test_splits_hold_only_the_declared_columns_and_the_report_lists_the_rest(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    lines = sample_csv(600, 2).decode().splitlines()
    team = [f"customer_id,{lines[0]},region"] + [f"c{i},{line},north" for i, line in enumerate(lines[1:])]
    (source / "export.csv").write_text("\n".join(team) + "\n")

    result = prepare(source, tmp_path / "out", source_uri="s3://acme/dev/training-data/")

    for split in SPLITS:
        assert _read(result.files[split])[0] == [*contracts.feature_names(), contracts.TARGET_COLUMN]
    report = json.loads(result.files["report"].read_text())
    assert report["ignored_columns"] == ["customer_id", "region"]
    assert report["files"] == ["s3://acme/dev/training-data/export.csv"]
    assert report["rows"] == 600 and report["class_counts"]["1"] + report["class_counts"]["0"] == 600
    assert result.files["report"] == tmp_path / "out" / "report" / "data_report.json"


def test_each_sharded_instance_names_its_files_by_host(tmp_path: Path) -> None:
    config = tmp_path / "resourceconfig.json"
    config.write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}))

    code = main(["--input", str(_data(tmp_path / "in")), "--output", str(tmp_path / "out"),
                 "--resource-config", str(config)])

    assert code == 0
    assert [p.relative_to(tmp_path / "out").as_posix() for p in _split_files(tmp_path / "out")] == [
        "report/data_report-algo-2.json", "test/test-algo-2.csv", "train/train-algo-2.csv",
        "validation/validation-algo-2.csv"]


def test_a_sharded_instance_without_files_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "resourceconfig.json"
    config.write_text(json.dumps({"current_host": "algo-3", "hosts": ["algo-1", "algo-2", "algo-3"]}))
    (tmp_path / "in").mkdir()

    code = main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--resource-config", str(config), "--source-uri", "s3://acme/dev/training-data/"])

    assert code == contracts.EXIT_DATA_REJECTED
    assert ("s3://acme/dev/training-data/: no CSV files (instance algo-3 of 3, the data sharded by S3 key: give the "
            "prefix at least as many files as processing instances") in capsys.readouterr().err


def test_rejection_exits_4_writes_the_message_for_sagemaker_and_no_split(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _data(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["--input", str(source), "--output", str(out)]) == 0  # an earlier run's splits
    text = (source / "churn.csv").read_text().replace(",fiber_optic,", ",fiber_optic,lots,", 1)
    (source / "churn.csv").write_text(text)

    code = main(["--input", str(source), "--output", str(out), "--failure-file", str(tmp_path / "message"),
                 "--source-uri", "s3://acme/dev/training-data/"])

    assert code == contracts.EXIT_DATA_REJECTED
    message = (tmp_path / "message").read_text()
    assert message.startswith(f"{contracts.DATA_REJECTED_MARKER} s3://acme/dev/training-data/churn.csv: ")
    assert "do not have the header's 11 fields" in message and "Fix: " in message
    assert capsys.readouterr().err.strip() == message
    assert _split_files(out) == []


def test_bad_split_sizes_are_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--test-size", "0.45",
              "--validation-size", "0.4"])
    assert exited.value.code == 2
    assert "keep their sum below 0.8" in capsys.readouterr().err


def test_host_defaults_to_the_only_one_without_a_resource_config(tmp_path: Path) -> None:
    assert Host.from_resource_config(tmp_path / "absent.json") == Host("algo-1", 1)


def test_failure_message_is_cut_to_what_sagemaker_keeps(tmp_path: Path) -> None:
    path = tmp_path / "output" / "message"
    write_failure_message(path, "data rejected: " + "é" * 2000)
    data = path.read_bytes()
    assert len(data) <= FAILURE_MESSAGE_BYTES and data.decode("utf-8").endswith("...")
