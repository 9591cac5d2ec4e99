"""The sagemaker-runtime shim: boto3's InvokeEndpoint answered by the real model of an emulator endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import joblib
import pandas as pd
import pytest
from botocore.exceptions import ClientError

import contracts
from local.hosting import ENV_RUNTIME_ENDPOINT, Hosting
from training.deploy import SAMPLE_ROWS, sample_csv
from training.register import BuildInfo, RegisterSettings, register

REGION = "us-east-1"
BUCKET = "hosting-test-artifacts"
GROUP = "hosting-test-models"
ROLE_ARN = "arn:aws:iam::123456789012:role/sagemaker-execution"
# A fixed build id keeps the artifact's S3 URL the same in every test, so the module's shim
# reuses one model server instead of starting gunicorn per test.
BUILD = BuildInfo(build_id="hosting-test", generated_by="tests", commit="0" * 40, pipeline_execution="none")


@pytest.fixture(scope="module")
def hosting(moto_server: str) -> Iterator[Hosting]:
    emulator: dict[str, Any] = {"endpoint_url": moto_server, "region_name": REGION,
                                "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    with Hosting(sagemaker=boto3.client("sagemaker", **emulator), s3=boto3.client("s3", **emulator)) as shim:
        yield shim


@pytest.fixture
def runtime(aws: str, hosting: Hosting, monkeypatch: pytest.MonkeyPatch) -> Any:
    """boto3's own sagemaker-runtime client, redirected the way the embedded run redirects it."""
    monkeypatch.setenv(ENV_RUNTIME_ENDPOINT, hosting.url)
    return boto3.client("sagemaker-runtime")


def _registered_package(trained_model_dir: tuple[Path, Path]) -> str:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    boto3.client("sagemaker").create_model_package_group(ModelPackageGroupName=GROUP)  # the program's part
    settings = RegisterSettings(bucket=BUCKET, group=GROUP, image_uri=contracts.inference_image_uri(REGION),
                                stack="test")
    return register(*trained_model_dir, settings, BUILD, sagemaker=boto3.client("sagemaker"), s3=boto3.client("s3"))


def _endpoint(name: str, package_arn: str) -> None:
    sm = boto3.client("sagemaker")
    sm.create_model(ModelName=f"{name}-model", PrimaryContainer={"ModelPackageName": package_arn},
                    ExecutionRoleArn=ROLE_ARN)
    sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": f"{name}-model",
        "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def test_invoke_endpoint_returns_the_deployed_models_predictions(
        runtime: Any, trained_model_dir: tuple[Path, Path]) -> None:
    _endpoint("churn-staging", _registered_package(trained_model_dir))

    response = runtime.invoke_endpoint(EndpointName="churn-staging", ContentType="text/csv",
                                       Accept="application/json", Body=sample_csv().encode())

    served = [p["churn_probability"] for p in json.loads(response["Body"].read())["predictions"]]
    model = joblib.load(trained_model_dir[0] / contracts.MODEL_FILE)
    expected = model.predict_proba(pd.DataFrame(list(SAMPLE_ROWS)))[:, 1]
    assert served == pytest.approx(list(expected), abs=1e-6)
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"


def test_json_request_with_csv_accept_is_forwarded_with_both_headers(
        runtime: Any, trained_model_dir: tuple[Path, Path]) -> None:
    _endpoint("churn-json", _registered_package(trained_model_dir))

    response = runtime.invoke_endpoint(EndpointName="churn-json", ContentType="application/json",
                                       Accept="text/csv", Body=json.dumps(list(SAMPLE_ROWS[:3])).encode())

    assert response["ContentType"] == "text/csv; charset=utf-8"  # as the image answers it
    assert len(response["Body"].read().decode().strip().splitlines()) == 3


def test_unknown_endpoint_is_a_validation_error(runtime: Any) -> None:
    with pytest.raises(ClientError) as raised:
        runtime.invoke_endpoint(EndpointName="no-such-endpoint", ContentType="text/csv", Body=b"1,2")

    error = raised.value.response
    assert error["Error"]["Code"] == "ValidationError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "no-such-endpoint" in error["Error"]["Message"]


def test_a_model_error_comes_back_as_model_error_with_the_original_status(
        runtime: Any, trained_model_dir: tuple[Path, Path]) -> None:
    _endpoint("churn-bad-request", _registered_package(trained_model_dir))

    with pytest.raises(ClientError) as raised:
        runtime.invoke_endpoint(EndpointName="churn-bad-request", ContentType="application/xml", Body=b"<rows/>")

    error = raised.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 415
    assert "application/xml" in error["OriginalMessage"]


def test_stop_ends_every_model_server_it_started(aws: str, tmp_path: Path) -> None:
    # A stdlib-only artifact keeps this gunicorn start fast; what is under test is stop().
    import tarfile

    script = tmp_path / contracts.INFERENCE_SCRIPT
    script.write_text("def model_fn(d): return None\ndef input_fn(b, t): return b\n"
                      "def predict_fn(x, m): return x\ndef output_fn(p, a): return p, 'text/csv'\n")
    archive = tmp_path / contracts.MODEL_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(script, arcname=f"code/{contracts.INFERENCE_SCRIPT}")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(archive), BUCKET, "echo/model.tar.gz")
    sm = boto3.client("sagemaker")
    sm.create_model(ModelName="echo", ExecutionRoleArn=ROLE_ARN,
                    PrimaryContainer={"Image": "echo", "ModelDataUrl": f"s3://{BUCKET}/echo/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName="echo", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "echo", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName="echo", EndpointConfigName="echo")

    shim = Hosting().start()
    try:
        answer = boto3.client("sagemaker-runtime", endpoint_url=shim.url).invoke_endpoint(
            EndpointName="echo", ContentType="text/csv", Body=b"1,2,3")
        assert answer["Body"].read() == b"1,2,3"
        servers = list(shim.model_servers.values())
    finally:
        shim.stop()

    assert len(servers) == 1
    assert all(server.process.poll() is not None for server in servers)
