"""`make bench`: what serving and the approval gate cost on this machine, measured over loopback.

    python -m local.bench --output bench-results.json [--quick]

In one run: the demo (its stage times); the trained model's raw predict_proba in-process against the same
rows through the model server's /invocations (1, 100 and 10,000-row requests: medians, served/raw ratio,
rows per second); single-row request latency (p50/p99) at concurrency 1 and 8; and the approval handler's
decision time per event against the emulator. Loops are bounded by request counts, not by time, and every
server is on loopback. Prints a table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import contracts
from local.emulator import Emulator
from local.runner import (
    DEFAULT_WORKDIR,
    LOCAL_STACK,
    Console,
    DemoOptions,
    DemoRun,
    lambda_environment,
    load_profile,
    package_state_change_event,
    sample_rows,
)

BATCH_SIZES = (1, 100, 10_000)
CONCURRENCY = (1, 8)


@dataclass(frozen=True)
class Plan:
    """How many repetitions each measurement takes (bounded loops)."""

    batch_repeats: Mapping[int, int]
    latency_requests: int
    """Single-row requests per concurrency level, shared by the concurrent clients."""
    approval_events: int


FULL = Plan(batch_repeats={1: 300, 100: 100, 10_000: 10}, latency_requests=800, approval_events=30)
QUICK = Plan(batch_repeats={1: 20, 100: 10, 10_000: 2}, latency_requests=40, approval_events=5)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    # The smallest value with at least q% of the sample at or below it: rank ceil(q/100 * n).
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) / 100)))
    return ordered[rank - 1]


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    """Seconds per call, after one untimed warm-up call."""
    call()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def post(url: str, body: bytes, content_type: str = "text/csv") -> bytes:
    request = urllib.request.Request(  # noqa: S310 - loopback model server we started
        f"{url}/invocations", data=body, method="POST",
        headers={"Content-Type": content_type, "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
        return response.read()


def csv_body(rows: Sequence[Mapping[str, Any]]) -> bytes:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(row[c]) for c in header) for row in rows]
    return ("\n".join(lines) + "\n").encode()


# --- Measurements -------------------------------------------------------------------------------------
def bench_batches(model: Any, url: str, plan: Plan) -> list[dict[str, Any]]:
    import pandas as pd

    pool = sample_rows(max(BATCH_SIZES), seed=11)
    results = []
    for size in BATCH_SIZES:
        rows = pool[:size]
        frame = pd.DataFrame(rows)
        body = csv_body(rows)
        answer = json.loads(post(url, body))["predictions"]
        if len(answer) != size:
            raise RuntimeError(f"model server answered {len(answer)} predictions for {size} rows")
        repeats = plan.batch_repeats[size]
        raw = statistics.median(timed(lambda frame=frame: model.predict_proba(frame), repeats))
        served = statistics.median(timed(lambda body=body: post(url, body), repeats))
        results.append({
            "rows": size, "repeats": repeats,
            "raw_ms": raw * 1000, "served_ms": served * 1000, "served_over_raw": served / raw,
            "raw_rows_per_s": size / raw, "served_rows_per_s": size / served,
        })
    return results


def bench_latency(url: str, plan: Plan) -> list[dict[str, Any]]:
    bodies = [csv_body([row]) for row in sample_rows(50, seed=13)]
    results = []
    for concurrency in CONCURRENCY:
        total = plan.latency_requests

        def one(index: int) -> float:
            started = time.perf_counter()
            post(url, bodies[index % len(bodies)])
            return time.perf_counter() - started

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(concurrency * 2)))  # warm-up: connections, worker imports
            started = time.perf_counter()
            samples = list(pool.map(one, range(total)))
            wall = time.perf_counter() - started
        results.append({
            "concurrency": concurrency, "requests": total,
            "p50_ms": percentile(samples, 50) * 1000, "p99_ms": percentile(samples, 99) * 1000,
            "rows_per_s": total / wall,
        })
    return results


def bench_approval(evaluation: Path, plan: Plan, workdir: Path) -> dict[str, Any]:
    """Decision time per "Model Package State Change" event, handler in-process, registry in the emulator."""
    profile = load_profile().approval
    with Emulator.start(log_path=workdir / "logs" / "bench-emulator.log") as emulator:
        boot = emulator.bootstrap(stack=LOCAL_STACK)
        s3 = emulator.client("s3")
        sagemaker = emulator.client("sagemaker")
        key = "bench/evaluation.json"
        s3.put_object(Bucket=boot.bucket, Key=key, Body=evaluation.read_bytes(), ContentType="application/json")
        arns = [
            sagemaker.create_model_package(
                ModelPackageGroupName=boot.group,
                ModelApprovalStatus=contracts.STATUS_PENDING,
                InferenceSpecification={
                    "Containers": [{"Image": contracts.inference_image_uri(emulator.region),
                                    "ModelDataUrl": f"s3://{boot.bucket}/bench/model.tar.gz"}],
                    "SupportedContentTypes": list(contracts.CONTENT_TYPES),
                    "SupportedResponseMIMETypes": list(contracts.CONTENT_TYPES),
                },
                ModelMetrics={"ModelQuality": {"Statistics": {
                    "ContentType": "application/json", "S3Uri": f"s3://{boot.bucket}/{key}"}}},
            )["ModelPackageArn"]
            for _ in range(plan.approval_events)
        ]
        from handlers import auto_approve

        clients = auto_approve.Clients(sagemaker=sagemaker, s3=s3)
        pattern = contracts.auto_approval_pattern(boot.group)
        samples: list[float] = []
        decisions: dict[str, int] = {}
        with lambda_environment(profile.lambda_env(boot.group)):
            for arn in arns:
                event = package_state_change_event(sagemaker.describe_model_package(ModelPackageName=arn),
                                                   emulator.region)
                if not contracts.matches_pattern(pattern, event):
                    raise RuntimeError(f"the auto-approval rule would not deliver the event for {arn}")
                started = time.perf_counter()
                auto_approve.handler(event, None, clients=clients)
                samples.append(time.perf_counter() - started)
                status = sagemaker.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"]
                decisions[status] = decisions.get(status, 0) + 1
    return {
        "events": len(samples), "decisions": decisions,
        "p50_ms": percentile(samples, 50) * 1000, "p99_ms": percentile(samples, 99) * 1000,
        "mean_ms": statistics.fmean(samples) * 1000,
        "measured": "handler(event) only: describe the package, read its metrics from S3, find the champion, "
                    "write the decision (clients created once, as in a warm Lambda container)",
    }


def usable_cpus() -> int:
    """What `nproc` prints: the CPUs this process may run on (a container or taskset can allow fewer)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # Other work on the machine moves every figure: the load average says how busy it was.
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"nproc": usable_cpus(), "cpu_model": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "load_average_1_5_15": load}


# --- Report -------------------------------------------------------------------------------------------
def format_report(report: Mapping[str, Any]) -> str:
    m = report["machine"]
    lines = [f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}, "
             f"load average (1/5/15 min) {m['load_average_1_5_15']} at start, {m['load_average_at_end']} at end; "
             f"model server: gunicorn, {report['model_server_workers']} workers, loopback", ""]
    lines.append(f"{'request rows':>12}  {'raw predict_proba':>17}  {'served /invocations':>19}  "
                 f"{'served/raw':>10}  {'raw rows/s':>11}  {'served rows/s':>13}")
    for b in report["batch"]:
        lines.append(f"{b['rows']:>12,}  {b['raw_ms']:>14.2f} ms  {b['served_ms']:>16.2f} ms  "
                     f"{b['served_over_raw']:>9.1f}x  {b['raw_rows_per_s']:>11,.0f}  {b['served_rows_per_s']:>13,.0f}")
    lines.append("")
    lines.append(f"{'single-row requests':<22}{'requests':>9}  {'p50':>9}  {'p99':>9}  {'rows/s':>8}")
    for item in report["latency"]:
        lines.append(f"{'concurrency ' + str(item['concurrency']):<22}{item['requests']:>9}  "
                     f"{item['p50_ms']:>6.2f} ms  {item['p99_ms']:>6.2f} ms  {item['rows_per_s']:>8,.0f}")
    a = report["approval"]
    lines.append("")
    decisions = ", ".join(f"{k} {v}" for k, v in a["decisions"].items())
    lines.append(f"approval handler: {a['events']} events, p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms, "
                 f"mean {a['mean_ms']:.1f} ms per decision ({decisions})")
    lines.append("")
    stages = ", ".join(f"{s['name']} {s['seconds']:.1f}s" for s in report["demo_stages"])
    lines.append(f"demo stages: {stages}; total {report['demo_total_seconds']:.1f}s")
    steps = ", ".join(f"{s['name']} {s['seconds']:.1f}s" for s in report.get("demo_pipeline_steps", []))
    lines.append(f"demo pipeline steps (Build stage): {steps or 'none (compute build)'}")
    return "\n".join(lines)


def run(plan: Plan, workdir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    import joblib

    from local.model_server import start_model_server
    from training.register import build_model_archive

    host = machine()
    say("bench: running the demo for its stage times (output in the work directory's logs/demo.log) ...")
    demo_log = io.StringIO()
    demo = DemoRun(DemoOptions(workdir=workdir), Console(demo_log, interactive=False))
    try:
        result = demo.run()
    finally:
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        (workdir / "logs" / "demo.log").write_text(demo_log.getvalue())
    # Where the demo's build left the model and its evaluation (the pipeline's Train and Evaluate jobs).
    if result.model_dir is None or result.evaluation_path is None:
        raise RuntimeError("the demo's build left no model or evaluation to measure")
    model_dir, evaluation = result.model_dir, result.evaluation_path
    model = joblib.load(model_dir / contracts.MODEL_FILE)
    workers = usable_cpus()
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        archive = build_model_archive(model_dir, Path(scratch))
        say(f"bench: serving the demo's model.tar.gz with {workers} gunicorn workers ...")
        with start_model_server(archive, workers=workers) as server:
            say("bench: batch requests (raw vs served) ...")
            batches = bench_batches(model, server.url, plan)
            say("bench: single-row latency at concurrency " + " and ".join(map(str, CONCURRENCY)) + " ...")
            latency = bench_latency(server.url, plan)
    say("bench: approval handler decisions against the emulator ...")
    approval = bench_approval(evaluation, plan, workdir)
    return {
        "machine": {**host, "load_average_at_end": machine()["load_average_1_5_15"]},
        "model_server_workers": workers,
        "plan": asdict(plan),
        "batch": batches,
        "latency": latency,
        "approval": approval,
        "demo_stages": [{"name": s.name, "seconds": s.seconds} for s in result.stages],
        "demo_pipeline_steps": [{"name": s.name, "status": s.status, "seconds": s.seconds}
                                for s in result.pipeline_steps],
        "demo_total_seconds": result.total_seconds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("bench-results.json"), help="JSON results file")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="work directory (emptied)")
    parser.add_argument("--quick", action="store_true", help="few repetitions: checks the bench runs, figures rough")
    args = parser.parse_args(argv)
    try:
        report = run(QUICK if args.quick else FULL, args.workdir, lambda m: print(m, flush=True))
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"bench: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print()
    print(format_report(report))
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
