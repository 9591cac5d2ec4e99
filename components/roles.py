"""Roles: one IAM role per principal, each with only the calls it makes, on this stack's ARNs.

The GitHub OIDC provider lives here too: GitHubIntegration needs the role ARNs and the roles need the
provider, so keeping provider and roles together avoids a cycle between the two components.

Policy documents are plain data built by the pure functions below (no get_policy_document invoke),
so tests read exactly what IAM receives. `Resource: "*"` appears only for actions that have no
resource-level permissions, each statement saying which.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

import contracts
from components import github as github_component
from components import pipeline as pipeline_component
from components.naming import Arns, StackNames, codebuild_log_group, lambda_log_group

COMPONENT_TOKEN = "sagemaker-mlops:roles:Roles"  # noqa: S105 - a Pulumi type token, not a secret
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
GITHUB_OIDC_AUDIENCE = "sts.amazonaws.com"
SAGEMAKER_SERVICE = "sagemaker.amazonaws.com"
EXECUTION_PRINCIPAL = "sagemaker-execution"
# SageMaker Pipelines names the jobs of a step `pipelines-<execution id>-<step>-<suffix>` when the step's
# arguments carry no job name (ours carry none): the execution id is random, so no stack name fits in
# the ARN; creating a job is bounded by the stack's tags in the request instead.
PIPELINE_JOB_PREFIX = "pipelines-"
# Where SageMaker jobs write their logs (log streams are named after the job).
JOB_LOG_GROUPS = ("/aws/sagemaker/ProcessingJobs", "/aws/sagemaker/TrainingJobs")

Policy = dict[str, Any]
Statement = dict[str, Any]


def _statement(sid: str, actions: list[str], resources: list[str], condition: dict[str, Any] | None = None
               ) -> Statement:
    statement: Statement = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _policy(*statements: Statement) -> Policy:
    return {"Version": "2012-10-17", "Statement": list(statements)}


# --- Trust policies ----------------------------------------------------------------------------
def service_trust_policy(service: str) -> Policy:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def github_oidc_trust_policy(provider_arn: str, subjects: list[str]) -> Policy:
    """Trust GitHub's OIDC tokens for exactly these subjects of one repository, audience STS.

    StringEquals (not StringLike): no wildcard can widen the trust to other repositories, branches
    or environments.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{GITHUB_OIDC_HOST}:aud": GITHUB_OIDC_AUDIENCE,
                        f"{GITHUB_OIDC_HOST}:sub": sorted(subjects),
                    }
                },
            }
        ],
    }


def preview_subjects(repository: str) -> list[str]:
    return [f"repo:{repository}:pull_request"]


def deploy_subjects(repository: str, branch: str) -> list[str]:
    # The production environment (deploy workflow's gated job) and the main branch (model build on
    # push, staging deploy); never a wildcard, never another repository.
    return [f"repo:{repository}:environment:production", f"repo:{repository}:ref:refs/heads/{branch}"]


# --- Permission policies -------------------------------------------------------------------------
@dataclass(frozen=True)
class Scope:
    """This stack's resources, the only ones any role may touch."""

    arns: Arns
    names: StackNames
    bucket: str
    group: str
    training: contracts.TrainingSettings
    """Compute `pipeline` grants the SageMaker pipeline's calls, `build` the inline path's."""
    training_data_uri: str

    @property
    def training_data(self) -> tuple[str, str]:
        """(bucket, key prefix) of the training data."""
        bucket, _, prefix = self.training_data_uri.removeprefix("s3://").partition("/")
        return bucket, prefix

    @property
    def execution_role_arn(self) -> str:
        # Role names are fixed (StackNames.role), so the ARN is known before the role exists.
        return self.arns.role(self.names.role(EXECUTION_PRINCIPAL))


def _logs(scope: Scope, log_group: str) -> Statement:
    return _statement("WriteOwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"],
                      [scope.arns.log_streams(log_group), f"{scope.arns.log_group(log_group)}:*"])


def _read_bucket(scope: Scope) -> list[Statement]:
    return [
        _statement("ListArtifactBucket", ["s3:GetBucketLocation", "s3:ListBucket"], [scope.arns.bucket(scope.bucket)]),
        _statement("ReadArtifacts", ["s3:GetObject", "s3:GetObjectVersion"], [scope.arns.objects(scope.bucket)]),
    ]


def _write_bucket(scope: Scope) -> Statement:
    return _statement("WriteArtifacts", ["s3:PutObject"], [scope.arns.objects(scope.bucket)])


def _read_training_data(scope: Scope, *, with_artifact_bucket_read: bool) -> list[Statement]:
    """List and read the training data prefix, and nothing else of its bucket.

    Roles that already read the whole artifact bucket need nothing more for a prefix inside it.
    """
    bucket, prefix = scope.training_data
    if with_artifact_bucket_read and bucket == scope.bucket:
        return []
    return [
        _statement("ListTrainingData", ["s3:ListBucket"], [scope.arns.bucket(bucket)],
                   {"StringLike": {"s3:prefix": [f"{prefix}*"]}}),
        _statement("ReadTrainingData", ["s3:GetObject"], [scope.arns.objects(bucket, prefix)]),
    ]


def _upload_training_code(scope: Scope) -> Statement:
    return _statement("UploadTrainingCode", ["s3:PutObject"],
                      [scope.arns.objects(scope.bucket, contracts.source_code_prefix(scope.names.stack))])


def _run_model_build_pipeline(scope: Scope) -> list[Statement]:
    """training/model_build.py with compute `pipeline`: check the deployed definition's parameters and
    start this stack's pipeline (after uploading the commit's code), watch the execution, stop it on
    timeout, and read why a failed Prepare or Evaluate job stopped."""
    arns, name = scope.arns, scope.names.model_build_pipeline
    return [
        _statement("StartModelBuildPipeline", ["sagemaker:DescribePipeline", "sagemaker:StartPipelineExecution"],
                   [arns.sagemaker_pipeline(name)]),
        _statement("WatchModelBuildExecutions",
                   ["sagemaker:DescribePipelineExecution", "sagemaker:ListPipelineExecutionSteps",
                    "sagemaker:StopPipelineExecution"],
                   [arns.sagemaker_pipeline_executions(name)]),
        # A failed processing job's ExitMessage holds the data contract's rejection (FailureReason does not).
        _statement("ReadFailedPipelineJobs", ["sagemaker:DescribeProcessingJob"],
                   [arns.sagemaker("processing-job", PIPELINE_JOB_PREFIX)]),
    ]


def _pipeline_execution_statements(scope: Scope) -> list[Statement]:
    """What SageMaker Pipelines does with the pipeline's role (the execution role) and what the step jobs,
    which run as the same role, do: create, watch and stop the step jobs, register into the stack's group,
    pass the role on to the jobs; the jobs read the data and code, write their outputs and logs."""
    arns, stack = scope.arns, scope.names.stack
    jobs = [arns.sagemaker(kind, PIPELINE_JOB_PREFIX) for kind in ("processing-job", "training-job")]
    return [
        *_read_training_data(scope, with_artifact_bucket_read=True),
        _statement("WritePipelineRunOutputs", ["s3:PutObject"],
                   [arns.objects(scope.bucket, contracts.pipeline_runs_prefix(stack))]),
        # Job ARNs cannot name the stack (see PIPELINE_JOB_PREFIX); the tags every step's request carries can.
        _statement("StartStackPipelineJobs", ["sagemaker:CreateProcessingJob", "sagemaker:CreateTrainingJob"], jobs,
                   {"StringEquals": {f"aws:RequestTag/{contracts.TAG_PROJECT}": scope.names.project,
                                     f"aws:RequestTag/{contracts.TAG_STACK}": stack}}),
        # AddTags: the jobs are created with tags (the step's and Pipelines' own execution tags).
        _statement("WatchAndStopPipelineJobs",
                   ["sagemaker:AddTags", "sagemaker:DescribeProcessingJob", "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopProcessingJob", "sagemaker:StopTrainingJob"], jobs),
        # The Register step: a versioned package is created in (and tagged through) the stack's group.
        _statement("RegisterIntoStackGroup",
                   ["sagemaker:AddTags", "sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage"],
                   [arns.model_packages(scope.group), arns.model_package_group(scope.group)]),
        _statement("WriteJobLogs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                   [ref for group in JOB_LOG_GROUPS
                    for ref in (arns.log_group(group), arns.log_streams(group, PIPELINE_JOB_PREFIX))]),
        pass_execution_role_statement(scope.execution_role_arn),
    ]


def _list_packages() -> Statement:
    # sagemaker:ListModelPackages has no resource-level permissions: Resource must be "*".
    return _statement("ListModelPackagesHasNoResourceLevelPermissions", ["sagemaker:ListModelPackages"], ["*"])


def _register_statements(scope: Scope) -> list[Statement]:
    """training/register.py's calls (it uploads the model and metrics; it reads nothing from S3)."""
    builds = scope.arns.objects(scope.bucket, contracts.model_builds_prefix(scope.names.stack))
    return [
        _statement("UploadModelBuilds", ["s3:PutObject"], [builds]),
        # A failed registration deletes the object versions it uploaded (the bucket keeps versions, so a
        # plain delete would only hide them); only under the stack's model-builds prefix, where it writes.
        _statement("RemoveFailedUploads", ["s3:DeleteObjectVersion"], [builds]),
        _statement("ReadGroup", ["sagemaker:DescribeModelPackageGroup"],
                   [scope.arns.model_package_group(scope.group)]),
        # The group's ARN too: a versioned package is created in (and tagged through) its group.
        _statement("RegisterPackages", ["sagemaker:AddTags", "sagemaker:CreateModelPackage"],
                   [scope.arns.model_packages(scope.group), scope.arns.model_package_group(scope.group)]),
    ]


def _deploy_statements(scope: Scope) -> list[Statement]:
    """training/deploy.py's calls, plus what SageMaker and Application Auto Scaling check on the caller."""
    arns, prefix = scope.arns, scope.names.endpoint_prefix
    hosting = [arns.sagemaker(kind, prefix) for kind in ("endpoint", "endpoint-config", "model")]
    alarm = f"arn:{arns.partition}:cloudwatch:{arns.region}:{arns.account}:alarm:"
    return [
        _statement("ReadAndRecordApproval", ["sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"],
                   [arns.model_packages(scope.group)]),
        _statement(
            "HostOnlyStackEndpoints",
            ["sagemaker:AddTags", "sagemaker:CreateEndpoint", "sagemaker:CreateEndpointConfig", "sagemaker:CreateModel",
             "sagemaker:DescribeEndpoint", "sagemaker:DescribeEndpointConfig", "sagemaker:DescribeModel",
             "sagemaker:UpdateEndpoint",
             # Application Auto Scaling checks that whoever registers a variant may change its capacity.
             "sagemaker:UpdateEndpointWeightsAndCapacities"],
            hosting,
        ),
        _statement("SmokeTestStackEndpoints", ["sagemaker:InvokeEndpoint"], [arns.sagemaker("endpoint", prefix)]),
        # UpdateEndpoint names the rollback alarms; a target-tracking policy makes Application Auto Scaling
        # create TargetTracking-endpoint/<endpoint>/... alarms, which it checks the caller could manage.
        _statement("StackEndpointAlarms",
                   ["cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm"],
                   [f"{alarm}{prefix}*", f"{alarm}TargetTracking-endpoint/{prefix}*"]),
        # Register/PutScalingPolicy/TagResource take a scalable-target ARN, but its id is assigned at
        # registration (scalable-target/<id>), so the stack can only name this account and region's targets;
        # which endpoints get scaled is bounded by the SageMaker statements above (the stack's prefix).
        # TagResource: RegisterScalableTarget is called with the stack's tags.
        _statement("AutoscaleEndpoints",
                   ["application-autoscaling:PutScalingPolicy", "application-autoscaling:RegisterScalableTarget",
                    "application-autoscaling:TagResource"],
                   [arns.scalable_targets()]),
        _statement(
            "AutoscalingServiceLinkedRole",
            ["iam:CreateServiceLinkedRole"],
            [f"arn:{arns.partition}:iam::{arns.account}:role/aws-service-role/"
             "sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"],
            {"StringEquals": {"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"}},
        ),
        pass_execution_role_statement(scope.execution_role_arn),
    ]


def pass_execution_role_statement(execution_role_arn: str) -> Statement:
    """The only iam:PassRole in the program: the SageMaker execution role, to SageMaker only."""
    return _statement("PassExecutionRoleToSageMakerOnly", ["iam:PassRole"], [execution_role_arn],
                      {"StringEquals": {"iam:PassedToService": SAGEMAKER_SERVICE}})


def sagemaker_execution_policy(scope: Scope, image_repository_arn: str) -> Policy:
    """Endpoints (read models, capture data, log), and with compute `pipeline` the model-build pipeline
    and its jobs (the image is the same scikit-learn image for jobs and endpoints)."""
    arns, prefix = scope.arns, scope.names.endpoint_prefix
    pipeline = _pipeline_execution_statements(scope) if scope.training.uses_pipeline else []
    return _policy(
        *_read_bucket(scope),
        _statement("WriteDataCapture", ["s3:PutObject"], [scope.arns.objects(scope.bucket, "data-capture/")]),
        # ecr:GetAuthorizationToken has no resource-level permissions: Resource must be "*".
        _statement("EcrLoginHasNoResourceLevelPermissions", ["ecr:GetAuthorizationToken"], ["*"]),
        _statement("PullInferenceImage",
                   ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                   [image_repository_arn]),
        _statement("WriteEndpointLogs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                   [arns.log_group(f"/aws/sagemaker/Endpoints/{prefix}*"),
                    f"{arns.log_group(f'/aws/sagemaker/Endpoints/{prefix}*')}:*"]),
        # cloudwatch:PutMetricData has no resource-level permissions; the condition pins the namespace.
        _statement("EndpointMetricsHaveNoResourceLevelPermissions", ["cloudwatch:PutMetricData"], ["*"],
                   {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}),
        *pipeline,
    )


def train_build_policy(scope: Scope) -> Policy:
    # _read_bucket: CodeBuild fetches the pipeline's input artifact (the source zip) from the bucket.
    common = [_logs(scope, codebuild_log_group(scope.names.train_project)), *_read_bucket(scope)]
    # CodeBuild uploads the BuildArtifact (model_package_arn.txt) with this role, where CodePipeline keeps it.
    build_artifact = scope.arns.objects(
        scope.bucket, pipeline_component.artifact_key_prefix(scope.names.pipeline, pipeline_component.BUILD_ARTIFACT))
    common = [*common, _statement("WriteBuildArtifact", ["s3:PutObject"], [build_artifact])]
    if scope.training.uses_pipeline:
        # The pipeline trains and registers; the build uploads the code, starts and watches.
        return _policy(*common, _upload_training_code(scope), *_run_model_build_pipeline(scope))
    return _policy(*common, *_read_training_data(scope, with_artifact_bucket_read=True),
                   *_register_statements(scope))


def deploy_build_policy(scope: Scope) -> Policy:
    return _policy(
        _logs(scope, codebuild_log_group(scope.names.deploy_project)),
        # CodeBuild fetches the pipeline's input artifacts (source and build output) from the bucket.
        *_read_bucket(scope),
        *_deploy_statements(scope),
        # deploy.py --record-pipeline-approval reads who approved from the pipeline's state.
        _statement("ReadPipelineApprovals", ["codepipeline:GetPipelineState"],
                   [scope.arns.pipeline(scope.names.pipeline)]),
    )


def pipeline_policy(scope: Scope, connection_arn: str, approval_mode: str, notify_approvers: bool) -> Policy:
    arns, names = scope.arns, scope.names
    statements = [
        *_read_bucket(scope),
        _write_bucket(scope),
        _statement("GetBucketVersioning", ["s3:GetBucketVersioning"], [arns.bucket(scope.bucket)]),
        _statement("RunStackBuilds", ["codebuild:BatchGetBuilds", "codebuild:StartBuild"],
                   [arns.codebuild_project(names.train_project), arns.codebuild_project(names.deploy_project)]),
        _statement("UseSourceConnection", ["codeconnections:UseConnection", "codestar-connections:UseConnection"],
                   [connection_arn]),
    ]
    if approval_mode == "auto":
        statements.append(_statement("InvokeAutoApproval", ["lambda:InvokeFunction"],
                                     [arns.function(names.auto_approve_function)]))
    if notify_approvers:
        # CodePipeline publishes a manual approval's notice with this role: the Approval stage in manual
        # mode, and the gate before a stage that requires approval in either mode.
        statements.append(_statement("NotifyApprovers", ["sns:Publish"], [arns.topic(names.approval_topic)]))
    return _policy(*statements)


def auto_approve_policy(scope: Scope) -> Policy:
    arns, names = scope.arns, scope.names
    return _policy(
        _logs(scope, lambda_log_group(names.auto_approve_function)),
        _statement("ReadMetrics", ["s3:GetObject"], [arns.objects(scope.bucket)]),
        _statement("DecideOnPackages", ["sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"],
                   [arns.model_packages(scope.group)]),
        _list_packages(),
        # codepipeline:PutJobSuccessResult/PutJobFailureResult have no resource-level permissions.
        _statement("ReportPipelineJobsHaveNoResourceLevelPermissions",
                   ["codepipeline:PutJobFailureResult", "codepipeline:PutJobSuccessResult"], ["*"]),
        _statement("DeadLetterFailedInvocations", ["sqs:SendMessage"], [arns.queue(names.auto_approve_dlq)]),
    )


def github_preview_policy(scope: Scope) -> Policy:
    """Read-only. A plain `pulumi preview` needs no AWS permission (sts:GetCallerIdentity needs none);
    this lets the PR check read the stack's key settings (bucket, group, roles, functions, pipeline)
    for drift, and nothing it could change."""
    arns, names = scope.arns, scope.names
    return _policy(
        _statement("ReadBucketConfiguration",
                   ["s3:GetBucketLocation", "s3:GetBucketPolicy", "s3:GetBucketPublicAccessBlock",
                    "s3:GetBucketTagging", "s3:GetBucketVersioning", "s3:GetEncryptionConfiguration",
                    "s3:GetLifecycleConfiguration"],
                   [arns.bucket(scope.bucket)]),
        _statement("ReadRegistry", ["sagemaker:DescribeModelPackageGroup", "sagemaker:ListTags"],
                   [arns.model_package_group(scope.group)]),
        _statement("ReadRoles", ["iam:GetRole", "iam:GetRolePolicy", "iam:ListRolePolicies"],
                   [arns.role(f"{names.prefix}-*")]),
        _statement("ReadFunctions", ["lambda:GetFunction", "lambda:GetPolicy"],
                   [arns.function(f"{names.prefix}-*")]),
        _statement("ReadPipeline", ["codepipeline:GetPipeline", "codepipeline:ListTagsForResource"],
                   [arns.pipeline(names.pipeline)]),
    )


def github_deploy_policy(scope: Scope) -> Policy:
    """The model build and deploy workflows, in one role trusted from main/production. The build either
    starts the stack's pipeline (compute `pipeline`) or trains on the runner and registers (`build`)."""
    build = ([_upload_training_code(scope), *_run_model_build_pipeline(scope)] if scope.training.uses_pipeline
             else [*_read_training_data(scope, with_artifact_bucket_read=False), *_register_statements(scope)])
    return _policy(*build, *_deploy_statements(scope))


# --- The component ---------------------------------------------------------------------------------
class RolesArgs(TypedDict):
    names: StackNames
    region: str
    partition: str
    account_id: pulumi.Input[str]
    bucket: pulumi.Input[str]
    inference_image_repository: tuple[str, str]
    """(account, repository) of the SageMaker scikit-learn image the endpoints pull."""
    orchestrator: str
    approval_mode: str
    repository: str
    branch: str
    oidc_provider_arn: str | None
    """Existing GitHub OIDC provider (one per account); None creates it."""
    training: contracts.TrainingSettings
    training_data_uri: pulumi.Input[str]
    """Where the model build reads its data (config.Settings.training_data_uri)."""
    connection_arn: NotRequired[pulumi.Input[str]]
    """Orchestrator codepipeline: the CodeConnection the pipeline's source action uses."""
    pipeline_notifies_approvers: NotRequired[bool]
    """Orchestrator codepipeline: the pipeline has a manual approval (components.pipeline.notifies_approvers)."""


class Roles(pulumi.ComponentResource):
    sagemaker_execution_role_arn: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    github_preview_role_arn: pulumi.Output[str]
    github_deploy_role_arn: pulumi.Output[str] | None
    codepipeline_role_arn: pulumi.Output[str] | None
    train_build_role_arn: pulumi.Output[str] | None
    deploy_build_role_arn: pulumi.Output[str] | None
    auto_approve_role_arn: pulumi.Output[str] | None
    github_trigger_role_arn: pulumi.Output[str] | None

    def __init__(self, name: str, args: RolesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TOKEN, name, None, opts)
        self._name = name
        self._names = names = args["names"]
        self._args = args
        codepipeline = args["orchestrator"] == "codepipeline"
        github_actions = args["orchestrator"] == "github-actions"

        if args["oidc_provider_arn"]:
            self.oidc_provider_arn = pulumi.Output.from_input(args["oidc_provider_arn"])
        else:
            provider = aws.iam.OpenIdConnectProvider(
                f"{name}-github-oidc",
                url=f"https://{GITHUB_OIDC_HOST}",
                client_id_lists=[GITHUB_OIDC_AUDIENCE],
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.oidc_provider_arn = provider.arn

        image_account, image_repository = args["inference_image_repository"]
        self.sagemaker_execution_role_arn = self._principal(
            EXECUTION_PRINCIPAL, service_trust_policy(SAGEMAKER_SERVICE),
            "SageMaker endpoints and model-build pipeline of the stack",
            lambda scope: sagemaker_execution_policy(
                scope, scope.arns.ecr_repository(image_account, image_repository)))
        self.github_preview_role_arn = self._principal(
            "github-preview", self._oidc_trust(preview_subjects(args["repository"])),
            "GitHub Actions pull-request previews (read-only)", github_preview_policy)

        self.github_deploy_role_arn = None
        self.codepipeline_role_arn = self.train_build_role_arn = self.deploy_build_role_arn = None
        self.auto_approve_role_arn = self.github_trigger_role_arn = None

        if github_actions:
            self.github_deploy_role_arn = self._principal(
                "github-deploy", self._oidc_trust(deploy_subjects(args["repository"], args["branch"])),
                "GitHub Actions model build and deploy (main branch, production environment)", github_deploy_policy)
            self.github_trigger_role_arn = self._principal(
                "github-trigger", service_trust_policy("lambda.amazonaws.com"),
                "Lambda that dispatches the deploy workflow on Approved",
                lambda scope: github_component.trigger_function_policy(
                    token_secret_arn=scope.arns.secret(names.github_token_secret),
                    model_packages_arn=scope.arns.model_packages(scope.group),
                    log_group_arn=scope.arns.log_group(lambda_log_group(names.github_trigger_function)),
                    dead_letter_queue_arn=scope.arns.queue(names.github_trigger_dlq),
                ))

        if codepipeline:
            connection_arn = args.get("connection_arn")
            if connection_arn is None:
                raise ValueError("Roles: orchestrator codepipeline needs connection_arn (the pipeline's source)")
            self.codepipeline_role_arn = self._principal(
                "codepipeline", service_trust_policy("codepipeline.amazonaws.com"), "CodePipeline of the stack",
                lambda scope, arn: pipeline_policy(
                    scope, arn, args["approval_mode"], args.get("pipeline_notifies_approvers", False)),
                extra=connection_arn)
            self.train_build_role_arn = self._principal(
                "codebuild-train", service_trust_policy("codebuild.amazonaws.com"), "CodeBuild project train",
                train_build_policy)
            self.deploy_build_role_arn = self._principal(
                "codebuild-deploy", service_trust_policy("codebuild.amazonaws.com"), "CodeBuild project deploy",
                deploy_build_policy)

        if args["approval_mode"] == "auto":
            self.auto_approve_role_arn = self._principal(
                "auto-approve", service_trust_policy("lambda.amazonaws.com"),
                "Lambda that approves or rejects model packages on their metrics",
                auto_approve_policy)

        outputs = {key: value for key, value in vars(self).items()
                   if key.endswith("_arn") and value is not None}
        self.register_outputs(outputs)

    def _oidc_trust(self, subjects: list[str]) -> pulumi.Output[str]:
        return self.oidc_provider_arn.apply(lambda arn: json.dumps(github_oidc_trust_policy(arn, subjects)))

    def _principal(self, principal: str, trust: pulumi.Input[str] | Policy, description: str,
                   build: Callable[..., Policy], extra: pulumi.Input[str] | None = None) -> pulumi.Output[str]:
        """The principal's role with the inline policy `build` renders; returns the role's ARN, resolved
        only once the policy is attached.

        Whoever receives the ARN then depends on the policy too: Lambda checks the dead-letter queue's
        sqs:SendMessage on the role when the function is created, and a new pipeline starts at once.
        """
        role = aws.iam.Role(
            f"{self._name}-{principal}",
            name=self._names.role(principal),
            description=f"{description} ({self._names.prefix})",
            assume_role_policy=json.dumps(trust) if isinstance(trust, dict) else trust,
            max_session_duration=3600,
            opts=pulumi.ResourceOptions(parent=self),
        )
        args = self._args

        def render(values: list[Any]) -> str:
            account, bucket, training_data_uri, extra_value = values
            scope = Scope(arns=Arns(partition=args["partition"], region=args["region"], account=account),
                          names=self._names, bucket=bucket, group=self._names.group, training=args["training"],
                          training_data_uri=training_data_uri)
            document = build(scope) if extra is None else build(scope, extra_value)
            return json.dumps(document)

        policy = aws.iam.RolePolicy(
            f"{self._name}-{principal}-policy",
            role=role.id,
            policy=pulumi.Output.all(args["account_id"], args["bucket"], args["training_data_uri"],
                                     extra or "").apply(render),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return pulumi.Output.all(role.arn, policy.id).apply(lambda values: str(values[0]))
