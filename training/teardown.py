"""Remove what the pipeline created outside Pulumi state, so `pulumi destroy` leaves nothing billable.

The deploy step creates endpoints, endpoint configs, models and autoscaling targets that Pulumi never
sees; the registry holds model packages that block deleting the group. This finds exactly one stack's
share by the contracts tags (project and stack) and the stack's group, deletes it in dependency order
and waits until the endpoints and packages are gone. Run by components/janitor.py on `pulumi destroy`,
or by hand:

    python -m training.teardown --project sagemaker-mlops --stack dev --group sagemaker-mlops-dev --dry-run
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

import contracts
from training import aws_errors

log = logging.getLogger("teardown")

# The largest page each list call allows (AWS defaults are as small as 10): fewer calls, less throttling.
# Every listing follows NextToken through botocore's paginators, whatever the page size.
PAGE_SIZE = {"sagemaker": 100, "autoscaling": 50}


class TeardownError(RuntimeError):
    """A delete failed; the message names the resource and the AWS error."""


@dataclass
class Clients:
    """The AWS clients teardown uses.

    `packages` is the client DeleteModelPackage (and the wait for the packages to go) goes through:
    in production the same SageMaker client; tests pass a botocore-Stubbed one because moto does not
    implement that call. `sts` answers which account the credentials belong to.
    """

    sagemaker: Any
    autoscaling: Any
    packages: Any
    sts: Any = None

    @classmethod
    def for_region(cls, region: str | None = None) -> Clients:
        session = boto3.Session(region_name=region)
        sagemaker = session.client("sagemaker")
        return cls(sagemaker=sagemaker, autoscaling=session.client("application-autoscaling"), packages=sagemaker,
                   sts=session.client("sts"))


@dataclass(frozen=True)
class ScalableTarget:
    resource_id: str
    """`endpoint/<name>/variant/<variant>`"""
    dimension: str
    """e.g. sagemaker:variant:DesiredInstanceCount; deregistered with the dimension it was registered with."""

    def __str__(self) -> str:
        return f"{self.resource_id} {self.dimension}"


@dataclass
class Report:
    """What was deleted (or, in a dry run, what would be), by kind, in deletion order."""

    dry_run: bool = False
    scalable_targets: list[ScalableTarget] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    endpoint_configs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    model_packages: list[str] = field(default_factory=list)

    def items(self) -> list[tuple[str, str]]:
        return [
            *(("scalable-target", str(t)) for t in self.scalable_targets),
            *(("endpoint", n) for n in self.endpoints),
            *(("endpoint-config", n) for n in self.endpoint_configs),
            *(("model", n) for n in self.models),
            *(("model-package", n) for n in self.model_packages),
        ]

    @property
    def empty(self) -> bool:
        return not self.items()


def _tags(client: Any, arn: str) -> dict[str, str] | None:
    """The resource's tags, or None if it went away since it was listed."""
    tags: dict[str, str] = {}
    try:
        for page in client.get_paginator("list_tags").paginate(ResourceArn=arn):
            tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
    except ClientError as exc:
        if _already_gone(exc):
            return None
        raise
    return tags


def _ours(client: Any, arn: str, project: str, stack: str) -> bool:
    # Exact values of both tags: another stack (or project) of the same account never matches.
    tags = _tags(client, arn) or {}
    return tags.get(contracts.TAG_PROJECT) == project and tags.get(contracts.TAG_STACK) == stack


def _tagged(client: Any, operation: str, key: str, name_key: str, arn_key: str,
            project: str, stack: str) -> list[str]:
    """Names of one kind of SageMaker resource that carry this project's and stack's tags.

    The Resource Groups Tagging API would answer in one call, but moto does not index SageMaker
    there, and listing + ListTags is exact in both places.
    """
    names: list[str] = []
    for page in client.get_paginator(operation).paginate(PaginationConfig={"PageSize": PAGE_SIZE["sagemaker"]}):
        for item in page.get(key, []):
            if _ours(client, item[arn_key], project, stack):
                names.append(item[name_key])
    return sorted(names)


def _scalable_targets(client: Any, endpoints: Iterable[str]) -> list[ScalableTarget]:
    """The autoscaling targets (any dimension) of these endpoints' variants."""
    wanted = set(endpoints)
    targets: list[ScalableTarget] = []
    for page in client.get_paginator("describe_scalable_targets").paginate(
            ServiceNamespace="sagemaker", PaginationConfig={"PageSize": PAGE_SIZE["autoscaling"]}):
        for target in page.get("ScalableTargets", []):
            parts = target["ResourceId"].split("/")
            if len(parts) == 4 and parts[0] == "endpoint" and parts[1] in wanted and parts[2] == "variant":
                targets.append(ScalableTarget(target["ResourceId"], target["ScalableDimension"]))
    return sorted(targets, key=str)


def _model_packages(client: Any, group: str) -> list[str]:
    arns: list[str] = []
    # Versioned explicitly: the API's default type is Unversioned (Marketplace packages), and every
    # package of a group is a version.
    for page in client.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=group, ModelPackageType="Versioned",
            PaginationConfig={"PageSize": PAGE_SIZE["sagemaker"]}):
        arns.extend(item["ModelPackageArn"] for item in page.get("ModelPackageSummaryList", []))
    return sorted(arns)


def _already_gone(exc: ClientError) -> bool:
    # Another run (or the console) may delete a resource between our listing and our call; that is
    # the state we want, not a failure. Application Auto Scaling says so with ObjectNotFoundException,
    # SageMaker with a ValidationException whose message names the missing resource.
    return aws_errors.is_not_found(exc)


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


def require_account(sts: Any, account: str) -> None:
    """Refuse to run with credentials of another account than the stack's.

    The janitor runs with whatever credentials `pulumi destroy` has in its environment, while the
    stack's AWS provider may use another profile: in the wrong account the tags match nothing, the
    run "succeeds" and the real endpoints keep billing.
    """
    actual = sts.get_caller_identity()["Account"]
    if actual != account:
        raise TeardownError(f"the credentials are for AWS account {actual}, but the stack's resources are in "
                            f"{account}; run with that account's credentials (e.g. AWS_PROFILE)")


def teardown(project: str, stack: str, group: str, *, clients: Clients | None = None, account: str | None = None,
             dry_run: bool = False, waiter_delay: int = 15, waiter_max_attempts: int = 80) -> Report:
    """Delete this stack's endpoints (and their autoscaling targets), endpoint configs, models and the
    group's model packages; wait until the endpoints and packages are gone. The group itself stays
    (Pulumi owns it). With `account`, first check that the credentials are that account's.

    Order matters: scaling targets before their endpoints (AWS asks for it), endpoints before the
    configs and models they use, models before the packages they were created from, and the
    packages gone before Pulumi deletes the group. Raises TeardownError naming the resource on the
    first failure, leaving the rest for a rerun.
    """
    clients = clients or Clients.for_region()
    if account is not None:
        require_account(clients.sts, account)
    found = plan(project, stack, group, clients)
    if dry_run:
        return found
    wait = {"Delay": waiter_delay, "MaxAttempts": waiter_max_attempts}
    for target in found.scalable_targets:
        _delete("scalable-target", str(target), clients.autoscaling.deregister_scalable_target,
                ServiceNamespace="sagemaker", ResourceId=target.resource_id, ScalableDimension=target.dimension)
    for name in found.endpoints:
        _delete("endpoint", name, clients.sagemaker.delete_endpoint, EndpointName=name)
    waiter = clients.sagemaker.get_waiter("endpoint_deleted")
    for name in found.endpoints:
        try:
            waiter.wait(EndpointName=name, WaiterConfig=wait)
        except WaiterError as exc:
            raise TeardownError(f"endpoint {name} was not deleted: {exc}") from exc
    for name in found.endpoint_configs:
        _delete("endpoint-config", name, clients.sagemaker.delete_endpoint_config, EndpointConfigName=name)
    for name in found.models:
        _delete("model", name, clients.sagemaker.delete_model, ModelName=name)
    for arn in found.model_packages:
        _delete("model-package", arn, clients.packages.delete_model_package, ModelPackageName=arn)
    if found.model_packages:
        _wait_for_packages_gone(clients.packages, group, found.model_packages, wait)
    found.dry_run = False
    return found


def _wait_for_packages_gone(client: Any, group: str, deleted: Sequence[str], wait: dict[str, int]) -> None:
    # A package can sit in status Deleting for a while, and DeleteModelPackageGroup refuses a group
    # that still lists one; Pulumi deletes the group right after the janitor. No botocore waiter exists.
    left: list[str] = []
    for attempt in range(wait["MaxAttempts"]):
        left = sorted(set(deleted) & set(_model_packages(client, group)))
        if not left:
            return
        if attempt + 1 < wait["MaxAttempts"]:
            time.sleep(wait["Delay"])
    raise TeardownError(f"model packages of group {group} were not deleted: {', '.join(left)}")


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
    parser.add_argument("--account", default=None,
                        help="refuse to run unless the credentials are this AWS account's (the stack's)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    args = parser.parse_args(argv)
    if not args.stack or not args.group:
        parser.error("--stack and --group are required (or set MLOPS_STACK and MODEL_PACKAGE_GROUP_NAME)")
    # Only teardown's own lines: botocore's INFO chatter (credential lookup, endpoints) is noise here.
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        report = teardown(args.project, args.stack, args.group, clients=Clients.for_region(args.region),
                          account=args.account, dry_run=args.dry_run)
    except (TeardownError, ValueError, ClientError, BotoCoreError) as exc:
        # BotoCoreError: no credentials or region; ClientError: e.g. AccessDenied on a listing.
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
