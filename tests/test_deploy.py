"""training/deploy.py against moto (SageMaker, S3, Application Auto Scaling) and the hosting shim.

The smoke test reaches the real trained model through local.hosting. APIs moto lacks (UpdateEndpoint
with DeploymentConfig, CodePipeline GetPipelineState, endpoint states other than InService) go
through botocore's Stubber, which checks each request against the real API model.
"""

from __future__ import annotations

import datetime
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import joblib
import pandas as pd
import pytest
from botocore.stub import Stubber

import contracts
from contracts import DataCapture, DeploymentStage, Instances, Rollout, Serverless
from local.hosting import ENV_RUNTIME_ENDPOINT, Hosting
from training import deploy
from training.deploy import SAMPLE_ROWS, Clients, DeployError, Package, Settings
from training.register import BuildInfo, RegisterSettings, register

REGION = "us-east-1"
BUCKET = "deploy-test-artifacts"
GROUP = "deploy-test-models"
STACK = "test"
ROLE_ARN = "arn:aws:iam::123456789012:role/sagemaker-execution"
ALARM = "churn-production-5xx"
# Same artifact URL in every test: the module's shim keeps one model server for it.
BUILD = BuildInfo(build_id="deploy-test", generated_by="tests", commit="0" * 40, pipeline_execution="none")

STAGING = DeploymentStage(name="staging", endpoint_name="churn-staging", serverless=Serverless(2048, 5))
PRODUCTION = DeploymentStage(
    name="production", endpoint_name="churn-production", instances=Instances("ml.m5.large", 1),
    autoscaling=contracts.Autoscaling(1, 3, 50.0), rollout=Rollout(10, 300, (ALARM,)),
    data_capture=DataCapture(sampling_percent=25), requires_approval=True,
)


@pytest.fixture(scope="module")
def hosting(moto_server: str) -> Iterator[Hosting]:
    emulator: dict[str, Any] = {"endpoint_url": moto_server, "region_name": REGION,
                                "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    with Hosting(sagemaker=boto3.client("sagemaker", **emulator), s3=boto3.client("s3", **emulator)) as shim:
        yield shim


@pytest.fixture
def environ(aws: str, hosting: Hosting, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The deploy build's environment; sagemaker-runtime goes to the shim as in the embedded run."""
    monkeypatch.setenv(ENV_RUNTIME_ENDPOINT, hosting.url)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return {
        contracts.ENV_ARTIFACT_BUCKET: BUCKET,
        contracts.ENV_MODEL_PACKAGE_GROUP_NAME: GROUP,
        contracts.ENV_SAGEMAKER_EXECUTION_ROLE_ARN: ROLE_ARN,
        contracts.ENV_DEPLOYMENT_STAGES: contracts.dump_deployment_stages([STAGING, PRODUCTION]),
        contracts.ENV_MLOPS_PROJECT: contracts.PROJECT,
        contracts.ENV_MLOPS_STACK: STACK,
    }


def _register(model_dir: Path, output_dir: Path, group: str = GROUP, build: BuildInfo = BUILD) -> str:
    settings = RegisterSettings(bucket=BUCKET, group=group, image_uri=contracts.inference_image_uri(REGION),
                                stack=STACK)
    sagemaker = boto3.client("sagemaker")
    groups = sagemaker.list_model_package_groups()["ModelPackageGroupSummaryList"]
    if group not in {g["ModelPackageGroupName"] for g in groups}:  # the program creates it; register never does
        sagemaker.create_model_package_group(ModelPackageGroupName=group)
    return register(model_dir, output_dir, settings, build, sagemaker=boto3.client("sagemaker"),
                    s3=boto3.client("s3"))


def _decide(arn: str, status: str, reason: str) -> None:
    boto3.client("sagemaker").update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status,
                                                   ApprovalDescription=reason)


@pytest.fixture
def approved(environ: dict[str, str], trained_model_dir: tuple[Path, Path]) -> str:
    arn = _register(*trained_model_dir)
    _decide(arn, contracts.STATUS_APPROVED, "auc 0.91 >= 0.85")
    return arn


def _endpoint_names() -> list[str]:
    return sorted(e["EndpointName"] for e in boto3.client("sagemaker").list_endpoints()["Endpoints"])


# --- Deploying against the emulator ------------------------------------------------------------------
def test_serverless_and_instance_stages_end_in_service(approved: str, environ: dict[str, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert deploy.main(["--model-package-arn", approved], environ) == 0

    sm = boto3.client("sagemaker")
    staging = sm.describe_endpoint(EndpointName="churn-staging")
    production = sm.describe_endpoint(EndpointName="churn-production")
    assert (staging["EndpointStatus"], production["EndpointStatus"]) == ("InService", "InService")
    staging_variant = sm.describe_endpoint_config(
        EndpointConfigName=staging["EndpointConfigName"])["ProductionVariants"][0]
    production_variant = sm.describe_endpoint_config(
        EndpointConfigName=production["EndpointConfigName"])["ProductionVariants"][0]
    assert staging_variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert (production_variant["InstanceType"], production_variant["InitialInstanceCount"]) == ("ml.m5.large", 1)
    out = capsys.readouterr().out
    assert out.index("stage staging") < out.index("stage production")


def test_each_stage_is_smoke_tested_with_the_real_models_predictions(
        approved: str, environ: dict[str, str], trained_model_dir: tuple[Path, Path]) -> None:
    results = deploy.run(["--model-package-arn", approved], environ, say=lambda _m: None)

    model = joblib.load(trained_model_dir[0] / contracts.MODEL_FILE)
    expected = list(model.predict_proba(pd.DataFrame(list(SAMPLE_ROWS)))[:, 1])
    assert [r.stage for r in results] == ["staging", "production"]
    for result in results:
        assert result.probabilities == pytest.approx(expected, abs=1e-6)


def test_models_are_created_from_the_package_with_the_execution_role(approved: str, environ: dict[str, str]) -> None:
    deploy.run(["--model-package-arn", approved, "--stage", "staging"], environ, say=lambda _m: None)

    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName="churn-staging")["EndpointConfigName"])
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert model["PrimaryContainer"]["ModelPackageName"] == approved
    assert model["ExecutionRoleArn"] == ROLE_ARN


def test_production_captures_data_into_the_artifact_bucket(approved: str, environ: dict[str, str]) -> None:
    deploy.run(["--model-package-arn", approved, "--stage", "production"], environ, say=lambda _m: None)

    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName="churn-production")["EndpointConfigName"])
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True
    assert capture["InitialSamplingPercentage"] == 25
    assert capture["DestinationS3Uri"] == f"s3://{BUCKET}/data-capture/churn-production"


def test_production_registers_target_tracking_autoscaling(approved: str, environ: dict[str, str]) -> None:
    deploy.run(["--model-package-arn", approved], environ, say=lambda _m: None)

    scaling = boto3.client("application-autoscaling")
    targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [
        ("endpoint/churn-production/variant/AllTraffic", 1, 3)]
    policies = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert len(policies) == 1
    tracking = policies[0]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 50.0
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"


def test_everything_deploy_creates_carries_project_stack_and_package_tags(
        approved: str, environ: dict[str, str]) -> None:
    deploy.run(["--model-package-arn", approved], environ, say=lambda _m: None)

    sm = boto3.client("sagemaker")
    arns = [m["ModelArn"] for m in sm.list_models()["Models"]]
    arns += [c["EndpointConfigArn"] for c in sm.list_endpoint_configs()["EndpointConfigs"]]
    arns += [e["EndpointArn"] for e in sm.list_endpoints()["Endpoints"]]
    assert len(arns) == 6
    for arn in arns:
        tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}
        assert tags[contracts.TAG_PROJECT] == contracts.PROJECT, arn
        assert tags[contracts.TAG_STACK] == STACK, arn
        assert tags[contracts.TAG_MODEL_PACKAGE] == approved, arn


def test_a_rerun_leaves_stages_that_serve_the_package_alone(approved: str, environ: dict[str, str]) -> None:
    deploy.run(["--model-package-arn", approved], environ, say=lambda _m: None)
    sm = boto3.client("sagemaker")
    configs_before = sm.list_endpoint_configs()["EndpointConfigs"]

    again = deploy.run(["--model-package-arn", approved], environ, say=lambda _m: None)

    assert [r.action for r in again] == ["unchanged", "unchanged"]
    assert len(sm.list_endpoint_configs()["EndpointConfigs"]) == len(configs_before) == 2
    assert len(sm.list_models()["Models"]) == 2
    assert all(len(r.probabilities) == len(SAMPLE_ROWS) for r in again)  # still smoke-tested


def test_the_arn_file_of_the_build_artifact_is_read_by_default(
        approved: str, environ: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / contracts.MODEL_PACKAGE_ARN_FILE).write_text(approved + "\n")

    code = deploy.main(["--stage", "staging"], {**environ, "CODEBUILD_SRC_DIR_BuildArtifact": str(tmp_path)})

    assert code == 0
    assert _endpoint_names() == ["churn-staging"]


# --- Refusals ----------------------------------------------------------------------------------------
def test_a_pending_package_is_refused_with_how_to_approve_it(
        environ: dict[str, str], trained_model_dir: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    arn = _register(*trained_model_dir)

    assert deploy.main(["--model-package-arn", arn], environ) == 1

    err = capsys.readouterr().err
    assert err.startswith("deploy: error: ")
    assert "PendingManualApproval, not Approved" in err
    assert f"update-model-package --model-package-arn {arn}" in err
    assert _endpoint_names() == []


def test_a_rejected_package_is_never_deployed(
        environ: dict[str, str], trained_model_dir: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    arn = _register(*trained_model_dir)
    _decide(arn, contracts.STATUS_REJECTED, "auc 0.71 < 0.85")

    assert deploy.main(["--model-package-arn", arn], environ) == 1

    err = capsys.readouterr().err
    assert "is Rejected (reason: auc 0.71 < 0.85)" in err
    assert _endpoint_names() == []
    assert boto3.client("sagemaker").list_models()["Models"] == []


def test_a_package_of_another_group_is_refused(
        environ: dict[str, str], trained_model_dir: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    arn = _register(*trained_model_dir, group="someone-elses-models")
    _decide(arn, contracts.STATUS_APPROVED, "fine elsewhere")

    assert deploy.main(["--model-package-arn", arn], environ) == 1

    assert f"not this stack's group '{GROUP}'" in capsys.readouterr().err
    assert _endpoint_names() == []


def test_missing_environment_names_each_missing_variable(capsys: pytest.CaptureFixture[str]) -> None:
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1"

    assert deploy.main(["--model-package-arn", arn], {contracts.ENV_MLOPS_STACK: STACK}) == 1

    err = capsys.readouterr().err
    for name in (contracts.ENV_MODEL_PACKAGE_GROUP_NAME, contracts.ENV_SAGEMAKER_EXECUTION_ROLE_ARN,
                 contracts.ENV_DEPLOYMENT_STAGES):
        assert name in err


def test_an_unknown_stage_fails_before_anything_is_deployed(
        approved: str, environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert deploy.main(["--model-package-arn", approved, "--stage", "prod"], environ) == 1

    assert "--stage 'prod' is not in DEPLOYMENT_STAGES (stages: staging, production)" in capsys.readouterr().err
    assert _endpoint_names() == []


def test_a_pipeline_action_names_its_stage_in_the_environment(
        approved: str, environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    # CodePipeline Deploy actions share one buildspec command and select their stage via DEPLOY_STAGE.
    assert deploy.main(["--model-package-arn", approved], {**environ, contracts.ENV_DEPLOY_STAGE: "prod"}) == 1

    assert "--stage 'prod' is not in DEPLOYMENT_STAGES" in capsys.readouterr().err
    assert _endpoint_names() == []


# --- Failing smoke tests -----------------------------------------------------------------------------
def _package_with_script(trained_model_dir: tuple[Path, Path], tmp_path: Path, script: str, build_id: str) -> str:
    """An Approved package whose artifact carries its own (broken) code/inference.py."""
    code = tmp_path / "code"
    code.mkdir()
    (code / contracts.INFERENCE_SCRIPT).write_text(script)
    archive = tmp_path / contracts.MODEL_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(trained_model_dir[0] / contracts.MODEL_FILE, arcname=contracts.MODEL_FILE)
        tar.add(code / contracts.INFERENCE_SCRIPT, arcname=f"code/{contracts.INFERENCE_SCRIPT}")
    key = f"{STACK}/model-builds/{build_id}/{contracts.MODEL_ARCHIVE}"
    boto3.client("s3").upload_file(str(archive), BUCKET, key)
    sm = boto3.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    arn = sm.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus=contracts.STATUS_APPROVED,
        InferenceSpecification={
            "Containers": [{"Image": contracts.inference_image_uri(REGION), "ModelDataUrl": f"s3://{BUCKET}/{key}"}],
            "SupportedContentTypes": list(contracts.CONTENT_TYPES),
            "SupportedResponseMIMETypes": list(contracts.CONTENT_TYPES),
        },
    )["ModelPackageArn"]
    return arn


# Stdlib-only scripts: they start fast and stand for a container that answers badly.
OUT_OF_RANGE = (
    "import json\n"
    "def model_fn(d): return None\n"
    # The container hands input_fn text for exactly text/csv (bytes for other types).
    "def input_fn(b, t): return (b if isinstance(b, str) else b.decode()).strip().splitlines()[1:]\n"
    "def predict_fn(rows, m): return [1.7 for _ in rows]\n"
    "def output_fn(p, a): return json.dumps({'predictions': [{'churn_probability': x} for x in p]}), a\n"
)
CRASHING = (
    "def model_fn(d): return None\n"
    "def input_fn(b, t): return b\n"
    "def predict_fn(x, m): raise RuntimeError('feature store unreachable')\n"
    "def output_fn(p, a): return p\n"
)


def test_answers_outside_zero_one_fail_the_deploy_with_the_reason(
        environ: dict[str, str], trained_model_dir: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    arn = _package_with_script(trained_model_dir, tmp_path, OUT_OF_RANGE, "out-of-range")

    assert deploy.main(["--model-package-arn", arn], environ) == 1

    err = capsys.readouterr().err
    assert "deploy: error: smoke test: predictions outside [0, 1]: [1.7" in err
    # The first stage failed its smoke test: production was never touched.
    assert _endpoint_names() == ["churn-staging"]


def test_a_container_error_fails_the_deploy_with_the_models_message(
        environ: dict[str, str], trained_model_dir: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    arn = _package_with_script(trained_model_dir, tmp_path, CRASHING, "crashing")

    assert deploy.main(["--model-package-arn", arn, "--stage", "staging"], environ) == 1

    err = capsys.readouterr().err
    assert "smoke test of endpoint churn-staging failed: ModelError" in err
    assert "feature store unreachable" in err


# --- Stubber: what moto cannot answer ----------------------------------------------------------------
def _offline_client(service: str) -> Any:
    return boto3.client(service, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing",
                        endpoint_url="http://127.0.0.1:9")  # never reached: Stubber answers every call


PACKAGE = Package(arn="arn:aws:sagemaker:us-east-1:123456789012:model-package/deploy-test-models/2",
                  group=GROUP, status=contracts.STATUS_APPROVED, description="ok", version=2)
SETTINGS = Settings(group=GROUP, role_arn=ROLE_ARN, stages=[STAGING, PRODUCTION], project=contracts.PROJECT,
                    stack=STACK, bucket=BUCKET, waiter_delay_seconds=1, waiter_max_attempts=3)
ENDPOINT_ARN = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/churn-production"
MODEL_ARN = "arn:aws:sagemaker:us-east-1:123456789012:model/m"
NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)


def _endpoint(config_name: str, status: str = "InService", **extra: Any) -> dict[str, Any]:
    return {"EndpointName": "churn-production", "EndpointArn": ENDPOINT_ARN, "EndpointConfigName": config_name,
            "EndpointStatus": status, "CreationTime": NOW, "LastModifiedTime": NOW, **extra}


def _clients(sagemaker: Any) -> Clients:
    return Clients(sagemaker=sagemaker, runtime=None, autoscaling=None, codepipeline=None)


def test_update_uses_a_blue_green_canary_with_rollback_on_the_stage_alarms() -> None:
    sm = _offline_client("sagemaker")
    new_config = "churn-production-v2-new"
    with Stubber(sm) as stub:
        stub.add_response("describe_endpoint", _endpoint("churn-production-v1-old"),
                          {"EndpointName": "churn-production"})
        stub.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN}, {
            "EndpointName": "churn-production",
            "EndpointConfigName": new_config,
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "CANARY",
                        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
                        "WaitIntervalInSeconds": 300,
                    },
                    "TerminationWaitInSeconds": 300,
                },
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": ALARM}]},
            },
        })
        stub.add_response("add_tags", {}, {"ResourceArn": ENDPOINT_ARN,
                                           "Tags": [{"Key": contracts.TAG_MODEL_PACKAGE, "Value": PACKAGE.arn}]})

        action = deploy.put_endpoint(_clients(sm), SETTINGS, PRODUCTION, PACKAGE, new_config)

        stub.assert_no_pending_responses()
    assert action == "updated"


def test_an_update_rolled_back_by_an_alarm_fails_the_stage() -> None:
    sm = _offline_client("sagemaker")
    model = deploy.model_request(PRODUCTION, SETTINGS, PACKAGE)
    config = deploy.endpoint_config_request(PRODUCTION, SETTINGS, PACKAGE, model["ModelName"])
    old = "churn-production-v1-old"
    with Stubber(sm) as stub:
        stub.add_response("describe_model", {"ModelName": model["ModelName"], "ModelArn": MODEL_ARN,
                                             "CreationTime": NOW})
        stub.add_response("describe_endpoint_config", {
            "EndpointConfigName": config["EndpointConfigName"], "ProductionVariants": config["ProductionVariants"],
            "EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c", "CreationTime": NOW})
        stub.add_response("describe_endpoint", _endpoint(old))
        stub.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN})
        stub.add_response("add_tags", {})
        # SageMaker rolled back: InService again, but on the old config.
        stub.add_response("describe_endpoint", _endpoint(old, FailureReason="alarm churn-production-5xx in ALARM"))
        stub.add_response("describe_endpoint", _endpoint(old, FailureReason="alarm churn-production-5xx in ALARM"))

        with pytest.raises(DeployError, match=f"InService on {old}, not {config['EndpointConfigName']}: "
                                              "the update was rolled back"):
            deploy.deploy_stage(_clients(sm), SETTINGS, PACKAGE, PRODUCTION, say=lambda _m: None)


def test_an_endpoint_that_fails_to_create_reports_sagemakers_reason() -> None:
    sm = _offline_client("sagemaker")
    with Stubber(sm) as stub:
        stub.add_response("describe_model", {"ModelName": "m", "ModelArn": MODEL_ARN, "CreationTime": NOW})
        stub.add_response("describe_endpoint_config", {
            "EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "m"}],
            "EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c", "CreationTime": NOW})
        stub.add_client_error("describe_endpoint", "ValidationException",
                              'Could not find endpoint "churn-production".')
        stub.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN})
        stub.add_response("describe_endpoint", _endpoint("c", "Failed",
                                                         FailureReason="Image ... does not exist or is not accessible"))

        with pytest.raises(DeployError, match="did not reach InService \\(status Failed\\): Image"):
            deploy.deploy_stage(_clients(sm), SETTINGS, PACKAGE, PRODUCTION, say=lambda _m: None)


# --- Recording a CodePipeline manual approval (manual + codepipeline) ------------------------------------
PIPELINE = "sagemaker-mlops-dev-model"
EXECUTION = "3f0c5b9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
APPROVER = "arn:aws:sts::123456789012:assumed-role/ml-lead/jane"


def _pipeline_state(status: str, execution: str = EXECUTION, summary: str = "metrics look right") -> dict[str, Any]:
    return {
        "pipelineName": PIPELINE,
        "pipelineVersion": 3,
        "stageStates": [
            {"stageName": "Build", "latestExecution": {"pipelineExecutionId": execution, "status": "Succeeded"},
             "actionStates": [{"actionName": "Train", "latestExecution": {"status": "Succeeded"}}]},
            {"stageName": "Approval",
             "latestExecution": {"pipelineExecutionId": execution, "status": status},
             "actionStates": [{"actionName": "ApproveModel", "latestExecution": {
                 "actionExecutionId": "a1", "status": status, "summary": summary, "lastStatusChange": NOW,
                 "token": "0f0e0d0c-aaaa-bbbb-cccc-111122223333", "lastUpdatedBy": APPROVER}}]},
        ],
    }


def _pipeline_clients(state: dict[str, Any]) -> tuple[Clients, Stubber]:
    codepipeline = _offline_client("codepipeline")
    stub = Stubber(codepipeline)
    stub.add_response("get_pipeline_state", state, {"name": PIPELINE})
    stub.activate()
    clients = Clients.from_environment()
    clients.codepipeline = codepipeline
    return clients, stub


def test_a_pipeline_approval_is_recorded_on_the_package_then_deployed(
        environ: dict[str, str], trained_model_dir: tuple[Path, Path]) -> None:
    arn = _register(*trained_model_dir)
    clients, stub = _pipeline_clients(_pipeline_state("Succeeded"))

    code = deploy.main(["--model-package-arn", arn, "--record-pipeline-approval", "--pipeline-name", PIPELINE,
                        "--pipeline-execution-id", EXECUTION, "--stage", "staging"], environ, clients)

    assert code == 0
    stub.assert_no_pending_responses()
    package = boto3.client("sagemaker").describe_model_package(ModelPackageName=arn)
    assert package["ModelApprovalStatus"] == contracts.STATUS_APPROVED
    assert EXECUTION in package["ApprovalDescription"]
    assert APPROVER in package["ApprovalDescription"]
    assert _endpoint_names() == ["churn-staging"]


def test_a_rejected_pipeline_approval_deploys_nothing(
        environ: dict[str, str], trained_model_dir: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    arn = _register(*trained_model_dir)
    clients, _ = _pipeline_clients(_pipeline_state("Failed", summary="recall too low for launch"))

    code = deploy.main(["--model-package-arn", arn, "--record-pipeline-approval", "--pipeline-name", PIPELINE,
                        "--pipeline-execution-id", EXECUTION], environ, clients)

    assert code == 1
    assert "was rejected by " + APPROVER + ": recall too low for launch" in capsys.readouterr().err
    status = boto3.client("sagemaker").describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"]
    assert status == contracts.STATUS_PENDING
    assert _endpoint_names() == []


def test_an_approval_of_another_execution_is_not_this_executions_approval(
        environ: dict[str, str], trained_model_dir: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    arn = _register(*trained_model_dir)
    clients, _ = _pipeline_clients(_pipeline_state("Succeeded", execution="another-execution"))

    code = deploy.main(["--model-package-arn", arn, "--record-pipeline-approval", "--pipeline-name", PIPELINE,
                        "--pipeline-execution-id", EXECUTION], environ, clients)

    assert code == 1
    assert "this execution's approval is missing" in capsys.readouterr().err
    assert _endpoint_names() == []


# --- The smoke-test sample stays in step with training ----------------------------------------------------
def test_smoke_test_rows_have_exactly_the_training_columns_and_categories() -> None:
    from training.train import make_dataset

    frame = make_dataset(n_rows=2000, seed=1).drop(columns=[contracts.TARGET_COLUMN])
    for row in SAMPLE_ROWS:
        assert list(row) == list(frame.columns)
        for column, value in row.items():
            if pd.api.types.is_numeric_dtype(frame[column]):
                assert isinstance(value, (int, float)), column
            else:
                assert value in set(frame[column]), (column, value)


def test_an_answer_that_is_not_the_prediction_format_names_the_expected_shape() -> None:
    with pytest.raises(DeployError, match='not \\{"predictions"'):
        deploy.parse_probabilities(json.dumps({"Body": "canned"}).encode(), rows=5)


def test_deploy_imports_nothing_the_deploy_build_does_not_install() -> None:
    # buildspec-deploy.yml installs only boto3: pandas, numpy or scikit-learn would break the build.
    import subprocess
    import sys

    probe = ("import sys, training.deploy; "
             "print(sorted(m for m in ('pandas', 'numpy', 'sklearn', 'joblib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True,
                          cwd=Path(__file__).resolve().parents[1])

    assert done.stdout.strip() == "[]"
