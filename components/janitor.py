"""EndpointJanitor: a dynamic resource whose delete runs training.teardown, so `pulumi destroy` leaves nothing billable.

The pipeline creates endpoints, endpoint configs, models and packages outside Pulumi state. The
janitor records which stack's share they are (project, stack, group, region, account) and on delete
removes them. `__main__.py` makes it depend on the model package group and the artifact bucket, so
Pulumi deletes it first: a group that still holds packages cannot be deleted.

How Pulumi runs it: the provider object is pickled with dill into the state (`__provider`) and
unpickled by the dynamic provider host, `python -m pulumi.dynamic`, which the CLI starts with the
project's virtualenv in the project directory. A class defined in an importable module is pickled
by reference (module and class name, no code), and `-m` puts the working directory first on
sys.path, so the host imports this module, and at delete time training.teardown, from the
checked-out repository: destroy runs today's teardown, under any Python version.
tests/test_janitor.py drives that host process over gRPC to prove it.
"""

from __future__ import annotations

from typing import Any, TypedDict

import pulumi
import pulumi.dynamic as dynamic
from pulumi.dynamic.dynamic import PROVIDER_KEY

# Changing any of these points the janitor at another set of resources: replace, so the old
# janitor's delete cleans up the old set (e.g. a renamed group must be empty before it can go).
IDENTITY = ("project", "stack", "group", "region", "account")


class JanitorProvider(dynamic.ResourceProvider):
    """Free of state: only the class's module path is pickled, so keep `components.janitor.JanitorProvider`
    importable under that name (a moved class is recorded again by the next `pulumi up`, see diff)."""

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        outs = {key: props[key] for key in IDENTITY}
        return dynamic.CreateResult(id_=f"{outs['project']}/{outs['stack']}/{outs['group']}", outs=outs)

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> dynamic.DiffResult:
        replaces = [key for key in IDENTITY if _olds.get(key) != _news.get(key)]
        # The state keeps the provider reference it was created with until an update rewrites it;
        # without this, a renamed module would leave destroy unable to unpickle the janitor.
        moved = _olds.get(PROVIDER_KEY) != _news.get(PROVIDER_KEY)
        return dynamic.DiffResult(changes=bool(replaces) or moved, replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> dynamic.UpdateResult:
        # Only a new provider reference gets here (diff replaces on every recorded property).
        return dynamic.UpdateResult(outs={key: _news[key] for key in IDENTITY})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # Imported here, in the provider host at delete time: the program never loads boto3 for it.
        from training.teardown import Clients, teardown

        # Ambient credentials of whoever runs `pulumi destroy`, in the stack's region; teardown
        # refuses them if they belong to another account than the one the stack was deployed to.
        clients = Clients.for_region(_props["region"])
        # Raises on failure: Pulumi then keeps the janitor (and the group and bucket behind it) in
        # state, and a rerun of destroy retries the rest.
        teardown(_props["project"], _props["stack"], _props["group"], clients=clients, account=_props["account"])


class EndpointJanitorArgs(TypedDict):
    project: pulumi.Input[str]
    """Value of the contracts.TAG_PROJECT tag on the pipeline's resources."""
    stack: pulumi.Input[str]
    """Value of the contracts.TAG_STACK tag."""
    group: pulumi.Input[str]
    """The stack's model package group; its packages are deleted, the group is Pulumi's."""
    region: pulumi.Input[str]
    """Region the pipeline deploys to."""
    account: pulumi.Input[str]
    """AWS account id of the stack (its AWS provider's caller identity)."""


class EndpointJanitor(dynamic.Resource):
    project: pulumi.Output[str]
    stack: pulumi.Output[str]
    group: pulumi.Output[str]
    region: pulumi.Output[str]
    account: pulumi.Output[str]

    def __init__(self, name: str, args: EndpointJanitorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(JanitorProvider(), name, {key: args[key] for key in IDENTITY}, opts)
