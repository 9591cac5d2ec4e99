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

TINY = bench.Plan(batch_repeats={1: 2, 100: 2, 10_000: 1}, latency_requests=16, approval_events=2)


@pytest.fixture(scope="module")
def served_model(trained_model_dir: tuple[Path, Path],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, bench.Servers]]:
    """The model server for the trained model.tar.gz, the predict-only app and the echo app."""
    with bench.serving(trained_model_dir[0], tmp_path_factory.mktemp("bench"), workers=2) as servers:
        yield joblib.load(trained_model_dir[0] / contracts.MODEL_FILE), servers


def test_percentile_is_the_nearest_rank() -> None:
    hundred = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose

    assert bench.percentile(hundred, 50) == 50
    assert bench.percentile(hundred, 99) == 99
    assert bench.percentile(hundred, 100) == 100
    assert bench.percentile([float(v) for v in range(1, 31)], 50) == 15
    assert bench.percentile([7.0], 99) == 7.0


def test_side_by_side_visits_every_way_once_per_round_in_changing_orders() -> None:
    visits: list[str] = []
    calls = {name: (lambda name=name: visits.append(name)) for name in ("a", "b", "c", "d")}

    samples = bench.side_by_side(calls, repeats=40)

    rounds = [visits[i:i + 4] for i in range(4, len(visits), 4)]  # after one warm-up call each
    assert all(sorted(r) == ["a", "b", "c", "d"] for r in rounds)
    # No way always follows the same one: every way is first in some round.
    assert {r[0] for r in rounds} == {"a", "b", "c", "d"}
    assert {name: len(times) for name, times in samples.items()} == {"a": 40, "b": 40, "c": 40, "d": 40}


def test_batches_compare_raw_in_process_floors_and_served_for_1_100_and_10000_rows(
        served_model: tuple[Any, bench.Servers]) -> None:
    model, servers = served_model

    results = bench.bench_batches(model, servers, TINY)

    assert [r["rows"] for r in results] == [1, 100, 10_000]
    for r in results:
        assert r["repeats"] == TINY.batch_repeats[r["rows"]]
        assert all(r[f"{way}_ms"] > 0 for way in bench.BATCH_WAYS)
        assert r["served_over_raw"] == pytest.approx(r["served_json_ms"] / r["raw_ms"])
        assert r["served_csv_over_raw"] == pytest.approx(r["served_csv_ms"] / r["raw_ms"])
        assert r["in_process_over_raw"] == pytest.approx(r["in_process_json_ms"] / r["raw_ms"])
        assert r["served_over_predict_only"] == pytest.approx(r["served_json_ms"] / r["predict_only_ms"])
        assert r["served_rows_per_s"] == pytest.approx(r["rows"] / (r["served_json_ms"] / 1000))


def test_each_server_is_checked_before_it_is_timed(served_model: tuple[Any, bench.Servers]) -> None:
    model, servers = served_model
    wrong = bench.Servers(served=servers.served, predict_only=servers.predict_only, echo=servers.predict_only)

    with pytest.raises(RuntimeError, match="an echo that differs from the request"):
        bench.bench_batches(model, wrong, TINY)


def test_single_row_latency_has_p50_and_p99_per_app_at_concurrency_1_and_8(
        served_model: tuple[Any, bench.Servers]) -> None:
    _, servers = served_model

    results = bench.bench_latency(servers, TINY)

    assert [r["concurrency"] for r in results] == [1, 8]
    for r in results:
        assert r["requests"] == TINY.latency_requests
        for app in bench.LATENCY_APPS:
            assert 0 < r[app]["p50_ms"] <= r[app]["p99_ms"]
            assert r[app]["rows_per_s"] > 0
        assert r["served_over_predict_only_p50"] == pytest.approx(r["served"]["p50_ms"] / r["predict_only"]["p50_ms"])


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
        {"rows": 1, "repeats": 3, "raw_ms": 1.5, "in_process_json_ms": 1.8, "in_process_csv_ms": 1.7, "echo_ms": 0.4,
         "predict_only_ms": 2.0, "served_json_ms": 2.4, "served_csv_ms": 2.3, "in_process_over_raw": 1.2,
         "in_process_csv_over_raw": 1.13, "served_over_raw": 1.6, "served_csv_over_raw": 1.53,
         "predict_only_over_raw": 1.33, "served_over_predict_only": 1.2, "raw_rows_per_s": 667.0,
         "served_rows_per_s": 417.0},
        {"rows": 10_000, "repeats": 1, "raw_ms": 8.0, "in_process_json_ms": 17.0, "in_process_csv_ms": 15.5,
         "echo_ms": 2.5, "predict_only_ms": 10.0, "served_json_ms": 20.0, "served_csv_ms": 17.6,
         "in_process_over_raw": 2.125, "in_process_csv_over_raw": 1.94, "served_over_raw": 2.5,
         "served_csv_over_raw": 2.2, "predict_only_over_raw": 1.25, "served_over_predict_only": 2.0,
         "raw_rows_per_s": 1_250_000.0, "served_rows_per_s": 500_000.0},
    ],
    "latency": [
        {"concurrency": 1, "requests": 800, "served_over_predict_only_p50": 1.25,
         "served": {"p50_ms": 2.5, "p99_ms": 7.75, "rows_per_s": 380.0},
         "predict_only": {"p50_ms": 2.0, "p99_ms": 6.5, "rows_per_s": 470.0},
         "echo": {"p50_ms": 0.35, "p99_ms": 1.25, "rows_per_s": 2600.0}},
        {"concurrency": 8, "requests": 800, "served_over_predict_only_p50": 1.1,
         "served": {"p50_ms": 22.0, "p99_ms": 61.25, "rows_per_s": 340.0},
         "predict_only": {"p50_ms": 20.0, "p99_ms": 55.5, "rows_per_s": 380.0},
         "echo": {"p50_ms": 1.5, "p99_ms": 6.0, "rows_per_s": 2000.0}},
    ],
    "approval": {"events": 30, "decisions": {"Approved": 30}, "p50_ms": 19.5, "p99_ms": 23.5, "mean_ms": 20.0},
    "demo_wall_seconds": 16.25,
    "demo_stages": [{"name": "Build", "seconds": 1.8}, {"name": "Deploy", "seconds": 1.3}],
    "demo_total_seconds": 3.1,
    "demo_pipeline_steps": [{"name": "Prepare", "status": "Succeeded", "seconds": 0.4},
                            {"name": "Train", "status": "Succeeded", "seconds": 2.25}],
}


def _lines(text: str, start: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip().startswith(start)]


def test_report_tables_show_times_ratios_latency_approval_and_stage_times() -> None:
    text = bench.format_report(REPORT)

    assert "2 CPUs, Test CPU" in text and "[0.5, 0.4, 0.3] at start" in text
    times, ratios = _lines(text, "10,000")
    assert times.split() == ["10,000", "8.00", "17.00", "15.50", "2.50", "10.00", "20.00", "17.60"]
    assert ratios.split() == ["10,000", "2.12x", "2.50x", "2.20x", "1.25x", "2.00x", "500,000"]
    served, predict_only, echo = _lines(text, "concurrency 8")
    assert served.split() == ["concurrency", "8", "800", "served", "22.00", "ms", "61.25", "ms", "340"]
    assert predict_only.split()[3:] == ["predict-only", "20.00", "ms", "55.50", "ms", "380"]
    assert echo.split()[3:] == ["echo", "1.50", "ms", "6.00", "ms", "2,000"]
    assert "served p50 / predict-only p50: 1.25x" in text
    assert "approval handler: 30 events, p50 19.5 ms, p99 23.5 ms" in text
    assert "make demo (python -m local.demo, installed): 16.2s wall from start to exit, OVER the 15 s goal" in text
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
