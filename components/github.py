"""GitHubIntegration: the repository side of the lifecycle and the Lambda that hands approvals to GitHub.

GitHub is the source, the place of the production approval and (orchestrator `github-actions`) the
deploy runner. This component creates what the workflows read (Actions variables and secrets), the
`production` environment whose reviewers gate production deploys (the OIDC deploy role trusts only
that environment, so its protection rules are the gate), the GitHub token in Secrets Manager, and,
when asked, the trigger Lambda that dispatches the deploy workflow on an `Approved` package.

The GitHub OIDC provider and every IAM role live in the Roles component: Roles needs the provider
for the trust policies and this component needs the role ARNs, so keeping both there avoids a cycle.
Names that Roles scopes permissions to (function, log group, queue, secret) are deterministic and
come from components.naming.StackNames, so neither component needs the other's outputs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws
import pulumi_github as github

import contracts
from components.event_function import EventFunction, EventFunctionArgs, lambda_archive_files
from components.naming import StackNames

COMPONENT_TOKEN = "sagemaker-mlops:github:GitHubIntegration"  # noqa: S105 - a Pulumi type token, not a secret

# Retention values CloudWatch Logs accepts; anything else fails only at `pulumi up` time, so check early.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)
# GitHub accepts at most six required reviewers (users plus teams) per environment.
MAX_ENVIRONMENT_REVIEWERS = 6
_REPOSITORY = re.compile(r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$")
_USERNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")


# --- Policy helper (plain data, so tests and Roles read it) -------------------------------------
def trigger_function_policy(
    *, token_secret_arn: str, model_packages_arn: str, log_group_arn: str, dead_letter_queue_arn: str
) -> dict[str, Any]:
    """What the trigger Lambda's role needs, and nothing more (for Roles to attach).

    - read the token and the package (the handler's two AWS calls: it dispatches only for a package
      that the registry shows Approved in this stack's group; `model_packages_arn` is that group's
      `.../model-package/<group>/*`),
    - write its own log streams (the log group itself is created by this component),
    - send failed invocations to its dead-letter queue (Lambda checks this permission when the
      function is created, so without it `pulumi up` fails).
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadGitHubToken",
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": [token_secret_arn],
            },
            {
                "Sid": "ReadPackageBeforeDispatch",
                "Effect": "Allow",
                "Action": ["sagemaker:DescribeModelPackage"],
                "Resource": [model_packages_arn],
            },
            {
                "Sid": "WriteOwnLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [f"{log_group_arn}:*"],
            },
            {
                "Sid": "DeadLetterFailedInvocations",
                "Effect": "Allow",
                "Action": ["sqs:SendMessage"],
                "Resource": [dead_letter_queue_arn],
            },
        ],
    }


def _token_document(token: str) -> str:
    if not token.strip():
        # The message never contains the value: it is a secret even when it is malformed.
        raise ValueError(
            "the GitHub token is empty; set it with `pulumi config set --secret githubToken <token>`"
        )
    return json.dumps({"token": token})


# --- Args -------------------------------------------------------------------------------------
class TriggerArgs(TypedDict):
    role_arn: pulumi.Input[str]
    """Execution role from Roles (GetSecretValue on the token, DescribeModelPackage on the group's packages,
    own logs, SendMessage to the DLQ)."""
    group_name: pulumi.Input[str]
    """Model package group whose Approved packages dispatch the deploy workflow."""
    deploy_workflow: NotRequired[str]
    """Workflow file name in .github/workflows (default contracts.DEPLOY_WORKFLOW_FILE)."""
    deploy_ref: NotRequired[str]
    """Git ref the workflow runs on (default "main")."""
    github_api_url: NotRequired[str]
    """GitHub REST API base (default contracts.DEFAULT_GITHUB_API_URL; GitHub Enterprise differs)."""
    log_retention_days: NotRequired[int]
    """Retention of the function's log group (default 30; a CloudWatch Logs retention value)."""
    log_kms_key_arn: NotRequired[pulumi.Input[str]]
    """Customer-managed key for the log group; CloudWatch Logs encrypts with its own key otherwise."""
    timeout_seconds: NotRequired[int]
    """Function timeout (default 60: the handler retries 5xx/429 with backoff inside one invocation)."""
    maximum_event_age_seconds: NotRequired[int]
    """How long EventBridge keeps retrying delivery (default 3600, 60..86400)."""
    maximum_retry_attempts: NotRequired[int]
    """EventBridge delivery retries before the event goes to the DLQ (default 8, 0..185)."""


class GitHubIntegrationArgs(TypedDict):
    repository: str
    """"owner/name"; resources address the name, the GitHub provider (from opts) carries the owner."""
    names: StackNames
    """The stack's deterministic names (token secret, trigger function, queue, rule), which Roles scopes to."""
    token: pulumi.Input[str]
    """GitHub token for the trigger Lambda (a secret config value); stored only in Secrets Manager."""
    variables: Mapping[str, pulumi.Input[str]]
    """Repository Actions variables, names from contracts.GITHUB_VARIABLES."""
    secrets: Mapping[str, pulumi.Input[str]]
    """Repository Actions secrets, names from contracts.GITHUB_SECRETS (only those available)."""
    production_reviewers: Sequence[str]
    """GitHub usernames required to approve production deploys (1 to 6)."""
    deploy_branch: str
    """The one branch allowed to deploy to the production environment (the stack's githubBranch)."""
    manage_repository_settings: bool
    """Repository variables/secrets are repository-wide: exactly one stack per repository owns them."""
    trigger: NotRequired[TriggerArgs]
    """Orchestrator github-actions: the Lambda that dispatches the deploy workflow on Approved."""
    secret_recovery_window_days: NotRequired[int]
    """0 deletes the token secret at once (force-destroy stacks, so a re-created stack can reuse the
    name); 7..30 keeps it recoverable. Default 7."""
    secret_kms_key_id: NotRequired[pulumi.Input[str]]
    """Customer-managed key for the token secret; Secrets Manager's AWS-managed key otherwise."""
    prevent_self_review: NotRequired[bool]
    """Whoever triggered a deploy cannot approve it (default True, segregation of duties). Set False
    only if the token belongs to the sole reviewer, or no one could approve the dispatched runs."""
    tags: NotRequired[Mapping[str, str]]
    """Extra tags for the AWS resources (project/stack come from the provider's default tags)."""


def validate_args(args: GitHubIntegrationArgs) -> None:
    """Reject inputs that would fail late (at `pulumi up`) or silently weaken the production gate."""
    repository = args["repository"]
    if not _REPOSITORY.match(repository):
        raise ValueError(
            f"GitHubIntegration repository {repository!r} is not 'owner/name' "
            "(set githubRepository to e.g. 'your-org/churn-model')"
        )
    unknown_vars = sorted(set(args["variables"]) - set(contracts.GITHUB_VARIABLES))
    if unknown_vars:
        raise ValueError(
            f"GitHubIntegration variables {unknown_vars} are not in contracts.GITHUB_VARIABLES "
            f"({', '.join(contracts.GITHUB_VARIABLES)}); add them there first so the workflows and tests agree"
        )
    unknown_secrets = sorted(set(args["secrets"]) - set(contracts.GITHUB_SECRETS))
    if unknown_secrets:
        raise ValueError(
            f"GitHubIntegration secrets {unknown_secrets} are not in contracts.GITHUB_SECRETS "
            f"({', '.join(contracts.GITHUB_SECRETS)}); add them there first so the workflows and tests agree"
        )
    if args["manage_repository_settings"]:
        reviewers = list(args["production_reviewers"])
        if not reviewers:
            raise ValueError(
                "the production environment needs at least one reviewer: set productionReviewers to GitHub "
                "usernames (without reviewers every push to the deploy branch would reach production unreviewed)"
            )
        if len(reviewers) > MAX_ENVIRONMENT_REVIEWERS:
            raise ValueError(
                f"productionReviewers has {len(reviewers)} users; GitHub allows at most "
                f"{MAX_ENVIRONMENT_REVIEWERS} required reviewers per environment"
            )
        bad = [r for r in reviewers if not _USERNAME.match(r)]
        if bad:
            raise ValueError(f"productionReviewers {bad} are not GitHub usernames (no '@', letters, digits, '-')")
        if len(set(reviewers)) != len(reviewers):
            raise ValueError(f"productionReviewers has duplicates: {reviewers}")
        branch = args["deploy_branch"]
        if not branch or any(c in branch for c in "*?[]"):
            raise ValueError(
                f"deploy_branch {branch!r} must be one branch name (set githubBranch, e.g. 'main'): the production "
                "environment admits exactly that branch"
            )
    window = args.get("secret_recovery_window_days", 7)
    if window != 0 and not 7 <= window <= 30:
        raise ValueError(
            f"secret_recovery_window_days={window}: Secrets Manager accepts 0 (delete at once) or 7..30"
        )
    trigger = args.get("trigger")
    if trigger is not None:
        _validate_trigger(trigger)


def _validate_trigger(trigger: TriggerArgs) -> None:
    if isinstance(trigger["group_name"], str) and not trigger["group_name"]:
        raise ValueError("GitHubIntegration trigger.group_name is empty; pass the stack's model package group")
    retention = trigger.get("log_retention_days", 30)
    if retention not in LOG_RETENTION_DAYS:
        raise ValueError(
            f"log_retention_days={retention} is not a CloudWatch Logs retention value; use one of {LOG_RETENTION_DAYS}"
        )
    age = trigger.get("maximum_event_age_seconds", 3600)
    if not 60 <= age <= 86400:
        raise ValueError(f"maximum_event_age_seconds={age}: EventBridge accepts 60..86400")
    retries = trigger.get("maximum_retry_attempts", 8)
    if not 0 <= retries <= 185:
        raise ValueError(f"maximum_retry_attempts={retries}: EventBridge accepts 0..185")
    timeout = trigger.get("timeout_seconds", 60)
    if not 1 <= timeout <= 900:
        raise ValueError(f"timeout_seconds={timeout}: Lambda accepts 1..900")
    workflow = trigger.get("deploy_workflow", contracts.DEPLOY_WORKFLOW_FILE)
    if "/" in workflow or not workflow.endswith((".yml", ".yaml")):
        raise ValueError(
            f"deploy_workflow {workflow!r} must be a workflow file name such as {contracts.DEPLOY_WORKFLOW_FILE!r}"
        )
    api_url = trigger.get("github_api_url", contracts.DEFAULT_GITHUB_API_URL)
    if not api_url.startswith("https://"):
        # The handler sends the token as a bearer header: never over plain HTTP.
        raise ValueError(f"github_api_url {api_url!r} must start with https:// (the token travels in its headers)")
    lambda_archive_files(contracts.GITHUB_TRIGGER_HANDLER)  # a missing file fails here, before any resource


# --- The component ----------------------------------------------------------------------------
class GitHubIntegration(pulumi.ComponentResource):
    secret_arn: pulumi.Output[str]
    secret_name: str
    environment_name: str | None
    variable_names: list[str]
    secret_names: list[str]
    trigger_function_name: pulumi.Output[str] | None
    trigger_function_arn: pulumi.Output[str] | None
    trigger_rule_arn: pulumi.Output[str] | None
    dead_letter_queue_url: pulumi.Output[str] | None
    dead_letter_queue_arn: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: GitHubIntegrationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        # Before super(): bad input registers nothing, not even the component.
        validate_args(args)
        super().__init__(COMPONENT_TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.get("tags", {}))
        repo_name = args["repository"].split("/", 1)[1]

        self.variable_names = []
        self.secret_names = []
        self.environment_name = None
        if args["manage_repository_settings"]:
            self._repository_settings(name, args, repo_name, child)

        names = args["names"]
        secret = aws.secretsmanager.Secret(
            f"{name}-token",
            name=names.github_token_secret,
            description=(f"GitHub token the {names.stack} stack's trigger Lambda dispatches workflows with"
                         if "trigger" in args else f"GitHub token of the {names.stack} stack"),
            recovery_window_in_days=args.get("secret_recovery_window_days", 7),
            kms_key_id=args.get("secret_kms_key_id"),
            tags=tags or None,
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-token-value",
            secret_id=secret.id,
            # Output.secret before apply: the JSON document stays secret in state and in every preview.
            secret_string=pulumi.Output.secret(args["token"]).apply(_token_document),
            opts=child,
        )
        self.secret_arn = secret.arn
        self.secret_name = names.github_token_secret

        self.trigger_function_name = None
        self.trigger_function_arn = None
        self.trigger_rule_arn = None
        self.dead_letter_queue_url = None
        self.dead_letter_queue_arn = None
        trigger = args.get("trigger")
        if trigger is not None:
            self._trigger(name, args, trigger, secret, tags, child)

        outputs: dict[str, Any] = {
            "secret_arn": self.secret_arn,
            "secret_name": self.secret_name,
            "variable_names": self.variable_names,
            "secret_names": self.secret_names,
        }
        optional = {
            "environment_name": self.environment_name,
            "trigger_function_name": self.trigger_function_name,
            "trigger_function_arn": self.trigger_function_arn,
            "trigger_rule_arn": self.trigger_rule_arn,
            "dead_letter_queue_url": self.dead_letter_queue_url,
            "dead_letter_queue_arn": self.dead_letter_queue_arn,
        }
        outputs.update({k: v for k, v in optional.items() if v is not None})
        self.register_outputs(outputs)

    def _repository_settings(
        self, name: str, args: GitHubIntegrationArgs, repo_name: str, child: pulumi.ResourceOptions
    ) -> None:
        for var_name in sorted(args["variables"]):
            github.ActionsVariable(
                f"{name}-var-{var_name.lower()}",
                repository=repo_name,
                variable_name=var_name,
                value=args["variables"][var_name],
                opts=child,
            )
            self.variable_names.append(var_name)
        for secret_name in sorted(args["secrets"]):
            github.ActionsSecret(
                f"{name}-secret-{secret_name.lower()}",
                repository=repo_name,
                secret_name=secret_name,
                # `value` (v6): the provider encrypts it with the repository's public key; plaintext_value
                # is deprecated. Output.secret keeps it encrypted in state even if the caller forgot.
                value=pulumi.Output.secret(args["secrets"][secret_name]),
                opts=child,
            )
            self.secret_names.append(secret_name)

        # Reviewers are numeric user IDs; the provider resolves usernames through the API at preview/up.
        invoke_opts = pulumi.InvokeOutputOptions(parent=self)
        reviewer_ids = [
            github.get_user_output(username=username, opts=invoke_opts).id.apply(int)
            for username in args["production_reviewers"]
        ]
        environment = github.RepositoryEnvironment(
            f"{name}-production",
            repository=repo_name,
            environment=contracts.PRODUCTION_ENVIRONMENT,
            reviewers=[github.RepositoryEnvironmentReviewerArgs(users=reviewer_ids)],
            # Only the deploy branch may deploy: a feature branch cannot reach the deploy role, which
            # trusts this environment. Not "protected branches only": GitHub lets every branch deploy
            # under that policy while the repository has no branch protection rule.
            deployment_branch_policy=github.RepositoryEnvironmentDeploymentBranchPolicyArgs(
                protected_branches=False, custom_branch_policies=True
            ),
            prevent_self_review=args.get("prevent_self_review", True),
            # Admins go through the same gate: every production change is authorised by a reviewer.
            can_admins_bypass=False,
            opts=child,
        )
        github.RepositoryEnvironmentDeploymentPolicy(
            f"{name}-production-branch",
            repository=repo_name,
            environment=environment.environment,
            branch_pattern=args["deploy_branch"],
            opts=child,
        )
        self.environment_name = contracts.PRODUCTION_ENVIRONMENT

    def _trigger(
        self,
        name: str,
        args: GitHubIntegrationArgs,
        trigger: TriggerArgs,
        secret: aws.secretsmanager.Secret,
        tags: dict[str, str],
        child: pulumi.ResourceOptions,
    ) -> None:
        names = args["names"]
        env = {
            contracts.ENV_MODEL_PACKAGE_GROUP_NAME: trigger["group_name"],
            contracts.ENV_DEPLOY_REPOSITORY: args["repository"],
            contracts.ENV_DEPLOY_WORKFLOW: trigger.get("deploy_workflow", contracts.DEPLOY_WORKFLOW_FILE),
            contracts.ENV_DEPLOY_REF: trigger.get("deploy_ref", "main"),
            contracts.ENV_GITHUB_TOKEN_SECRET_ID: secret.arn,
            contracts.ENV_GITHUB_API_URL: trigger.get("github_api_url", contracts.DEFAULT_GITHUB_API_URL),
        }
        function_args: EventFunctionArgs = {
            "handler": contracts.GITHUB_TRIGGER_HANDLER,
            "function_name": names.github_trigger_function,
            "description": "Dispatches the deploy workflow when a model package is Approved",
            "role_arn": trigger["role_arn"],
            "environment": env,
            "memory_size": 128,
            # The handler retries GitHub's 5xx/429 with backoff inside one invocation.
            "timeout_seconds": trigger.get("timeout_seconds", 60),
            "log_retention_days": trigger.get("log_retention_days", 30),
            "log_kms_key_arn": trigger.get("log_kms_key_arn"),
            "rule_name": names.github_trigger_rule,
            "rule_description": pulumi.Output.concat(
                "Model packages of ", trigger["group_name"], " approved -> GitHub deploy workflow"),
            "event_pattern": pulumi.Output.from_input(trigger["group_name"]).apply(
                lambda group: json.dumps(contracts.github_trigger_pattern(group))),
            "dead_letter_queue_name": names.github_trigger_dlq,
            "target_id": "github-trigger",
            "maximum_event_age_seconds": trigger.get("maximum_event_age_seconds", 3600),
            "maximum_retry_attempts": trigger.get("maximum_retry_attempts", 8),
            "tags": tags,
        }
        function = EventFunction(f"{name}-trigger", function_args, opts=child)
        self.trigger_function_name = function.function_name
        self.trigger_function_arn = function.function_arn
        self.trigger_rule_arn = function.rule_arn
        self.dead_letter_queue_url = function.dead_letter_queue_url
        self.dead_letter_queue_arn = function.dead_letter_queue_arn
