"""Build the stack's model: start its SageMaker pipeline and wait for it, or train inline in the build box.

    python -m training.model_build [--arn-file model_package_arn.txt] [--timeout-minutes N]

What CodeBuild `train` (training/buildspec-train.yml) and the model-build workflow run. MODEL_BUILD_COMPUTE
says where the model is built:

  pipeline  packages contracts.py and training/*.py as sourcedir.tar.gz, uploads it to
            s3://$ARTIFACT_BUCKET/<stack>/code/<commit>/, starts MODEL_BUILD_PIPELINE_NAME with the
            parameters DataUri (TRAINING_DATA_URI, if set), CodeUri, Commit and BuildId, prints a line per
            step change while it waits, and writes the Register step's package ARN to --arn-file. After
            --timeout-minutes (default: $MODEL_BUILD_TIMEOUT_MINUTES, else the longest the pipeline's own
            limits allow) it stops the execution; so it does when the build itself is stopped.
  build     (also when unset) prepare, train and evaluate here, on TRAINING_DATA_URI's files (unset: the
            synthetic sample table), then register as `python -m training.register` does, in this process
            (the same build id and clients). No QualityGate: the package is registered and the approval
            step judges it. MODEL_PACKAGE_GROUP_NAME and INFERENCE_IMAGE_URI are checked before any step.

Exit codes: 0 a package was registered (its ARN in --arn-file); 3 (contracts.EXIT_QUALITY_GATE) the model
did not pass the QualityGate; 4 (contracts.EXIT_DATA_REJECTED) the data contract rejected the data; 1
anything else, with one line naming the failing step or call and the fix. Either way build/output/
model_build.json records what ran. Standard library and boto3 only on the pipeline path.

Environment: MODEL_BUILD_COMPUTE, MODEL_BUILD_PIPELINE_NAME, TRAINING_DATA_URI, ARTIFACT_BUCKET, MLOPS_STACK,
MLOPS_PROJECT (compute build also MODEL_PACKAGE_GROUP_NAME, INFERENCE_IMAGE_URI), and the build identity
(CodeBuild, GitHub Actions or git; see training.register.BuildInfo).
MODEL_BUILD_POLL_SECONDS (default 5) sets the first wait between polls; the embedded run, whose steps take
seconds, sets it lower.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

import contracts
from training import DEFAULT_MODEL_DIR, DEFAULT_OUTPUT_DIR, aws_errors, register
from training import pipeline_definition as pd
from training.register import BuildInfo, RegisterSettings, RegistrationError

ROOT = Path(__file__).resolve().parent.parent
COMPUTE_PIPELINE, COMPUTE_BUILD = contracts.COMPUTE_CHOICES
SUMMARY_FILE = f"{DEFAULT_OUTPUT_DIR}/model_build.json"
# The inline path's folders, beside training's defaults (build/model, build/output).
BUILD_ROOT = Path(DEFAULT_OUTPUT_DIR).parent

# Polling: quick while steps start, slower while a job runs (ListPipelineExecutionSteps is throttled
# per account, and a job takes minutes).
POLL_FIRST_SECONDS = 5.0
POLL_MAX_SECONDS = 30.0
POLL_GROWTH = 1.5
# After StopPipelineExecution, how long to wait for the execution to reach Stopped.
STOP_WAIT_SECONDS = 15 * 60
TERMINAL = ("Succeeded", "Failed", "Stopped", "CompletedWithFailures")
# The default of --timeout-minutes where a runner bounds the wait itself (model-build.yml: its OIDC
# credentials last an hour, so it waits less); unset: the pipeline's own bound.
ENV_TIMEOUT_MINUTES = "MODEL_BUILD_TIMEOUT_MINUTES"
# The first poll interval where the steps take seconds, not minutes (the embedded run, local/runner.py).
ENV_POLL_SECONDS = "MODEL_BUILD_POLL_SECONDS"

Say = Callable[[str], None]
Sleep = Callable[[float], None]
Clock = Callable[[], float]


class BuildFailed(Exception):
    """The build cannot go on or did not produce a model; the message names the step or call and the fix."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- Settings -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildSettings:
    compute: str
    bucket: str
    stack: str
    project: str
    pipeline_name: str
    training_data_uri: str
    """"" means: the pipeline's own default (pipeline) or the synthetic sample table (build)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BuildSettings:
        compute = environ.get(contracts.ENV_MODEL_BUILD_COMPUTE, "").strip() or COMPUTE_BUILD
        if compute not in contracts.COMPUTE_CHOICES:
            raise BuildFailed(
                f"{contracts.ENV_MODEL_BUILD_COMPUTE}={compute!r} is not one of "
                f"{', '.join(contracts.COMPUTE_CHOICES)}: the stack sets it from its `training.compute` config")
        required = [contracts.ENV_ARTIFACT_BUCKET, contracts.ENV_MLOPS_STACK]
        if compute == COMPUTE_PIPELINE:
            required.append(contracts.ENV_MODEL_BUILD_PIPELINE)
        missing = [name for name in required if not environ.get(name, "").strip()]
        if missing:
            raise BuildFailed(
                f"missing environment variable(s) {', '.join(missing)} for compute {compute}: the CodeBuild project "
                "and the model-build workflow set them from the stack; to run by hand, export them from "
                "`pulumi stack output` (modelBuildPipelineName, artifactBucket)")
        data_uri = environ.get(contracts.ENV_TRAINING_DATA_URI, "").strip()
        if data_uri:
            check_data_uri(data_uri)
        return cls(
            compute=compute,
            bucket=environ[contracts.ENV_ARTIFACT_BUCKET].strip(),
            stack=environ[contracts.ENV_MLOPS_STACK].strip(),
            project=environ.get(contracts.ENV_MLOPS_PROJECT, "").strip() or contracts.PROJECT,
            pipeline_name=environ.get(contracts.ENV_MODEL_BUILD_PIPELINE, "").strip(),
            training_data_uri=data_uri,
        )


def check_data_uri(uri: str) -> None:
    """A TRAINING_DATA_URI the pipeline can read and the Register step can record, or BuildFailed."""
    problem = contracts.data_uri_problem(uri)
    if problem is not None:
        what, fix = problem
        raise BuildFailed(f"{contracts.ENV_TRAINING_DATA_URI}={uri!r} {what}: {fix}, and set the stack's "
                          "`trainingData` config to it")


# --- The training code ------------------------------------------------------------------------------------
def source_files(root: Path = ROOT) -> list[str]:
    """What sourcedir.tar.gz holds: contracts.py and the .py files of training/ (relative, sorted).

    Nothing else: a requirements.txt or setup.py at its root would make the training toolkit pip-install
    inside the job, and buildspecs or caches are not code.
    """
    files = ["contracts.py"] + [p.relative_to(root).as_posix() for p in (root / "training").rglob("*.py")
                                 if "__pycache__" not in p.parts]
    return sorted(files)


def package_source(root: Path = ROOT, names: Sequence[str] | None = None) -> bytes:
    """sourcedir.tar.gz of the code (`names`, default source_files(root)): the same bytes for the same files
    (fixed times, owners, order)."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in source_files(root) if names is None else names:
            data = (root / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def upload_source(s3: Any, settings: BuildSettings, commit: str, archive: bytes) -> str:
    """Put the archive under code/<commit>/ and return its s3:// URI (the CodeUri parameter)."""
    key = contracts.source_archive_key(settings.stack, commit)
    s3.put_object(Bucket=settings.bucket, Key=key, Body=archive, ContentType="application/gzip")
    return f"s3://{settings.bucket}/{key}"


# --- Output -----------------------------------------------------------------------------------------------
def _duration(value: float) -> str:
    seconds = max(0, round(value))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class StepRecord:
    name: str
    status: str
    attempt: int = 1
    seconds: float | None = None
    detail: str = ""


@dataclass
class Summary:
    """build/output/model_build.json: what this build ran and how it ended."""

    compute: str
    commit: str
    build_id: str
    code_uri: str = ""
    pipeline_execution_arn: str = ""
    status: str = ""
    exit_code: int = 1
    model_package_arn: str = ""
    message: str = ""
    steps: list[StepRecord] = field(default_factory=list)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


class Progress:
    """One line per step change, stamped with the time since the build started waiting."""

    def __init__(self, say: Say, clock: Clock) -> None:
        self.say = say
        self.clock = clock
        self.started = clock()

    def step(self, name: str, status: str, detail: str = "") -> None:
        stamp = _duration(self.clock() - self.started)
        self.say(f"[{stamp:>6}] {name:<11} {status}{detail}")


# --- The pipeline path ------------------------------------------------------------------------------------
def _step_detail(step: Mapping[str, Any]) -> str:
    status = step["StepStatus"]
    metadata = step.get("Metadata", {})
    parts = []
    if step.get("StartTime") and step.get("EndTime"):
        parts.append(f" in {_duration((step['EndTime'] - step['StartTime']).total_seconds())}")
    if "Condition" in metadata:
        parts.append(": passed" if metadata["Condition"].get("Outcome") == "True" else ": not passed")
    if status == "Succeeded" and "RegisterModel" in metadata:
        parts.append(f": {metadata['RegisterModel']['Arn']}")
    if status == "Failed":
        reason = metadata.get("Fail", {}).get("ErrorMessage") or step.get("FailureReason") or "no reason given"
        parts.append(f": {aws_errors.one_line(reason)}")
    return "".join(parts)


def _list_steps(sagemaker: Any, execution_arn: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"PipelineExecutionArn": execution_arn, "SortOrder": "Ascending"}
    while True:
        page = sagemaker.list_pipeline_execution_steps(**kwargs)
        steps += page.get("PipelineExecutionSteps", [])
        if not page.get("NextToken"):
            return steps
        kwargs["NextToken"] = page["NextToken"]


@dataclass
class ExecutionEnd:
    status: str
    """A PipelineExecutionStatus, or "TimedOut" when the build stopped it."""
    steps: list[dict[str, Any]]
    failure_reason: str = ""


def wait_for_execution(sagemaker: Any, execution_arn: str, timeout_seconds: float, progress: Progress,
                       sleep: Sleep, records: dict[str, StepRecord],
                       poll_seconds: float = POLL_FIRST_SECONDS) -> ExecutionEnd:
    """Poll until the execution ends or the time is up, printing each step's changes."""
    delay = poll_seconds
    while True:
        execution = sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
        steps = _list_steps(sagemaker, execution_arn)
        changed = False
        for step in steps:
            name, status, attempt = step["StepName"], step["StepStatus"], step.get("AttemptCount", 1)
            record = records.get(name)
            if record is not None and (record.status, record.attempt) == (status, attempt):
                continue
            detail = _step_detail(step)
            records[name] = StepRecord(name, status, attempt, detail=aws_errors.one_line(detail).lstrip(": "))
            if step.get("StartTime") and step.get("EndTime"):
                records[name].seconds = (step["EndTime"] - step["StartTime"]).total_seconds()
            retry = f" (attempt {attempt})" if attempt > 1 else ""
            progress.step(name, status + retry, detail)
            changed = True
        status = execution["PipelineExecutionStatus"]
        if status in TERMINAL:
            return ExecutionEnd(status, steps, execution.get("FailureReason", ""))
        if progress.clock() - progress.started >= timeout_seconds:
            return ExecutionEnd("TimedOut", steps)
        sleep(delay)
        delay = poll_seconds if changed else min(delay * POLL_GROWTH, POLL_MAX_SECONDS)


def stop_execution(sagemaker: Any, execution_arn: str, token: str, progress: Progress, sleep: Sleep,
                   poll_seconds: float = POLL_FIRST_SECONDS) -> str:
    """StopPipelineExecution, then wait (bounded) until the execution says Stopped; its last status."""
    sagemaker.stop_pipeline_execution(PipelineExecutionArn=execution_arn, ClientRequestToken=token)
    deadline = progress.clock() + STOP_WAIT_SECONDS
    while True:
        status = sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution_arn)["PipelineExecutionStatus"]
        if status in TERMINAL or progress.clock() >= deadline:
            progress.step("execution", status)
            return status
        sleep(poll_seconds)


def _exit_message(sagemaker: Any, step: Mapping[str, Any]) -> str:
    """A failed processing job's ExitMessage: where prepare and evaluate say why (FailureReason does not)."""
    arn = step.get("Metadata", {}).get("ProcessingJob", {}).get("Arn")
    if not arn:
        return ""
    try:
        job = sagemaker.describe_processing_job(ProcessingJobName=arn.rsplit("/", 1)[-1])
    except ClientError as exc:
        # The failure itself is still worth reporting; say why its own words are missing.
        return f"(its ExitMessage could not be read: {_aws_error_line(exc)})"
    return str(job.get("ExitMessage", "")).strip()


def _failure(sagemaker: Any, end: ExecutionEnd) -> BuildFailed:
    failed = [s for s in end.steps if s["StepStatus"] == "Failed"]
    if not failed:
        reason = end.failure_reason or "no step reports a failure"
        return BuildFailed(f"pipeline execution {end.status}: {aws_errors.one_line(reason)}")
    for step in failed:
        if step["StepName"] == contracts.STEP_FAIL:
            message = step.get("Metadata", {}).get("Fail", {}).get("ErrorMessage") or step.get("FailureReason", "")
            return BuildFailed(f"the model did not pass the {contracts.STEP_QUALITY_GATE} and was not registered: "
                               f"{aws_errors.one_line(message)}", contracts.EXIT_QUALITY_GATE)
    step = failed[0]
    reason = aws_errors.one_line(step.get("FailureReason", "") or "no reason given")
    said = aws_errors.one_line(_exit_message(sagemaker, step))
    if contracts.DATA_REJECTED_MARKER in said or contracts.DATA_REJECTED_MARKER in reason:
        rejection = said if contracts.DATA_REJECTED_MARKER in said else reason
        return BuildFailed(f"step {step['StepName']}: {rejection}", contracts.EXIT_DATA_REJECTED)
    where = f"; the job said: {said}" if said else ""
    return BuildFailed(f"step {step['StepName']} failed: {reason}{where} (its log is in CloudWatch Logs, "
                       "/aws/sagemaker/ProcessingJobs or /aws/sagemaker/TrainingJobs)")


def _token(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _display_name(build_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "-", build_id).strip("-")[:82].rstrip("-")
    return name or "build"


def run_pipeline(settings: BuildSettings, build: BuildInfo, summary: Summary, *, timeout_minutes: float | None,
                 sagemaker: Any, s3: Any, say: Say, sleep: Sleep, clock: Clock,
                 poll_seconds: float = POLL_FIRST_SECONDS) -> str:
    """Upload the code, start an execution, wait, and return the registered package's ARN."""
    described = sagemaker.describe_pipeline(PipelineName=settings.pipeline_name)
    pipeline = json.loads(described["PipelineDefinition"])
    declared = {p["Name"] for p in pipeline.get("Parameters", [])}
    needed = [pd.PARAM_CODE_URI, pd.PARAM_COMMIT, pd.PARAM_BUILD_ID, pd.PARAM_DATA_URI]
    missing = [name for name in needed if name not in declared]
    if missing:
        raise BuildFailed(f"pipeline {settings.pipeline_name} has no parameter(s) {', '.join(missing)}: it predates "
                          "this code; run `pulumi up` for the stack so the pipeline matches it")
    timeout = timeout_minutes if timeout_minutes is not None else pd.wait_bound_minutes(pipeline)

    names = source_files()
    archive = package_source(ROOT, names)
    digest = hashlib.sha256(archive).hexdigest()
    summary.code_uri = upload_source(s3, settings, build.commit, archive)
    say(f"uploaded the training code ({len(names)} files, {len(archive) / 1024:.1f} KiB, "
        f"sha256 {digest[:12]}) to {summary.code_uri}")

    parameters = {pd.PARAM_CODE_URI: summary.code_uri, pd.PARAM_COMMIT: build.commit,
                  pd.PARAM_BUILD_ID: contracts.metadata_value(build.build_id)}
    if settings.training_data_uri:
        parameters[pd.PARAM_DATA_URI] = settings.training_data_uri
    started = sagemaker.start_pipeline_execution(
        PipelineName=settings.pipeline_name,
        PipelineExecutionDisplayName=_display_name(build.build_id),
        PipelineExecutionDescription=f"{settings.project}/{settings.stack} build {build.build_id}, "
                                     f"commit {build.commit}"[:3072],
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in parameters.items()],
        # A rerun of the same build with the same code gets the same execution, not a second one.
        ClientRequestToken=_token(settings.pipeline_name, build.build_id, build.commit, digest),
    )
    execution_arn = summary.pipeline_execution_arn = started["PipelineExecutionArn"]
    data = settings.training_data_uri or "the pipeline's default DataUri"
    say(f"started {execution_arn} on {data}; waiting up to {_duration(timeout * 60)}")

    progress = Progress(say, clock)
    records: dict[str, StepRecord] = {}
    try:
        end = wait_for_execution(sagemaker, execution_arn, timeout * 60, progress, sleep, records, poll_seconds)
    except ClientError as exc:
        if aws_errors.error_code(exc) not in aws_errors.EXPIRED_CREDENTIAL_ERRORS:
            raise
        raise BuildFailed(f"the build's AWS credentials expired while it waited; {execution_arn} keeps running and "
                          "registers its package if it passes: wait less (--timeout-minutes) or give the build "
                          "longer-lived credentials") from None
    except KeyboardInterrupt:
        say(f"interrupted: stopping {execution_arn}")
        stop_execution(sagemaker, execution_arn, _token(execution_arn, "interrupted"), progress, sleep, poll_seconds)
        raise
    finally:
        summary.steps = list(records.values())
    summary.status = end.status

    if end.status == "TimedOut":
        say(f"timed out after {_duration(timeout * 60)}: stopping {execution_arn}")
        final = stop_execution(sagemaker, execution_arn, _token(execution_arn, "timeout"), progress, sleep,
                               poll_seconds)
        summary.status = final
        raise BuildFailed(f"the pipeline execution did not finish within {_duration(timeout * 60)} and was stopped "
                          f"({final}); pass --timeout-minutes to wait longer, or look at the slow step in Studio")
    if end.status == "Stopped":
        raise BuildFailed(f"pipeline execution {execution_arn} was stopped before it finished (not by this build)")
    if end.status != "Succeeded":
        raise _failure(sagemaker, end)

    registered = [s for s in end.steps if s["StepName"] == contracts.STEP_REGISTER and s["StepStatus"] == "Succeeded"]
    arn = registered[0].get("Metadata", {}).get("RegisterModel", {}).get("Arn") if registered else None
    if not arn:
        raise BuildFailed(f"pipeline execution {execution_arn} succeeded but its {contracts.STEP_REGISTER} step "
                          "reports no model package ARN; is the stack's pipeline this project's definition?")
    return arn


# --- The inline path --------------------------------------------------------------------------------------
def _download_prefix(s3: Any, uri: str, destination: Path) -> list[Path]:
    """Every object under the prefix, at its relative path, as SageMaker's S3Prefix File mode does."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    written = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            relative = key[len(prefix):].lstrip("/")
            if not relative or key.endswith("/"):
                continue  # the prefix itself or a folder marker
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
            written.append(target)
    return written


def _run(argv: Sequence[str], env: Mapping[str, str]) -> int:
    return subprocess.run(list(argv), cwd=ROOT, env=dict(env), check=False).returncode


def run_inline(settings: BuildSettings, registration: RegisterSettings, build: BuildInfo, summary: Summary, *,
               arn_file: Path, sagemaker: Any, s3: Any, say: Say, clock: Clock, python: str = sys.executable,
               environ: Mapping[str, str] | None = None) -> str:
    """Prepare, train, evaluate and register in this box (compute `build`); return the package ARN."""
    base = BUILD_ROOT.resolve()
    data, prepared = base / "data", base / "prepared"
    model_dir, train_output, output = Path(DEFAULT_MODEL_DIR).resolve(), base / "train-output", \
        Path(DEFAULT_OUTPUT_DIR).resolve()
    env = {**(environ if environ is not None else os.environ)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    progress = Progress(say, clock)

    def record(name: str, started: float, failed: bool, detail: str) -> None:
        seconds = clock() - started
        status = "Failed" if failed else "Succeeded"
        summary.steps.append(StepRecord(name, status, seconds=seconds, detail=detail))
        progress.step(name, status, f" in {_duration(seconds)}" + (f" ({detail})" if failed else ""))

    def step(name: str, argv: Sequence[str], step_env: Mapping[str, str] | None = None) -> None:
        progress.step(name, "Executing")
        started = clock()
        code = _run(argv, step_env or env)
        record(name, started, code != 0, f"exit {code}")
        if code == contracts.EXIT_DATA_REJECTED:
            raise BuildFailed(f"step {name}: the data contract rejected the data (the reason is printed above)",
                              contracts.EXIT_DATA_REJECTED)
        if code != 0:
            raise BuildFailed(f"step {name} failed with exit code {code} (its output is above)")

    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    if settings.training_data_uri:
        files = _download_prefix(s3, settings.training_data_uri, data)
        say(f"downloaded {len(files)} file(s) from {settings.training_data_uri}")
        source = settings.training_data_uri
    else:
        say(f"{contracts.ENV_TRAINING_DATA_URI} is not set: training on the synthetic sample table")
        step("Sample", [python, "-m", "training.sample_data", str(data)])
        source = "sample:training.sample_data"

    step(contracts.STEP_PREPARE, [python, "-m", "training.prepare", "--input", str(data), "--output", str(prepared),
                                  "--source-uri", source])
    # As the training toolkit runs it: the program from the code's root, hyperparameters as --name value.
    hyperparameters = [arg for name, value in sorted(pd.TRAIN_HYPERPARAMETERS.items())
                       for arg in (f"--{name}", str(value))]
    train_env = {**env, "SM_CHANNEL_TRAIN": str(prepared / "train"),
                 "SM_CHANNEL_VALIDATION": str(prepared / "validation"),
                 "SM_MODEL_DIR": str(model_dir), "SM_OUTPUT_DATA_DIR": str(train_output)}
    step(contracts.STEP_TRAIN, [python, pd.TRAIN_PROGRAM, *hyperparameters], train_env)
    step(contracts.STEP_EVALUATE, [python, "-m", "training.evaluate", "--model", str(model_dir),
                                   "--test", str(prepared / "test"), "--output", str(output)])
    arn_file.unlink(missing_ok=True)
    # In this process, so the package carries this build's id (and its S3 key), which model_build.json records.
    progress.step(contracts.STEP_REGISTER, "Executing")
    started = clock()
    try:
        arn = register.register(model_dir, output, registration, build, training_data=source, arn_file=arn_file,
                                sagemaker=sagemaker, s3=s3)
    except RegistrationError as exc:
        record(contracts.STEP_REGISTER, started, True, "not registered")
        raise BuildFailed(f"step {contracts.STEP_REGISTER}: {aws_errors.one_line(exc)}") from None
    record(contracts.STEP_REGISTER, started, False, arn)
    return arn


# --- Entry point ------------------------------------------------------------------------------------------
# What a missing resource most likely means here, beside aws_errors' general fixes.
_BUCKET_HINT = f"check that {contracts.ENV_ARTIFACT_BUCKET} names the stack's artifact bucket"
_PIPELINE_HINT = (f"run `pulumi up` for the stack (compute `pipeline` creates the pipeline), or check "
                  f"{contracts.ENV_MODEL_BUILD_PIPELINE}")


def _aws_error_line(exc: Exception) -> str:
    # A ClientError names its operation; the resource is in AWS's message.
    operation = getattr(exc, "operation_name", "") or "an AWS call"
    hint = ""
    if isinstance(exc, ClientError) and aws_errors.is_not_found(exc):
        if aws_errors.error_code(exc) == "NoSuchBucket":
            hint = _BUCKET_HINT
        elif "Pipeline" in operation:
            hint = _PIPELINE_HINT
    return aws_errors.failure_line(operation, "", exc, hint)


def _timeout_type(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of minutes")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.model_build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arn-file", type=Path, default=Path(contracts.MODEL_PACKAGE_ARN_FILE),
                        help="where to write the registered package's ARN (default ./model_package_arn.txt)")
    parser.add_argument("--timeout-minutes", type=_timeout_type, default=None,
                        help=f"stop the pipeline execution after this long (default: ${ENV_TIMEOUT_MINUTES}, else "
                             "the pipeline's own limit: every job to its maximum runtime)")
    return parser.parse_args(argv)


def _env_timeout(environ: Mapping[str, str]) -> float | None:
    text = environ.get(ENV_TIMEOUT_MINUTES, "").strip()
    if not text:
        return None
    try:
        return _timeout_type(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise BuildFailed(f"{ENV_TIMEOUT_MINUTES}={text!r} is not a positive number of minutes") from None


def _env_poll_seconds(environ: Mapping[str, str]) -> float:
    text = environ.get(ENV_POLL_SECONDS, "").strip()
    try:
        value = float(text) if text else POLL_FIRST_SECONDS
    except ValueError:
        value = 0.0
    if not 0 < value <= POLL_MAX_SECONDS:
        raise BuildFailed(f"{ENV_POLL_SECONDS}={text!r} is not a number of seconds in (0, {POLL_MAX_SECONDS:g}]")
    return value


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None, sagemaker: Any = None,
         s3: Any = None, say: Say | None = None, sleep: Sleep = time.sleep, clock: Clock = time.monotonic) -> int:
    args = parse_args(argv)
    environ = os.environ if environ is None else environ
    say = say or (lambda line: print(line, flush=True))
    summary = Summary(compute="", commit="", build_id="")
    try:
        settings = BuildSettings.from_env(environ)
        try:
            # Inline, the registration's settings are checked now: a missing group or image would otherwise
            # fail only after prepare, train and evaluate ran.
            registration = RegisterSettings.from_env(environ) if settings.compute == COMPUTE_BUILD else None
            build = BuildInfo.from_env(environ)
        except RegistrationError as exc:
            raise BuildFailed(str(exc)) from None
        summary = Summary(compute=settings.compute, commit=build.commit, build_id=build.build_id)
        say(f"model build: compute {settings.compute}, stack {settings.stack}, commit {build.commit[:12]}, "
            f"build {build.build_id}")
        if sagemaker is None or s3 is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 8})
            try:
                sagemaker = sagemaker or boto3.client("sagemaker", config=config)
                s3 = s3 or boto3.client("s3", config=config)
            except BotoCoreError as exc:  # NoRegionError: a regional client needs a region
                raise BuildFailed(aws_errors.failure_line("boto3.client", "this shell's AWS configuration", exc)
                                  ) from None
        if settings.compute == COMPUTE_PIPELINE:
            timeout = args.timeout_minutes or _env_timeout(environ)
            arn = run_pipeline(settings, build, summary, timeout_minutes=timeout, sagemaker=sagemaker, s3=s3,
                               poll_seconds=_env_poll_seconds(environ),
                               say=say, sleep=sleep, clock=clock)
            args.arn_file.parent.mkdir(parents=True, exist_ok=True)
            args.arn_file.write_text(arn)
        else:
            assert registration is not None  # compute build: checked above
            arn = run_inline(settings, registration, build, summary, arn_file=args.arn_file, sagemaker=sagemaker,
                             s3=s3, say=say, clock=clock, environ=environ)
        summary.model_package_arn, summary.exit_code = arn, 0
        summary.message = f"registered {arn} ({contracts.STATUS_PENDING})"
        say(f"{summary.message}; ARN written to {args.arn_file}")
    except BuildFailed as exc:
        summary.exit_code, summary.message = exc.exit_code, str(exc)
        say(f"model build failed: {exc}")
    except (ClientError, BotoCoreError) as exc:
        summary.exit_code, summary.message = 1, _aws_error_line(exc)
        say(f"model build failed: {summary.message}")
    except KeyboardInterrupt:
        summary.exit_code, summary.message = 1, "interrupted"
        say("model build interrupted")
    finally:
        if summary.commit:
            summary.write(Path(SUMMARY_FILE))
    return summary.exit_code


if __name__ == "__main__":
    # CodeBuild and Actions stop a build with SIGTERM: stop the execution too rather than leave it running.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    sys.exit(main())
