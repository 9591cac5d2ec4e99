"""ModelBuildPipeline: the stack's SageMaker pipeline (Prepare -> Train -> Evaluate -> QualityGate ->
Register | Fail) and the sample table that lets a new stack train on its first push.

The definition is plain data from training.pipeline_definition (the same function the embedded run
executes), rendered once the artifact bucket and the execution role are known. With compute `build`
the stack has no pipeline (the build trains inline); the sample table is seeded either way, since
both paths read the `trainingData` prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

import contracts
from components.naming import StackNames
from training.pipeline_definition import PipelineTarget, definition_json

COMPONENT_TOKEN = "sagemaker-mlops:model_build:ModelBuildPipeline"  # noqa: S105 - a Pulumi type token


class ModelStackArgs(TypedDict):
    """The stack's model resources, which this component and (orchestrator codepipeline)
    components.pipeline.ModelPipeline, whose builds start this pipeline and deploy its models, both act on."""

    names: StackNames
    region: str
    bucket: pulumi.Input[str]
    """The artifact bucket."""
    group_name: pulumi.Input[str]
    """The stack's model package group: models are registered into it (and only it)."""
    execution_role_arn: pulumi.Input[str]
    """The SageMaker execution role: the pipeline and its jobs run as it, the endpoints' models too."""
    image_uri: str
    """The scikit-learn image: it runs the Prepare, Train and Evaluate jobs and serves the model."""


class ModelBuildPipelineArgs(ModelStackArgs):
    training_data_uri: pulumi.Input[str]
    thresholds: Mapping[str, float]
    """The approval thresholds: the QualityGate step fails a model below any of them."""
    training: contracts.TrainingSettings
    sample_data: NotRequired[pulumi.asset.Asset]
    """The deterministic synthetic churn table, uploaded to the default trainingData prefix."""
    bucket_settings: NotRequired[pulumi.Resource]
    """What configures the bucket (the ArtifactStore): the sample is written once its encryption applies."""


class ModelBuildPipeline(pulumi.ComponentResource):
    pipeline_name: pulumi.Output[str] | None

    def __init__(self, name: str, args: ModelBuildPipelineArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        names = args["names"]
        training = args["training"]

        sample = args.get("sample_data")
        if sample is not None:
            settings = args.get("bucket_settings")
            aws.s3.BucketObjectv2(
                f"{name}-sample-data",
                bucket=args["bucket"],
                key=f"{contracts.training_data_prefix(names.stack)}{contracts.SAMPLE_FILE}",
                source=sample,
                content_type="text/csv",
                opts=pulumi.ResourceOptions(parent=self, depends_on=[settings] if settings is not None else None),
            )

        self.pipeline_name = None
        if training.uses_pipeline:
            def render(values: list[Any]) -> str:
                bucket, group, role_arn, data_uri = values
                return definition_json(PipelineTarget(
                    project=names.project, stack=names.stack, region=args["region"],
                    pipeline_name=names.model_build_pipeline, group=group, bucket=bucket, role_arn=role_arn,
                    image_uri=args["image_uri"], training_data_uri=data_uri, thresholds=dict(args["thresholds"]),
                    training=training,
                ))

            definition = pulumi.Output.all(args["bucket"], args["group_name"], args["execution_role_arn"],
                                           args["training_data_uri"]).apply(render)
            pipeline = aws.sagemaker.Pipeline(
                f"{name}-pipeline",
                pipeline_name=names.model_build_pipeline,
                pipeline_display_name=names.model_build_pipeline,
                pipeline_description=f"Model build of {names.prefix}: Prepare, Train, Evaluate, QualityGate, Register",
                role_arn=args["execution_role_arn"],
                pipeline_definition=definition,
                opts=child,
            )
            self.pipeline_name = pipeline.pipeline_name

        self.register_outputs({"pipeline_name": self.pipeline_name} if self.pipeline_name is not None else {})
