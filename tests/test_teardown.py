"""training/teardown.py against moto (the `aws` fixture); DeleteModelPackage through botocore's Stubber."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

import contracts
from training import teardown as td

PROJECT = contracts.PROJECT
STACK = "dev"
GROUP = "sagemaker-mlops-dev"
ROLE = "arn:aws:iam::123456789012:role/sagemaker-execution"
NOW = datetime(2024, 1, 1, tzinfo=timezone.utc)
IMAGE = contracts.inference_image_uri("us-east-1")
INSTANCES = "sagemaker:variant:DesiredInstanceCount"


def _tags(project: str | None, stack: str | None) -> list[dict[str, str]]:
    tags = []
    if project is not None:
        tags.append({"Key": contracts.TAG_PROJECT, "Value": project})
    if stack is not None:
        tags.append({"Key": contracts.TAG_STACK, "Value": stack})
    return tags


def _deploy(sm: Any, aas: Any, name: str, project: str | None, stack: str | None, *, scaled: bool = False) -> None:
    """What training/deploy.py leaves behind for one endpoint: model, config, endpoint (+ scaling target)."""
    tags = _tags(project, stack)
    sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://b/model.tar.gz"}, Tags=tags)
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": f"{name}-model",
                             "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}],
        Tags=tags,
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config", Tags=tags)
    if scaled:
        aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=f"endpoint/{name}/variant/AllTraffic",
                                     ScalableDimension=INSTANCES, MinCapacity=1, MaxCapacity=2)


def _register(sm: Any, group: str, count: int) -> list[str]:
    sm.create_model_package_group(ModelPackageGroupName=group)
    arns = []
    for _ in range(count):
        response = sm.create_model_package(
            ModelPackageGroupName=group,
            ModelApprovalStatus="Approved",
            InferenceSpecification={
                "Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://b/model.tar.gz"}],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["text/csv"],
            },
        )
        arns.append(response["ModelPackageArn"])
    return sorted(arns)


def _names(sm: Any, aas: Any) -> dict[str, set[str]]:
    return {
        "endpoints": {e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]},
        "configs": {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]},
        "models": {m["ModelName"] for m in sm.list_models()["Models"]},
        "targets": {t["ResourceId"]
                    for t in aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]},
    }


@pytest.fixture
def world(aws: str) -> tuple[Any, Any]:
    """Our stack's endpoints next to another stack's, another project's and an untagged one."""
    sm = boto3.client("sagemaker")
    aas = boto3.client("application-autoscaling")
    _deploy(sm, aas, "ours-staging", PROJECT, STACK)
    _deploy(sm, aas, "ours-production", PROJECT, STACK, scaled=True)
    _deploy(sm, aas, "prod-stack", PROJECT, "prod", scaled=True)
    _deploy(sm, aas, "other-project", "someone-else", STACK)
    _deploy(sm, aas, "untagged", None, None)
    return sm, aas


def _clients(sm: Any, aas: Any, packages: Any | None = None) -> td.Clients:
    # Without packages in the group no DeleteModelPackage is sent; an unstubbed client with an
    # empty Stubber queue would raise if one were.
    if packages is None:
        packages = boto3.client("sagemaker")
        Stubber(packages).activate()
    return td.Clients(sagemaker=sm, autoscaling=aas, packages=packages)


def test_teardown_removes_only_this_stacks_tagged_resources(world: tuple[Any, Any]) -> None:
    sm, aas = world
    report = td.teardown(PROJECT, STACK, GROUP, clients=_clients(sm, aas), waiter_delay=1)

    left = _names(sm, aas)
    assert left["endpoints"] == {"prod-stack", "other-project", "untagged"}
    assert left["configs"] == {"prod-stack-config", "other-project-config", "untagged-config"}
    assert left["models"] == {"prod-stack-model", "other-project-model", "untagged-model"}
    assert left["targets"] == {"endpoint/prod-stack/variant/AllTraffic"}
    assert report.endpoints == ["ours-production", "ours-staging"]
    assert report.scalable_targets == [td.ScalableTarget("endpoint/ours-production/variant/AllTraffic", INSTANCES)]
    assert not report.dry_run


def test_dry_run_lists_everything_and_deletes_nothing(world: tuple[Any, Any]) -> None:
    sm, aas = world
    arns = _register(sm, GROUP, 2)
    before = _names(sm, aas)
    report = td.teardown(PROJECT, STACK, GROUP, clients=_clients(sm, aas), dry_run=True)

    assert report.dry_run
    assert report.items() == [
        ("scalable-target", f"endpoint/ours-production/variant/AllTraffic {INSTANCES}"),
        ("endpoint", "ours-production"), ("endpoint", "ours-staging"),
        ("endpoint-config", "ours-production-config"), ("endpoint-config", "ours-staging-config"),
        ("model", "ours-production-model"), ("model", "ours-staging-model"),
        *(("model-package", arn) for arn in arns),
    ]
    assert _names(sm, aas) == before


def test_second_run_is_a_noop(world: tuple[Any, Any]) -> None:
    sm, aas = world
    first = td.teardown(PROJECT, STACK, GROUP, clients=_clients(sm, aas), waiter_delay=1)
    after_first = _names(sm, aas)
    second = td.teardown(PROJECT, STACK, GROUP, clients=_clients(sm, aas), waiter_delay=1)

    assert not first.empty
    assert second.empty
    assert _names(sm, aas) == after_first


def test_model_packages_of_the_group_are_deleted_and_others_kept(aws: str) -> None:
    sm = boto3.client("sagemaker")
    ours = _register(sm, GROUP, 2)
    _register(sm, "sagemaker-mlops-prod", 1)
    packages = boto3.client("sagemaker")
    with Stubber(packages) as stub:
        for arn in ours:  # Stubber checks each request against the real DeleteModelPackage model
            stub.add_response("delete_model_package", {}, {"ModelPackageName": arn})
        stub.add_response("list_model_packages", {"ModelPackageSummaryList": []}, _listing(GROUP))  # gone
        report = td.teardown(PROJECT, STACK, GROUP, clients=_clients(sm, boto3.client("application-autoscaling"),
                                                                    packages))
        stub.assert_no_pending_responses()
    assert report.model_packages == ours


def _listing(group: str) -> dict[str, Any]:
    return {"ModelPackageGroupName": group, "ModelPackageType": "Versioned", "MaxResults": td.PAGE_SIZE["sagemaker"]}


def test_packages_still_listed_after_delete_fail_naming_them(aws: str) -> None:
    # DeleteModelPackage accepted, but the group keeps listing the package (status Deleting that never
    # ends): Pulumi would then fail to delete the group, so teardown must not report success.
    sm = boto3.client("sagemaker")
    [arn] = _register(sm, GROUP, 1)
    packages = boto3.client("sagemaker")
    summary = {"ModelPackageGroupName": GROUP, "ModelPackageArn": arn, "CreationTime": NOW,
               "ModelPackageStatus": "Deleting"}
    with Stubber(packages) as stub:
        stub.add_response("delete_model_package", {}, {"ModelPackageName": arn})
        for _ in range(2):
            stub.add_response("list_model_packages", {"ModelPackageSummaryList": [summary]}, _listing(GROUP))
        with pytest.raises(td.TeardownError, match=f"group {GROUP} were not deleted: {arn}"):
            td.teardown(PROJECT, STACK, GROUP, clients=_clients(sm, boto3.client("application-autoscaling"), packages),
                        waiter_delay=0, waiter_max_attempts=2)


def test_every_listing_follows_next_token(world: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # AWS pages ListEndpoints by 10 by default; one page at a time here, so only NextToken finds the rest.
    sm, aas = world
    arns = _register(sm, GROUP, 3)
    monkeypatch.setitem(td.PAGE_SIZE, "sagemaker", 1)
    # 2, not 1: moto's DescribeScalableTargets answers NextToken "0" forever to pages of one.
    monkeypatch.setitem(td.PAGE_SIZE, "autoscaling", 2)
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId="endpoint/ours-staging/variant/AllTraffic",
                                 ScalableDimension=INSTANCES, MinCapacity=1, MaxCapacity=2)
    report = td.plan(PROJECT, STACK, GROUP, _clients(sm, aas))
    assert report.endpoints == ["ours-production", "ours-staging"]
    assert report.endpoint_configs == ["ours-production-config", "ours-staging-config"]
    assert [t.resource_id for t in report.scalable_targets] == [
        "endpoint/ours-production/variant/AllTraffic", "endpoint/ours-staging/variant/AllTraffic"]
    assert report.model_packages == arns


def test_scalable_target_is_deregistered_with_its_own_dimension(world: tuple[Any, Any]) -> None:
    # A serverless variant scales provisioned concurrency, not instances: deregistering it under the
    # instance dimension would leave it registered. (moto knows only the instance dimension: Stubber.)
    sm, _ = world
    scaling = boto3.client("application-autoscaling")
    resource_id = "endpoint/ours-staging/variant/AllTraffic"
    concurrency = "sagemaker:variant:DesiredProvisionedConcurrency"
    with Stubber(scaling) as stub:
        stub.add_response("describe_scalable_targets", {"ScalableTargets": [{
            "ServiceNamespace": "sagemaker", "ResourceId": resource_id, "ScalableDimension": concurrency,
            "MinCapacity": 1, "MaxCapacity": 2, "RoleARN": ROLE, "CreationTime": NOW}]},
            {"ServiceNamespace": "sagemaker", "MaxResults": td.PAGE_SIZE["autoscaling"]})
        stub.add_response("deregister_scalable_target", {}, {
            "ServiceNamespace": "sagemaker", "ResourceId": resource_id, "ScalableDimension": concurrency})
        report = td.teardown(PROJECT, STACK, GROUP, clients=_clients(sm, scaling), waiter_delay=1)
        stub.assert_no_pending_responses()
    assert report.scalable_targets == [td.ScalableTarget(resource_id, concurrency)]


def test_target_deregistered_meanwhile_counts_as_gone(world: tuple[Any, Any]) -> None:
    # Another run (or SageMaker) deregistered it between our listing and our call: carry on.
    sm, aas = world
    racing = boto3.client("application-autoscaling")
    resource_id = "endpoint/ours-production/variant/AllTraffic"
    with Stubber(racing) as stub:
        stub.add_client_error("deregister_scalable_target", service_error_code="ObjectNotFoundException",
                              service_message=f"No scalable target registered for service namespace: sagemaker, "
                                              f"resource ID: {resource_id}, scalable dimension: {INSTANCES}",
                              expected_params={"ServiceNamespace": "sagemaker", "ResourceId": resource_id,
                                               "ScalableDimension": INSTANCES})
        td.teardown(PROJECT, STACK, GROUP, clients=_clients(sm, _ListingFrom(aas, racing)), waiter_delay=1)
    assert _names(sm, aas)["endpoints"] == {"prod-stack", "other-project", "untagged"}


def test_credentials_of_another_account_delete_nothing(world: tuple[Any, Any]) -> None:
    sm, aas = world
    before = _names(sm, aas)
    clients = td.Clients(sagemaker=sm, autoscaling=aas, packages=sm, sts=boto3.client("sts"))
    with pytest.raises(td.TeardownError, match="account 123456789012, but the stack's resources are in 999999999999"):
        td.teardown(PROJECT, STACK, GROUP, clients=clients, account="999999999999")
    assert _names(sm, aas) == before


def test_credentials_of_the_stacks_account_proceed(world: tuple[Any, Any]) -> None:
    sm, aas = world
    clients = _clients(sm, aas)
    clients.sts = boto3.client("sts")
    report = td.teardown(PROJECT, STACK, GROUP, clients=clients, account="123456789012", waiter_delay=1)
    assert report.endpoints == ["ours-production", "ours-staging"]


def test_failed_delete_raises_naming_the_resource(aws: str) -> None:
    sm = boto3.client("sagemaker")
    [arn] = _register(sm, GROUP, 1)
    packages = boto3.client("sagemaker")
    with Stubber(packages) as stub:
        stub.add_client_error("delete_model_package", service_error_code="ConflictException",
                              service_message="package is in use", expected_params={"ModelPackageName": arn})
        with pytest.raises(td.TeardownError, match=f"model-package {arn}.*package is in use"):
            td.teardown(PROJECT, STACK, GROUP, clients=_clients(sm, boto3.client("application-autoscaling"),
                                                                packages))


def test_endpoint_still_present_after_wait_fails_naming_it(world: tuple[Any, Any]) -> None:
    sm, aas = world
    # DeleteEndpoint accepted but the endpoint never leaves (describe keeps answering): must raise.
    stuck = boto3.client("sagemaker")
    with Stubber(stuck) as stub:
        for name in td.plan(PROJECT, STACK, GROUP, _clients(sm, aas)).endpoints:
            stub.add_response("delete_endpoint", {}, {"EndpointName": name})
        stub.add_response("describe_endpoint", {
            "EndpointName": "ours-production", "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/x",
            "EndpointStatus": "Deleting", "CreationTime": NOW, "LastModifiedTime": NOW,
        }, {"EndpointName": "ours-production"})

        clients = td.Clients(sagemaker=_ListingFrom(sm, stuck), autoscaling=aas, packages=stuck)
        with pytest.raises(td.TeardownError, match="endpoint ours-production was not deleted"):
            td.teardown(PROJECT, STACK, GROUP, clients=clients, waiter_delay=1, waiter_max_attempts=1)


class _ListingFrom:
    """Listing and tags from moto, deletes and the waiter from a stubbed client (route by operation)."""

    def __init__(self, listing: Any, acting: Any) -> None:
        self._listing, self._acting = listing, acting

    def __getattr__(self, name: str) -> Any:
        if name in ("get_paginator", "list_tags", "describe_scalable_targets"):
            return getattr(self._listing, name)
        return getattr(self._acting, name)


def test_empty_stack_name_is_refused(aws: str) -> None:
    with pytest.raises(ValueError, match="non-empty stack"):
        td.teardown(PROJECT, " ", GROUP, clients=td.Clients.for_region())


def test_cli_dry_run_prints_what_it_would_delete(world: tuple[Any, Any], capsys: pytest.CaptureFixture[str]) -> None:
    sm, aas = world
    code = td.main(["--project", PROJECT, "--stack", STACK, "--group", GROUP, "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "would delete endpoint ours-staging" in out
    assert "prod-stack" not in out
    assert "ours-staging" in _names(sm, aas)["endpoints"]


def test_cli_without_credentials_fails_with_one_line(aws: str, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code = td.main(["--stack", STACK, "--group", GROUP, "--dry-run"])
    assert code == 1
    assert capsys.readouterr().err.strip().endswith("teardown failed: Unable to locate credentials")
