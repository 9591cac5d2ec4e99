"""EventFunction: a Lambda from handlers/ that an EventBridge rule invokes, with nowhere for a miss to hide.

The auto-approval handler (PendingManualApproval) and the GitHub trigger (Approved) are the same
construct: the function packaged with contracts.py beside it, its own log group with retention, the
rule on a contracts pattern, a target that retries and then dead-letters into an encrypted queue that
only this rule may write to, and an invoke permission scoped to the rule's ARN.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from components.naming import lambda_log_group

COMPONENT_TOKEN = "sagemaker-mlops:events:EventFunction"  # noqa: S105 - a Pulumi type token, not a secret
ROOT = Path(__file__).resolve().parent.parent
LAMBDA_RUNTIME = "python3.12"
DEAD_LETTER_RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum: time to notice and replay


def lambda_archive_files(handler_path: str) -> dict[str, Path]:
    """Archive-root name -> file: the handler and contracts.py beside it (Lambda's sys.path is the root)."""
    handler = ROOT / handler_path
    files = {handler.name: handler, "contracts.py": ROOT / "contracts.py"}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"the Lambda package needs {missing}, which do not exist")
    return files


def lambda_code(handler_path: str) -> pulumi.AssetArchive:
    return pulumi.AssetArchive({name: pulumi.FileAsset(str(path))
                                for name, path in lambda_archive_files(handler_path).items()})


def handler_name(handler_path: str) -> str:
    return f"{Path(handler_path).stem}.handler"


def dead_letter_queue_policy(queue_arn: str, rule_arn: str) -> dict[str, Any]:
    """Only this stack's rule may drop undeliverable events into the queue (confused-deputy guard)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowOnlyItsRule",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }


class EventFunctionArgs(TypedDict):
    handler: str
    """Repository-relative handler file (contracts.*_HANDLER); packaged with contracts.py beside it."""
    function_name: str
    """Deterministic name (components.naming.StackNames), which Roles scopes the function's role to."""
    description: str
    role_arn: pulumi.Input[str]
    environment: pulumi.Input[Mapping[str, pulumi.Input[str]]]
    memory_size: int
    timeout_seconds: int
    log_retention_days: int
    rule_name: str
    rule_description: pulumi.Input[str]
    event_pattern: pulumi.Input[str]
    """JSON of a contracts pattern (created after the group when it is built from the group's Output)."""
    dead_letter_queue_name: str
    target_id: str
    maximum_event_age_seconds: NotRequired[int]
    """How long EventBridge keeps retrying delivery (default 3600)."""
    maximum_retry_attempts: NotRequired[int]
    """EventBridge delivery retries before the event goes to the dead-letter queue (default 8)."""
    log_kms_key_arn: NotRequired[pulumi.Input[str] | None]
    """Customer-managed key for the log group; CloudWatch Logs encrypts with its own key otherwise."""
    tags: NotRequired[Mapping[str, str] | None]
    """Extra tags (project/stack come from the provider's default tags)."""


class EventFunction(pulumi.ComponentResource):
    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    rule_arn: pulumi.Output[str]
    dead_letter_queue_url: pulumi.Output[str]
    dead_letter_queue_arn: pulumi.Output[str]

    def __init__(self, name: str, args: EventFunctionArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.get("tags") or {}) or None

        # Created explicitly (not by Lambda on first write) so it has retention and goes with the stack.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=lambda_log_group(args["function_name"]),
            retention_in_days=args["log_retention_days"],
            kms_key_id=args.get("log_kms_key_arn"),
            tags=tags,
            opts=child,
        )
        dlq = aws.sqs.Queue(
            f"{name}-dlq",
            name=args["dead_letter_queue_name"],
            sqs_managed_sse_enabled=True,
            message_retention_seconds=DEAD_LETTER_RETENTION_SECONDS,
            tags=tags,
            opts=child,
        )
        function = aws.lambda_.Function(
            f"{name}-function",
            name=args["function_name"],
            description=args["description"],
            role=args["role_arn"],
            runtime=LAMBDA_RUNTIME,
            handler=handler_name(args["handler"]),
            code=lambda_code(args["handler"]),
            timeout=args["timeout_seconds"],
            memory_size=args["memory_size"],
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=args["environment"]),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=log_group.name),
            # EventBridge invokes asynchronously: its target DLQ only sees events Lambda refused to accept.
            # A handler that raises is retried twice by Lambda and then lands here, in the same queue, so
            # one queue holds every event that was not handled.
            dead_letter_config=aws.lambda_.FunctionDeadLetterConfigArgs(target_arn=dlq.arn),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group]),
        )
        rule = aws.cloudwatch.EventRule(
            f"{name}-rule",
            name=args["rule_name"],
            description=args["rule_description"],
            event_pattern=args["event_pattern"],
            state="ENABLED",
            tags=tags,
            opts=child,
        )
        queue_policy = aws.sqs.QueuePolicy(
            f"{name}-dlq-policy",
            queue_url=dlq.url,
            policy=pulumi.Output.all(dlq.arn, rule.arn).apply(
                lambda arns: json.dumps(dead_letter_queue_policy(arns[0], arns[1]))),
            opts=child,
        )
        permission = aws.lambda_.Permission(
            f"{name}-invoke",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-target",
            rule=rule.name,
            arn=function.arn,
            target_id=args["target_id"],
            retry_policy=aws.cloudwatch.EventTargetRetryPolicyArgs(
                maximum_event_age_in_seconds=args.get("maximum_event_age_seconds", 3600),
                maximum_retry_attempts=args.get("maximum_retry_attempts", 8),
            ),
            dead_letter_config=aws.cloudwatch.EventTargetDeadLetterConfigArgs(arn=dlq.arn),
            # Deliveries start once the rule may invoke the function and may write its dead letters.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[permission, queue_policy]),
        )
        self.function_name = function.name
        self.function_arn = function.arn
        self.rule_arn = rule.arn
        self.dead_letter_queue_url = dlq.url
        self.dead_letter_queue_arn = dlq.arn
        self.register_outputs({
            "function_name": self.function_name, "function_arn": self.function_arn, "rule_arn": self.rule_arn,
            "dead_letter_queue_url": self.dead_letter_queue_url, "dead_letter_queue_arn": self.dead_letter_queue_arn,
        })
