"""EndpointJanitor: a dynamic resource whose delete runs training.teardown, so `pulumi destroy` leaves nothing billable.

The pipeline creates endpoints, endpoint configs, models and packages outside Pulumi state. The
janitor records which stack's share they are (project, stack, group, region) and on delete removes
them. `__main__.py` makes it depend on the model package group and the artifact bucket, so Pulumi
deletes it first: a group that still holds packages cannot be deleted.
"""

from __future__ import annotations

from typing import Any, TypedDict

import pulumi
import pulumi.dynamic as dynamic

# Changing any of these points the janitor at another set of resources: replace, so the old
# janitor's delete cleans up the old set (e.g. a renamed group must be empty before it can go).
IDENTITY = ("project", "stack", "group", "region")


class JanitorProvider(dynamic.ResourceProvider):
    """Kept tiny and free of module-level state: Pulumi pickles it (dill) into the stack state and
    unpickles it in a separate provider process, where it imports `training.teardown` on delete.
    """

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        outs = {key: props[key] for key in IDENTITY}
        return dynamic.CreateResult(id_=f"{outs['project']}/{outs['stack']}/{outs['group']}", outs=outs)

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> dynamic.DiffResult:
        replaces = [key for key in IDENTITY if _olds.get(key) != _news.get(key)]
        return dynamic.DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> dynamic.UpdateResult:
        # diff replaces on every recorded property, so an update only refreshes the recorded values.
        return dynamic.UpdateResult(outs={key: _news[key] for key in IDENTITY})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # Imported here, in the provider process at delete time: nothing of it is pickled.
        from training.teardown import Clients, teardown

        # Ambient credentials of whoever runs `pulumi destroy`, in the stack's region.
        clients = Clients.for_region(_props["region"])
        # Raises on failure: Pulumi then keeps the janitor (and the group and bucket behind it) in
        # state, and a rerun of destroy retries the rest.
        teardown(_props["project"], _props["stack"], _props["group"], clients=clients)


class EndpointJanitorArgs(TypedDict):
    project: pulumi.Input[str]
    """Value of the contracts.TAG_PROJECT tag on the pipeline's resources."""
    stack: pulumi.Input[str]
    """Value of the contracts.TAG_STACK tag."""
    group: pulumi.Input[str]
    """The stack's model package group; its packages are deleted, the group is Pulumi's."""
    region: pulumi.Input[str]
    """Region the pipeline deploys to."""


class EndpointJanitor(dynamic.Resource):
    project: pulumi.Output[str]
    stack: pulumi.Output[str]
    group: pulumi.Output[str]
    region: pulumi.Output[str]

    def __init__(self, name: str, args: EndpointJanitorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(JanitorProvider(), name, {key: args[key] for key in IDENTITY}, opts)
