"""Deterministic names and ARNs of the stack's resources.

Roles scopes every permission to these ARNs, while the components that create the resources use
the same names: no role needs another component's outputs, so the graph has no cycles (the pipeline
role can name the pipeline before the pipeline exists, and the pipeline needs the role).
"""

from __future__ import annotations

from dataclasses import dataclass

import contracts


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def stack_prefix(project: str, stack: str) -> str:
    """Prefix of every named resource of the stack (project and stack, so stacks never collide)."""
    return f"{project}-{stack}"


@dataclass(frozen=True)
class StackNames:
    project: str
    stack: str
    group: str

    @property
    def prefix(self) -> str:
        return stack_prefix(self.project, self.stack)

    @property
    def endpoint_prefix(self) -> str:
        """Every endpoint of the stack starts with this; IAM scopes SageMaker hosting calls to it."""
        return f"{self.prefix}-"

    @property
    def pipeline(self) -> str:
        return self.prefix

    @property
    def model_build_pipeline(self) -> str:
        """The SageMaker pipeline (Prepare -> Train -> Evaluate -> QualityGate -> Register)."""
        return contracts.model_build_pipeline_name(self.project, self.stack)

    @property
    def train_project(self) -> str:
        return f"{self.prefix}-train"

    @property
    def deploy_project(self) -> str:
        return f"{self.prefix}-deploy"

    @property
    def auto_approve_function(self) -> str:
        return f"{self.prefix}-auto-approve"

    @property
    def auto_approve_dlq(self) -> str:
        return f"{self.prefix}-auto-approve-dlq"

    @property
    def auto_approve_rule(self) -> str:
        return f"{self.prefix}-model-pending"

    @property
    def github_trigger_function(self) -> str:
        return f"{self.prefix}-github-trigger"

    @property
    def github_trigger_dlq(self) -> str:
        return f"{self.prefix}-github-trigger-dlq"

    @property
    def github_trigger_rule(self) -> str:
        return f"{self.prefix}-model-approved"

    @property
    def github_token_secret(self) -> str:
        return f"{self.project}/{self.stack}/github-token"

    @property
    def approval_topic(self) -> str:
        return f"{self.prefix}-approvals"

    @property
    def connection(self) -> str:
        # CodeConnections limits names to 32 characters.
        return self.prefix[:32]

    def role(self, principal: str) -> str:
        # IAM limits role names to 64 characters.
        return f"{self.prefix}-{principal}"[:64]


def lambda_log_group(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def codebuild_log_group(project_name: str) -> str:
    return f"/aws/codebuild/{project_name}"


@dataclass(frozen=True)
class Arns:
    """ARN builders for one account and region (SageMaker lowercases names in its ARNs)."""

    partition: str
    region: str
    account: str

    def _arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (f"arn:{self.partition}:{service}:{self.region if region else ''}:"
                f"{self.account if account else ''}:{resource}")

    def bucket(self, name: str) -> str:
        return self._arn("s3", name, region=False, account=False)

    def objects(self, bucket: str, key_prefix: str = "") -> str:
        return f"{self.bucket(bucket)}/{key_prefix}*"

    def model_package_group(self, group: str) -> str:
        return self._arn("sagemaker", f"model-package-group/{group.lower()}")

    def model_packages(self, group: str) -> str:
        return self._arn("sagemaker", f"model-package/{group.lower()}/*")

    def sagemaker(self, kind: str, name_prefix: str) -> str:
        """e.g. sagemaker("endpoint", prefix) -> every endpoint whose name starts with the prefix."""
        return self._arn("sagemaker", f"{kind}/{name_prefix.lower()}*")

    def log_group(self, name: str) -> str:
        return self._arn("logs", f"log-group:{name}")

    def log_streams(self, name: str, stream_prefix: str = "") -> str:
        return self._arn("logs", f"log-group:{name}:log-stream:{stream_prefix}*")

    def codebuild_project(self, name: str) -> str:
        return self._arn("codebuild", f"project/{name}")

    def pipeline(self, name: str) -> str:
        return self._arn("codepipeline", name)

    def sagemaker_pipeline(self, name: str) -> str:
        return self._arn("sagemaker", f"pipeline/{name.lower()}")

    def sagemaker_pipeline_executions(self, name: str) -> str:
        return self._arn("sagemaker", f"pipeline/{name.lower()}/execution/*")

    def function(self, name: str) -> str:
        return self._arn("lambda", f"function:{name}")

    def queue(self, name: str) -> str:
        return self._arn("sqs", name)

    def topic(self, name: str) -> str:
        return self._arn("sns", name)

    def role(self, name: str) -> str:
        return self._arn("iam", f"role/{name}", region=False)

    def scalable_targets(self) -> str:
        # A target's ARN ends in an id Application Auto Scaling assigns at registration: no name to scope to.
        return self._arn("application-autoscaling", "scalable-target/*")

    def secret(self, name: str) -> str:
        # Secrets Manager appends "-" and six random characters to every secret's ARN.
        return self._arn("secretsmanager", f"secret:{name}-??????")

    def ecr_repository(self, account: str, repository: str) -> str:
        return f"arn:{self.partition}:ecr:{self.region}:{account}:repository/{repository}"
