"""AutoApproval: the Lambda that approves or rejects a registered package on its metrics.

EventBridge delivers every PendingManualApproval state change of the stack's group to
handlers/auto_approve.py (with retries and a dead-letter queue); in the codepipeline orchestrator
the pipeline's Approval stage invokes the same function (ModelPipeline wires that action).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import pulumi
import pulumi_aws as aws

import contracts
from components.naming import StackNames, lambda_log_group

COMPONENT_TOKEN = "sagemaker-mlops:approval:AutoApproval"  # noqa: S105 - a Pulumi type token, not a secret
ROOT = Path(__file__).resolve().parent.parent
LAMBDA_RUNTIME = "python3.12"


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


def auto_approve_environment(group: str, thresholds: Mapping[str, float], champion_metric: str,
                             champion_min_delta: float) -> dict[str, str]:
    """Exactly contracts.AUTO_APPROVE_ENV."""
    return {
        contracts.ENV_MODEL_PACKAGE_GROUP_NAME: group,
        contracts.ENV_APPROVAL_THRESHOLDS: json.dumps(dict(thresholds), sort_keys=True),
        contracts.ENV_CHAMPION_METRIC: champion_metric,
        contracts.ENV_CHAMPION_MIN_DELTA: str(champion_min_delta),
    }


def dead_letter_queue_policy(queue_arn: str, rule_arn: str) -> dict[str, Any]:
    """Only this stack's rule may drop undeliverable events into the queue (confused-deputy guard)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowOnlyThePendingRule",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }


class AutoApprovalArgs(TypedDict):
    names: StackNames
    role_arn: pulumi.Input[str]
    group_name: pulumi.Input[str]
    """The group's name as an Output of ModelRegistry, so the rule is created after the group."""
    thresholds: Mapping[str, float]
    champion_metric: str
    champion_min_delta: float
    log_retention_days: int


class AutoApproval(pulumi.ComponentResource):
    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    rule_arn: pulumi.Output[str]
    dead_letter_queue_url: pulumi.Output[str]
    dead_letter_queue_arn: pulumi.Output[str]

    def __init__(self, name: str, args: AutoApprovalArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        names = args["names"]
        function_name = names.auto_approve_function

        # Created explicitly (not by Lambda on first write) so it has retention and goes with the stack.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=lambda_log_group(function_name),
            retention_in_days=args["log_retention_days"], opts=child,
        )
        dlq = aws.sqs.Queue(
            f"{name}-dlq",
            name=names.auto_approve_dlq,
            sqs_managed_sse_enabled=True,
            message_retention_seconds=14 * 24 * 3600,  # the maximum: time to notice and replay
            opts=child,
        )
        environment = pulumi.Output.from_input(args["group_name"]).apply(
            lambda group: auto_approve_environment(group, args["thresholds"], args["champion_metric"],
                                                   args["champion_min_delta"]))
        function = aws.lambda_.Function(
            f"{name}-function",
            name=function_name,
            description="Approves or rejects model packages on their metrics (registry status is the record)",
            role=args["role_arn"],
            runtime=LAMBDA_RUNTIME,
            handler=handler_name(contracts.AUTO_APPROVE_HANDLER),
            code=lambda_code(contracts.AUTO_APPROVE_HANDLER),
            timeout=60,
            memory_size=256,
            environment={"variables": environment},
            logging_config={"log_format": "Text", "log_group": log_group.name},
            # EventBridge invokes asynchronously: a handler that raises is retried twice by Lambda,
            # then lands in the same queue as undeliverable events, so one queue holds every miss.
            dead_letter_config={"target_arn": dlq.arn},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group]),
        )
        rule = aws.cloudwatch.EventRule(
            f"{name}-rule",
            name=names.auto_approve_rule,
            description=pulumi.Output.concat("Model packages of ", args["group_name"], " pending approval"),
            event_pattern=pulumi.Output.from_input(args["group_name"]).apply(
                lambda group: json.dumps(contracts.auto_approval_pattern(group))),
            state="ENABLED",
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
            target_id="auto-approve",
            retry_policy={"maximum_event_age_in_seconds": 3600, "maximum_retry_attempts": 8},
            dead_letter_config={"arn": dlq.arn},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[permission, queue_policy]),
        )
        self.function_name = function.name
        self.function_arn = function.arn
        self.rule_arn = rule.arn
        self.dead_letter_queue_url = dlq.url
        self.dead_letter_queue_arn = dlq.arn
        self.register_outputs({
            "function_name": self.function_name, "function_arn": self.function_arn, "rule_arn": self.rule_arn,
            "dead_letter_queue_url": self.dead_letter_queue_url,
        })
