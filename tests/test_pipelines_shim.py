"""The Pipelines shim: boto3's own sagemaker client drives executions of a pipeline created in moto."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import needs_image

import contracts
from local.emulator import aws_env
from local.pipeline_executor import PROCESSING_ALGORITHM_ERROR, Sandbox
from local.pipelines_shim import ENV_SAGEMAKER_ENDPOINT, PipelinesShim

REGION = "us-east-1"
BUCKET = "shim-test"
GROUP = "shim-test-group"
PIPELINE = "shim-test-pipeline"
IMAGE = contracts.inference_image_uri(REGION)
ROLE = "arn:aws:iam::123456789012:role/sagemaker-execution"


def _processing(name: str, script: str) -> dict[str, Any]:
    return {"Name": name, "Type": "Processing", "Arguments": {
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                                                  "VolumeSizeInGB": 30}},
        "AppSpecification": {"ImageUri": IMAGE, "ContainerEntrypoint": ["bash", "-c", script]},
        "RoleArn": ROLE,
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {
            "S3Uri": {"Std:Join": {"On": "/", "Values": [f"s3://{BUCKET}/runs",
                                                           {"Get": "Execution.PipelineExecutionId"}, name]}},
            "LocalPath": "/opt/ml/processing/output/out", "S3UploadMode": "EndOfJob"}}]},
    }}


def _pipeline(*steps: dict[str, Any]) -> str:
    return json.dumps({"Version": "2020-12-01", "Steps": list(steps), "Parameters": [
        {"Name": "Label", "Type": "String", "DefaultValue": "first"}]})


def _register() -> dict[str, Any]:
    return {"Name": "Register", "Type": "RegisterModel", "Arguments": {
        "ModelPackageGroupName": GROUP, "ModelApprovalStatus": contracts.STATUS_PENDING,
        "ModelPackageDescription": {"Get": "Parameters.Label"},
        "InferenceSpecification": {"Containers": [{"Image": IMAGE, "ModelDataUrl": {"Std:Join": {"On": "/", "Values": [
            {"Get": "Steps.Make.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"}, "model.tar.gz"]}}}],
            "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["application/json"]}}}


@pytest.fixture
def shim(aws: str, tmp_path: Path) -> Iterator[PipelinesShim]:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    moto_sagemaker = boto3.client("sagemaker")
    moto_sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    with PipelinesShim(aws, sagemaker=moto_sagemaker, s3=boto3.client("s3"),
                       sandbox=Sandbox(tmp_path / "jobs", aws_env(aws, REGION, base={}))) as running:
        yield running


@pytest.fixture
def client(shim: PipelinesShim, monkeypatch: pytest.MonkeyPatch) -> Any:
    """boto3's sagemaker client, redirected the way the embedded run redirects the build's."""
    monkeypatch.setenv(ENV_SAGEMAKER_ENDPOINT, shim.url)
    return boto3.client("sagemaker")


def _create(client: Any, definition: str) -> None:
    client.create_pipeline(PipelineName=PIPELINE, PipelineDefinition=definition, RoleArn=ROLE)


def _wait(client: Any, arn: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.describe_pipeline_execution(PipelineExecutionArn=arn)
        if answer["PipelineExecutionStatus"] not in ("Executing", "Stopping"):
            return answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)


@needs_image
def test_an_execution_runs_its_steps_and_reports_them_through_the_api(client: Any) -> None:
    _create(client, _pipeline(_processing("Make", "echo model > /opt/ml/processing/output/out/model.tar.gz"),
                              _register()))

    arn = client.start_pipeline_execution(
        PipelineName=PIPELINE, PipelineParameters=[{"Name": "Label", "Value": "from the build"}],
    )["PipelineExecutionArn"]
    described = _wait(client, arn)

    assert described["PipelineExecutionStatus"] == "Succeeded"
    steps = client.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    assert [(s["StepName"], s["StepStatus"]) for s in steps] == [("Register", "Succeeded"), ("Make", "Succeeded")]
    assert steps[1]["EndTime"] >= steps[1]["StartTime"]
    package = client.describe_model_package(ModelPackageName=steps[0]["Metadata"]["RegisterModel"]["Arn"])
    assert package["ModelPackageDescription"] == "from the build"
    job_name = steps[1]["Metadata"]["ProcessingJob"]["Arn"].rsplit("/", 1)[1]
    assert client.describe_processing_job(ProcessingJobName=job_name)["ProcessingJobStatus"] == "Completed"


def test_calls_it_does_not_answer_reach_the_emulator(client: Any, shim: PipelinesShim) -> None:
    _create(client, _pipeline(_processing("Make", "true")))

    described = client.describe_pipeline(PipelineName=PIPELINE)

    assert described["PipelineName"] == PIPELINE
    assert [g["ModelPackageGroupName"] for g in client.list_model_package_groups()["ModelPackageGroupSummaryList"]] \
        == [GROUP]
    assert shim.executions == []


def test_a_step_type_the_executor_does_not_know_is_refused_at_start_naming_the_step(client: Any) -> None:
    _create(client, _pipeline({"Name": "Tune", "Type": "Tuning", "Arguments": {}}))

    with pytest.raises(ClientError) as raised:
        client.start_pipeline_execution(PipelineName=PIPELINE)

    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert "step 'Tune' has type 'Tuning'" in raised.value.response["Error"]["Message"]


def test_an_undefined_parameter_is_refused_naming_it(client: Any) -> None:
    _create(client, _pipeline(_processing("Make", "true")))

    with pytest.raises(ClientError, match=r"parameters Lable are not defined in the pipeline"):
        client.start_pipeline_execution(PipelineName=PIPELINE, PipelineParameters=[{"Name": "Lable", "Value": "x"}])


def test_an_unknown_pipeline_is_resource_not_found(client: Any) -> None:
    with pytest.raises(ClientError) as raised:
        client.start_pipeline_execution(PipelineName="no-such-pipeline")

    assert raised.value.response["Error"]["Code"] == "ResourceNotFound"


@needs_image
def test_a_repeated_client_request_token_returns_the_same_execution(client: Any, shim: PipelinesShim) -> None:
    _create(client, _pipeline(_processing("Make", "true")))

    first = client.start_pipeline_execution(PipelineName=PIPELINE, ClientRequestToken="build-42-" + "0" * 24)
    again = client.start_pipeline_execution(PipelineName=PIPELINE, ClientRequestToken="build-42-" + "0" * 24)

    assert first["PipelineExecutionArn"] == again["PipelineExecutionArn"]
    assert len(shim.executions) == 1


@needs_image
def test_stop_pipeline_execution_stops_the_running_job(client: Any) -> None:
    _create(client, _pipeline(_processing("Wait", "sleep 120")))
    arn = client.start_pipeline_execution(PipelineName=PIPELINE)["PipelineExecutionArn"]
    while not client.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]:
        time.sleep(0.05)

    client.stop_pipeline_execution(PipelineExecutionArn=arn)
    described = _wait(client, arn, timeout=30)

    assert described["PipelineExecutionStatus"] == "Stopped"
    steps = client.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    assert [s["StepStatus"] for s in steps] == ["Stopped"]
    job_name = steps[0]["Metadata"]["ProcessingJob"]["Arn"].rsplit("/", 1)[1]
    assert client.describe_processing_job(ProcessingJobName=job_name)["ProcessingJobStatus"] == "Stopped"


@needs_image
def test_a_failed_processing_job_is_described_with_its_exit_message(client: Any) -> None:
    _create(client, _pipeline(_processing("Make", "echo 'data rejected: no CSV files' > /opt/ml/output/message; "
                                                  "exit 4")))

    arn = client.start_pipeline_execution(PipelineName=PIPELINE)["PipelineExecutionArn"]
    described = _wait(client, arn)

    assert described["PipelineExecutionStatus"] == "Failed"
    assert described["FailureReason"] == "Step failure: One or multiple steps failed."
    step = client.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"][0]
    assert step["FailureReason"] == PROCESSING_ALGORITHM_ERROR
    job = client.describe_processing_job(ProcessingJobName=step["Metadata"]["ProcessingJob"]["Arn"].rsplit("/", 1)[1])
    assert job["ExitMessage"] == "data rejected: no CSV files\n"
    assert job["FailureReason"] == PROCESSING_ALGORITHM_ERROR


def test_an_unknown_execution_is_resource_not_found(client: Any) -> None:
    with pytest.raises(ClientError) as raised:
        client.describe_pipeline_execution(
            PipelineExecutionArn=f"arn:aws:sagemaker:{REGION}:123456789012:pipeline/{PIPELINE}/execution/none")

    assert raised.value.response["Error"]["Code"] == "ResourceNotFound"


@needs_image
def test_stop_ends_running_executions_and_the_server(aws: str, tmp_path: Path) -> None:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    moto_sagemaker = boto3.client("sagemaker")
    moto_sagemaker.create_pipeline(PipelineName=PIPELINE, RoleArn=ROLE,
                                   PipelineDefinition=_pipeline(_processing("Wait", "sleep 120")))
    shim = PipelinesShim(aws, sagemaker=moto_sagemaker, s3=boto3.client("s3"),
                         sandbox=Sandbox(tmp_path / "jobs", aws_env(aws, REGION, base={}))).start()
    url = shim.url
    client = boto3.client("sagemaker", endpoint_url=url)
    client.start_pipeline_execution(PipelineName=PIPELINE)
    while not shim.executions or not shim.executions[0].snapshot()["steps"]:
        time.sleep(0.05)

    shim.stop()

    assert shim.executions[0].status == "Stopped"
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)  # noqa: S310 - loopback
