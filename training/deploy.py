"""Deploy an Approved model package to the stack's SageMaker endpoints, stage by stage, smoke-tested.

    python -m training.deploy [--model-package-arn ARN | --arn-file FILE] [--stage NAME]
                              [--record-pipeline-approval [--pipeline-name P] [--pipeline-execution-id X]]

Environment: ARTIFACT_BUCKET, MODEL_PACKAGE_GROUP_NAME, SAGEMAKER_EXECUTION_ROLE_ARN, DEPLOYMENT_STAGES,
MLOPS_PROJECT, MLOPS_STACK. The package ARN defaults to model_package_arn.txt in the build artifact
(CODEBUILD_SRC_DIR_BuildArtifact) or the working directory.

The registry status is the record of truth: only an Approved package of the configured group is
deployed. Per stage: a SageMaker Model from the package, an endpoint config whose name is derived
from its content (so a re-run finds it), create or update the endpoint (blue/green canary with
automatic rollback when the stage has a rollout), wait for InService, autoscaling, then a real
InvokeEndpoint with sample rows whose answer must be one probability in [0, 1] per row.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

import contracts
from contracts import DeploymentStage

APPROVAL_STAGE = "Approval"
# Same variable register.py reads: the CodePipeline action sets it from #{codepipeline.PipelineExecutionId}.
ENV_PIPELINE_EXECUTION_ID = contracts.ENV_PIPELINE_EXECUTION_ID
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# SageMaker names: 1-63 of [a-zA-Z0-9-], no leading hyphen.
MAX_NAME_LENGTH = 63
APPROVAL_DESCRIPTION_LIMIT = 1024
TRANSITIONAL_STATES = ("Creating", "Updating", "SystemUpdating", "RollingBack")

Say = Callable[[str], None]


class DeployError(Exception):
    """A reason to stop: printed as `deploy: error: <message>`, exit code 1."""


@dataclass
class Clients:
    """The AWS clients deploy uses; tests pass Stubber-wrapped or emulator-bound ones."""

    sagemaker: Any
    runtime: Any
    autoscaling: Any
    codepipeline: Any

    @classmethod
    def from_environment(cls) -> Clients:
        # AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME redirect these in the embedded run.
        return cls(
            sagemaker=boto3.client("sagemaker"),
            runtime=boto3.client("sagemaker-runtime"),
            autoscaling=boto3.client("application-autoscaling"),
            codepipeline=boto3.client("codepipeline"),
        )


@dataclass(frozen=True)
class Settings:
    group: str
    role_arn: str
    stages: list[DeploymentStage]
    project: str
    stack: str
    bucket: str | None = None
    waiter_delay_seconds: int = 30
    waiter_max_attempts: int = 120

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        required = (contracts.ENV_MODEL_PACKAGE_GROUP_NAME, contracts.ENV_SAGEMAKER_EXECUTION_ROLE_ARN,
                    contracts.ENV_DEPLOYMENT_STAGES, contracts.ENV_MLOPS_STACK)
        missing = [name for name in required if not environ.get(name)]
        if missing:
            raise DeployError(
                f"missing environment variables: {', '.join(missing)} (the deploy CodeBuild project and the "
                "deploy workflow set them; locally, export them as the stack outputs show)"
            )
        try:
            stages = contracts.parse_deployment_stages(environ[contracts.ENV_DEPLOYMENT_STAGES])
        except ValueError as exc:
            raise DeployError(str(exc)) from None
        return cls(
            group=environ[contracts.ENV_MODEL_PACKAGE_GROUP_NAME],
            role_arn=environ[contracts.ENV_SAGEMAKER_EXECUTION_ROLE_ARN],
            stages=stages,
            project=environ.get(contracts.ENV_MLOPS_PROJECT) or contracts.PROJECT,
            stack=environ[contracts.ENV_MLOPS_STACK],
            bucket=environ.get(contracts.ENV_ARTIFACT_BUCKET) or None,
        )

    def tags(self, package_arn: str) -> list[dict[str, str]]:
        return [
            {"Key": contracts.TAG_PROJECT, "Value": self.project},
            {"Key": contracts.TAG_STACK, "Value": self.stack},
            {"Key": contracts.TAG_MODEL_PACKAGE, "Value": package_arn},
        ]


@dataclass(frozen=True)
class Package:
    arn: str
    group: str
    status: str
    description: str
    version: int


@dataclass(frozen=True)
class StageResult:
    stage: str
    endpoint_name: str
    endpoint_config_name: str
    action: str  # "created", "updated" or "unchanged"
    probabilities: list[float]


# --- Package ---------------------------------------------------------------------------------------
def default_arn_file(environ: Mapping[str, str]) -> Path:
    base = environ.get("CODEBUILD_SRC_DIR_BuildArtifact") or "."
    return Path(base) / contracts.MODEL_PACKAGE_ARN_FILE


def read_package_arn(arn: str | None, arn_file: Path | None, environ: Mapping[str, str]) -> str:
    if arn:
        return arn.strip()
    path = arn_file or default_arn_file(environ)
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise DeployError(
            f"cannot read the model package ARN from {path} ({exc.strerror}); pass --model-package-arn ARN "
            "or --arn-file FILE (register.py writes it)"
        ) from None
    if not text.startswith("arn:") or ":model-package/" not in text:
        raise DeployError(f"{path} does not hold a model package ARN (found {text[:80]!r})")
    return text


def describe_package(sagemaker: Any, arn: str) -> Package:
    try:
        raw = sagemaker.describe_model_package(ModelPackageName=arn)
    except ClientError as exc:
        raise DeployError(f"cannot describe model package {arn}: {_aws_message(exc)}") from None
    return Package(
        arn=raw["ModelPackageArn"],
        group=raw.get("ModelPackageGroupName", ""),
        status=raw.get("ModelApprovalStatus", ""),
        description=raw.get("ApprovalDescription", ""),
        version=int(raw.get("ModelPackageVersion") or 0),
    )


def require_deployable(package: Package, group: str) -> None:
    """Only an Approved package of this stack's group reaches an endpoint."""
    if package.group != group:
        raise DeployError(
            f"model package {package.arn} belongs to group {package.group!r}, not this stack's group {group!r}; "
            "deploy a package registered in this stack's group"
        )
    if package.status == contracts.STATUS_APPROVED:
        return
    if package.status == contracts.STATUS_REJECTED:
        reason = f" (reason: {package.description})" if package.description else ""
        raise DeployError(
            f"model package {package.arn} is Rejected{reason}; a rejected package is never deployed - "
            "train and register a new version"
        )
    raise DeployError(
        f"model package {package.arn} is {package.status or 'without an approval status'}, not Approved; approve it "
        f"first: aws sagemaker update-model-package --model-package-arn {package.arn} "
        "--model-approval-status Approved --approval-description '<why>' (or approve the pipeline's Approval action)"
    )


# --- Recording a CodePipeline manual approval ------------------------------------------------------
def record_pipeline_approval(clients: Clients, package_arn: str, group: str, pipeline_name: str,
                             execution_id: str | None = None, approval_stage: str = APPROVAL_STAGE,
                             say: Say = print) -> Package:
    """Write the pipeline's manual approval onto the package (Approved, naming execution and approver).

    A rejected, pending or missing approval raises: nothing is recorded and nothing is deployed.
    """
    try:
        state = clients.codepipeline.get_pipeline_state(name=pipeline_name)
    except ClientError as exc:
        raise DeployError(f"cannot read the state of pipeline {pipeline_name}: {_aws_message(exc)}") from None
    stage = next((s for s in state.get("stageStates", []) if s.get("stageName") == approval_stage), None)
    if stage is None:
        raise DeployError(f"pipeline {pipeline_name} has no stage {approval_stage!r}; no approval to record")
    stage_execution = (stage.get("latestExecution") or {}).get("pipelineExecutionId")
    if execution_id and stage_execution != execution_id:
        raise DeployError(
            f"the {approval_stage} stage of pipeline {pipeline_name} last ran for execution {stage_execution}, "
            f"not {execution_id}; this execution's approval is missing"
        )
    execution_id = execution_id or stage_execution
    if not execution_id:
        raise DeployError(f"the {approval_stage} stage of pipeline {pipeline_name} has not run; no approval to record")
    actions = [a for a in stage.get("actionStates", []) if a.get("latestExecution")]
    if not actions:
        raise DeployError(f"no action of stage {approval_stage} in pipeline {pipeline_name} has run; nothing approved")
    for action in actions:
        latest = action["latestExecution"]
        status = latest.get("status")
        if status != "Succeeded":
            verdict = "rejected" if status == "Failed" else f"not approved (status {status})"
            who = f" by {latest['lastUpdatedBy']}" if latest.get("lastUpdatedBy") else ""
            summary = f": {latest['summary']}" if latest.get("summary") else ""
            raise DeployError(
                f"approval action {action.get('actionName')} of pipeline {pipeline_name} execution {execution_id} "
                f"was {verdict}{who}{summary}; nothing deployed"
            )
    approval = actions[0]["latestExecution"]
    approver = approval.get("lastUpdatedBy") or "unknown approver"
    package = describe_package(clients.sagemaker, package_arn)
    if package.group != group or package.status == contracts.STATUS_REJECTED:
        # Raises: another group's package, or a Rejected one, stays out whatever the pipeline says.
        require_deployable(package, group)
    if package.status == contracts.STATUS_APPROVED:
        say(f"package {package.arn} is already Approved ({package.description}); approval left as recorded")
        return package
    description = f"Approved in CodePipeline {pipeline_name} execution {execution_id} by {approver}"
    if approval.get("summary"):
        description += f": {approval['summary']}"
    description = description[:APPROVAL_DESCRIPTION_LIMIT]
    try:
        clients.sagemaker.update_model_package(
            ModelPackageArn=package.arn,
            ModelApprovalStatus=contracts.STATUS_APPROVED,
            ApprovalDescription=description,
        )
    except ClientError as exc:
        raise DeployError(f"cannot record the approval on {package.arn}: {_aws_message(exc)}") from None
    say(f"recorded approval on {package.arn}: {description}")
    return describe_package(clients.sagemaker, package.arn)


# --- Names and requests ------------------------------------------------------------------------------
def _content_name(prefix: str, version: int, content: Mapping[str, Any]) -> str:
    """`<prefix>-v<version>-<hash>`: the same content always gets the same name, so re-runs find it."""
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
    suffix = f"-v{version}-{digest}"
    return prefix[: MAX_NAME_LENGTH - len(suffix)].rstrip("-") + suffix


def model_request(stage: DeploymentStage, settings: Settings, package: Package) -> dict[str, Any]:
    content = {"PrimaryContainer": {"ModelPackageName": package.arn}, "ExecutionRoleArn": settings.role_arn}
    return {"ModelName": _content_name(stage.endpoint_name, package.version, content), **content,
            "Tags": settings.tags(package.arn)}


def endpoint_config_request(stage: DeploymentStage, settings: Settings, package: Package,
                            model_name: str) -> dict[str, Any]:
    variant: dict[str, Any] = {"VariantName": contracts.VARIANT_NAME, "ModelName": model_name}
    if stage.serverless is not None:
        variant["ServerlessConfig"] = {"MemorySizeInMB": stage.serverless.memory_size_mb,
                                       "MaxConcurrency": stage.serverless.max_concurrency}
    elif stage.instances is not None:
        variant.update(InstanceType=stage.instances.instance_type,
                       InitialInstanceCount=stage.instances.initial_instance_count,
                       InitialVariantWeight=1.0)
    content: dict[str, Any] = {"ProductionVariants": [variant]}
    if stage.data_capture is not None:
        destination = stage.data_capture.destination_s3_uri
        if not destination:
            if not settings.bucket:
                raise DeployError(
                    f"stage {stage.name} captures data but has no destination_s3_uri and "
                    f"{contracts.ENV_ARTIFACT_BUCKET} is not set; set one of them"
                )
            destination = f"s3://{settings.bucket}/data-capture/{stage.endpoint_name}"
        content["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": stage.data_capture.sampling_percent,
            "DestinationS3Uri": destination,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]},
        }
    return {"EndpointConfigName": _content_name(stage.endpoint_name, package.version, content), **content,
            "Tags": settings.tags(package.arn)}


def deployment_config(stage: DeploymentStage) -> dict[str, Any] | None:
    """Blue/green canary with automatic rollback on the stage's alarms; None = SageMaker's default."""
    rollout = stage.rollout
    if rollout is None:
        return None
    config: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "CANARY",
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": rollout.canary_percent},
                "WaitIntervalInSeconds": rollout.wait_seconds,
            },
            # Keep the old fleet through one more bake so a late alarm can still roll back.
            "TerminationWaitInSeconds": rollout.wait_seconds,
        }
    }
    if rollout.alarm_names:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": name} for name in rollout.alarm_names]}
    return config


# --- One stage ---------------------------------------------------------------------------------------
def _aws_message(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'Error')}: {error.get('Message', str(exc))}"


def _not_found(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    return error.get("Code") in ("ValidationException", "ResourceNotFound") and "not find" in error.get("Message", "")


def _describe_or_none(call: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any] | None:
    try:
        return call(**kwargs)
    except ClientError as exc:
        if _not_found(exc):
            return None
        raise


def _wait_in_service(clients: Clients, settings: Settings, endpoint_name: str) -> dict[str, Any]:
    waiter = clients.sagemaker.get_waiter("endpoint_in_service")
    try:
        waiter.wait(EndpointName=endpoint_name, WaiterConfig={"Delay": settings.waiter_delay_seconds,
                                                              "MaxAttempts": settings.waiter_max_attempts})
    except WaiterError as exc:
        last = getattr(exc, "last_response", None) or {}
        reason = last.get("FailureReason") or last.get("Error", {}).get("Message") or str(exc)
        raise DeployError(
            f"endpoint {endpoint_name} did not reach InService "
            f"(status {last.get('EndpointStatus', 'unknown')}): {reason}"
        ) from None
    return clients.sagemaker.describe_endpoint(EndpointName=endpoint_name)


def _ensure_model(clients: Clients, request: dict[str, Any]) -> None:
    if _describe_or_none(clients.sagemaker.describe_model, ModelName=request["ModelName"]) is None:
        clients.sagemaker.create_model(**request)


def _ensure_endpoint_config(clients: Clients, request: dict[str, Any]) -> None:
    name = request["EndpointConfigName"]
    if _describe_or_none(clients.sagemaker.describe_endpoint_config, EndpointConfigName=name) is None:
        clients.sagemaker.create_endpoint_config(**request)


def put_endpoint(clients: Clients, settings: Settings, stage: DeploymentStage, package: Package,
                  config_name: str) -> str:
    """Create or update the endpoint to serve config_name; returns the action taken."""
    name = stage.endpoint_name
    endpoint = _describe_or_none(clients.sagemaker.describe_endpoint, EndpointName=name)
    if endpoint is None:
        clients.sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config_name,
                                          Tags=settings.tags(package.arn))
        return "created"
    if endpoint.get("EndpointStatus") in TRANSITIONAL_STATES:
        # SageMaker refuses an update while another is in flight; let that one finish first.
        endpoint = _wait_in_service(clients, settings, name)
    if endpoint.get("EndpointStatus") == "Failed":
        raise DeployError(
            f"endpoint {name} is Failed ({endpoint.get('FailureReason', 'no reason given')}); "
            f"delete it (aws sagemaker delete-endpoint --endpoint-name {name}) and run deploy again"
        )
    if endpoint.get("EndpointConfigName") == config_name:
        return "unchanged"
    update: dict[str, Any] = {"EndpointName": name, "EndpointConfigName": config_name}
    blue_green = deployment_config(stage)
    if blue_green is not None:
        update["DeploymentConfig"] = blue_green
    clients.sagemaker.update_endpoint(**update)
    clients.sagemaker.add_tags(ResourceArn=endpoint["EndpointArn"],
                               Tags=[{"Key": contracts.TAG_MODEL_PACKAGE, "Value": package.arn}])
    return "updated"


def _register_autoscaling(clients: Clients, settings: Settings, stage: DeploymentStage, package: Package) -> None:
    scaling = stage.autoscaling
    if scaling is None:
        return
    resource_id = f"endpoint/{stage.endpoint_name}/variant/{contracts.VARIANT_NAME}"
    # Registering is idempotent: a re-run re-applies the same bounds and policy.
    clients.autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource_id, ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=scaling.min_capacity, MaxCapacity=scaling.max_capacity,
        Tags={t["Key"]: t["Value"] for t in settings.tags(package.arn)[:2]},
    )
    clients.autoscaling.put_scaling_policy(
        PolicyName=f"{stage.endpoint_name}-invocations-per-instance",
        ServiceNamespace="sagemaker", ResourceId=resource_id, ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(scaling.target_invocations_per_instance),
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": 300,
            "ScaleOutCooldown": 60,
        },
    )


def deploy_stage(clients: Clients, settings: Settings, package: Package, stage: DeploymentStage,
                 say: Say = print) -> StageResult:
    model = model_request(stage, settings, package)
    config = endpoint_config_request(stage, settings, package, model["ModelName"])
    config_name = config["EndpointConfigName"]
    try:
        _ensure_model(clients, model)
        _ensure_endpoint_config(clients, config)
        action = put_endpoint(clients, settings, stage, package, config_name)
        endpoint = _wait_in_service(clients, settings, stage.endpoint_name)
        if endpoint.get("EndpointConfigName") != config_name:
            # InService on another config after an update = SageMaker rolled the deployment back.
            raise DeployError(
                f"endpoint {stage.endpoint_name} is InService on {endpoint.get('EndpointConfigName')}, not "
                f"{config_name}: the update was rolled back ({endpoint.get('FailureReason', 'see its alarms')})"
            )
        _register_autoscaling(clients, settings, stage, package)
    except ClientError as exc:
        raise DeployError(f"stage {stage.name} ({stage.endpoint_name}): {_aws_message(exc)}") from None
    say(f"stage {stage.name}: endpoint {stage.endpoint_name} {action}, serving {config_name}")
    probabilities = smoke_test(clients.runtime, stage.endpoint_name)
    say(f"stage {stage.name}: smoke test ok, {len(probabilities)} rows -> "
        + ", ".join(f"{p:.3f}" for p in probabilities))
    return StageResult(stage.name, stage.endpoint_name, config_name, action, probabilities)


# --- Smoke test --------------------------------------------------------------------------------------
# The deploy build installs only boto3 (buildspec-deploy.yml), so the sample is plain data in the
# columns of training.train.make_dataset; tests/test_deploy.py keeps the two in step.
SAMPLE_ROWS: tuple[dict[str, str | int | float], ...] = (
    {"tenure_months": 2, "monthly_charges": 95.4, "total_charges": 190.8, "contract_type": "month-to-month",
     "payment_method": "electronic_check", "internet_service": "fiber_optic", "support_calls": 4,
     "paperless_billing": 1, "senior_citizen": 0, "has_partner": 0},
    {"tenure_months": 61, "monthly_charges": 24.1, "total_charges": 1470.1, "contract_type": "two-year",
     "payment_method": "credit_card", "internet_service": "none", "support_calls": 0,
     "paperless_billing": 0, "senior_citizen": 0, "has_partner": 1},
    {"tenure_months": 18, "monthly_charges": 58.3, "total_charges": 1049.4, "contract_type": "one-year",
     "payment_method": "bank_transfer", "internet_service": "dsl", "support_calls": 1,
     "paperless_billing": 1, "senior_citizen": 1, "has_partner": 1},
    {"tenure_months": 7, "monthly_charges": 79.9, "total_charges": 559.3, "contract_type": "month-to-month",
     "payment_method": "mailed_check", "internet_service": "fiber_optic", "support_calls": 2,
     "paperless_billing": 0, "senior_citizen": 0, "has_partner": 1},
    {"tenure_months": 40, "monthly_charges": 66.0, "total_charges": 2640.0, "contract_type": "one-year",
     "payment_method": "credit_card", "internet_service": "dsl", "support_calls": 3,
     "paperless_billing": 1, "senior_citizen": 0, "has_partner": 0},
)


def sample_csv(rows: Sequence[Mapping[str, Any]] = SAMPLE_ROWS) -> str:
    """CSV with a header row, so the model picks its columns by name whatever their order."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def parse_probabilities(body: bytes, rows: int) -> list[float]:
    """The model's JSON answer -> one probability per row; DeployError says what is wrong with it."""
    shown = body[:200].decode(errors="replace")
    try:
        predictions = json.loads(body)["predictions"]
        probabilities = [float(p["churn_probability"]) for p in predictions]
    except (ValueError, KeyError, TypeError) as exc:
        raise DeployError(
            f"smoke test: the endpoint's answer is not {{\"predictions\": [{{\"churn_probability\": p, ...}}]}} "
            f"({type(exc).__name__}: {exc}); got {shown!r}"
        ) from None
    if len(probabilities) != rows:
        raise DeployError(f"smoke test: sent {rows} rows, got {len(probabilities)} predictions: {shown!r}")
    bad = [p for p in probabilities if not (math.isfinite(p) and 0.0 <= p <= 1.0)]
    if bad:
        raise DeployError(f"smoke test: predictions outside [0, 1]: {bad}")
    return probabilities


def smoke_test(runtime: Any, endpoint_name: str, rows: Sequence[Mapping[str, Any]] = SAMPLE_ROWS) -> list[float]:
    """A real InvokeEndpoint with sample rows; the answer must be one probability in [0, 1] per row."""
    try:
        response = runtime.invoke_endpoint(EndpointName=endpoint_name, ContentType="text/csv",
                                           Accept="application/json", Body=sample_csv(rows).encode())
    except ClientError as exc:
        raise DeployError(f"smoke test of endpoint {endpoint_name} failed: {_aws_message(exc)}") from None
    except BotoCoreError as exc:
        raise DeployError(f"smoke test of endpoint {endpoint_name} got no answer: {exc}") from None
    return parse_probabilities(response["Body"].read(), len(rows))


# --- Whole run ---------------------------------------------------------------------------------------
def select_stages(stages: Sequence[DeploymentStage], name: str | None) -> list[DeploymentStage]:
    if name is None:
        return list(stages)
    chosen = [s for s in stages if s.name == name]
    if not chosen:
        raise DeployError(f"--stage {name!r} is not in {contracts.ENV_DEPLOYMENT_STAGES} "
                          f"(stages: {', '.join(s.name for s in stages)})")
    return chosen


def deploy(clients: Clients, settings: Settings, package_arn: str, stage_name: str | None = None,
           say: Say = print) -> list[StageResult]:
    """Deploy an Approved package to each stage in order (or the one named); stops at the first failure."""
    stages = select_stages(settings.stages, stage_name)
    package = describe_package(clients.sagemaker, package_arn)
    require_deployable(package, settings.group)
    say(f"deploying {package.arn} (version {package.version}, Approved: {package.description or 'no description'})")
    return [deploy_stage(clients, settings, package, stage, say) for stage in stages]


def _pipeline_name(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    if args.pipeline_name:
        return args.pipeline_name
    # CodeBuild sets CODEBUILD_INITIATOR to "codepipeline/<pipeline name>" for pipeline builds.
    initiator = environ.get("CODEBUILD_INITIATOR", "")
    if initiator.startswith("codepipeline/"):
        return initiator.split("/", 1)[1]
    raise DeployError("--record-pipeline-approval needs --pipeline-name (or a CodePipeline-started CodeBuild build)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model-package-arn", help="the package to deploy")
    source.add_argument("--arn-file", type=Path,
                        help=f"file holding the ARN (default {contracts.MODEL_PACKAGE_ARN_FILE})")
    parser.add_argument("--stage", help="deploy only this stage of DEPLOYMENT_STAGES")
    parser.add_argument("--record-pipeline-approval", action="store_true",
                        help="first write the CodePipeline manual approval onto the package")
    parser.add_argument("--pipeline-name", help="pipeline whose Approval stage to read")
    parser.add_argument("--pipeline-execution-id", help="execution the approval must belong to")
    parser.add_argument("--approval-stage", default=APPROVAL_STAGE, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None, environ: Mapping[str, str], clients: Clients | None = None,
        say: Say = print) -> list[StageResult]:
    args = parse_args(argv)
    # A CodePipeline Deploy action cannot pass arguments to one shared buildspec command, so it
    # names its stage and the approval-recording switch in the action's environment instead.
    args.stage = args.stage or environ.get(contracts.ENV_DEPLOY_STAGE) or None
    if environ.get(contracts.ENV_RECORD_PIPELINE_APPROVAL, "").lower() in ("1", "true", "yes"):
        args.record_pipeline_approval = True
    settings = Settings.from_environ(environ)
    arn = read_package_arn(args.model_package_arn, args.arn_file, environ)
    select_stages(settings.stages, args.stage)  # a typo in --stage fails before anything changes
    clients = clients or Clients.from_environment()
    if args.record_pipeline_approval:
        # The pipeline's deploy action sets PIPELINE_EXECUTION_ID from #{codepipeline.PipelineExecutionId}.
        execution_id = args.pipeline_execution_id or environ.get(ENV_PIPELINE_EXECUTION_ID) or None
        record_pipeline_approval(clients, arn, settings.group, _pipeline_name(args, environ),
                                 execution_id, args.approval_stage, say)
    return deploy(clients, settings, arn, args.stage, say)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         clients: Clients | None = None) -> int:
    try:
        run(argv, os.environ if environ is None else environ, clients, say=lambda m: print(m, flush=True))
    except DeployError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"deploy: error: {_aws_message(exc)}", file=sys.stderr)
        return 1
    except BotoCoreError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
