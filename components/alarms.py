"""RollbackAlarms: the CloudWatch alarms a stage's blue/green canary rolls back on.

training/deploy.py names these alarms in the endpoint's AutoRollbackConfiguration (they reach it in
DEPLOYMENT_STAGES, rollout.alarm_names); SageMaker watches them while traffic shifts and during the
bake time, and returns all traffic to the old fleet if any fires. The names are deterministic so
the config can carry them before the alarms exist.
"""

from __future__ import annotations

from typing import TypedDict

import pulumi
import pulumi_aws as aws

import contracts

COMPONENT_TOKEN = "sagemaker-mlops:alarms:RollbackAlarms"  # noqa: S105 - a Pulumi type token, not a secret


def rollback_alarm_names(endpoint_name: str) -> tuple[str, str]:
    return (f"{endpoint_name}-invocation-5xx", f"{endpoint_name}-model-latency")


class RollbackAlarmsArgs(TypedDict):
    stage: contracts.DeploymentStage
    latency_threshold_ms: int


class RollbackAlarms(pulumi.ComponentResource):
    alarm_names: list[str]

    def __init__(self, name: str, args: RollbackAlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        endpoint = args["stage"].endpoint_name
        errors_name, latency_name = rollback_alarm_names(endpoint)
        dimensions = {"EndpointName": endpoint, "VariantName": contracts.VARIANT_NAME}
        aws.cloudwatch.MetricAlarm(
            f"{name}-5xx",
            name=errors_name,
            alarm_description=f"Model errors on {endpoint}: a canary that returns 5xx rolls back",
            namespace="AWS/SageMaker",
            metric_name="Invocation5XXErrors",
            dimensions=dimensions,
            statistic="Sum",
            period=60,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            threshold=0,
            comparison_operator="GreaterThanThreshold",
            # No traffic is no evidence of failure: a quiet bake time must not roll back.
            treat_missing_data="notBreaching",
            opts=child,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-latency",
            name=latency_name,
            alarm_description=f"Model latency on {endpoint} above {args['latency_threshold_ms']} ms (p99)",
            namespace="AWS/SageMaker",
            metric_name="ModelLatency",
            dimensions=dimensions,
            extended_statistic="p99",
            period=60,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            threshold=args["latency_threshold_ms"] * 1000,  # ModelLatency is reported in microseconds
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            opts=child,
        )
        self.alarm_names = [errors_name, latency_name]
        self.register_outputs({"alarm_names": self.alarm_names})
