"""Remove what the pipeline created outside Pulumi state, so `pulumi destroy` leaves nothing billable.

The deploy step creates endpoints, endpoint configs, models and autoscaling targets that Pulumi never
sees; the registry holds model packages that block deleting the group. This finds exactly one stack's
share by the contracts tags (project and stack) and the stack's group, deletes it in dependency order
and waits until the endpoints are gone. Run by components/janitor.py on `pulumi destroy`, or by hand:

    python -m training.teardown --project sagemaker-mlops --stack dev --group sagemaker-mlops-dev --dry-run
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError, WaiterError

import contracts

log = logging.getLogger("teardown")

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


class TeardownError(RuntimeError):
    """A delete failed; the message names the resource and the AWS error."""


@dataclass
class Clients:
    """The AWS clients teardown uses.

    `packages` is the client DeleteModelPackage goes through: in production the same SageMaker
    client; tests pass a botocore-Stubbed one because moto does not implement that call.
    """

    sagemaker: Any
    autoscaling: Any
    packages: Any

    @classmethod
    def for_region(cls, region: str | None = None) -> Clients:
        session = boto3.Session(region_name=region)
        sagemaker = session.client("sagemaker")
        return cls(sagemaker=sagemaker, autoscaling=session.client("application-autoscaling"), packages=sagemaker)


@dataclass
class Report:
    """What was deleted (or, in a dry run, what would be), by kind, in deletion order."""

    dry_run: bool = False
    scalable_targets: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    endpoint_configs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    model_packages: list[str] = field(default_factory=list)

    def items(self) -> list[tuple[str, str]]:
        return [
            *(("scalable-target", n) for n in self.scalable_targets),
            *(("endpoint", n) for n in self.endpoints),
            *(("endpoint-config", n) for n in self.endpoint_configs),
            *(("model", n) for n in self.models),
            *(("model-package", n) for n in self.model_packages),
        ]

    @property
    def empty(self) -> bool:
        return not self.items()


def _tags(client: Any, arn: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for page in client.get_paginator("list_tags").paginate(ResourceArn=arn):
        tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
    return tags


def _ours(client: Any, arn: str, project: str, stack: str) -> bool:
    tags = _tags(client, arn)
    return tags.get(contracts.TAG_PROJECT) == project and tags.get(contracts.TAG_STACK) == stack


def _tagged(client: Any, operation: str, key: str, name_key: str, arn_key: str,
            project: str, stack: str) -> list[str]:
    """Names of one kind of SageMaker resource that carry this project's and stack's tags.

    The Resource Groups Tagging API would answer in one call, but moto does not index SageMaker
    there, and listing + ListTags is exact in both places.
    """
    names: list[str] = []
    for page in client.get_paginator(operation).paginate():
        for item in page.get(key, []):
            if _ours(client, item[arn_key], project, stack):
                names.append(item[name_key])
    return sorted(names)


def _scalable_targets(client: Any, endpoints: Iterable[str]) -> list[str]:
    """Resource ids (`endpoint/<name>/variant/<variant>`) of the autoscaling targets of these endpoints."""
    wanted = set(endpoints)
    ids: list[str] = []
    for page in client.get_paginator("describe_scalable_targets").paginate(ServiceNamespace="sagemaker"):
        for target in page.get("ScalableTargets", []):
            parts = target["ResourceId"].split("/")
            if len(parts) == 4 and parts[0] == "endpoint" and parts[1] in wanted:
                ids.append(target["ResourceId"])
    return sorted(ids)


def _model_packages(client: Any, group: str) -> list[str]:
    arns: list[str] = []
    for page in client.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group):
        arns.extend(item["ModelPackageArn"] for item in page.get("ModelPackageSummaryList", []))
    return sorted(arns)


def _already_gone(exc: ClientError) -> bool:
    # Another run (or the console) may delete a resource between our listing and our delete;
    # that is the state we want, not a failure. SageMaker says so with ValidationException.
    error = exc.response.get("Error", {})
    message = str(error.get("Message", "")).lower()
    return error.get("Code") in ("ValidationException", "ObjectNotFoundException") and (
        "could not find" in message or "does not exist" in message or "not found" in message
    )


def _delete(kind: str, name: str, call: Any, **kwargs: Any) -> None:
    try:
        call(**kwargs)
    except ClientError as exc:
        if _already_gone(exc):
            log.info("%s %s already gone", kind, name)
            return
        raise TeardownError(f"could not delete {kind} {name}: {exc}") from exc
    log.info("deleted %s %s", kind, name)


def plan(project: str, stack: str, group: str, clients: Clients) -> Report:
    """Find this stack's resources without changing anything (the dry run)."""
    _require(project=project, stack=stack, group=group)
    sm = clients.sagemaker
    endpoints = _tagged(sm, "list_endpoints", "Endpoints", "EndpointName", "EndpointArn", project, stack)
    return Report(
        dry_run=True,
        scalable_targets=_scalable_targets(clients.autoscaling, endpoints),
        endpoints=endpoints,
        endpoint_configs=_tagged(sm, "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName",
                                 "EndpointConfigArn", project, stack),
        models=_tagged(sm, "list_models", "Models", "ModelName", "ModelArn", project, stack),
        model_packages=_model_packages(sm, group),
    )


def teardown(project: str, stack: str, group: str, *, clients: Clients | None = None,
             dry_run: bool = False, waiter_delay: int = 15, waiter_max_attempts: int = 80) -> Report:
    """Delete this stack's endpoints (and their autoscaling targets), endpoint configs, models and the
    group's model packages; wait until the endpoints are gone. The group itself stays (Pulumi owns it).

    Order matters: scaling targets before their endpoints (AWS asks for it), endpoints before the
    configs and models they use, models before the packages they were created from. Raises
    TeardownError naming the resource on the first failure, leaving the rest for a rerun.
    """
    clients = clients or Clients.for_region()
    found = plan(project, stack, group, clients)
    if dry_run:
        return found
    for resource_id in found.scalable_targets:
        _delete("scalable-target", resource_id, clients.autoscaling.deregister_scalable_target,
                ServiceNamespace="sagemaker", ResourceId=resource_id, ScalableDimension=SCALABLE_DIMENSION)
    for name in found.endpoints:
        _delete("endpoint", name, clients.sagemaker.delete_endpoint, EndpointName=name)
    waiter = clients.sagemaker.get_waiter("endpoint_deleted")
    for name in found.endpoints:
        try:
            waiter.wait(EndpointName=name, WaiterConfig={"Delay": waiter_delay, "MaxAttempts": waiter_max_attempts})
        except WaiterError as exc:
            raise TeardownError(f"endpoint {name} was not deleted: {exc}") from exc
    for name in found.endpoint_configs:
        _delete("endpoint-config", name, clients.sagemaker.delete_endpoint_config, EndpointConfigName=name)
    for name in found.models:
        _delete("model", name, clients.sagemaker.delete_model, ModelName=name)
    for arn in found.model_packages:
        _delete("model-package", arn, clients.packages.delete_model_package, ModelPackageName=arn)
    found.dry_run = False
    return found


def _require(**values: str) -> None:
    # An empty project or stack would match resources tagged with an empty value, i.e. not ours.
    for key, value in values.items():
        if not value or not value.strip():
            raise ValueError(f"teardown needs a non-empty {key} (pass --{key})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.teardown", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--project", default=os.environ.get(contracts.ENV_MLOPS_PROJECT, contracts.PROJECT))
    parser.add_argument("--stack", default=os.environ.get(contracts.ENV_MLOPS_STACK))
    parser.add_argument("--group", default=os.environ.get(contracts.ENV_MODEL_PACKAGE_GROUP_NAME))
    parser.add_argument("--region", default=None, help="AWS region (default: the SDK's, e.g. AWS_REGION)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    args = parser.parse_args(argv)
    if not args.stack or not args.group:
        parser.error("--stack and --group are required (or set MLOPS_STACK and MODEL_PACKAGE_GROUP_NAME)")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        report = teardown(args.project, args.stack, args.group, clients=Clients.for_region(args.region),
                          dry_run=args.dry_run)
    except (TeardownError, ValueError) as exc:
        print(f"teardown failed: {exc}", file=sys.stderr)
        return 1
    verb = "would delete" if report.dry_run else "deleted"
    for kind, name in report.items():
        print(f"{verb} {kind} {name}")
    if report.empty:
        print(f"nothing to delete for project {args.project} stack {args.stack} group {args.group}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
