"""training/register.py against moto's server: the package the approval and deploy steps will find."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
import yaml
from api_limits import limit_problems
from botocore.stub import ANY, Stubber
from moto.backends import get_backend
from moto.core.models import DEFAULT_ACCOUNT_ID

import contracts
from training.register import BuildInfo, RegisterSettings, RegistrationError, main, model_package_request, register

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "mlops-artifacts-test"
GROUP = "churn-test"
STACK = "test"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
BUILD_ID = "sagemaker-mlops-test-train:5f1c2c8e-1111-2222-3333-444455556666"
IMAGE = contracts.inference_image_uri("us-east-1")


@pytest.fixture
def build_env(aws: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The variables the train CodeBuild project has, and the bucket the program created."""
    env = {
        contracts.ENV_ARTIFACT_BUCKET: BUCKET,
        contracts.ENV_MODEL_PACKAGE_GROUP_NAME: GROUP,
        contracts.ENV_INFERENCE_IMAGE_URI: IMAGE,
        contracts.ENV_MLOPS_PROJECT: contracts.PROJECT,
        contracts.ENV_MLOPS_STACK: STACK,
        "CODEBUILD_BUILD_ID": BUILD_ID,
        "CODEBUILD_RESOLVED_SOURCE_VERSION": COMMIT,
        "PIPELINE_EXECUTION_ID": "8a1b2c3d-0000-4000-8000-000000000001",
    }
    for key in ("GITHUB_RUN_ID", "GITHUB_SHA", "GITHUB_REPOSITORY", "SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})  # as ArtifactStore's
    boto3.client("sagemaker").create_model_package_group(
        ModelPackageGroupName=GROUP, ModelPackageGroupDescription="by the program")
    return env


@pytest.fixture
def registered(build_env: dict[str, str], trained_model_dir: tuple[Path, Path], tmp_path: Path) -> tuple[str, Path]:
    """(package ARN, arn file) of one registration through the CLI, as the buildspec runs it."""
    model_dir, output_dir = trained_model_dir
    arn_file = tmp_path / contracts.MODEL_PACKAGE_ARN_FILE
    assert main(["--model-dir", str(model_dir), "--output-dir", str(output_dir), "--arn-file", str(arn_file)]) == 0
    return arn_file.read_text(), arn_file


def _describe(arn: str) -> dict[str, Any]:
    return boto3.client("sagemaker").describe_model_package(ModelPackageName=arn)


def _s3_object(uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def test_package_is_in_the_stack_group_pending_manual_approval(registered: tuple[str, Path]) -> None:
    arn, _ = registered
    listed = boto3.client("sagemaker").list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]
    assert [p["ModelPackageArn"] for p in listed] == [arn]
    described = _describe(arn)
    assert described["ModelPackageGroupName"] == GROUP
    assert described["ModelApprovalStatus"] == contracts.STATUS_PENDING


def test_cli_writes_the_package_arn_file(registered: tuple[str, Path]) -> None:
    arn, arn_file = registered
    assert arn_file.name == contracts.MODEL_PACKAGE_ARN_FILE
    assert arn.startswith("arn:aws:sagemaker:us-east-1:") and f"model-package/{GROUP}/1" in arn


def test_package_metrics_are_readable_from_s3_and_match_the_evaluation(
        registered: tuple[str, Path], trained_model_dir: tuple[Path, Path]) -> None:
    statistics = _describe(registered[0])["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["ContentType"] == "application/json"
    stored = _s3_object(statistics["S3Uri"])
    local = (trained_model_dir[1] / contracts.EVALUATION_FILE).read_bytes()
    assert json.loads(stored) == json.loads(local)
    assert "auc" in json.loads(stored)["binary_classification_metrics"]
    assert statistics["ContentDigest"] == f"sha256:{hashlib.sha256(stored).hexdigest()}"


def test_package_serves_the_archive_with_the_image_and_container_environment(registered: tuple[str, Path]) -> None:
    spec = _describe(registered[0])["InferenceSpecification"]
    container = spec["Containers"][0]
    assert container["Image"] == IMAGE
    assert container["Environment"] == contracts.CONTAINER_ENVIRONMENT
    assert container["FrameworkVersion"] == contracts.SKLEARN_IMAGE["framework_version"]
    assert set(spec["SupportedContentTypes"]) == set(contracts.CONTENT_TYPES)
    assert set(spec["SupportedResponseMIMETypes"]) == set(contracts.CONTENT_TYPES)
    assert "ml.m5.large" in spec["SupportedRealtimeInferenceInstanceTypes"]
    with tarfile.open(fileobj=io.BytesIO(_s3_object(container["ModelDataUrl"]))) as tar:
        assert sorted(tar.getnames()) == sorted([contracts.MODEL_FILE, f"code/{contracts.INFERENCE_SCRIPT}"])


def test_artifacts_are_stored_under_the_stack_and_build(registered: tuple[str, Path]) -> None:
    described = _describe(registered[0])
    model_url = described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    metrics_url = described["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    build_segment = BUILD_ID.replace(":", "-")
    assert model_url == f"s3://{BUCKET}/{STACK}/model-builds/{build_segment}/{contracts.MODEL_ARCHIVE}"
    assert metrics_url == f"s3://{BUCKET}/{STACK}/model-builds/{build_segment}/{contracts.EVALUATION_FILE}"


def test_package_records_commit_build_and_stack(registered: tuple[str, Path]) -> None:
    described = _describe(registered[0])
    assert described["MetadataProperties"]["CommitId"] == COMMIT
    assert described["MetadataProperties"]["GeneratedBy"] == BUILD_ID
    assert described["MetadataProperties"]["ProjectId"] == STACK
    custom = described["CustomerMetadataProperties"]
    assert custom["Stack"] == STACK
    assert custom["PipelineExecution"] == "8a1b2c3d-0000-4000-8000-000000000001"
    assert custom["TrainingData"] == "synthetic:training.sample_data/n_rows=8000/seed=42"


def test_package_is_tagged_with_project_and_stack(registered: tuple[str, Path]) -> None:
    # moto's ListTags cannot resolve model-package ARNs, so read the tags moto stored from the request.
    package = get_backend("sagemaker")[DEFAULT_ACCOUNT_ID]["us-east-1"].model_packages[registered[0]]
    tags = {t["Key"]: t["Value"] for t in package.tags or []}
    assert tags == {contracts.TAG_PROJECT: contracts.PROJECT, contracts.TAG_STACK: STACK}


def test_existing_group_is_kept_and_each_build_adds_a_version(
        build_env: dict[str, str], trained_model_dir: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    sagemaker = boto3.client("sagemaker")
    first = register(*trained_model_dir)
    monkeypatch.setenv("CODEBUILD_BUILD_ID", "sagemaker-mlops-test-train:second-build")
    second = register(*trained_model_dir)

    assert (first.rsplit("/", 1)[1], second.rsplit("/", 1)[1]) == ("1", "2")
    group = sagemaker.describe_model_package_group(ModelPackageGroupName=GROUP)
    assert group["ModelPackageGroupDescription"] == "by the program"
    urls = {_describe(a)["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] for a in (first, second)}
    assert len(urls) == 2


# --- Failing closed: nothing left behind, one line that says what to fix ---------------------
def _bucket_contents() -> list[str]:
    """Every object version and delete marker in the bucket: a failed run must leave none."""
    listed = boto3.client("s3").list_object_versions(Bucket=BUCKET)
    return [f"{v['Key']}@{v['VersionId']}" for v in listed.get("Versions", []) + listed.get("DeleteMarkers", [])]


def _groups() -> list[str]:
    summaries = boto3.client("sagemaker").list_model_package_groups()["ModelPackageGroupSummaryList"]
    return [g["ModelPackageGroupName"] for g in summaries]


def test_mistyped_group_is_refused_naming_the_variable_and_the_stack_output(
        build_env: dict[str, str], trained_model_dir: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(contracts.ENV_MODEL_PACKAGE_GROUP_NAME, "churn-tset")

    code = main(["--model-dir", str(trained_model_dir[0]), "--output-dir", str(trained_model_dir[1])])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "model package group 'churn-tset' does not exist" in err
    assert contracts.ENV_MODEL_PACKAGE_GROUP_NAME in err and "pulumi stack output modelPackageGroupName" in err
    assert _groups() == [GROUP]  # no second registry
    assert _bucket_contents() == []  # refused before uploading anything


class PutObjects:
    """Counts the PutObject calls S3 accepted, through the client's own event hooks."""

    def __init__(self, s3: Any) -> None:
        self.accepted = 0
        s3.meta.events.register("after-call.s3.PutObject", self._record)

    def _record(self, http_response: Any, **_: Any) -> None:
        self.accepted += http_response.status_code == 200


GROUP_DESCRIPTION = {
    "ModelPackageGroupName": GROUP,
    "ModelPackageGroupArn": f"arn:aws:sagemaker:us-east-1:123456789012:model-package-group/{GROUP}",
    "CreationTime": datetime(2026, 1, 1, tzinfo=timezone.utc),
    "CreatedBy": {},
    "ModelPackageGroupStatus": "Completed",
}


def test_failed_create_model_package_removes_both_uploads_and_their_versions(
        build_env: dict[str, str], trained_model_dir: tuple[Path, Path]) -> None:
    # moto's S3 keeps the uploads (versioned, like the stack's bucket); SageMaker refuses the package.
    s3 = boto3.client("s3")
    puts = PutObjects(s3)
    sagemaker = boto3.client("sagemaker")
    with Stubber(sagemaker) as stub:
        stub.add_response("describe_model_package_group", GROUP_DESCRIPTION, {"ModelPackageGroupName": GROUP})
        stub.add_client_error("create_model_package", "ResourceLimitExceeded",
                              "You have reached the limit of model packages", http_status_code=400)
        with pytest.raises(RegistrationError) as raised:
            register(*trained_model_dir, sagemaker=sagemaker, s3=s3)
        stub.assert_no_pending_responses()

    assert puts.accepted == 2, "both files were uploaded before the package was refused"
    assert _bucket_contents() == []
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"sagemaker:CreateModelPackage on model package group '{GROUP}' failed")
    assert "ResourceLimitExceeded" in message


def test_uploads_that_cannot_be_removed_are_named_for_deletion_by_hand(
        build_env: dict[str, str], trained_model_dir: tuple[Path, Path]) -> None:
    # Access denied is IAM's answer, which moto does not evaluate: S3 is stubbed here (real API shapes).
    s3 = boto3.client("s3")
    sagemaker = boto3.client("sagemaker")
    with Stubber(s3) as s3_stub, Stubber(sagemaker) as sm_stub:
        sm_stub.add_response("describe_model_package_group", GROUP_DESCRIPTION)
        s3_stub.add_response("put_object", {"ETag": '"1"', "VersionId": "model-v1"})
        s3_stub.add_response("put_object", {"ETag": '"2"', "VersionId": "metrics-v1"})
        sm_stub.add_client_error("create_model_package", "ValidationException", "bad request")
        for version in ("metrics-v1", "model-v1"):  # newest first
            s3_stub.add_client_error("delete_object", "AccessDenied", "Access Denied", http_status_code=403,
                                     expected_params={"Bucket": BUCKET, "Key": ANY, "VersionId": version})
        with pytest.raises(RegistrationError) as raised:
            register(*trained_model_dir, sagemaker=sagemaker, s3=s3)
        s3_stub.assert_no_pending_responses()

    message = str(raised.value)
    assert "delete by hand" in message
    assert f"/{contracts.MODEL_ARCHIVE} version model-v1 (AccessDenied" in message
    assert f"/{contracts.EVALUATION_FILE} version metrics-v1 (AccessDenied" in message


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        pytest.param("AccessDeniedException", "permissions: the identity running this needs "
                     f"sagemaker:DescribeModelPackageGroup on model package group '{GROUP}'", id="access-denied"),
        pytest.param("ExpiredTokenException", "credentials are invalid or expired", id="expired-credentials"),
        pytest.param("ThrottlingException", "run it again", id="throttled"),
    ],
)
def test_aws_errors_end_in_one_line_naming_the_call_resource_and_fix(
        build_env: dict[str, str], trained_model_dir: tuple[Path, Path], code: str, fix: str) -> None:
    sagemaker = boto3.client("sagemaker")
    with Stubber(sagemaker) as stub:
        stub.add_client_error("describe_model_package_group", code, "the service said no", http_status_code=400)
        with pytest.raises(RegistrationError) as raised:
            register(*trained_model_dir, sagemaker=sagemaker, s3=boto3.client("s3"))

    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"sagemaker:DescribeModelPackageGroup on model package group '{GROUP}' failed")
    assert fix in message
    assert _bucket_contents() == []


def _no_aws_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No profile files, and no instance-metadata lookup (it would leave the machine).
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def test_no_region_ends_in_one_line_saying_to_set_it(
        build_env: dict[str, str], trained_model_dir: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _no_aws_configuration(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")

    code = main(["--model-dir", str(trained_model_dir[0]), "--output-dir", str(trained_model_dir[1]),
                 "--arn-file", str(tmp_path / contracts.MODEL_PACKAGE_ARN_FILE)])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "boto3.client('sagemaker')" in err and "NoRegionError" in err and "export AWS_DEFAULT_REGION=" in err


def test_no_credentials_end_in_one_line_saying_how_to_sign_in(
        build_env: dict[str, str], trained_model_dir: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _no_aws_configuration(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    code = main(["--model-dir", str(trained_model_dir[0]), "--output-dir", str(trained_model_dir[1]),
                 "--arn-file", str(tmp_path / contracts.MODEL_PACKAGE_ARN_FILE)])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"sagemaker:DescribeModelPackageGroup on model package group '{GROUP}'" in err
    assert "NoCredentialsError" in err and "no usable AWS credentials" in err


def test_github_actions_run_is_the_build_and_pipeline_execution() -> None:
    build = BuildInfo.from_env({
        "GITHUB_RUN_ID": "987", "GITHUB_RUN_ATTEMPT": "2", "GITHUB_REPOSITORY": "acme/churn",
        "GITHUB_SERVER_URL": "https://github.com", "GITHUB_SHA": COMMIT,
    })
    assert build.build_id == "github-987-2"
    assert build.generated_by == "https://github.com/acme/churn/actions/runs/987/attempts/2"
    assert build.pipeline_execution == "https://github.com/acme/churn/actions/runs/987"
    assert (build.commit, build.repository) == (COMMIT, "https://github.com/acme/churn")


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_commit_falls_back_to_the_git_checkout(tmp_path: Path) -> None:
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert BuildInfo.from_env({}, cwd=tmp_path).commit == head


def test_unknown_commit_fails_saying_how_to_supply_it(tmp_path: Path) -> None:
    with pytest.raises(RegistrationError, match="CODEBUILD_RESOLVED_SOURCE_VERSION or GITHUB_SHA"):
        BuildInfo.from_env({}, cwd=tmp_path)


def test_missing_environment_variables_are_all_named() -> None:
    with pytest.raises(RegistrationError) as raised:
        RegisterSettings.from_env({contracts.ENV_ARTIFACT_BUCKET: BUCKET})
    message = str(raised.value)
    for name in (contracts.ENV_MODEL_PACKAGE_GROUP_NAME, contracts.ENV_INFERENCE_IMAGE_URI, contracts.ENV_MLOPS_STACK):
        assert name in message
    assert contracts.ENV_ARTIFACT_BUCKET not in message


def test_cli_without_environment_fails_with_a_message_not_a_traceback(
        aws: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        trained_model_dir: tuple[Path, Path]) -> None:
    monkeypatch.delenv(contracts.ENV_ARTIFACT_BUCKET, raising=False)
    code = main(["--model-dir", str(trained_model_dir[0]), "--output-dir", str(trained_model_dir[1])])
    assert code == 2
    assert f"registration failed: missing environment variable(s) {contracts.ENV_ARTIFACT_BUCKET}" in (
        capsys.readouterr().err)


def test_missing_model_file_fails_naming_it_and_registers_nothing(
        build_env: dict[str, str], trained_model_dir: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(RegistrationError, match=r"model\.joblib not found: run `python -m training.train` first"):
        register(tmp_path, trained_model_dir[1])
    assert not boto3.client("sagemaker").list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]


def test_missing_evaluation_fails_naming_it(build_env: dict[str, str], trained_model_dir: tuple[Path, Path],
                                            tmp_path: Path) -> None:
    with pytest.raises(RegistrationError, match=r"evaluation\.json not found"):
        register(trained_model_dir[0], tmp_path)


def test_evaluation_without_auc_is_refused(build_env: dict[str, str], trained_model_dir: tuple[Path, Path],
                                           tmp_path: Path) -> None:
    (tmp_path / contracts.EVALUATION_FILE).write_text(json.dumps({"binary_classification_metrics": {}}))
    with pytest.raises(RegistrationError, match=r"binary_classification_metrics\.auc\.value"):
        register(trained_model_dir[0], tmp_path)


def test_missing_bucket_fails_naming_the_bucket_variable(
        build_env: dict[str, str], trained_model_dir: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contracts.ENV_ARTIFACT_BUCKET, "no-such-bucket")
    with pytest.raises(RegistrationError, match=r"s3://no-such-bucket/.*ARTIFACT_BUCKET"):
        register(*trained_model_dir)


def test_train_buildspec_build_phase_registers_a_package_and_ships_the_arn(
        build_env: dict[str, str], tmp_path: Path) -> None:
    # The commands CodeBuild (and the embedded run) execute, in a scratch working directory.
    spec = yaml.safe_load((ROOT / contracts.TRAIN_BUILDSPEC).read_text())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for phase in ("pre_build", "build", "post_build"):
        for command in spec["phases"].get(phase, {}).get("commands", []):
            done = subprocess.run(["bash", "-c", command.replace("python ", f"{sys.executable} ", 1)],
                                  cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{command!r} failed:\n{done.stdout}\n{done.stderr}"

    shipped = spec["artifacts"]["files"]
    assert contracts.MODEL_PACKAGE_ARN_FILE in shipped
    assert all((tmp_path / f).is_file() for f in shipped), "every artifact file the buildspec lists exists"
    arn = (tmp_path / contracts.MODEL_PACKAGE_ARN_FILE).read_text()
    assert _describe(arn)["ModelApprovalStatus"] == contracts.STATUS_PENDING


def test_create_model_package_request_fits_the_api_limits_even_with_long_odd_inputs() -> None:
    # botocore's client validates types and minimums only; SageMaker enforces maxima and patterns server-side,
    # where a CodeBuild run would fail after training. Check the request against the real API model here.
    settings = RegisterSettings(bucket=BUCKET, group=GROUP, image_uri=IMAGE, stack=STACK)
    build = BuildInfo(build_id="b" * 300, generated_by="arn:aws:codebuild:" + "g" * 1100, commit=COMMIT,
                      pipeline_execution="exec\twith\ttabs,\nnewlines and \"quotes\"", repository="r" * 1100)
    evaluation = {"binary_classification_metrics": {"auc": {"value": 0.9}}}
    request = model_package_request(
        settings, build, model_url=f"s3://{BUCKET}/m.tar.gz", metrics_url=f"s3://{BUCKET}/e.json",
        metrics_digest="sha256:" + "0" * 64, evaluation=evaluation,
        training_data="s3://data/churn 2024,\tq1\n" + "x" * 400, client_token=str(uuid.uuid4()),
    )
    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model(
        "CreateModelPackage").input_shape

    assert limit_problems(shape, request, "CreateModelPackage") == []
    # CustomerMetadataProperties: [\p{L}\p{Z}\p{N}_.:/=+-@]{1,256} (Python's re has no \p classes).
    for key, value in request["CustomerMetadataProperties"].items():
        assert 1 <= len(value) <= 256 and all(c.isalnum() or c == " " or c in "_.:/=+-@" for c in value), (key, value)
    assert request["MetadataProperties"]["CommitId"] == COMMIT
