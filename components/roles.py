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

from components import github as github_component
from components.naming import Arns, StackNames, codebuild_log_group, lambda_log_group

COMPONENT_TOKEN = "sagemaker-mlops:roles:Roles"  # noqa: S105 - a Pulumi type token, not a secret
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
GITHUB_OIDC_AUDIENCE = "sts.amazonaws.com"
SAGEMAKER_SERVICE = "sagemaker.amazonaws.com"

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


def _list_packages() -> Statement:
    # sagemaker:ListModelPackages has no resource-level permissions: Resource must be "*".
    return _statement("ListModelPackagesHasNoResourceLevelPermissions", ["sagemaker:ListModelPackages"], ["*"])


def _register_statements(scope: Scope) -> list[Statement]:
    return [
        *_read_bucket(scope),
        _write_bucket(scope),
        _statement("ReadGroup", ["sagemaker:DescribeModelPackageGroup"],
                   [scope.arns.model_package_group(scope.group)]),
        _statement("RegisterPackages",
                   ["sagemaker:AddTags", "sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage"],
                   [scope.arns.model_packages(scope.group), scope.arns.model_package_group(scope.group)]),
        _list_packages(),
    ]


def _deploy_statements(scope: Scope, execution_role_arn: str) -> list[Statement]:
    arns, prefix = scope.arns, scope.names.endpoint_prefix
    hosting = [arns.sagemaker(kind, prefix) for kind in ("endpoint", "endpoint-config", "model")]
    return [
        *_read_bucket(scope),
        _statement("ReadAndRecordApproval", ["sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"],
                   [arns.model_packages(scope.group)]),
        _list_packages(),
        _statement(
            "HostOnlyStackEndpoints",
            ["sagemaker:AddTags", "sagemaker:CreateEndpoint", "sagemaker:CreateEndpointConfig", "sagemaker:CreateModel",
             "sagemaker:DeleteEndpointConfig", "sagemaker:DeleteModel", "sagemaker:DescribeEndpoint",
             "sagemaker:DescribeEndpointConfig", "sagemaker:DescribeModel", "sagemaker:ListTags",
             "sagemaker:UpdateEndpoint"],
            hosting,
        ),
        _statement("SmokeTestStackEndpoints", ["sagemaker:InvokeEndpoint"], [arns.sagemaker("endpoint", prefix)]),
        _statement("ReadRollbackAlarms", ["cloudwatch:DescribeAlarms"],
                   [f"arn:{arns.partition}:cloudwatch:{arns.region}:{arns.account}:alarm:{prefix}*"]),
        # Register/PutScalingPolicy take a scalable-target ARN, but its id is assigned at registration
        # (scalable-target/<id>), so the stack can only name this account and region's targets; which
        # endpoints get scaled is bounded by the SageMaker statements above (the stack's prefix).
        _statement("AutoscaleEndpoints",
                   ["application-autoscaling:PutScalingPolicy", "application-autoscaling:RegisterScalableTarget"],
                   [arns.scalable_targets()]),
        # application-autoscaling:DescribeScalableTargets/DescribeScalingPolicies have no
        # resource-level permissions: Resource must be "*".
        _statement(
            "ReadAutoscalingHasNoResourceLevelPermissions",
            ["application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies"],
            ["*"],
        ),
        _statement(
            "AutoscalingServiceLinkedRole",
            ["iam:CreateServiceLinkedRole"],
            [f"arn:{arns.partition}:iam::{arns.account}:role/aws-service-role/"
             "sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"],
            {"StringEquals": {"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"}},
        ),
        pass_execution_role_statement(execution_role_arn),
    ]


def pass_execution_role_statement(execution_role_arn: str) -> Statement:
    """The only iam:PassRole in the program: the SageMaker execution role, to SageMaker only."""
    return _statement("PassExecutionRoleToSageMakerOnly", ["iam:PassRole"], [execution_role_arn],
                      {"StringEquals": {"iam:PassedToService": SAGEMAKER_SERVICE}})


def sagemaker_execution_policy(scope: Scope, image_repository_arn: str) -> Policy:
    arns, prefix = scope.arns, scope.names.endpoint_prefix
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
    )


def train_build_policy(scope: Scope) -> Policy:
    return _policy(_logs(scope, codebuild_log_group(scope.names.train_project)), *_register_statements(scope))


def deploy_build_policy(scope: Scope, execution_role_arn: str) -> Policy:
    return _policy(
        _logs(scope, codebuild_log_group(scope.names.deploy_project)),
        *_deploy_statements(scope, execution_role_arn),
        # deploy.py --record-pipeline-approval reads who approved from the pipeline's state.
        _statement("ReadPipelineApprovals", ["codepipeline:GetPipelineExecution", "codepipeline:GetPipelineState"],
                   [scope.arns.pipeline(scope.names.pipeline)]),
    )


def pipeline_policy(scope: Scope, connection_arn: str, approval_mode: str) -> Policy:
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
    else:
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
    """Read-only: what `pulumi preview --refresh` reads of this stack, and nothing it could change."""
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


def github_deploy_policy(scope: Scope, execution_role_arn: str) -> Policy:
    """The model build (train + register) and deploy workflows, in one role trusted from main/production."""
    statements: dict[str, Statement] = {}
    for statement in (*_register_statements(scope), *_deploy_statements(scope, execution_role_arn)):
        sid = statement["Sid"]
        if sid in statements:
            merged = sorted(set(statements[sid]["Action"]) | set(statement["Action"]))
            resources = list(dict.fromkeys([*statements[sid]["Resource"], *statement["Resource"]]))
            statements[sid] = {**statements[sid], "Action": merged, "Resource": resources}
        else:
            statements[sid] = statement
    return _policy(*statements.values())


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
    connection_arn: NotRequired[pulumi.Input[str]]
    """Orchestrator codepipeline: the CodeConnection the pipeline's source action uses."""


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

        execution = self._role("sagemaker-execution", service_trust_policy(SAGEMAKER_SERVICE),
                               "SageMaker endpoints of the stack")
        image_account, image_repository = args["inference_image_repository"]
        self._attach("sagemaker-execution", execution, lambda scope, _exec: sagemaker_execution_policy(
            scope, scope.arns.ecr_repository(image_account, image_repository)))
        self.sagemaker_execution_role_arn = execution.arn

        preview = self._role("github-preview", self._oidc_trust(preview_subjects(args["repository"])),
                             "GitHub Actions pull-request previews (read-only)")
        self._attach("github-preview", preview, lambda scope, _exec: github_preview_policy(scope))
        self.github_preview_role_arn = preview.arn

        self.github_deploy_role_arn = None
        self.codepipeline_role_arn = self.train_build_role_arn = self.deploy_build_role_arn = None
        self.auto_approve_role_arn = self.github_trigger_role_arn = None

        if github_actions:
            deploy = self._role("github-deploy",
                                self._oidc_trust(deploy_subjects(args["repository"], args["branch"])),
                                "GitHub Actions model build and deploy (main branch, production environment)")
            self._attach("github-deploy", deploy, github_deploy_policy)
            self.github_deploy_role_arn = deploy.arn

            trigger_role = self._role("github-trigger", service_trust_policy("lambda.amazonaws.com"),
                                      "Lambda that dispatches the deploy workflow on Approved")
            self._attach("github-trigger", trigger_role, lambda scope, _exec: github_component.trigger_function_policy(
                token_secret_arn=scope.arns.secret(names.github_token_secret),
                log_group_arn=scope.arns.log_group(lambda_log_group(names.github_trigger_function)),
                dead_letter_queue_arn=scope.arns.queue(names.github_trigger_dlq),
            ))
            self.github_trigger_role_arn = trigger_role.arn

        if codepipeline:
            connection_arn = args.get("connection_arn")
            if connection_arn is None:
                raise ValueError("Roles: orchestrator codepipeline needs connection_arn (the pipeline's source)")
            pipeline_role = self._role("codepipeline", service_trust_policy("codepipeline.amazonaws.com"),
                                       "CodePipeline of the stack")
            self._attach("codepipeline", pipeline_role, lambda scope, _exec, arn: pipeline_policy(
                scope, arn, args["approval_mode"]), extra=connection_arn)
            self.codepipeline_role_arn = pipeline_role.arn

            train = self._role("codebuild-train", service_trust_policy("codebuild.amazonaws.com"),
                               "CodeBuild project train")
            self._attach("codebuild-train", train, lambda scope, _exec: train_build_policy(scope))
            self.train_build_role_arn = train.arn

            deploy_build = self._role("codebuild-deploy", service_trust_policy("codebuild.amazonaws.com"),
                                      "CodeBuild project deploy")
            self._attach("codebuild-deploy", deploy_build, deploy_build_policy)
            self.deploy_build_role_arn = deploy_build.arn

        if args["approval_mode"] == "auto":
            approve = self._role("auto-approve", service_trust_policy("lambda.amazonaws.com"),
                                 "Lambda that approves or rejects model packages on their metrics")
            self._attach("auto-approve", approve, lambda scope, _exec: auto_approve_policy(scope))
            self.auto_approve_role_arn = approve.arn

        outputs = {key: value for key, value in vars(self).items()
                   if key.endswith("_arn") and value is not None}
        self.register_outputs(outputs)

    def _oidc_trust(self, subjects: list[str]) -> pulumi.Output[str]:
        return self.oidc_provider_arn.apply(lambda arn: json.dumps(github_oidc_trust_policy(arn, subjects)))

    def _role(self, principal: str, trust: pulumi.Input[str] | Policy, description: str) -> aws.iam.Role:
        policy = json.dumps(trust) if isinstance(trust, dict) else trust
        return aws.iam.Role(
            f"{self._name}-{principal}",
            name=self._names.role(principal),
            description=f"{description} ({self._names.prefix})",
            assume_role_policy=policy,
            max_session_duration=3600,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _attach(self, principal: str, role: aws.iam.Role, build: Callable[..., Policy],
                extra: pulumi.Input[str] | None = None) -> aws.iam.RolePolicy:
        args = self._args
        execution_arn = self.sagemaker_execution_role_arn if principal != "sagemaker-execution" else ""

        def render(values: list[Any]) -> str:
            account, bucket, exec_arn, extra_value = values
            scope = Scope(arns=Arns(partition=args["partition"], region=args["region"], account=account),
                          names=self._names, bucket=bucket, group=self._names.group)
            document = build(scope, exec_arn) if extra is None else build(scope, exec_arn, extra_value)
            return json.dumps(document)

        return aws.iam.RolePolicy(
            f"{self._name}-{principal}-policy",
            role=role.id,
            policy=pulumi.Output.all(args["account_id"], args["bucket"], execution_arn, extra or "").apply(render),
            opts=pulumi.ResourceOptions(parent=self),
        )
