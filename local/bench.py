"""`make bench`: what serving and the approval gate cost on this machine, measured over loopback.

    python -m local.bench --output bench-results.json [--quick]

In one run: the demo (its stage times); serving, measured side by side (every repetition visits each way
in turn, so a busy moment of the machine falls on all of them): for 1, 100 and 10,000-row CSV requests, the
trained model's raw predict_proba on a ready DataFrame, inference.py's input_fn + predict_fn + output_fn
in-process, and HTTP round trips to three gunicorn servers with the same settings (gevent workers, one per
CPU) -- an echo app (the HTTP floor), a predict-only app (predict_proba on a ready frame: the floor of
serving this model) and the model server itself, answering JSON and CSV; single-row request latency
(p50/p99) at concurrency 1 and 8 for the same three; and the approval handler's decision time per event
against the emulator. Clients keep their connection open between requests, as boto3 does. Loops are
bounded by request counts, not by time, and every server is on loopback. Prints tables and writes the
numbers as JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import contracts
from local.emulator import Emulator
from local.runner import (
    DEFAULT_WORKDIR,
    LOCAL_STACK,
    REPO_ROOT,
    RESULT_FILE,
    lambda_environment,
    load_profile,
    package_state_change_event,
    sample_rows,
)

BATCH_SIZES = (1, 100, 10_000)
SHUFFLE_SEED = 20
CONCURRENCY = (1, 8)


@dataclass(frozen=True)
class Plan:
    """How many repetitions each measurement takes (bounded loops)."""

    batch_repeats: Mapping[int, int]
    latency_requests: int
    """Single-row requests per concurrency level, shared by the concurrent clients."""
    approval_events: int


FULL = Plan(batch_repeats={1: 300, 100: 100, 10_000: 40}, latency_requests=800, approval_events=30)
QUICK = Plan(batch_repeats={1: 20, 100: 10, 10_000: 2}, latency_requests=40, approval_events=5)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    # The smallest value with at least q% of the sample at or below it: rank ceil(q/100 * n).
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) / 100)))
    return ordered[rank - 1]


def side_by_side(calls: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call for each of `calls`: one untimed warm-up each, then `repeats` rounds visiting each once.

    Each round visits them in a new order (shuffled, seeded): what ran just before a call -- another process
    that warmed its CPU, or this one -- moves its time, and a fixed order would pin that on the same ways.
    """
    for call in calls.values():
        call()
    names = list(calls)
    order = random.Random(SHUFFLE_SEED)  # noqa: S311 - an order of measurements, not a secret
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            started = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - started)
    return samples


JSON = "application/json"
CSV = "text/csv"


class Client:
    """POST /invocations over one kept-open HTTP/1.1 connection per thread (as boto3 and urllib3 do)."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._local = threading.local()

    def post(self, body: bytes, accept: str = JSON, content_type: str = CSV) -> bytes:
        headers = {"Content-Type": content_type, "Accept": accept}
        for attempt in (1, 2):
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = self._local.connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                connection.request("POST", "/invocations", body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
            except (http.client.HTTPException, ConnectionError):
                # The server closed a connection that sat idle past its keep-alive: open a new one, once.
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"POST {self.host}:{self.port}/invocations -> {response.status}: {answer[:300]!r}")
            return answer
        raise AssertionError("unreachable")


def csv_body(rows: Sequence[Mapping[str, Any]]) -> bytes:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(row[c]) for c in header) for row in rows]
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class Servers:
    """The model server and its two floors, all gunicorn with the same settings on loopback."""

    served: str
    predict_only: str
    echo: str


# What each batch measurement is, in the order the tables show them.
BATCH_WAYS = ("raw", "in_process_json", "in_process_csv", "echo", "predict_only", "served_json", "served_csv")


# --- Measurements -------------------------------------------------------------------------------------
def batch_pool() -> list[dict[str, Any]]:
    return sample_rows(max(BATCH_SIZES), seed=11)


def bench_batches(model: Any, servers: Servers, plan: Plan) -> list[dict[str, Any]]:
    import pandas as pd

    from training import inference

    pool = batch_pool()
    served, predict_only, echo = Client(servers.served), Client(servers.predict_only), Client(servers.echo)
    results = []
    for size in BATCH_SIZES:
        rows = pool[:size]
        frame = pd.DataFrame(rows)
        body = csv_body(rows)
        text = body.decode()
        _check_answers(size, body, served, predict_only, echo)

        def in_process(accept: str, text: str = text) -> object:
            return inference.output_fn(inference.predict_fn(inference.input_fn(text, CSV), model), accept)

        calls: dict[str, Callable[[], object]] = {
            "raw": lambda frame=frame: model.predict_proba(frame),
            "in_process_json": lambda: in_process(JSON),
            "in_process_csv": lambda: in_process(CSV),
            "echo": lambda body=body: echo.post(body),
            "predict_only": lambda body=body: predict_only.post(body),
            "served_json": lambda body=body: served.post(body, JSON),
            "served_csv": lambda body=body: served.post(body, CSV),
        }
        repeats = plan.batch_repeats[size]
        medians = {name: statistics.median(samples) * 1000 for name, samples in side_by_side(calls, repeats).items()}
        raw = medians["raw"]
        results.append({
            "rows": size, "repeats": repeats,
            **{f"{name}_ms": medians[name] for name in BATCH_WAYS},
            "in_process_over_raw": medians["in_process_json"] / raw,
            "in_process_csv_over_raw": medians["in_process_csv"] / raw,
            "served_over_raw": medians["served_json"] / raw,
            "served_csv_over_raw": medians["served_csv"] / raw,
            "predict_only_over_raw": medians["predict_only"] / raw,
            "served_over_predict_only": medians["served_json"] / medians["predict_only"],
            "raw_rows_per_s": size / (raw / 1000), "served_rows_per_s": size / (medians["served_json"] / 1000),
        })
    return results


def _check_answers(size: int, body: bytes, served: Client, predict_only: Client, echo: Client) -> None:
    """Each server answers what it should before it is timed: the bench times answers, not errors."""
    answers = {
        "served JSON": len(json.loads(served.post(body, JSON))["predictions"]),
        "served CSV": len(served.post(body, CSV).decode().splitlines()),
        "predict-only": len(predict_only.post(body)) // 8,
    }
    wrong = {name: count for name, count in answers.items() if count != size}
    if wrong or echo.post(body) != body:
        raise RuntimeError(f"for {size} rows the servers answered {wrong or 'an echo that differs from the request'}")


LATENCY_APPS = ("served", "predict_only", "echo")
LATENCY_BLOCKS = 8


def bench_latency(servers: Servers, plan: Plan) -> list[dict[str, Any]]:
    """Single-row requests per app at each concurrency, the apps taking turns in blocks of requests."""
    bodies = [csv_body([row]) for row in sample_rows(50, seed=13)]
    clients = {"served": Client(servers.served), "predict_only": Client(servers.predict_only),
               "echo": Client(servers.echo)}
    results = []
    for concurrency in CONCURRENCY:
        samples: dict[str, list[float]] = {app: [] for app in LATENCY_APPS}
        walls = dict.fromkeys(LATENCY_APPS, 0.0)
        block = max(1, plan.latency_requests // LATENCY_BLOCKS)
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for app in LATENCY_APPS:  # warm-up: connections, worker imports
                list(pool.map(lambda i, app=app: clients[app].post(bodies[i % len(bodies)]), range(concurrency * 2)))
            for start in range(0, plan.latency_requests, block):
                indexes = range(start, min(start + block, plan.latency_requests))
                for app in LATENCY_APPS:
                    client = clients[app]

                    def one(index: int, client: Client = client) -> float:
                        started = time.perf_counter()
                        client.post(bodies[index % len(bodies)])
                        return time.perf_counter() - started

                    started = time.perf_counter()
                    samples[app] += list(pool.map(one, indexes))
                    walls[app] += time.perf_counter() - started
        entry: dict[str, Any] = {"concurrency": concurrency, "requests": plan.latency_requests}
        for app in LATENCY_APPS:
            entry[app] = {"p50_ms": percentile(samples[app], 50) * 1000, "p99_ms": percentile(samples[app], 99) * 1000,
                          "rows_per_s": len(samples[app]) / walls[app]}
        entry["served_over_predict_only_p50"] = entry["served"]["p50_ms"] / entry["predict_only"]["p50_ms"]
        results.append(entry)
    return results


@contextmanager
def serving(model_dir: Path, workdir: Path, workers: int) -> Iterator[Servers]:
    """The model server for the demo's model.tar.gz and the two floors, stopped on the way out."""
    import joblib
    import pandas as pd

    from local import bench_apps
    from local.model_server import start_model_server, start_wsgi_app
    from training.register import build_model_archive

    pool = batch_pool()
    frames_file = workdir / "bench-frames.joblib"
    joblib.dump({size: pd.DataFrame(pool[:size]) for size in BATCH_SIZES}, frames_file)
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch, ExitStack() as stack:
        archive = build_model_archive(model_dir, Path(scratch))
        served = stack.enter_context(start_model_server(archive, workers=workers))
        environ = {bench_apps.ENV_MODEL_FILE: str(model_dir / contracts.MODEL_FILE),
                   bench_apps.ENV_FRAMES_FILE: str(frames_file)}
        predict_only = stack.enter_context(start_wsgi_app("local.bench_apps:predict_only_app()", environ=environ,
                                                          workers=workers))
        echo = stack.enter_context(start_wsgi_app("local.bench_apps:echo_app()", environ={}, workers=workers))
        yield Servers(served.url, predict_only.url, echo.url)


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
             f"model server: gunicorn, {report['model_server_workers']} gevent workers, loopback", ""]
    lines.append("CSV requests, medians in ms (in-process: input_fn + predict_fn + output_fn; echo and predict-only: "
                 "the floors, see below)")
    lines.append(f"{'rows':>6}  {'raw':>7}  {'in-proc JSON':>12}  {'in-proc CSV':>11}  {'echo':>7}  "
                 f"{'predict-only':>12}  {'served JSON':>11}  {'served CSV':>10}")
    for b in report["batch"]:
        lines.append(f"{b['rows']:>6,}  {b['raw_ms']:>7.2f}  {b['in_process_json_ms']:>12.2f}  "
                     f"{b['in_process_csv_ms']:>11.2f}  {b['echo_ms']:>7.2f}  {b['predict_only_ms']:>12.2f}  "
                     f"{b['served_json_ms']:>11.2f}  {b['served_csv_ms']:>10.2f}")
    lines.append("")
    lines.append(f"{'rows':>6}  {'in-process/raw':>14}  {'served/raw JSON':>15}  {'served/raw CSV':>14}  "
                 f"{'predict-only/raw':>16}  {'served/predict-only':>19}  {'served rows/s':>13}")
    for b in report["batch"]:
        lines.append(f"{b['rows']:>6,}  {b['in_process_over_raw']:>13.2f}x  {b['served_over_raw']:>14.2f}x  "
                     f"{b['served_csv_over_raw']:>13.2f}x  {b['predict_only_over_raw']:>15.2f}x  "
                     f"{b['served_over_predict_only']:>18.2f}x  {b['served_rows_per_s']:>13,.0f}")
    lines.append("")
    lines.append(f"{'single-row requests':<22}{'requests':>9}  {'app':<13}{'p50':>9}  {'p99':>9}  {'rows/s':>8}")
    names = {"served": "served", "predict_only": "predict-only", "echo": "echo"}
    for item in report["latency"]:
        for app in LATENCY_APPS:
            lines.append(f"{'concurrency ' + str(item['concurrency']):<22}{item['requests']:>9}  {names[app]:<13}"
                         f"{item[app]['p50_ms']:>6.2f} ms  {item[app]['p99_ms']:>6.2f} ms  "
                         f"{item[app]['rows_per_s']:>8,.0f}")
        lines.append(f"{'':<22}{'':>9}  served p50 / predict-only p50: {item['served_over_predict_only_p50']:.2f}x")
    a = report["approval"]
    lines.append("")
    decisions = ", ".join(f"{k} {v}" for k, v in a["decisions"].items())
    lines.append(f"approval handler: {a['events']} events, p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms, "
                 f"mean {a['mean_ms']:.1f} ms per decision ({decisions})")
    lines.append("")
    stages = ", ".join(f"{s['name']} {s['seconds']:.1f}s" for s in report["demo_stages"])
    if "demo_wall_seconds" in report:
        wall = report["demo_wall_seconds"]
        verdict = "within" if wall <= DEMO_WALL_GOAL_SECONDS else "OVER"
        lines.append(f"make demo (python -m local.demo, installed): {wall:.1f}s wall from start to exit, "
                     f"{verdict} the {DEMO_WALL_GOAL_SECONDS:.0f} s goal")
    lines.append(f"demo stages: {stages}; total {report['demo_total_seconds']:.1f}s")
    steps = ", ".join(f"{s['name']} {s['seconds']:.1f}s" for s in report.get("demo_pipeline_steps", []))
    lines.append(f"demo pipeline steps (Build stage): {steps or 'none (compute build)'}")
    return "\n".join(lines)


def run(plan: Plan, workdir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    import joblib

    host = machine()
    say(f"bench: running `{' '.join(DEMO_COMMAND)}` (what `make demo` runs) for its wall, stage and step times ...")
    demo = run_demo(workdir)
    # Where the demo's build left the model and its evaluation (the pipeline's Train and Evaluate jobs).
    if not demo["model_dir"] or not demo["evaluation_path"]:
        raise RuntimeError(f"the demo's build left no model or evaluation to measure (see {workdir}/logs/demo.log)")
    model_dir, evaluation = Path(demo["model_dir"]), Path(demo["evaluation_path"])
    model = joblib.load(model_dir / contracts.MODEL_FILE)
    workers = usable_cpus()
    say(f"bench: serving the demo's model.tar.gz, a predict-only app and an echo app ({workers} workers each) ...")
    with serving(model_dir, workdir, workers) as servers:
        say("bench: batch requests side by side (raw, in-process, echo, predict-only, served JSON and CSV) ...")
        batches = bench_batches(model, servers, plan)
        say("bench: single-row latency at concurrency " + " and ".join(map(str, CONCURRENCY)) + " ...")
        latency = bench_latency(servers, plan)
    say("bench: approval handler decisions against the emulator ...")
    approval = bench_approval(evaluation, plan, workdir)
    return {
        "machine": {**host, "load_average_at_end": machine()["load_average_1_5_15"]},
        "model_server_workers": workers,
        "plan": asdict(plan),
        "batch": batches,
        "latency": latency,
        "approval": approval,
        "demo_wall_seconds": demo["wall_seconds"],
        "demo_stages": [{"name": s["name"], "seconds": s["seconds"]} for s in demo["stages"]],
        "demo_pipeline_steps": [{"name": s["name"], "status": s["status"], "seconds": s["seconds"]}
                                for s in demo["pipeline_steps"]],
        "demo_total_seconds": demo["total_seconds"],
    }


DEMO_COMMAND = ("python", "-m", "local.demo", "--plain")
# The bar for `make demo` once the environments are installed.
DEMO_WALL_GOAL_SECONDS = 15.0


def run_demo(workdir: Path) -> dict[str, Any]:
    """`python -m local.demo` as its own process, timed from start to exit; its result file, with the wall."""
    command = [sys.executable, *DEMO_COMMAND[1:], "--workdir", str(workdir)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    log = workdir / "logs" / "demo.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"`make demo` exited {done.returncode} (output in {log})")
    result = json.loads((workdir / RESULT_FILE).read_text())
    return {**result, "wall_seconds": wall}


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
