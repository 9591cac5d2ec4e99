"""EndpointJanitor: registers as a dynamic resource, survives Pulumi's pickling, deletes via teardown."""

from __future__ import annotations

import base64
from typing import Any

import boto3
import dill
import pulumi
import pytest
from program_harness import run_program
from pulumi.dynamic.dynamic import serialize_provider

import contracts
from components.janitor import IDENTITY, EndpointJanitor, EndpointJanitorArgs, JanitorProvider

PROPS = {"project": contracts.PROJECT, "stack": "dev", "group": "sagemaker-mlops-dev", "region": "us-east-1"}


class _Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registered: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        self.registered.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def test_janitor_registers_as_a_dynamic_resource_with_its_identity() -> None:
    mocks = _Recorder()
    pulumi.runtime.set_mocks(mocks, project=contracts.PROJECT, stack="dev", preview=False)

    @pulumi.runtime.test
    def register() -> pulumi.Output[Any]:
        janitor = EndpointJanitor("janitor", EndpointJanitorArgs(
            project=PROPS["project"], stack=PROPS["stack"], group=PROPS["group"], region=PROPS["region"]))
        return pulumi.Output.all(janitor.stack, janitor.group)

    register()
    [args] = [a for a in mocks.registered if a.name == "janitor"]
    assert args.typ == "pulumi-python:dynamic:Resource"
    assert {key: args.inputs[key] for key in IDENTITY} == PROPS
    assert "__provider" in args.inputs


def test_provider_survives_pulumis_serialization() -> None:
    # Pulumi stores the provider pickled in state and runs delete from that copy at destroy time.
    restored = dill.loads(base64.b64decode(serialize_provider(JanitorProvider())))  # noqa: S301 - our own bytes
    assert isinstance(restored, JanitorProvider)
    assert restored.create(dict(PROPS)).outs == PROPS


def test_changing_stack_or_group_replaces_the_janitor() -> None:
    provider = JanitorProvider()
    for key, value in (("stack", "prod"), ("group", "renamed"), ("region", "eu-west-1")):
        diff = provider.diff("id", dict(PROPS), {**PROPS, key: value})
        assert diff.changes and diff.replaces == [key], key


def test_unchanged_inputs_are_no_change() -> None:
    diff = JanitorProvider().diff("id", dict(PROPS), dict(PROPS))
    assert not diff.changes and diff.replaces == []


def test_delete_removes_this_stacks_endpoints(aws: str) -> None:
    sm = boto3.client("sagemaker")
    for name, stack in (("ours", "dev"), ("theirs", "prod")):
        tags = [{"Key": contracts.TAG_PROJECT, "Value": contracts.PROJECT},
                {"Key": contracts.TAG_STACK, "Value": stack}]
        sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
                        PrimaryContainer={"Image": contracts.inference_image_uri("us-east-1")}, Tags=tags)
        sm.create_endpoint_config(EndpointConfigName=f"{name}-config", Tags=tags, ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": f"{name}-model", "InitialInstanceCount": 1,
             "InstanceType": "ml.m5.large"}])
        sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config", Tags=tags)

    JanitorProvider().delete("id", dict(PROPS))

    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["theirs"]
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["theirs-model"]


def test_delete_failure_keeps_the_janitor(aws: str) -> None:
    # A failing teardown must fail the delete, so Pulumi keeps the janitor and retries on the next destroy.
    with pytest.raises(ValueError, match="non-empty stack"):
        JanitorProvider().delete("id", {**PROPS, "stack": ""})


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_janitor_is_deleted_before_the_group_and_the_bucket(stack: str) -> None:
    # Pulumi deletes dependents first: depending on both, the janitor empties the group before
    # the group goes, and the bucket (data capture, artifacts) outlives the teardown.
    graph = run_program(stack)
    janitor = graph.one("pulumi-python:dynamic:Resource", "janitor")
    group = graph.one("aws:sagemaker/modelPackageGroup:ModelPackageGroup")
    buckets = [b for b in graph.of_type("aws:s3/bucket:Bucket") if b.parent and "ArtifactStore" in b.parent]
    assert group.urn in janitor.dependencies
    assert [b.urn for b in buckets if b.urn in janitor.dependencies] == [b.urn for b in buckets] != []
    assert {key: janitor.inputs[key] for key in IDENTITY} == {
        "project": contracts.PROJECT, "stack": stack, "group": group.inputs["modelPackageGroupName"],
        "region": graph.config["aws:region"]}
