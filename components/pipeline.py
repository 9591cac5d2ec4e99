"""ModelPipeline (orchestrator codepipeline): Source -> Build -> Approval -> Deploy per stage.

SourceConnection is separate because Roles scopes the pipeline role's UseConnection to its ARN
while ModelPipeline needs that role: connection -> roles -> pipeline, no cycle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

import contracts
from components.model_build import ModelStackArgs
from components.naming import StackNames, codebuild_log_group

SOURCE_COMPONENT_TOKEN = "sagemaker-mlops:pipeline:SourceConnection"  # noqa: S105 - a Pulumi type token
COMPONENT_TOKEN = "sagemaker-mlops:pipeline:ModelPipeline"  # noqa: S105 - a Pulumi type token, not a secret
CODEBUILD_IMAGE = "aws/codebuild/standard:7.0"
SOURCE_ARTIFACT = "SourceArtifact"
BUILD_ARTIFACT = "BuildArtifact"
# CodePipeline keys an artifact's objects in the artifact store `<pipeline>/<artifact>/<random id>`, each name
# cut to these lengths (e.g. sagemaker-mlops-prod/BuildArtif/AbC12dE); the build role may write only there.
ARTIFACT_KEY_PIPELINE_CHARS = 20
ARTIFACT_KEY_ARTIFACT_CHARS = 10
# Only changes under training/ start a run: infrastructure and docs changes do not retrain.
TRIGGER_FILE_PATHS = ("training/**",)


def pipeline_console_url(region: str, pipeline_name: str) -> str:
    return (f"https://{region}.console.aws.amazon.com/codesuite/codepipeline/pipelines/"
            f"{pipeline_name}/view?region={region}")


def artifact_key_prefix(pipeline_name: str, artifact: str) -> str:
    """Where CodePipeline stores `artifact`'s objects of the pipeline in its artifact store."""
    return f"{pipeline_name[:ARTIFACT_KEY_PIPELINE_CHARS]}/{artifact[:ARTIFACT_KEY_ARTIFACT_CHARS]}/"


def group_console_url(region: str, group_name: str) -> str:
    return (f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
            f"#/model-registry/model-package-groups/{group_name}")


def build_environment(names: dict[str, pulumi.Input[str]]
                      ) -> list[aws.codebuild.ProjectEnvironmentEnvironmentVariableArgsDict]:
    return [{"name": key, "value": value, "type": "PLAINTEXT"} for key, value in sorted(names.items())]


# CodePipeline resolves this variable per execution; register.py/deploy.py record it on the package.
EXECUTION_ID_VARIABLE = "#{codepipeline.PipelineExecutionId}"


def action_environment(variables: dict[str, str]) -> str:
    """A CodeBuild action's EnvironmentVariables configuration (set per action, not per project)."""
    return json.dumps([{"name": name, "value": value, "type": "PLAINTEXT"} for name, value in variables.items()])


def deploy_stage_plan(stages: Sequence[contracts.DeploymentStage], approval_mode: str) -> list[tuple[str, str]]:
    """Pipeline stages after Approval, in order: ("gate" | "deploy", deployment stage name).

    A manual gate stands before every stage that requires approval, unless the Approval stage right
    before it is already a manual approval (one person, one click).
    """
    plan: list[tuple[str, str]] = []
    for index, stage in enumerate(stages):
        already_gated = index == 0 and approval_mode == "manual"
        if stage.requires_approval and not already_gated:
            plan.append(("gate", stage.name))
        plan.append(("deploy", stage.name))
    return plan


def notifies_approvers(stages: Sequence[contracts.DeploymentStage], approval_mode: str) -> bool:
    """Whether the pipeline has a manual approval action, and so an SNS topic its role publishes to."""
    return approval_mode == "manual" or any(kind == "gate" for kind, _ in deploy_stage_plan(stages, approval_mode))


class SourceConnectionArgs(TypedDict):
    names: StackNames
    existing_arn: str | None
    """An existing CodeConnection (already activated); None creates one, which awaits activation."""


class SourceConnection(pulumi.ComponentResource):
    arn: pulumi.Output[str]
    pending_activation: bool

    def __init__(self, name: str, args: SourceConnectionArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(SOURCE_COMPONENT_TOKEN, name, None, opts)
        if args["existing_arn"]:
            self.arn = pulumi.Output.from_input(args["existing_arn"])
            self.pending_activation = False
        else:
            connection = aws.codeconnections.Connection(
                f"{name}-github",
                name=args["names"].connection,
                provider_type="GitHub",
                # SageMaker Studio lists only connections tagged sagemaker=true.
                tags={"sagemaker": "true"},
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.arn = connection.arn
            # AWS creates connections PENDING; only a person can authorise the GitHub app in the console.
            self.pending_activation = True
        self.register_outputs({"arn": self.arn})


class ModelPipelineArgs(ModelStackArgs):
    repository: str
    branch: str
    connection_arn: pulumi.Input[str]
    pipeline_role_arn: pulumi.Input[str]
    train_role_arn: pulumi.Input[str]
    deploy_role_arn: pulumi.Input[str]
    deployment_stages: Sequence[contracts.DeploymentStage]
    deployment_stages_json: pulumi.Input[str]
    """contracts.dump_deployment_stages of the stages (with capture destinations and alarm names)."""
    approval_mode: str
    log_retention_days: int
    model_build_env: Mapping[str, pulumi.Input[str]]
    """The model build's variables on the train project (data URI, compute, pipeline name)."""
    train_timeout_minutes: int
    """Longer than the build waits for a pipeline execution (config.Settings.train_build_timeout_minutes)."""
    auto_approve_function_name: NotRequired[pulumi.Input[str]]
    """approval_mode auto: the function the Approval stage invokes."""


class ModelPipeline(pulumi.ComponentResource):
    pipeline_name: pulumi.Output[str]
    pipeline_arn: pulumi.Output[str]
    console_url: pulumi.Output[str]
    approval_topic_arn: pulumi.Output[str] | None
    train_project_name: pulumi.Output[str]
    deploy_project_name: pulumi.Output[str]
    code_repository_name: pulumi.Output[str]

    def __init__(self, name: str, args: ModelPipelineArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TOKEN, name, None, opts)
        self._name = name
        child = pulumi.ResourceOptions(parent=self)
        names = args["names"]
        plan = deploy_stage_plan(args["deployment_stages"], args["approval_mode"])

        topic: aws.sns.Topic | None = None
        if notifies_approvers(args["deployment_stages"], args["approval_mode"]):
            topic = aws.sns.Topic(
                f"{name}-approvals",
                name=names.approval_topic,
                display_name=f"Model approvals ({names.prefix})",
                kms_master_key_id="alias/aws/sns",
                opts=child,
            )
        self.approval_topic_arn = topic.arn if topic is not None else None

        common = {
            contracts.ENV_ARTIFACT_BUCKET: args["bucket"],
            contracts.ENV_MODEL_PACKAGE_GROUP_NAME: args["group_name"],
            contracts.ENV_MLOPS_PROJECT: names.project,
            contracts.ENV_MLOPS_STACK: names.stack,
        }
        train = self._project(
            "train", names.train_project, args["train_role_arn"], contracts.TRAIN_BUILDSPEC,
            {**common, contracts.ENV_INFERENCE_IMAGE_URI: args["image_uri"], **args["model_build_env"]},
            args["log_retention_days"], timeout_minutes=args["train_timeout_minutes"],
        )
        deploy = self._project(
            "deploy", names.deploy_project, args["deploy_role_arn"], contracts.DEPLOY_BUILDSPEC,
            {**common, contracts.ENV_SAGEMAKER_EXECUTION_ROLE_ARN: args["execution_role_arn"],
             contracts.ENV_DEPLOYMENT_STAGES: args["deployment_stages_json"]},
            args["log_retention_days"],
            # Blue/green canaries bake (rollout.wait_seconds) before the build may finish.
            timeout_minutes=120,
        )

        repository = aws.sagemaker.CodeRepository(
            f"{name}-studio-repository",
            code_repository_name=names.prefix,
            git_config={"repository_url": f"https://github.com/{args['repository']}.git", "branch": args["branch"]},
            opts=child,
        )

        group_link = pulumi.Output.from_input(args["group_name"]).apply(
            lambda group: group_console_url(args["region"], group))
        stages: list[Any] = [
            {
                "name": "Source",
                "actions": [{
                    "name": "Source",
                    "category": "Source",
                    "owner": "AWS",
                    "provider": "CodeStarSourceConnection",
                    "version": "1",
                    "output_artifacts": [SOURCE_ARTIFACT],
                    "configuration": {
                        "ConnectionArn": args["connection_arn"],
                        "FullRepositoryId": args["repository"],
                        "BranchName": args["branch"],
                        "OutputArtifactFormat": "CODE_ZIP",
                    },
                }],
            },
            {
                "name": "Build",
                "actions": [{
                    "name": "Train",
                    "category": "Build",
                    "owner": "AWS",
                    "provider": "CodeBuild",
                    "version": "1",
                    "input_artifacts": [SOURCE_ARTIFACT],
                    "output_artifacts": [BUILD_ARTIFACT],
                    "configuration": {
                        "ProjectName": train.name,
                        "EnvironmentVariables": action_environment(
                            {contracts.ENV_PIPELINE_EXECUTION_ID: EXECUTION_ID_VARIABLE}),
                    },
                }],
            },
            {"name": "Approval", "actions": [self._approval_action(args, topic, group_link)]},
        ]
        recorded = False
        for kind, stage_name in plan:
            if kind == "gate":
                assert topic is not None
                stages.append({
                    "name": f"Approve-{stage_name}",
                    "actions": [self._manual_action(f"Approve-{stage_name}", topic, group_link,
                                                    f"Approve deploying the approved model to {stage_name}")],
                })
                continue
            action_env = {contracts.ENV_DEPLOY_STAGE: stage_name}
            if args["approval_mode"] == "manual" and not recorded:
                # The first deploy after the manual Approval stage writes who approved onto the package
                # (the registry is the record of truth) before anything reaches an endpoint.
                action_env[contracts.ENV_RECORD_PIPELINE_APPROVAL] = "true"
                action_env[contracts.ENV_PIPELINE_EXECUTION_ID] = EXECUTION_ID_VARIABLE
                recorded = True
            stages.append({
                "name": "Deploy" if len(args["deployment_stages"]) == 1 else f"Deploy-{stage_name}",
                "actions": [{
                    "name": f"Deploy-{stage_name}",
                    "category": "Build",
                    "owner": "AWS",
                    "provider": "CodeBuild",
                    "version": "1",
                    "input_artifacts": [SOURCE_ARTIFACT, BUILD_ARTIFACT],
                    "configuration": {
                        "ProjectName": deploy.name,
                        "PrimarySource": SOURCE_ARTIFACT,
                        # One deploy project, one stage per pipeline stage (training.deploy reads
                        # DEPLOY_STAGE), so a gate can stand between staging and production.
                        "EnvironmentVariables": action_environment(action_env),
                    },
                }],
            })

        pipeline = aws.codepipeline.Pipeline(
            f"{name}-pipeline",
            name=names.pipeline,
            pipeline_type="V2",
            # A newer push supersedes a run still waiting (e.g. at the approval): the newest model wins.
            execution_mode="SUPERSEDED",
            role_arn=args["pipeline_role_arn"],
            artifact_stores=[{"location": args["bucket"], "type": "S3"}],
            stages=stages,
            triggers=[{
                "provider_type": "CodeStarSourceConnection",
                "git_configuration": {
                    "source_action_name": "Source",
                    "pushes": [{
                        "branches": {"includes": [args["branch"]]},
                        "file_paths": {"includes": list(TRIGGER_FILE_PATHS)},
                    }],
                },
            }],
            opts=child,
        )
        self.pipeline_name = pipeline.name
        self.pipeline_arn = pipeline.arn
        self.console_url = pipeline.name.apply(lambda n: pipeline_console_url(args["region"], n))
        self.train_project_name = train.name
        self.deploy_project_name = deploy.name
        self.code_repository_name = repository.code_repository_name
        outputs: dict[str, Any] = {
            "pipeline_name": self.pipeline_name, "pipeline_arn": self.pipeline_arn, "console_url": self.console_url,
            "train_project_name": self.train_project_name, "deploy_project_name": self.deploy_project_name,
            "code_repository_name": self.code_repository_name,
        }
        if self.approval_topic_arn is not None:
            outputs["approval_topic_arn"] = self.approval_topic_arn
        self.register_outputs(outputs)

    def _project(self, role: str, project_name: str, service_role: pulumi.Input[str], buildspec: str,
                 env: dict[str, pulumi.Input[str]], retention: int, *, timeout_minutes: int
                 ) -> aws.codebuild.Project:
        log_group = aws.cloudwatch.LogGroup(
            f"{self._name}-{role}-logs", name=codebuild_log_group(project_name),
            retention_in_days=retention, opts=pulumi.ResourceOptions(parent=self),
        )
        return aws.codebuild.Project(
            f"{self._name}-{role}",
            name=project_name,
            service_role=service_role,
            build_timeout=timeout_minutes,
            source={"type": "CODEPIPELINE", "buildspec": buildspec},
            artifacts={"type": "CODEPIPELINE"},
            environment={
                "compute_type": "BUILD_GENERAL1_MEDIUM" if role == "train" else "BUILD_GENERAL1_SMALL",
                "image": CODEBUILD_IMAGE,
                "type": "LINUX_CONTAINER",
                "image_pull_credentials_type": "CODEBUILD",
                "environment_variables": build_environment(env),
            },
            logs_config={"cloudwatch_logs": {"group_name": log_group.name, "status": "ENABLED"}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group]),
        )

    @staticmethod
    def _manual_action(action_name: str, topic: aws.sns.Topic, link: pulumi.Input[str], message: str
                       ) -> dict[str, Any]:
        return {
            "name": action_name,
            "category": "Approval",
            "owner": "AWS",
            "provider": "Manual",
            "version": "1",
            "configuration": {
                "NotificationArn": topic.arn,
                "ExternalEntityLink": link,
                "CustomData": message,
            },
        }

    def _approval_action(self, args: ModelPipelineArgs, topic: aws.sns.Topic | None,
                         link: pulumi.Input[str]) -> dict[str, Any]:
        if args["approval_mode"] == "manual":
            assert topic is not None
            return self._manual_action(
                "Approve-model", topic, link,
                "A new model package awaits approval: review its metrics (model quality) in the registry, "
                "then approve here; the Deploy stage records your approval on the package.")
        function_name = args.get("auto_approve_function_name")
        if function_name is None:
            raise ValueError("ModelPipeline: approval_mode auto needs auto_approve_function_name")
        return {
            "name": "Auto-approve",
            "category": "Invoke",
            "owner": "AWS",
            "provider": "Lambda",
            "version": "1",
            "input_artifacts": [BUILD_ARTIFACT],
            "configuration": {"FunctionName": function_name},
        }
