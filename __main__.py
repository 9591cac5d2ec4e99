"""sagemaker-mlops: reads the stack's config once, wires the components, exports what a user needs next."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_github as github

import contracts
from components.alarms import RollbackAlarms, rollback_alarm_names
from components.approval import AutoApproval
from components.audit import AuditTrail
from components.github import GitHubIntegration, GitHubIntegrationArgs, TriggerArgs
from components.janitor import EndpointJanitor
from components.model_build import ModelBuildPipeline, ModelBuildPipelineArgs, ModelStackArgs
from components.naming import StackNames, partition_of
from components.pipeline import ModelPipeline, ModelPipelineArgs, SourceConnection, notifies_approvers
from components.registry import ModelRegistry
from components.roles import Roles, RolesArgs
from components.storage import ArtifactStore
from config import Settings, load_settings, with_capture_destinations, with_rollback_alarms


def main() -> None:
    # First, before any resource: bad config fails here with a message naming the key.
    settings = load_settings()
    names = settings.names
    region = settings.region

    # Tags once, on the provider: every taggable AWS resource carries project and stack, which is
    # how teardown and cost reports find exactly this stack's share.
    aws_provider = aws.Provider(
        "aws",
        region=region,
        default_tags={"tags": {contracts.TAG_PROJECT: settings.project, contracts.TAG_STACK: settings.stack}},
    )
    on_aws = pulumi.ResourceOptions(providers=[aws_provider])
    account_id = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(provider=aws_provider)).account_id

    store = ArtifactStore("artifacts", {"force_destroy": settings.force_destroy, "noncurrent_version_days": 90},
                          opts=on_aws)
    registry = ModelRegistry("registry", {
        "group_name": settings.model_package_group_name,
        "description": f"Models of {settings.github.repository} ({settings.project} stack {settings.stack})",
    }, opts=on_aws)

    # Deleted before the group and the bucket (it depends on both): its delete removes the
    # endpoints, models and packages the pipeline created outside Pulumi's state. Whatever can
    # start a deploy (pipeline, approval and trigger Lambdas) depends on it in turn, so destroy
    # removes those first and no deploy can create an endpoint after the janitor has swept.
    janitor = EndpointJanitor("janitor", {
        "project": settings.project, "stack": settings.stack, "group": registry.group_name, "region": region,
        "account": account_id,
    }, opts=pulumi.ResourceOptions(depends_on=[registry, store]))
    before_janitor = pulumi.ResourceOptions(providers=[aws_provider], depends_on=[janitor])

    codepipeline = settings.orchestrator == "codepipeline"
    source = (SourceConnection("source", {"names": names, "existing_arn": settings.connection_arn}, opts=on_aws)
              if codepipeline else None)
    image_account = contracts.SKLEARN_IMAGE_ACCOUNTS[region]
    training_data_uri = store.bucket.apply(settings.training_data_uri)
    roles_args: RolesArgs = {
        "names": names,
        "region": region,
        "partition": partition_of(region),
        "account_id": account_id,
        "bucket": store.bucket,
        "inference_image_repository": (image_account, str(contracts.SKLEARN_IMAGE["repository"])),
        "orchestrator": settings.orchestrator,
        "approval_mode": settings.approval.mode,
        "repository": settings.github.repository,
        "branch": settings.github.branch,
        "oidc_provider_arn": settings.github.oidc_provider_arn,
        "training": settings.model_build.training,
        "training_data_uri": training_data_uri,
    }
    if source is not None:
        roles_args["connection_arn"] = source.arn
        roles_args["pipeline_notifies_approvers"] = notifies_approvers(settings.deployment_stages,
                                                                       settings.approval.mode)
    roles = Roles("roles", roles_args, opts=on_aws)

    alarm_names: dict[str, tuple[str, ...]] = {}
    for stage in settings.deployment_stages:
        if stage.rollout is not None:
            RollbackAlarms(f"rollback-{stage.name}",
                           {"stage": stage, "latency_threshold_ms": settings.rollback_alarm_latency_ms}, opts=on_aws)
            alarm_names[stage.name] = rollback_alarm_names(stage.endpoint_name)
    stages = with_rollback_alarms(settings.deployment_stages, alarm_names)
    stages_json = store.bucket.apply(
        lambda bucket: contracts.dump_deployment_stages(with_capture_destinations(stages, bucket)))

    approval = None
    if settings.approval.mode == "auto":
        assert roles.auto_approve_role_arn is not None
        approval = AutoApproval("auto-approval", {
            "names": names,
            "role_arn": roles.auto_approve_role_arn,
            "group_name": registry.group_name,
            "thresholds": settings.approval.thresholds,
            "champion_metric": settings.approval.champion_metric,
            "champion_min_delta": settings.approval.champion_min_delta,
            "log_retention_days": settings.log_retention_days,
        }, opts=before_janitor)

    model_stack: ModelStackArgs = {
        "names": names,
        "region": region,
        "bucket": store.bucket,
        "group_name": registry.group_name,
        "execution_role_arn": roles.sagemaker_execution_role_arn,
        "image_uri": settings.inference_image_uri,
    }
    model_build_args: ModelBuildPipelineArgs = {
        **model_stack,
        "training_data_uri": training_data_uri,
        "thresholds": settings.approval.thresholds,
        "training": settings.model_build.training,
    }
    if settings.model_build.sample_data:
        model_build_args["sample_data"] = _sample_data_asset()
        model_build_args["bucket_settings"] = store
    # Before the janitor: the pipeline registers packages into the group the janitor empties on destroy.
    model_build = ModelBuildPipeline("model-build", model_build_args, opts=before_janitor)
    build_env = _model_build_env(settings, training_data_uri, model_build)

    pipeline = None
    if source is not None:
        assert roles.codepipeline_role_arn and roles.train_build_role_arn and roles.deploy_build_role_arn
        pipeline_args: ModelPipelineArgs = {
            **model_stack,
            "repository": settings.github.repository,
            "branch": settings.github.branch,
            "connection_arn": source.arn,
            "pipeline_role_arn": roles.codepipeline_role_arn,
            "train_role_arn": roles.train_build_role_arn,
            "deploy_role_arn": roles.deploy_build_role_arn,
            "deployment_stages": stages,
            "deployment_stages_json": stages_json,
            "approval_mode": settings.approval.mode,
            "log_retention_days": settings.log_retention_days,
            "model_build_env": build_env,
            "train_timeout_minutes": settings.train_build_timeout_minutes,
        }
        if approval is not None:
            pipeline_args["auto_approve_function_name"] = approval.function_name
        pipeline = ModelPipeline("pipeline", pipeline_args, opts=before_janitor)

    integration = _github_integration(settings, names, aws_provider, roles, store, registry, stages_json, build_env,
                                      janitor)

    trail = None
    if settings.audit_trail:
        trail = AuditTrail("audit", {
            "trail_name": f"{names.prefix}-audit",
            "account_id": account_id,
            "region": region,
            "force_destroy": settings.force_destroy,
            "retention_days": 365,
            "artifact_bucket_arn": store.bucket_arn,
        }, opts=on_aws)

    _export(settings, store, registry, roles, stages_json, source, pipeline, approval, integration, trail)
    pulumi.export("trainingDataUri", training_data_uri)
    pulumi.export("modelBuildCompute", settings.model_build.training.compute)
    if model_build.pipeline_name is not None:
        pulumi.export("modelBuildPipelineName", model_build.pipeline_name)


SAMPLE_DATA_DIR = Path("build") / "sample-data"


def _sample_data_asset() -> pulumi.asset.FileAsset:
    """The synthetic churn table as a generated file, so the state keeps its hash and path, not its rows.

    Relative to the project directory, where the CLI runs the program and reads the asset. write_sample
    writes it aside and moves it into place, and only when it differs, so concurrent runs never read a
    half-written file.
    """
    from training.sample_data import write_sample

    return pulumi.FileAsset(str(write_sample(SAMPLE_DATA_DIR)))


def _model_build_env(settings: Settings, training_data_uri: pulumi.Output[str], model_build: ModelBuildPipeline
                     ) -> Mapping[str, pulumi.Input[str]]:
    """What the build (CodeBuild train, model-build.yml) reads to build a model: the data, the compute,
    and with compute `pipeline` the pipeline it starts (its name resolves once the pipeline exists)."""
    env: dict[str, pulumi.Input[str]] = {
        contracts.ENV_TRAINING_DATA_URI: training_data_uri,
        contracts.ENV_MODEL_BUILD_COMPUTE: settings.model_build.training.compute,
    }
    if model_build.pipeline_name is not None:
        env[contracts.ENV_MODEL_BUILD_PIPELINE] = model_build.pipeline_name
    return env


def _github_integration(settings: Settings, names: StackNames, aws_provider: aws.Provider, roles: Roles,
                        store: ArtifactStore, registry: ModelRegistry, stages_json: pulumi.Output[str],
                        build_env: Mapping[str, pulumi.Input[str]],
                        janitor: EndpointJanitor) -> GitHubIntegration | None:
    """Repository settings (one owning stack per repository) and, for github-actions, the trigger."""
    if not settings.needs_github_token:
        return None
    gh = settings.github
    assert gh.token is not None
    variables: dict[str, pulumi.Input[str]] = {
        "AWS_REGION": settings.region,
        "ARTIFACT_BUCKET": store.bucket,
        "MODEL_PACKAGE_GROUP_NAME": registry.group_name,
        "INFERENCE_IMAGE_URI": settings.inference_image_uri,
        "SAGEMAKER_EXECUTION_ROLE_ARN": roles.sagemaker_execution_role_arn,
        "DEPLOYMENT_STAGES": stages_json,
        "PULUMI_STACK": settings.stack,
        **build_env,
    }
    secrets: dict[str, pulumi.Input[str]] = {"AWS_PREVIEW_ROLE_ARN": roles.github_preview_role_arn}
    if roles.github_deploy_role_arn is not None:
        secrets["AWS_DEPLOY_ROLE_ARN"] = roles.github_deploy_role_arn
    if gh.infra_role_arn:
        secrets["AWS_INFRA_ROLE_ARN"] = gh.infra_role_arn
    if gh.pulumi_access_token is not None:
        secrets["PULUMI_ACCESS_TOKEN"] = gh.pulumi_access_token
    args: GitHubIntegrationArgs = {
        "repository": gh.repository,
        "names": names,
        "token": gh.token,
        "variables": variables,
        "secrets": secrets,
        "production_reviewers": list(gh.production_reviewers),
        "deploy_branch": gh.branch,
        "manage_repository_settings": gh.manage_settings,
        # A force-destroy stack deletes the token at once, so re-creating the stack can reuse the name.
        "secret_recovery_window_days": 0 if settings.force_destroy else 7,
    }
    if settings.orchestrator == "github-actions":
        assert roles.github_trigger_role_arn is not None
        trigger: TriggerArgs = {
            "role_arn": roles.github_trigger_role_arn,
            "group_name": registry.group_name,
            "deploy_workflow": contracts.DEPLOY_WORKFLOW_FILE,
            "deploy_ref": gh.branch,
            "github_api_url": gh.api_url,
            "log_retention_days": settings.log_retention_days,
        }
        args["trigger"] = trigger
    github_provider = github.Provider("github", owner=gh.owner, token=gh.token,
                                      base_url=_github_base_url(gh.api_url))
    return GitHubIntegration("github", args, opts=pulumi.ResourceOptions(
        providers=[aws_provider, github_provider], depends_on=[janitor]))


def _github_base_url(api_url: str) -> str:
    # The provider wants the API base with a trailing slash (GitHub Enterprise: https://host/api/v3/).
    return api_url.rstrip("/") + "/"


def _export(settings: Settings, store: ArtifactStore, registry: ModelRegistry, roles: Roles,
            stages_json: pulumi.Output[str], source: SourceConnection | None, pipeline: ModelPipeline | None,
            approval: AutoApproval | None, integration: GitHubIntegration | None, trail: Any) -> None:
    pulumi.export("region", settings.region)
    pulumi.export("orchestrator", settings.orchestrator)
    pulumi.export("approvalMode", settings.approval.mode)
    pulumi.export("artifactBucket", store.bucket)
    pulumi.export("modelPackageGroupName", registry.group_name)
    pulumi.export("endpointNames", [stage.endpoint_name for stage in settings.deployment_stages])
    pulumi.export("deploymentStages", stages_json)
    pulumi.export("sagemakerExecutionRoleArn", roles.sagemaker_execution_role_arn)
    pulumi.export("githubOidcProviderArn", roles.oidc_provider_arn)
    pulumi.export("githubPreviewRoleArn", roles.github_preview_role_arn)
    if roles.github_deploy_role_arn is not None:
        pulumi.export("githubDeployRoleArn", roles.github_deploy_role_arn)
    if source is not None:
        pulumi.export("connectionArn", source.arn)
        pulumi.export("connectionStatus", (
            "PENDING: activate it in the console (Developer Tools > Settings > Connections > Update pending "
            "connection) before the first pipeline run" if source.pending_activation
            else "existing connection (must be AVAILABLE)"))
    if pipeline is not None:
        pulumi.export("pipelineName", pipeline.pipeline_name)
        pulumi.export("pipelineConsoleUrl", pipeline.console_url)
        pulumi.export("studioCodeRepository", pipeline.code_repository_name)
        if pipeline.approval_topic_arn is not None:
            pulumi.export("approvalTopicArn", pipeline.approval_topic_arn)
    if approval is not None:
        pulumi.export("autoApprovalFunctionName", approval.function_name)
        pulumi.export("autoApprovalDeadLetterQueueUrl", approval.dead_letter_queue_url)
    if integration is not None:
        pulumi.export("githubTokenSecretArn", integration.secret_arn)
        if integration.dead_letter_queue_url is not None:
            pulumi.export("githubTriggerDeadLetterQueueUrl", integration.dead_letter_queue_url)
    if trail is not None:
        pulumi.export("auditTrailArn", trail.trail_arn)


main()
