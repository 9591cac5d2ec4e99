"""Serve the rules of policy/rules.py to the Pulumi engine as a policy pack.

The engine runs this file from policy/ (`pulumi preview --policy-pack policy`). Every rule is a
mandatory policy: a violation fails the preview or update. Optional config
(`--policy-pack-config`): `{"audit-trail": {"requireAuditTrail": true}}` for stacks with auditTrail on.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

# The pack imports the project's modules (contracts.py, policy.rules) from the repository root.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from policy import rules  # noqa: E402 - needs the root on sys.path when the engine runs this file

PACK_NAME = "sagemaker-mlops-grc"
AUDIT_TRAIL_CONFIG = PolicyConfigSchema(
    properties={"requireAuditTrail": {"type": "boolean", "default": False}})


def _options(config: Mapping[str, Any] | None) -> rules.Options:
    return rules.Options(require_audit_trail=bool((config or {}).get("requireAuditTrail", False)))


def to_resource(resource: PolicyResource) -> rules.Resource:
    deps = {key: tuple(d.urn for d in value) for key, value in resource.property_dependencies.items()}
    return rules.Resource(
        type=resource.resource_type,
        name=resource.name,
        urn=resource.urn,
        props=resource.props,
        parent=resource.parent.urn if resource.parent is not None else None,
        depends_on=tuple(d.urn for d in resource.dependencies),
        property_dependencies=deps,
    )


def _resource_policy(rule: rules.Rule) -> ResourceValidationPolicy:
    check = rule.check
    assert check is not None

    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        resource = rules.Resource(type=args.resource_type, name=args.name, urn=args.urn, props=args.props)
        for message in check(resource):
            report(message, args.urn)

    return ResourceValidationPolicy(name=rule.name, description=f"[{rule.control}] {rule.description}",
                                    validate=validate, enforcement_level=EnforcementLevel.MANDATORY)


def _stack_policy(rule: rules.Rule) -> StackValidationPolicy:
    check = rule.stack_check
    assert check is not None

    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources = [to_resource(r) for r in args.resources]
        for violation in check(resources, _options(args.get_config())):
            report(violation.message, violation.urn)

    schema = AUDIT_TRAIL_CONFIG if rule.name == "audit-trail" else None
    return StackValidationPolicy(name=rule.name, description=f"[{rule.control}] {rule.description}",
                                 validate=validate, enforcement_level=EnforcementLevel.MANDATORY,
                                 config_schema=schema)


def policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    return [_resource_policy(r) if r.check is not None else _stack_policy(r) for r in rules.RULES]


def main() -> None:
    # PolicyPack starts the analyzer's gRPC server and blocks: only when the engine runs the pack.
    PolicyPack(name=PACK_NAME, policies=list(policies()), enforcement_level=EnforcementLevel.MANDATORY)


if __name__ == "__main__":
    main()
