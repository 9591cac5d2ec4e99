"""ModelRegistry: the stack's model package group, the inventory of its models and their status."""

from __future__ import annotations

from typing import TypedDict

import pulumi
import pulumi_aws as aws

COMPONENT_TOKEN = "sagemaker-mlops:registry:ModelRegistry"  # noqa: S105 - a Pulumi type token, not a secret


class ModelRegistryArgs(TypedDict):
    group_name: str
    """Model package group name (SageMaker name rules; validated by config.py)."""
    description: str


class ModelRegistry(pulumi.ComponentResource):
    group_name: pulumi.Output[str]
    group_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ModelRegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TOKEN, name, None, opts)
        group = aws.sagemaker.ModelPackageGroup(
            f"{name}-group",
            model_package_group_name=args["group_name"],
            model_package_group_description=args["description"],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.group_name = group.model_package_group_name
        self.group_arn = group.arn
        self.register_outputs({"group_name": self.group_name, "group_arn": self.group_arn})
