"""AutoApproval: the Lambda that approves or rejects a registered package on its metrics.

EventBridge delivers every PendingManualApproval state change of the stack's group to
handlers/auto_approve.py (with retries and a dead-letter queue); in the codepipeline orchestrator
the pipeline's Approval stage invokes the same function (ModelPipeline wires that action).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TypedDict

import pulumi

import contracts
from components.event_function import EventFunction
from components.naming import StackNames

COMPONENT_TOKEN = "sagemaker-mlops:approval:AutoApproval"  # noqa: S105 - a Pulumi type token, not a secret


def auto_approve_environment(group: str, thresholds: Mapping[str, float], champion_metric: str,
                             champion_min_delta: float) -> dict[str, str]:
    """Exactly contracts.AUTO_APPROVE_ENV."""
    return {
        contracts.ENV_MODEL_PACKAGE_GROUP_NAME: group,
        contracts.ENV_APPROVAL_THRESHOLDS: json.dumps(dict(thresholds), sort_keys=True),
        contracts.ENV_CHAMPION_METRIC: champion_metric,
        contracts.ENV_CHAMPION_MIN_DELTA: str(champion_min_delta),
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
        names = args["names"]
        group_name = pulumi.Output.from_input(args["group_name"])
        handler = EventFunction(f"{name}-handler", {
            "handler": contracts.AUTO_APPROVE_HANDLER,
            "function_name": names.auto_approve_function,
            "description": "Approves or rejects model packages on their metrics (registry status is the record)",
            "role_arn": args["role_arn"],
            "environment": group_name.apply(lambda group: auto_approve_environment(
                group, args["thresholds"], args["champion_metric"], args["champion_min_delta"])),
            "memory_size": 256,
            "timeout_seconds": 60,
            "log_retention_days": args["log_retention_days"],
            "rule_name": names.auto_approve_rule,
            "rule_description": pulumi.Output.concat("Model packages of ", group_name, " pending approval"),
            "event_pattern": group_name.apply(lambda group: json.dumps(contracts.auto_approval_pattern(group))),
            "dead_letter_queue_name": names.auto_approve_dlq,
            "target_id": "auto-approve",
        }, opts=pulumi.ResourceOptions(parent=self))
        self.function_name = handler.function_name
        self.function_arn = handler.function_arn
        self.rule_arn = handler.rule_arn
        self.dead_letter_queue_url = handler.dead_letter_queue_url
        self.dead_letter_queue_arn = handler.dead_letter_queue_arn
        self.register_outputs({
            "function_name": self.function_name, "function_arn": self.function_arn, "rule_arn": self.rule_arn,
            "dead_letter_queue_url": self.dead_letter_queue_url,
        })
