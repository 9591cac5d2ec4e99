"""The build step: training.model_build against a Stubber-backed SageMaker (moto runs no pipeline steps).

The code upload goes to moto's S3 (the `aws` fixture); the sagemaker client is botocore's Stubber, which
checks every request and every canned answer against the real API model. The answers follow what
SageMaker Pipelines reports: ListPipelineExecutionSteps with StepStatus, FailureReason and Metadata
(RegisterModel.Arn, Fail.ErrorMessage, ProcessingJob.Arn), and a processing job's ExitMessage for the
message prepare leaves in /opt/ml/output/message. The inline (`build`) path runs for real against moto.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

import contracts
from training import model_build
from training import pipeline_definition as pd

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "mlops-artifacts-test"
STACK = "dev"
PIPELINE = contracts.model_build_pipeline_name(contracts.PROJECT, STACK)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
BUILD_ID = "sagemaker-mlops-dev-train:5f1c2c8e-1111-2222-3333-444455556666"
ACCOUNT = "123456789012"
EXECUTION_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:pipeline/{PIPELINE}/execution/k3x9q2m1z8ab"
PACKAGE_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/{contracts.PROJECT}-{STACK}/7"
PREPARE_JOB = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:processing-job/pipelines-k3x9q2m1z8ab-prepare-a1"
TRAIN_JOB = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/pipelines-k3x9q2m1z8ab-train-b2"
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.timezone.utc)
TARGET = pd.PipelineTarget(
    project=contracts.PROJECT, stack=STACK, region="us-east-1", pipeline_name=PIPELINE,
    group=f"{contracts.PROJECT}-{STACK}", bucket=BUCKET, role_arn=f"arn:aws:iam::{ACCOUNT}:role/exec",
    image_uri=contracts.inference_image_uri("us-east-1"), training_data_uri=f"s3://{BUCKET}/{STACK}/training-data/",
    thresholds={"accuracy": 0.8, "auc": 0.85})


class FakeClock:
    """Monotonic time that moves only when the build sleeps: elapsed times are exact, and no test waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def environ(aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The train CodeBuild project's variables (compute pipeline) and the stack's bucket, in a scratch cwd."""
    monkeypatch.chdir(tmp_path)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    import os

    return {
        **{k: v for k, v in os.environ.items() if k.startswith("AWS_") or k in ("PATH", "HOME")},
        contracts.ENV_ARTIFACT_BUCKET: BUCKET,
        contracts.ENV_MODEL_PACKAGE_GROUP_NAME: TARGET.group,
        contracts.ENV_INFERENCE_IMAGE_URI: TARGET.image_uri,
        contracts.ENV_MLOPS_PROJECT: contracts.PROJECT,
        contracts.ENV_MLOPS_STACK: STACK,
        contracts.ENV_MODEL_BUILD_COMPUTE: "pipeline",
        contracts.ENV_MODEL_BUILD_PIPELINE: PIPELINE,
        contracts.ENV_TRAINING_DATA_URI: TARGET.training_data_uri,
        "CODEBUILD_BUILD_ID": BUILD_ID,
        "CODEBUILD_RESOLVED_SOURCE_VERSION": COMMIT,
    }


@pytest.fixture
def sagemaker() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _step(name: str, status: str, minutes: tuple[int, int] | None = None, **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"StepName": name, "StepStatus": status, "AttemptCount": 1, **extra}
    if minutes is not None:
        step["StartTime"] = T0 + dt.timedelta(minutes=minutes[0])
        if status in ("Succeeded", "Failed", "Stopped"):
            step["EndTime"] = T0 + dt.timedelta(minutes=minutes[1])
    return step


def _expect_start(stubber: Stubber, parameters: list[dict[str, str]] | None = None) -> None:
    stubber.add_response("describe_pipeline", {"PipelineArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:pipeline/"
                                               f"{PIPELINE}", "PipelineName": PIPELINE,
                                               "PipelineDefinition": pd.definition_json(TARGET)},
                         {"PipelineName": PIPELINE})
    expected = parameters if parameters is not None else [
        {"Name": "CodeUri", "Value": f"s3://{BUCKET}/{STACK}/code/{COMMIT}/{contracts.SOURCE_ARCHIVE}"},
        {"Name": "Commit", "Value": COMMIT},
        {"Name": "BuildId", "Value": BUILD_ID},
        {"Name": "DataUri", "Value": TARGET.training_data_uri},
    ]
    stubber.add_response("start_pipeline_execution", {"PipelineExecutionArn": EXECUTION_ARN}, {
        "PipelineName": PIPELINE, "PipelineParameters": expected, "ClientRequestToken": ANY,
        "PipelineExecutionDisplayName": ANY, "PipelineExecutionDescription": ANY})


def _expect_poll(stubber: Stubber, status: str, steps: list[dict[str, Any]], failure: str | None = None) -> None:
    described: dict[str, Any] = {"PipelineExecutionArn": EXECUTION_ARN, "PipelineExecutionStatus": status}
    if failure:
        described["FailureReason"] = failure
    stubber.add_response("describe_pipeline_execution", described, {"PipelineExecutionArn": EXECUTION_ARN})
    stubber.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": steps},
                         {"PipelineExecutionArn": EXECUTION_ARN, "SortOrder": "Ascending"})


DONE_BEFORE_GATE = [
    _step("Prepare", "Succeeded", (0, 3), Metadata={"ProcessingJob": {"Arn": PREPARE_JOB}}),
    _step("Train", "Succeeded", (3, 7), Metadata={"TrainingJob": {"Arn": TRAIN_JOB}}),
    _step("Evaluate", "Succeeded", (7, 10)),
]


SUCCESS_STEP_LINES = [
    "[    0s] Prepare     Executing",
    "[    5s] Prepare     Succeeded in 3m00s",
    "[    5s] Train       Executing",
    "[   10s] Train       Succeeded in 4m00s",
    "[   10s] Evaluate    Executing",
    "[   15s] Evaluate    Succeeded in 3m00s",
    "[   15s] QualityGate Succeeded in 0s: passed",
]


def _build(environ: dict[str, str], client: Any, clock: FakeClock, *argv: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = model_build.main(["--arn-file", "model_package_arn.txt", *argv], environ=environ, sagemaker=client,
                            s3=boto3.client("s3"), say=lines.append, sleep=clock.sleep, clock=clock)
    return code, lines


# --- Success --------------------------------------------------------------------------------------------
def test_success_prints_each_step_change_with_elapsed_time_and_writes_the_package_arn(
        environ: dict[str, str], sagemaker: tuple[Any, Stubber], tmp_path: Path) -> None:
    client, stubber = sagemaker
    _expect_start(stubber)
    _expect_poll(stubber, "Executing", [_step("Prepare", "Executing", (0, 0))])
    _expect_poll(stubber, "Executing", [DONE_BEFORE_GATE[0], _step("Train", "Executing", (3, 3))])
    _expect_poll(stubber, "Executing", [*DONE_BEFORE_GATE[:2], _step("Evaluate", "Executing", (7, 7))])
    _expect_poll(stubber, "Succeeded", [
        *DONE_BEFORE_GATE,
        _step("QualityGate", "Succeeded", (10, 10), Metadata={"Condition": {"Outcome": "True"}}),
        _step("Register", "Succeeded", (10, 10), Metadata={"RegisterModel": {"Arn": PACKAGE_ARN}}),
    ])
    clock = FakeClock()

    code, lines = _build(environ, client, clock)

    assert code == 0, lines
    assert (tmp_path / "model_package_arn.txt").read_text() == PACKAGE_ARN
    steps = [line for line in lines if line.startswith("[")]
    assert steps == [*SUCCESS_STEP_LINES, f"[   15s] Register    Succeeded in 0s: {PACKAGE_ARN}"]
    assert lines[-1] == f"registered {PACKAGE_ARN} (PendingManualApproval); ARN written to model_package_arn.txt"


def test_poll_seconds_from_the_environment_set_the_first_wait_between_polls(
        environ: dict[str, str], sagemaker: tuple[Any, Stubber]) -> None:
    client, stubber = sagemaker
    _expect_start(stubber)
    _expect_poll(stubber, "Executing", [_step("Prepare", "Executing", (0, 0))])
    _expect_poll(stubber, "Succeeded", [
        *DONE_BEFORE_GATE,
        _step("QualityGate", "Succeeded", (10, 10), Metadata={"Condition": {"Outcome": "True"}}),
        _step("Register", "Succeeded", (10, 10), Metadata={"RegisterModel": {"Arn": PACKAGE_ARN}}),
    ])
    environ[model_build.ENV_POLL_SECONDS] = "0.5"
    clock = FakeClock()

    code, lines = _build(environ, client, clock)

    assert code == 0, lines
    assert clock.sleeps == [0.5]


def test_readme_shows_the_lines_the_build_prints() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("<!-- section:model-build -->"):readme.index("<!-- /section:model-build -->")]
    for line in SUCCESS_STEP_LINES:
        assert f"\n{line}\n" in section, line


def test_success_uploads_exactly_the_training_code_under_the_commit(
        environ: dict[str, str], sagemaker: tuple[Any, Stubber]) -> None:
    client, stubber = sagemaker
    _expect_start(stubber)
    _expect_poll(stubber, "Succeeded", [
        *DONE_BEFORE_GATE, _step("Register", "Succeeded", (10, 10), Metadata={"RegisterModel": {"Arn": PACKAGE_ARN}})])

    assert _build(environ, client, FakeClock())[0] == 0

    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"{STACK}/code/{COMMIT}/{contracts.SOURCE_ARCHIVE}")
    with tarfile.open(fileobj=io.BytesIO(body["Body"].read())) as tar:
        names = sorted(tar.getnames())
        packed = tar.extractfile("training/train.py")
        assert packed is not None and packed.read() == (ROOT / "training" / "train.py").read_bytes()
    expected = ["contracts.py", *sorted(f"training/{p.name}" for p in (ROOT / "training").glob("*.py"))]
    assert names == sorted(expected)
    assert not any(n.endswith((".yml", ".pyc", ".txt")) or n in ("setup.py", "requirements.txt") for n in names)


def test_source_archive_is_the_same_bytes_for_the_same_code_whatever_its_file_times(tmp_path: Path) -> None:
    # A copy of the code with other modification times: only the contents may reach the archive.
    names = model_build.source_files()
    for name in names:
        copy = tmp_path / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes((ROOT / name).read_bytes())
        os.utime(copy, (1_000_000_000, 1_000_000_000))
    archive = model_build.package_source()
    assert model_build.source_files(tmp_path) == names
    assert model_build.package_source(tmp_path) == archive
    # Nor the time it was built (gzip's header MTIME, bytes 4-8) or who built it.
    assert archive[4:8] == bytes(4)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == names
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}


def test_summary_records_the_execution_and_its_steps(environ: dict[str, str], sagemaker: tuple[Any, Stubber],
                                                     tmp_path: Path) -> None:
    client, stubber = sagemaker
    _expect_start(stubber)
    _expect_poll(stubber, "Succeeded", [
        *DONE_BEFORE_GATE, _step("Register", "Succeeded", (10, 10), Metadata={"RegisterModel": {"Arn": PACKAGE_ARN}})])
    _build(environ, client, FakeClock())
    summary = json.loads((tmp_path / model_build.SUMMARY_FILE).read_text())
    assert (summary["pipeline_execution_arn"], summary["model_package_arn"], summary["exit_code"]) == (
        EXECUTION_ARN, PACKAGE_ARN, 0)
    assert [(s["name"], s["status"], s["seconds"]) for s in summary["steps"]] == [
        ("Prepare", "Succeeded", 180.0), ("Train", "Succeeded", 240.0), ("Evaluate", "Succeeded", 180.0),
        ("Register", "Succeeded", 0.0)]


def test_a_rerun_of_the_same_build_sends_the_same_idempotency_token(
        environ: dict[str, str], sagemaker: tuple[Any, Stubber]) -> None:
    client, stubber = sagemaker
    tokens: list[str] = []
    client.meta.events.register("provide-client-params.sagemaker.StartPipelineExecution",
                                lambda params, **_: tokens.append(params["ClientRequestToken"]))
    for _ in range(2):
        _expect_start(stubber)
        _expect_poll(stubber, "Succeeded", [
            _step("Register", "Succeeded", (10, 10), Metadata={"RegisterModel": {"Arn": PACKAGE_ARN}})])
        assert _build(environ, client, FakeClock())[0] == 0
    assert len(tokens) == 2 and tokens[0] == tokens[1] and 32 <= len(tokens[0]) <= 128


def test_without_a_data_uri_the_pipeline_default_is_used(environ: dict[str, str],
                                                         sagemaker: tuple[Any, Stubber]) -> None:
    client, stubber = sagemaker
    del environ[contracts.ENV_TRAINING_DATA_URI]
    _expect_start(stubber, [
        {"Name": "CodeUri", "Value": f"s3://{BUCKET}/{STACK}/code/{COMMIT}/{contracts.SOURCE_ARCHIVE}"},
        {"Name": "Commit", "Value": COMMIT}, {"Name": "BuildId", "Value": BUILD_ID}])
    _expect_poll(stubber, "Succeeded", [
        _step("Register", "Succeeded", (10, 10), Metadata={"RegisterModel": {"Arn": PACKAGE_ARN}})])
    code, lines = _build(environ, client, FakeClock())
    assert code == 0
    assert any("on the pipeline's default DataUri" in line for line in lines)


# --- Failures -------------------------------------------------------------------------------------------
def test_failed_step_prints_its_name_and_failure_reason_and_exits_1(
        environ: dict[str, str], sagemaker: tuple[Any, Stubber], tmp_path: Path) -> None:
    client, stubber = sagemaker
    reason = "AlgorithmError: ExecuteUserScriptError: ExitCode 1 ErrorMessage \"MemoryError\""
    _expect_start(stubber)
    _expect_poll(stubber, "Failed", [
        DONE_BEFORE_GATE[0],
        _step("Train", "Failed", (3, 5), FailureReason=reason, Metadata={"TrainingJob": {"Arn": TRAIN_JOB}})],
        failure="Step failure: One or multiple steps failed.")

    code, lines = _build(environ, client, FakeClock())

    assert code == 1
    assert f"[    0s] Train       Failed in 2m00s: {reason}" in lines
    assert lines[-1].startswith(f"model build failed: step Train failed: {reason}")
    assert not (tmp_path / "model_package_arn.txt").exists()


def test_quality_gate_failure_exits_3_with_the_fail_step_message(
        environ: dict[str, str], sagemaker: tuple[Any, Stubber], tmp_path: Path) -> None:
    client, stubber = sagemaker
    message = "quality gate: the model must reach every bar; accuracy 0.79 (bar 0.8), auc 0.91 (bar 0.85)"
    _expect_start(stubber)
    _expect_poll(stubber, "Failed", [
        *DONE_BEFORE_GATE,
        _step("QualityGate", "Succeeded", (10, 10), Metadata={"Condition": {"Outcome": "False"}}),
        _step("Fail", "Failed", (10, 10), FailureReason=message, Metadata={"Fail": {"ErrorMessage": message}}),
    ], failure="Step failure: One or multiple steps failed.")

    code, lines = _build(environ, client, FakeClock())

    assert code == contracts.EXIT_QUALITY_GATE == 3
    assert "[    0s] QualityGate Succeeded in 0s: not passed" in lines
    assert lines[-1] == f"model build failed: the model did not pass the QualityGate and was not registered: {message}"
    assert not (tmp_path / "model_package_arn.txt").exists()


def test_data_rejection_exits_4_with_prepare_exit_message(environ: dict[str, str],
                                                          sagemaker: tuple[Any, Stubber]) -> None:
    client, stubber = sagemaker
    rejection = ("data rejected: s3://mlops-artifacts-test/dev/training-data/churn.csv, column monthly_charges: "
                 "not a number in data rows 3, 17 ('n/a', 'unknown'); fix: ...")
    _expect_start(stubber)
    _expect_poll(stubber, "Failed", [
        _step("Prepare", "Failed", (0, 2), FailureReason="AlgorithmError: See job logs for more information",
              Metadata={"ProcessingJob": {"Arn": PREPARE_JOB}})], failure="Step failure: One or multiple steps failed.")
    job_name = PREPARE_JOB.rsplit("/", 1)[1]
    stubber.add_response("describe_processing_job", {
        "ProcessingJobName": job_name, "ProcessingJobArn": PREPARE_JOB, "ProcessingJobStatus": "Failed",
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                  "VolumeSizeInGB": 30}},
        "AppSpecification": {"ImageUri": TARGET.image_uri}, "CreationTime": T0,
        "FailureReason": "AlgorithmError: See job logs for more information", "ExitMessage": rejection,
    }, {"ProcessingJobName": job_name})

    code, lines = _build(environ, client, FakeClock())

    assert code == contracts.EXIT_DATA_REJECTED == 4
    assert lines[-1] == f"model build failed: step Prepare: {rejection}"


def test_failed_step_is_reported_even_when_its_exit_message_cannot_be_read(
        environ: dict[str, str], sagemaker: tuple[Any, Stubber]) -> None:
    client, stubber = sagemaker
    _expect_start(stubber)
    _expect_poll(stubber, "Failed", [
        _step("Prepare", "Failed", (0, 2), FailureReason="AlgorithmError: See job logs for more information",
              Metadata={"ProcessingJob": {"Arn": PREPARE_JOB}})])
    stubber.add_client_error("describe_processing_job", "AccessDeniedException", "not authorized")

    code, lines = _build(environ, client, FakeClock())

    assert code == 1
    assert lines[-1].startswith("model build failed: step Prepare failed: AlgorithmError: See job logs for more "
                                "information; the job said: (its ExitMessage could not be read: "
                                "DescribeProcessingJob failed (AccessDeniedException: not authorized); permissions: "
                                "the identity running this needs DescribeProcessingJob")


def test_timeout_stops_the_execution_and_exits_1(environ: dict[str, str], sagemaker: tuple[Any, Stubber]) -> None:
    client, stubber = sagemaker
    _expect_start(stubber)
    _expect_poll(stubber, "Executing", [_step("Prepare", "Executing", (0, 0))])
    _expect_poll(stubber, "Executing", [_step("Prepare", "Executing", (0, 0))])
    stubber.add_response("stop_pipeline_execution", {"PipelineExecutionArn": EXECUTION_ARN},
                         {"PipelineExecutionArn": EXECUTION_ARN, "ClientRequestToken": ANY})
    stubber.add_response("describe_pipeline_execution",
                         {"PipelineExecutionArn": EXECUTION_ARN, "PipelineExecutionStatus": "Stopping"},
                         {"PipelineExecutionArn": EXECUTION_ARN})
    stubber.add_response("describe_pipeline_execution",
                         {"PipelineExecutionArn": EXECUTION_ARN, "PipelineExecutionStatus": "Stopped"},
                         {"PipelineExecutionArn": EXECUTION_ARN})
    clock = FakeClock()

    code, lines = _build(environ, client, clock, "--timeout-minutes", "0.05")  # 3 s; the first poll waits 5 s

    assert code == 1
    assert f"timed out after 3s: stopping {EXECUTION_ARN}" in lines
    assert lines[-1].startswith("model build failed: the pipeline execution did not finish within 3s and was "
                                "stopped (Stopped)")


def test_interrupted_build_stops_the_execution(environ: dict[str, str], sagemaker: tuple[Any, Stubber]) -> None:
    client, stubber = sagemaker
    _expect_start(stubber)
    _expect_poll(stubber, "Executing", [_step("Prepare", "Executing", (0, 0))])
    stubber.add_response("stop_pipeline_execution", {"PipelineExecutionArn": EXECUTION_ARN},
                         {"PipelineExecutionArn": EXECUTION_ARN, "ClientRequestToken": ANY})
    stubber.add_response("describe_pipeline_execution",
                         {"PipelineExecutionArn": EXECUTION_ARN, "PipelineExecutionStatus": "Stopped"},
                         {"PipelineExecutionArn": EXECUTION_ARN})
    clock = FakeClock()

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt  # as SIGTERM from CodeBuild's stop button arrives in the build

    lines: list[str] = []
    code = model_build.main([], environ=environ, sagemaker=client, s3=boto3.client("s3"), say=lines.append,
                            sleep=interrupt, clock=clock)
    assert code == 1
    assert f"interrupted: stopping {EXECUTION_ARN}" in lines


def test_the_default_wait_is_the_pipeline_own_bound(environ: dict[str, str], sagemaker: tuple[Any, Stubber]) -> None:
    client, stubber = sagemaker
    _expect_start(stubber)
    _expect_poll(stubber, "Succeeded", [
        _step("Register", "Succeeded", (10, 10), Metadata={"RegisterModel": {"Arn": PACKAGE_ARN}})])
    _code, lines = _build(environ, client, FakeClock())
    bound = pd.wait_bound_minutes(pd.definition(TARGET))
    assert any(line.endswith(f"waiting up to {bound // 60}h{bound % 60:02d}m") for line in lines), lines


def test_missing_pipeline_fails_in_one_line_naming_the_call_and_pulumi_up(
        environ: dict[str, str], sagemaker: tuple[Any, Stubber]) -> None:
    client, stubber = sagemaker
    stubber.add_client_error("describe_pipeline", "ResourceNotFound", f"Pipeline '{PIPELINE}' does not exist.")
    code, lines = _build(environ, client, FakeClock())
    assert code == 1
    assert lines[-1].startswith(f"model build failed: DescribePipeline failed (ResourceNotFound: Pipeline "
                                f"'{PIPELINE}' does not exist.); run `pulumi up`")
    assert "\n" not in lines[-1]


@pytest.mark.parametrize(("code", "fix"), [
    ("ExpiredTokenException", "the AWS credentials are invalid or expired"),
    ("ThrottlingException", "AWS throttled the request: run it again in a minute"),
    ("AccessDeniedException", "permissions: the identity running this needs DescribePipeline"),
])
def test_aws_errors_end_in_one_line_with_the_fix_for_their_kind(environ: dict[str, str],
                                                                  sagemaker: tuple[Any, Stubber], code: str,
                                                                  fix: str) -> None:
    client, stubber = sagemaker
    stubber.add_client_error("describe_pipeline", code, "the service said no")
    exit_code, lines = _build(environ, client, FakeClock())
    assert exit_code == 1
    assert lines[-1].startswith(f"model build failed: DescribePipeline failed ({code}: the service said no); {fix}")


def test_no_region_fails_in_one_line_saying_to_set_it(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    # No profile files, no region: the clients cannot be made (boto3 reads the process environment).
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    lines: list[str] = []
    code = model_build.main([], environ=environ, say=lines.append, sleep=FakeClock().sleep, clock=FakeClock())
    assert code == 1
    assert lines[-1].startswith("model build failed: boto3.client on this shell's AWS configuration failed "
                                "(NoRegionError: ")
    assert "export AWS_DEFAULT_REGION=" in lines[-1]


def test_pipeline_without_the_build_parameters_asks_for_pulumi_up(
        environ: dict[str, str], sagemaker: tuple[Any, Stubber]) -> None:
    client, stubber = sagemaker
    old = pd.definition(TARGET)
    old["Parameters"] = [p for p in old["Parameters"] if p["Name"] != "BuildId"]
    stubber.add_response("describe_pipeline", {"PipelineName": PIPELINE, "PipelineDefinition": json.dumps(old)},
                         {"PipelineName": PIPELINE})
    code, lines = _build(environ, client, FakeClock())
    assert (code, lines[-1]) == (1, f"model build failed: pipeline {PIPELINE} has no parameter(s) BuildId: it "
                                    "predates this code; run `pulumi up` for the stack so the pipeline matches it")


def test_upload_failure_names_the_call_and_starts_nothing(environ: dict[str, str],
                                                         sagemaker: tuple[Any, Stubber]) -> None:
    client, stubber = sagemaker
    environ[contracts.ENV_ARTIFACT_BUCKET] = "no-such-bucket"
    stubber.add_response("describe_pipeline", {"PipelineName": PIPELINE,
                                               "PipelineDefinition": pd.definition_json(TARGET)},
                         {"PipelineName": PIPELINE})
    code, lines = _build(environ, client, FakeClock())
    assert code == 1
    assert lines[-1].startswith("model build failed: PutObject failed (NoSuchBucket:")
    assert lines[-1].endswith("check that ARTIFACT_BUCKET names the stack's artifact bucket")


@pytest.mark.parametrize(("change", "message"), [
    ({contracts.ENV_MODEL_BUILD_PIPELINE: ""}, "missing environment variable(s) MODEL_BUILD_PIPELINE_NAME"),
    ({contracts.ENV_MODEL_BUILD_COMPUTE: "sagemaker"}, "MODEL_BUILD_COMPUTE='sagemaker' is not one of pipeline, build"),
    ({contracts.ENV_TRAINING_DATA_URI: "https://example.com/data/"}, "is not an s3:// URI"),
    ({contracts.ENV_TRAINING_DATA_URI: "s3://team-data/churn (2024)/"}, "cannot be recorded on the model package"),
    ({"CODEBUILD_RESOLVED_SOURCE_VERSION": ""}, "cannot tell which git commit"),
])
def test_bad_environment_fails_before_any_call(environ: dict[str, str], sagemaker: tuple[Any, Stubber],
                                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               change: dict[str, str], message: str) -> None:
    client, _stubber = sagemaker  # no responses queued: any SageMaker call would fail the test
    environ.update(change)
    if "CODEBUILD_RESOLVED_SOURCE_VERSION" in change:
        monkeypatch.setattr("training.register._git_head", lambda cwd: None)
    code, lines = _build(environ, client, FakeClock())
    assert code == 1
    assert lines[-1].startswith("model build failed: ") and message in lines[-1], lines


# --- The inline path (compute `build`) against moto -----------------------------------------------------
@pytest.fixture
def inline_env(environ: dict[str, str]) -> dict[str, str]:
    environ[contracts.ENV_MODEL_BUILD_COMPUTE] = "build"
    del environ[contracts.ENV_MODEL_BUILD_PIPELINE]
    boto3.client("sagemaker").create_model_package_group(ModelPackageGroupName=TARGET.group)
    return environ


def _upload(key: str, body: bytes) -> None:
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)


def test_inline_build_trains_on_the_data_prefix_and_registers(inline_env: dict[str, str], tmp_path: Path) -> None:
    from training.sample_data import sample_csv

    _upload(f"{STACK}/training-data/churn.csv", sample_csv(n_rows=1200))
    lines: list[str] = []
    code = model_build.main([], environ=inline_env, s3=boto3.client("s3"), sagemaker=boto3.client("sagemaker"),
                            say=lines.append)
    assert code == 0, lines
    arn = (tmp_path / "model_package_arn.txt").read_text()
    package = boto3.client("sagemaker").describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == contracts.STATUS_PENDING
    assert package["CustomerMetadataProperties"]["TrainingData"] == TARGET.training_data_uri
    changes = [re.match(r"\[\s*\S+\] (\S+)\s+(\S+)", line) for line in lines if line.startswith("[")]
    assert [m.groups() for m in changes if m and m.group(2) == "Succeeded"] == [
        ("Prepare", "Succeeded"), ("Train", "Succeeded"), ("Evaluate", "Succeeded"), ("Register", "Succeeded")]


def test_inline_build_checks_the_registration_settings_before_any_step(inline_env: dict[str, str],
                                                                     tmp_path: Path) -> None:
    from training.sample_data import sample_csv

    _upload(f"{STACK}/training-data/churn.csv", sample_csv(n_rows=1200))
    del inline_env[contracts.ENV_MODEL_PACKAGE_GROUP_NAME]
    lines: list[str] = []
    code = model_build.main([], environ=inline_env, s3=boto3.client("s3"), sagemaker=boto3.client("sagemaker"),
                            say=lines.append)
    assert code == 1
    assert lines[-1].startswith(f"model build failed: missing environment variable(s) "
                                f"{contracts.ENV_MODEL_PACKAGE_GROUP_NAME}")
    assert not any(line.startswith("[") for line in lines), "no step ran"
    assert not (tmp_path / model_build.BUILD_ROOT / "data").exists(), "nothing was downloaded"


def test_inline_build_records_the_build_id_the_package_carries(inline_env: dict[str, str], tmp_path: Path) -> None:
    from training.sample_data import sample_csv

    # A hand run: no CodeBuild or Actions id, so the build makes one up (local-<time>-<random>) exactly once.
    del inline_env["CODEBUILD_BUILD_ID"]
    _upload(f"{STACK}/training-data/churn.csv", sample_csv(n_rows=1200))
    lines: list[str] = []
    code = model_build.main([], environ=inline_env, s3=boto3.client("s3"), sagemaker=boto3.client("sagemaker"),
                            say=lines.append)
    assert code == 0, lines
    summary = json.loads((tmp_path / model_build.SUMMARY_FILE).read_text())
    assert summary["build_id"].startswith("local-")
    package = boto3.client("sagemaker").describe_model_package(ModelPackageName=summary["model_package_arn"])
    assert package["CustomerMetadataProperties"]["BuildId"] == summary["build_id"]
    model_url = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert model_url == (f"s3://{BUCKET}/{contracts.model_builds_prefix(STACK)}{summary['build_id']}/"
                         f"{contracts.MODEL_ARCHIVE}")


def test_inline_build_exits_4_on_rejected_data_and_registers_nothing(inline_env: dict[str, str]) -> None:
    header = ",".join([*contracts.feature_names(), contracts.TARGET_COLUMN])
    _upload(f"{STACK}/training-data/churn.csv", f"{header}\n1,not-a-number,3,one-year,x,dsl,0,1,0,1,0\n".encode())
    lines: list[str] = []
    code = model_build.main([], environ=inline_env, s3=boto3.client("s3"), sagemaker=boto3.client("sagemaker"),
                            say=lines.append)
    assert code == contracts.EXIT_DATA_REJECTED
    assert lines[-1] == ("model build failed: step Prepare: the data contract rejected the data (the reason is "
                         "printed above)")
    packages = boto3.client("sagemaker").list_model_packages(ModelPackageGroupName=TARGET.group)
    assert packages["ModelPackageSummaryList"] == []
