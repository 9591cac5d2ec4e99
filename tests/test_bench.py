"""`make bench`: its measurements against a real gunicorn model server and the emulator, and its report.

The full bench runs the demo first (seconds); these tests run each measurement with a few repetitions, so
they check what is measured and how it is reported, not how fast this machine is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest

import contracts
from local import bench
from local.model_server import ModelServer, start_model_server
from training.register import build_model_archive

TINY = bench.Plan(batch_repeats={1: 2, 100: 2, 10_000: 1}, latency_requests=16, approval_events=2)


@pytest.fixture(scope="module")
def served_model(trained_model_dir: tuple[Path, Path],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ModelServer]]:
    archive = build_model_archive(trained_model_dir[0], tmp_path_factory.mktemp("bench-archive"))
    with start_model_server(archive, workers=2) as server:
        yield joblib.load(trained_model_dir[0] / contracts.MODEL_FILE), server


def test_percentile_is_the_nearest_rank() -> None:
    hundred = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose

    assert bench.percentile(hundred, 50) == 50
    assert bench.percentile(hundred, 99) == 99
    assert bench.percentile(hundred, 100) == 100
    assert bench.percentile([float(v) for v in range(1, 31)], 50) == 15
    assert bench.percentile([7.0], 99) == 7.0


def test_batches_compare_raw_and_served_for_1_100_and_10000_rows(served_model: tuple[Any, ModelServer]) -> None:
    model, server = served_model

    results = bench.bench_batches(model, server.url, TINY)

    assert [r["rows"] for r in results] == [1, 100, 10_000]
    for r in results:
        assert r["repeats"] == TINY.batch_repeats[r["rows"]]
        assert r["raw_ms"] > 0 and r["served_ms"] > 0
        assert r["served_over_raw"] == pytest.approx(r["served_ms"] / r["raw_ms"])
        assert r["raw_rows_per_s"] == pytest.approx(r["rows"] / (r["raw_ms"] / 1000))
        assert r["served_rows_per_s"] == pytest.approx(r["rows"] / (r["served_ms"] / 1000))


def test_single_row_latency_has_p50_and_p99_at_concurrency_1_and_8(served_model: tuple[Any, ModelServer]) -> None:
    _, server = served_model

    results = bench.bench_latency(server.url, TINY)

    assert [r["concurrency"] for r in results] == [1, 8]
    for r in results:
        assert r["requests"] == TINY.latency_requests
        assert 0 < r["p50_ms"] <= r["p99_ms"]
        assert r["rows_per_s"] > 0


def test_approval_bench_times_one_handler_decision_per_event_against_the_emulator(
    trained_model_dir: tuple[Path, Path], tmp_path: Path
) -> None:
    evaluation = trained_model_dir[1] / contracts.EVALUATION_FILE

    result = bench.bench_approval(evaluation, TINY, tmp_path)

    assert result["events"] == TINY.approval_events
    # The registry's answer after each decision, counted: every event got one.
    assert sum(result["decisions"].values()) == TINY.approval_events
    assert set(result["decisions"]) <= {contracts.STATUS_APPROVED, contracts.STATUS_REJECTED}
    assert 0 < result["p50_ms"] <= result["p99_ms"]


REPORT: dict[str, Any] = {
    "machine": {"nproc": 2, "cpu_model": "Test CPU", "python": "3.11.7", "platform": "Linux",
                "load_average_1_5_15": [0.5, 0.4, 0.3], "load_average_at_end": [0.6, 0.5, 0.4]},
    "model_server_workers": 2,
    "plan": {},
    "batch": [
        {"rows": 1, "repeats": 3, "raw_ms": 1.5, "served_ms": 6.0, "served_over_raw": 4.0,
         "raw_rows_per_s": 667.0, "served_rows_per_s": 167.0},
        {"rows": 10_000, "repeats": 1, "raw_ms": 8.0, "served_ms": 120.0, "served_over_raw": 15.0,
         "raw_rows_per_s": 1_250_000.0, "served_rows_per_s": 83_333.0},
    ],
    "latency": [
        {"concurrency": 1, "requests": 800, "p50_ms": 5.25, "p99_ms": 17.75, "rows_per_s": 150.0},
        {"concurrency": 8, "requests": 800, "p50_ms": 45.5, "p99_ms": 61.25, "rows_per_s": 170.0},
    ],
    "approval": {"events": 30, "decisions": {"Approved": 30}, "p50_ms": 19.5, "p99_ms": 23.5, "mean_ms": 20.0},
    "demo_stages": [{"name": "Build", "seconds": 1.8}, {"name": "Deploy", "seconds": 1.3}],
    "demo_total_seconds": 3.1,
    "demo_pipeline_steps": [{"name": "Prepare", "status": "Succeeded", "seconds": 0.4},
                            {"name": "Train", "status": "Succeeded", "seconds": 2.25}],
}


def _line(text: str, start: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith(start)]
    return line


def test_report_table_shows_ratio_latency_throughput_approval_and_stage_times() -> None:
    text = bench.format_report(REPORT)

    assert "2 CPUs, Test CPU" in text and "[0.5, 0.4, 0.3] at start" in text
    assert _line(text, "10,000").split() == ["10,000", "8.00", "ms", "120.00", "ms", "15.0x", "1,250,000", "83,333"]
    assert _line(text, "concurrency 8").split() == ["concurrency", "8", "800", "45.50", "ms", "61.25", "ms", "170"]
    assert "approval handler: 30 events, p50 19.5 ms, p99 23.5 ms" in text
    assert "demo stages: Build 1.8s, Deploy 1.3s; total 3.1s" in text
    assert "demo pipeline steps (Build stage): Prepare 0.4s, Train 2.2s" in text


def test_main_prints_the_table_and_writes_the_same_numbers_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # run() (demo + measurements) is covered above piece by piece; here only main's output contract.
    monkeypatch.setattr(bench, "run", lambda plan, workdir, say: REPORT)
    output = tmp_path / "bench.json"

    assert bench.main(["--output", str(output), "--quick"]) == 0

    assert json.loads(output.read_text()) == REPORT
    assert bench.format_report(REPORT) in capsys.readouterr().out
