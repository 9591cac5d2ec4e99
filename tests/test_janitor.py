"""EndpointJanitor: registers as a dynamic resource, runs in Pulumi's dynamic provider host, deletes via teardown."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import pulumi
import pytest
from google.protobuf import struct_pb2
from program_harness import ACCOUNT_ID, run_program
from pulumi.dynamic.dynamic import PROVIDER_KEY, serialize_provider
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

import contracts
from components.janitor import IDENTITY, EndpointJanitor, EndpointJanitorArgs, JanitorProvider
from training.teardown import TeardownError

ROOT = Path(__file__).resolve().parent.parent
# moto's default account: the one the `aws` fixture's credentials belong to.
PROPS = {"project": contracts.PROJECT, "stack": "dev", "group": "sagemaker-mlops-dev", "region": "us-east-1",
         "account": "123456789012"}


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
            project=PROPS["project"], stack=PROPS["stack"], group=PROPS["group"], region=PROPS["region"],
            account=PROPS["account"]))
        return pulumi.Output.all(janitor.stack, janitor.group)

    register()
    [args] = [a for a in mocks.registered if a.name == "janitor"]
    assert args.typ == "pulumi-python:dynamic:Resource"
    assert {key: args.inputs[key] for key in IDENTITY} == PROPS
    assert "__provider" in args.inputs


def test_provider_is_pickled_by_reference_not_by_value() -> None:
    # By reference, the host imports today's module at destroy time; by value, dill would freeze this
    # Python version's bytecode into the state.
    assert b"components.janitor" in _pickled() and b"training.teardown" not in _pickled()


def _pickled() -> bytes:
    import base64

    return base64.b64decode(serialize_provider(JanitorProvider()))


def test_changing_stack_or_group_replaces_the_janitor() -> None:
    provider = JanitorProvider()
    for key, value in (("stack", "prod"), ("group", "renamed"), ("region", "eu-west-1"), ("account", "210987654321")):
        diff = provider.diff("id", dict(PROPS), {**PROPS, key: value})
        assert diff.changes and diff.replaces == [key], key


def test_unchanged_inputs_are_no_change() -> None:
    provider = serialize_provider(JanitorProvider())
    diff = JanitorProvider().diff("id", {**PROPS, PROVIDER_KEY: provider}, {**PROPS, PROVIDER_KEY: provider})
    assert not diff.changes and diff.replaces == []


def test_moved_provider_class_is_an_update_not_a_replacement() -> None:
    # The state keeps the provider reference it was written with; an update records the new one,
    # so destroy can still unpickle the janitor. A replacement would tear the endpoints down.
    diff = JanitorProvider().diff("id", {**PROPS, PROVIDER_KEY: "old-reference"},
                                  {**PROPS, PROVIDER_KEY: serialize_provider(JanitorProvider())})
    assert diff.changes and diff.replaces == []


def _two_stacks_endpoints() -> Any:
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
    return sm


def test_delete_removes_this_stacks_endpoints(aws: str) -> None:
    sm = _two_stacks_endpoints()
    JanitorProvider().delete("id", dict(PROPS))

    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["theirs"]
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["theirs-model"]


def test_delete_with_another_accounts_credentials_fails_and_deletes_nothing(aws: str) -> None:
    # E.g. the stack's AWS provider uses a profile that the shell running `pulumi destroy` does not.
    sm = _two_stacks_endpoints()
    with pytest.raises(TeardownError, match="stack's resources are in 999999999999"):
        JanitorProvider().delete("id", {**PROPS, "account": "999999999999"})
    assert sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]) == ["ours", "theirs"]


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
        "region": graph.config["aws:region"], "account": ACCOUNT_ID}



@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_everything_that_can_start_a_deploy_is_deleted_before_the_janitor(stack: str) -> None:
    # Children are deleted before their parent, so a component that depends on the janitor takes its
    # pipeline, rules and Lambdas away before the janitor sweeps: no deploy can land after the sweep.
    graph = run_program(stack)
    janitor = graph.one("pulumi-python:dynamic:Resource", "janitor")
    starters = [r for r in graph.resources if r.type in (
        "sagemaker-mlops:pipeline:ModelPipeline", "sagemaker-mlops:approval:AutoApproval",
        "sagemaker-mlops:github:GitHubIntegration")]
    assert starters, "expected a pipeline, an approval Lambda or a GitHub trigger in the stack"
    for component in starters:
        assert janitor.urn in component.dependencies, component.urn

# --- The janitor as `pulumi destroy` runs it ------------------------------------------------------
@pytest.fixture
def provider_host(aws: str) -> Iterator[provider_pb2_grpc.ResourceProviderStub]:
    """Pulumi's dynamic provider host as the CLI starts it (`python -u -m pulumi.dynamic`, from the
    project directory, with the virtualenv's python): a fresh process that knows only the serialized
    provider, with no PYTHONPATH from pytest."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([sys.executable, "-u", "-m", "pulumi.dynamic"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()  # the host prints its port once it serves
        assert port.isdigit(), f"provider host did not start: {port!r} {proc.stderr.read() if proc.stderr else ''}"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield provider_pb2_grpc.ResourceProviderStub(channel)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_destroy_runs_teardown_in_pulumis_provider_host(provider_host: provider_pb2_grpc.ResourceProviderStub) -> None:
    sm = _two_stacks_endpoints()
    state = struct_pb2.Struct()
    state.update({**PROPS, PROVIDER_KEY: serialize_provider(JanitorProvider())})  # what the state holds

    provider_host.Delete(provider_pb2.DeleteRequest(
        id="sagemaker-mlops/dev/sagemaker-mlops-dev", urn="urn:pulumi:dev::sagemaker-mlops::"
        "pulumi-python:dynamic:Resource::janitor", properties=state), timeout=60)

    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["theirs"]
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["theirs-model"]
