"""The policy pack's rules: they pass on both shipped stacks' mocked graphs, and each one catches a
deliberately broken copy of such a graph. The graphs come from the real __main__.py under Pulumi's
mock engine (tests/program_harness.py); the pack's engine wrapper is exercised with pulumi_policy's
own argument classes."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from program_harness import ProgramGraph, prefetch, run_program
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

import contracts
from policy import rules
from policy.__main__ import policies, to_resource

Graph = list[rules.Resource]


def as_rules(graph: ProgramGraph) -> Graph:
    """The graph as the engine hands it to a stack policy, which includes per-property dependencies.

    The mock engine records only a resource's dependency list, so they are rebuilt here from the
    harness's id convention (`<name>-id`) for the properties that name another resource.
    """
    by_urn = {r.urn: r for r in graph.resources}

    def property_dependencies(r: Any) -> dict[str, tuple[str, ...]]:
        found: dict[str, tuple[str, ...]] = {}
        for key, value in r.inputs.items():
            deps = tuple(d for d in r.dependencies if d in by_urn and value == f"{by_urn[d].name}-id")
            if deps:
                found[key] = deps
        return found

    return [rules.Resource(type=r.type, name=r.name, urn=r.urn, props=r.inputs, parent=r.parent,
                           depends_on=r.dependencies, property_dependencies=property_dependencies(r))
            for r in graph.resources]


def audit_options(graph: ProgramGraph) -> rules.Options:
    return rules.Options(require_audit_trail=graph.config.get(f"{contracts.PROJECT}:auditTrail") == "true")


@pytest.fixture(scope="module")
def graphs() -> dict[str, ProgramGraph]:
    prefetch([("dev", None), ("prod", None)])
    return {stack: run_program(stack) for stack in ("dev", "prod")}


@pytest.fixture
def dev(graphs: dict[str, ProgramGraph]) -> Graph:
    return copy.deepcopy(as_rules(graphs["dev"]))


@pytest.fixture
def prod(graphs: dict[str, ProgramGraph]) -> Graph:
    return copy.deepcopy(as_rules(graphs["prod"]))


def rule(name: str) -> rules.Rule:
    [found] = [r for r in rules.RULES if r.name == name]
    return found


def caught(name: str, graph: Graph, options: rules.Options | None = None) -> list[str]:
    return [v.message for v in rule(name).run(graph, options)]


def edit(graph: Graph, type_token: str, change: Callable[[dict[str, Any]], object],
         where: Callable[[rules.Resource], bool] = lambda r: True) -> Graph:
    """Apply `change` to the props of every matching resource (at least one must match)."""
    hits = 0
    result: Graph = []
    for resource in graph:
        if resource.type == type_token and where(resource):
            props = copy.deepcopy(dict(resource.props))
            change(props)
            resource = rules.Resource(resource.type, resource.name, resource.urn, props, resource.parent,
                                      resource.depends_on, resource.property_dependencies)
            hits += 1
        result.append(resource)
    assert hits, f"no {type_token} to break"
    return result


def without(graph: Graph, type_token: str, where: Callable[[rules.Resource], bool] = lambda r: True) -> Graph:
    kept = [r for r in graph if not (r.type == type_token and where(r))]
    assert len(kept) < len(graph), f"no {type_token} to remove"
    return kept


def edit_documents(graph: Graph, type_token: str, prop: str,
                   change: Callable[[dict[str, Any]], bool]) -> Graph:
    """Rewrite JSON policy documents in `prop`; `change` returns True where it changed something."""
    changed = 0

    def apply(props: dict[str, Any]) -> None:
        nonlocal changed
        document = json.loads(props[prop])
        if change(document):
            changed += 1
            props[prop] = json.dumps(document)

    graph = edit(graph, type_token, apply, where=lambda r: isinstance(r.props.get(prop), str))
    assert changed, f"no {type_token}.{prop} document was changed"
    return graph


def statements_with(action: str) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    def find(document: dict[str, Any]) -> list[dict[str, Any]]:
        return [s for s in document["Statement"] if action in rules._list(s.get("Action"))]
    return find


def set_stages(graph: Graph, change: Callable[[list[dict[str, Any]]], object]) -> Graph:
    """Rewrite DEPLOYMENT_STAGES wherever the stack hands it over (CodeBuild env or GitHub variable)."""
    def rewrite(text: str) -> str:
        stages = json.loads(text)
        change(stages)
        return json.dumps(stages)

    def codebuild(props: dict[str, Any]) -> None:
        for var in props["environment"]["environmentVariables"]:
            if var["name"] == contracts.ENV_DEPLOYMENT_STAGES:
                var["value"] = rewrite(var["value"])

    def variable(props: dict[str, Any]) -> None:
        props["value"] = rewrite(props["value"])

    has_env = [r for r in graph if r.type == rules.CODEBUILD_TYPE and contracts.ENV_DEPLOYMENT_STAGES in json.dumps(
        r.props.get("environment"))]
    if has_env:
        return edit(graph, rules.CODEBUILD_TYPE, codebuild, where=lambda r: r in has_env)
    return edit(graph, rules.GITHUB_VARIABLE_TYPE, variable,
                where=lambda r: r.props.get("variableName") == contracts.ENV_DEPLOYMENT_STAGES)


# --- Both stacks pass every rule ---------------------------------------------------------------
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_rule_passes_on_the_shipped_stack(graphs: dict[str, ProgramGraph], stack: str) -> None:
    graph = graphs[stack]
    results = rules.evaluate(as_rules(graph), audit_options(graph))
    assert set(results) == {r.name for r in rules.RULES}
    assert {name: [v.message for v in found] for name, found in results.items() if found} == {}


def test_rules_read_the_stacks_deployment_stages(dev: Graph, prod: Graph) -> None:
    # The change-management rules are only as good as this: they must find the stages in both stacks.
    assert [(s.name, s.requires_approval) for s in rules.deployment_stages(dev)] == [("dev", False)]
    assert [(s.name, s.requires_approval) for s in rules.deployment_stages(prod)] == [
        ("staging", False), ("production", True)]


# --- Change management -------------------------------------------------------------------------
def test_production_without_environment_reviewers_is_caught(prod: Graph) -> None:
    broken = edit(prod, rules.GITHUB_ENVIRONMENT_TYPE, lambda p: p.update(reviewers=[]))
    assert caught("approval-gate-before-production", broken)


def test_production_without_the_environment_is_caught(prod: Graph) -> None:
    broken = without(prod, rules.GITHUB_ENVIRONMENT_TYPE)
    assert any("'production' environment" in m for m in caught("approval-gate-before-production", broken))


def test_pipeline_deploying_a_gated_stage_without_manual_approval_is_caught(dev: Graph) -> None:
    # dev's pipeline approves automatically: marking its stage as gated must fail the rule.
    broken = set_stages(dev, lambda stages: stages[0].update(requires_approval=True))
    messages = caught("approval-gate-before-production", broken)
    assert any("without a manual approval action" in m for m in messages), messages


def test_pipeline_with_manual_approval_before_the_gated_stage_passes(dev: Graph) -> None:
    # The same gated stage with the Approval stage turned manual: the gate is there, the rule passes.
    def manual(props: dict[str, Any]) -> None:
        for stage in props["stages"]:
            if stage["name"] == "Approval":
                stage["actions"] = [{"name": "Approve-model", "category": "Approval", "owner": "AWS",
                                     "provider": "Manual", "version": "1"}]

    gated = set_stages(dev, lambda stages: stages[0].update(requires_approval=True))
    assert caught("approval-gate-before-production", edit(gated, rules.PIPELINE_TYPE, manual)) == []


def test_production_stage_without_requires_approval_is_caught(prod: Graph) -> None:
    broken = set_stages(prod, lambda stages: stages[1].update(requires_approval=False))
    assert caught("production-requires-approval", broken) == [
        "deployment stage 'production' does not require approval; set requiresApproval: true "
        "(a human gate stands before every production deploy)"]


# --- Access control ----------------------------------------------------------------------------
def test_wildcard_action_in_a_role_policy_is_caught(dev: Graph) -> None:
    def widen(document: dict[str, Any]) -> bool:
        document["Statement"][0]["Action"] = ["s3:*"]
        return True

    broken = edit_documents(dev, rules.ROLE_POLICY_TYPE, "policy", widen)
    assert any("wildcard actions ['s3:*']" in m for m in caught("no-wildcard-actions", broken))


def test_allow_notaction_is_caught(prod: Graph) -> None:
    def invert(document: dict[str, Any]) -> bool:
        statement = document["Statement"][0]
        statement["NotAction"] = statement.pop("Action")
        return True

    broken = edit_documents(prod, rules.ROLE_POLICY_TYPE, "policy", invert)
    assert any("NotAction" in m for m in caught("no-wildcard-actions", broken))


def _passrole(change: Callable[[dict[str, Any]], object]) -> Callable[[dict[str, Any]], bool]:
    def apply(document: dict[str, Any]) -> bool:
        found = statements_with("iam:PassRole")(document)
        for statement in found:
            change(statement)
        return bool(found)
    return apply


def test_passrole_without_passed_to_service_is_caught(dev: Graph) -> None:
    broken = edit_documents(dev, rules.ROLE_POLICY_TYPE, "policy", _passrole(lambda s: s.pop("Condition")))
    assert any("iam:PassedToService" in m for m in caught("passrole-scoped", broken))


def test_passrole_on_any_role_is_caught(dev: Graph) -> None:
    broken = edit_documents(dev, rules.ROLE_POLICY_TYPE, "policy", _passrole(lambda s: s.update(Resource="*")))
    assert any("pass any role" in m for m in caught("passrole-scoped", broken))


def _oidc(change: Callable[[dict[str, Any]], object]) -> Callable[[dict[str, Any]], bool]:
    def apply(document: dict[str, Any]) -> bool:
        found = [s for s in document["Statement"]
                 if rules.GITHUB_OIDC_HOST in json.dumps(s.get("Principal", {}))]
        for statement in found:
            change(statement["Condition"])
        return bool(found)
    return apply


def test_oidc_trust_for_a_second_repository_is_caught(prod: Graph) -> None:
    sub = f"{rules.GITHUB_OIDC_HOST}:sub"

    def add_repo(condition: dict[str, Any]) -> None:
        block = next(b for b in condition.values() if sub in b)
        block[sub] = [*rules._list(block[sub]), "repo:someone-else/fork:ref:refs/heads/main"]

    broken = edit_documents(prod, rules.ROLE_TYPE, "assumeRolePolicy", _oidc(add_repo))
    assert caught("oidc-trust-scoped", broken)


def test_oidc_trust_for_any_repository_of_the_owner_is_caught(prod: Graph) -> None:
    sub = f"{rules.GITHUB_OIDC_HOST}:sub"
    broken = edit_documents(prod, rules.ROLE_TYPE, "assumeRolePolicy", _oidc(
        lambda c: c.clear() or c.update(StringLike={sub: "repo:your-org/*:*"},
                                        StringEquals={f"{rules.GITHUB_OIDC_HOST}:aud": rules.STS_AUDIENCE})))
    assert caught("oidc-trust-scoped", broken)


def test_oidc_trust_without_audience_is_caught(prod: Graph) -> None:
    aud = f"{rules.GITHUB_OIDC_HOST}:aud"
    broken = edit_documents(prod, rules.ROLE_TYPE, "assumeRolePolicy",
                            _oidc(lambda c: [block.pop(aud, None) for block in c.values()]))
    assert any("aud" in m for m in caught("oidc-trust-scoped", broken))


def test_iam_access_key_is_caught(dev: Graph) -> None:
    key = rules.Resource(rules.ACCESS_KEY_TYPE, "ci-key", "urn:pulumi:dev::p::aws:iam/accessKey:AccessKey::ci-key",
                         {"user": "ci"})
    assert caught("no-long-lived-keys", [*dev, key]) == [
        "ci-key creates an IAM access key; use roles (OIDC for GitHub) instead"]


# --- Asset management --------------------------------------------------------------------------
def test_stack_without_a_model_package_group_is_caught(dev: Graph) -> None:
    assert caught("one-model-package-group", without(dev, rules.GROUP_TYPE))


def test_stack_with_two_model_package_groups_is_caught(dev: Graph) -> None:
    [group] = [r for r in dev if r.type == rules.GROUP_TYPE]
    second = rules.Resource(group.type, "second", group.urn + "-2", {"modelPackageGroupName": "other"})
    assert caught("one-model-package-group", [*dev, second])


def test_train_build_registering_into_another_group_is_caught(dev: Graph) -> None:
    def retarget(props: dict[str, Any]) -> None:
        for var in props["environment"]["environmentVariables"]:
            if var["name"] == contracts.ENV_MODEL_PACKAGE_GROUP_NAME:
                var["value"] = "someone-elses-group"

    broken = edit(dev, rules.CODEBUILD_TYPE, retarget)
    assert any("someone-elses-group" in m for m in caught("builds-register-into-the-group", broken))


def test_train_build_with_another_buildspec_is_caught(dev: Graph) -> None:
    broken = edit(dev, rules.CODEBUILD_TYPE, lambda p: p["source"].update(buildspec="echo skip metrics"),
                  where=lambda r: contracts.ENV_INFERENCE_IMAGE_URI in json.dumps(r.props.get("environment")))
    assert any(contracts.TRAIN_BUILDSPEC in m for m in caught("builds-register-into-the-group", broken))


def test_workflow_registering_into_another_group_is_caught(prod: Graph) -> None:
    broken = edit(prod, rules.GITHUB_VARIABLE_TYPE, lambda p: p.update(value="other-group"),
                  where=lambda r: r.props.get("variableName") == contracts.ENV_MODEL_PACKAGE_GROUP_NAME)
    assert caught("builds-register-into-the-group", broken)


def _edit_register_step(change: Callable[[dict[str, Any]], object]) -> Callable[[dict[str, Any]], None]:
    """Rewrite the Register step's arguments inside a SageMaker pipeline's definition."""
    def apply(props: dict[str, Any]) -> None:
        definition = json.loads(props["pipelineDefinition"])
        [gate] = [s for s in definition["Steps"] if s["Type"] == "Condition"]
        [register] = [s for s in gate["Arguments"]["IfSteps"] if s["Type"] == "RegisterModel"]
        change(register["Arguments"])
        props["pipelineDefinition"] = json.dumps(definition)
    return apply


def test_pipeline_registering_into_another_group_is_caught(dev: Graph) -> None:
    broken = edit(dev, rules.SAGEMAKER_PIPELINE_TYPE,
                  _edit_register_step(lambda a: a.update(ModelPackageGroupName="someone-elses-group")))
    messages = caught("pipeline-registers-into-the-group", broken)
    assert len(messages) == 1 and "registers into 'someone-elses-group'" in messages[0], messages


def test_pipeline_approving_its_own_models_is_caught(prod: Graph) -> None:
    broken = edit(prod, rules.SAGEMAKER_PIPELINE_TYPE,
                  _edit_register_step(lambda a: a.update(ModelApprovalStatus=contracts.STATUS_APPROVED)))
    assert caught("pipeline-registers-into-the-group", broken) == [
        "SageMaker pipeline model-build-pipeline step Register registers with status 'Approved'; register as "
        "PendingManualApproval so the approval gate decides"]


def test_pipeline_without_a_register_step_is_caught(dev: Graph) -> None:
    def drop_register(props: dict[str, Any]) -> None:
        definition = json.loads(props["pipelineDefinition"])
        definition["Steps"] = [s for s in definition["Steps"] if s["Type"] != "Condition"]
        props["pipelineDefinition"] = json.dumps(definition)

    broken = edit(dev, rules.SAGEMAKER_PIPELINE_TYPE, drop_register)
    assert any("no RegisterModel step" in m for m in caught("pipeline-registers-into-the-group", broken))


def test_train_build_starting_another_pipeline_is_caught(dev: Graph) -> None:
    def retarget(props: dict[str, Any]) -> None:
        for var in props["environment"]["environmentVariables"]:
            if var["name"] == contracts.ENV_MODEL_BUILD_PIPELINE:
                var["value"] = "someone-elses-pipeline"

    broken = edit(dev, rules.CODEBUILD_TYPE, retarget, where=lambda r: r.name == "pipeline-train")
    messages = caught("pipeline-registers-into-the-group", broken)
    assert len(messages) == 1 and "starts SageMaker pipeline 'someone-elses-pipeline'" in messages[0], messages


def test_workflow_starting_another_pipeline_is_caught(prod: Graph) -> None:
    broken = edit(prod, rules.GITHUB_VARIABLE_TYPE, lambda p: p.update(value="someone-elses-pipeline"),
                  where=lambda r: r.props.get("variableName") == contracts.ENV_MODEL_BUILD_PIPELINE)
    assert caught("pipeline-registers-into-the-group", broken)


# --- Secure configuration ----------------------------------------------------------------------
@pytest.mark.parametrize("encryption_type", rules.ENCRYPTION_TYPES[:1])
def test_bucket_without_encryption_is_caught(prod: Graph, encryption_type: str) -> None:
    broken = without(prod, encryption_type, where=lambda r: r.name.startswith("audit"))
    messages = caught("bucket-encrypted", broken)
    assert len(messages) == 1 and "audit-bucket" in messages[0]


def test_bucket_with_one_public_access_setting_off_is_caught(dev: Graph) -> None:
    broken = edit(dev, rules.PUBLIC_ACCESS_TYPE, lambda p: p.update(restrictPublicBuckets=False))
    assert caught("bucket-public-access-blocked", broken)


def test_bucket_policy_without_tls_deny_is_caught(prod: Graph) -> None:
    def drop_tls(document: dict[str, Any]) -> bool:
        before = len(document["Statement"])
        document["Statement"] = [s for s in document["Statement"] if s.get("Sid") != "DenyInsecureTransport"]
        return len(document["Statement"]) < before

    broken = edit_documents(prod, rules.BUCKET_POLICY_TYPE, "policy", drop_tls)
    assert len(caught("bucket-tls-only", broken)) == 2  # the artifact bucket and the audit bucket


def test_tls_deny_on_objects_only_is_caught(dev: Graph) -> None:
    def objects_only(document: dict[str, Any]) -> bool:
        for statement in document["Statement"]:
            statement["Resource"] = [r for r in rules._list(statement["Resource"]) if r.endswith("/*")]
        return True

    assert caught("bucket-tls-only", edit_documents(dev, rules.BUCKET_POLICY_TYPE, "policy", objects_only))


def test_bucket_with_versioning_suspended_is_caught(dev: Graph) -> None:
    broken = edit(dev, rules.VERSIONING_TYPES[0], lambda p: p["versioningConfiguration"].update(status="Suspended"))
    assert caught("bucket-versioned", broken)


def test_unencrypted_queue_is_caught(dev: Graph) -> None:
    broken = edit(dev, rules.QUEUE_TYPE, lambda p: (p.pop("sqsManagedSseEnabled", None), p.pop("kmsMasterKeyId", None)))
    assert caught("queue-encrypted", broken)


def test_log_group_without_retention_is_caught(prod: Graph) -> None:
    broken = edit(prod, rules.LOG_GROUP_TYPE, lambda p: p.pop("retentionInDays"))
    assert caught("log-retention", broken)


# --- Audit and accountability ------------------------------------------------------------------
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_lambda_without_its_log_group_is_caught(stack: str, graphs: dict[str, ProgramGraph]) -> None:
    graph = copy.deepcopy(as_rules(graphs[stack]))
    functions = [r for r in graph if r.type == rules.FUNCTION_TYPE]
    wanted = {str((f.props.get("loggingConfig") or {}).get("logGroup") or f"/aws/lambda/{f.props['name']}")
              for f in functions}
    broken = without(graph, rules.LOG_GROUP_TYPE, where=lambda r: r.props.get("name") in wanted)
    assert len(caught("log-groups", broken)) == len(functions) >= 1


def test_codebuild_project_without_its_log_group_is_caught(dev: Graph) -> None:
    # CodeBuild would create /aws/codebuild/<project> itself, with no retention and outside the stack.
    broken = without(dev, rules.LOG_GROUP_TYPE, where=lambda r: str(r.props.get("name")).startswith("/aws/codebuild/"))
    messages = caught("log-groups", broken)
    assert len(messages) == 2 and all(m.startswith("CodeBuild project pipeline-") for m in messages), messages


def test_codebuild_project_with_logs_disabled_is_caught(dev: Graph) -> None:
    broken = edit(dev, rules.CODEBUILD_TYPE, lambda p: p["logsConfig"]["cloudwatchLogs"].update(status="DISABLED"),
                  where=lambda r: r.name == "pipeline-deploy")
    assert any("logs disabled" in m for m in caught("log-groups", broken))


def test_v1_pipeline_is_caught(dev: Graph) -> None:
    broken = edit(dev, rules.PIPELINE_TYPE, lambda p: p.update(pipelineType="V1"))
    assert any("use V2" in m for m in caught("pipeline-execution-history", broken))


def test_github_stack_without_the_dispatch_rule_is_caught(prod: Graph) -> None:
    broken = without(prod, rules.EVENT_RULE_TYPE,
                     where=lambda r: contracts.STATUS_APPROVED in str(r.props.get("eventPattern")))
    assert caught("pipeline-execution-history", broken)


def test_trail_without_log_file_validation_is_caught(prod: Graph) -> None:
    broken = edit(prod, rules.TRAIL_TYPE, lambda p: p.update(enableLogFileValidation=False))
    assert any("log file validation" in m for m in caught("audit-trail", broken))


def test_enabled_audit_trail_missing_is_caught(dev: Graph) -> None:
    assert caught("audit-trail", dev) == []
    assert caught("audit-trail", dev, rules.Options(require_audit_trail=True)) == [
        "the stack enables auditTrail but has no CloudTrail trail"]


def test_trail_delivering_outside_the_stack_is_caught(prod: Graph) -> None:
    broken = without(prod, rules.BUCKET_TYPES[0], where=lambda r: r.name.startswith("audit"))
    assert any("outside the stack" in m for m in caught("audit-trail", broken))


# --- The engine wrapper ------------------------------------------------------------------------
def test_pack_serves_every_rule_as_a_mandatory_policy() -> None:
    served = policies()
    assert [p.name for p in served] == [r.name for r in rules.RULES]
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in served)
    kinds = {p.name: isinstance(p, ResourceValidationPolicy) for p in served}
    assert kinds == {r.name: r.check is not None for r in rules.RULES}


def _policy_resources(graph: Graph) -> list[PolicyResource]:
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    by_urn: dict[str, PolicyResource] = {}
    for r in graph:
        by_urn[r.urn] = PolicyResource(r.type, r.props, r.urn, r.name, opts, None, None, [], {})
    for r in graph:
        resource = by_urn[r.urn]
        resource.dependencies = [by_urn[d] for d in r.depends_on if d in by_urn]
        if "bucket" in r.props:  # the engine passes per-property dependencies; the mocks do not
            resource.property_dependencies = {"bucket": resource.dependencies}
    return list(by_urn.values())


def test_engine_stack_policy_reports_a_broken_bucket_with_its_urn(dev: Graph) -> None:
    broken = edit(dev, rules.PUBLIC_ACCESS_TYPE, lambda p: p.update(blockPublicPolicy=False))
    [policy] = [p for p in policies() if p.name == "bucket-public-access-blocked"]
    assert isinstance(policy, StackValidationPolicy)
    reported: list[tuple[str, str | None]] = []
    policy.validate(StackValidationArgs(_policy_resources(broken)), lambda msg, urn=None: reported.append((msg, urn)))
    [bucket] = [r for r in dev if r.type == rules.BUCKET_TYPES[0]]
    assert [urn for _, urn in reported] == [bucket.urn]


def test_engine_resources_keep_dependencies_and_parent(dev: Graph) -> None:
    resources = _policy_resources(dev)
    converted = [to_resource(r) for r in resources]
    assert [c.depends_on for c in converted] == [tuple(d for d in r.depends_on if d in {x.urn for x in dev})
                                                 for r in dev]


# --- The pack as the engine runs it (`python -m pulumi.policy <engine> policy`), over gRPC ---------
@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    pack = Path(__file__).resolve().parent.parent / "policy"
    proc = subprocess.Popen([sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."], cwd=pack,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()  # PolicyPack prints its port once it serves
        assert port.isdigit(), f"policy pack did not start: {port!r} {proc.stderr.read() if proc.stderr else ''}"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _analyzer_resources(graph: Graph) -> list[analyzer_pb2.AnalyzerResource]:
    resources = []
    for r in graph:
        props = struct_pb2.Struct()
        json_format.ParseDict(json.loads(json.dumps(dict(r.props))), props)
        deps = {k: analyzer_pb2.AnalyzerPropertyDependencies(urns=list(v)) for k, v in r.property_dependencies.items()}
        resources.append(analyzer_pb2.AnalyzerResource(
            type=r.type, properties=props, urn=r.urn, name=r.name, parent=r.parent or "",
            dependencies=list(r.depends_on), propertyDependencies=deps))
    return resources


def test_engine_sees_every_rule_in_the_pack(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert [p.name for p in info.policies] == [r.name for r in rules.RULES]


def test_engine_analysis_of_the_shipped_prod_stack_is_clean(
        analyzer: analyzer_pb2_grpc.AnalyzerStub, prod: Graph) -> None:
    # prod enables auditTrail; the AuditTrail component in the graph makes the trail rule apply.
    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=_analyzer_resources(prod)),
                                     timeout=60)
    assert [(d.policyName, d.message) for d in response.diagnostics] == []


def test_engine_analysis_blocks_a_broken_stack(analyzer: analyzer_pb2_grpc.AnalyzerStub, prod: Graph) -> None:
    broken = edit(prod, rules.VERSIONING_TYPES[0], lambda p: p["versioningConfiguration"].update(status="Suspended"),
                  where=lambda r: r.name.startswith("audit"))
    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=_analyzer_resources(broken)),
                                     timeout=60)
    [audit_bucket] = [r for r in prod if r.type == rules.BUCKET_TYPES[0] and r.name.startswith("audit")]
    assert [(d.policyName, d.urn, d.enforcementLevel) for d in response.diagnostics] == [
        ("bucket-versioned", audit_bucket.urn, analyzer_pb2.MANDATORY)]


def test_engine_resource_check_blocks_an_unencrypted_queue(analyzer: analyzer_pb2_grpc.AnalyzerStub,
                                                           dev: Graph) -> None:
    broken = edit(dev, rules.QUEUE_TYPE, lambda p: p.pop("sqsManagedSseEnabled"))
    [queue] = [r for r in _analyzer_resources(broken) if r.type == rules.QUEUE_TYPE]
    response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(type=queue.type, properties=queue.properties,
                                                            urn=queue.urn, name=queue.name), timeout=30)
    assert [(d.policyName, d.urn) for d in response.diagnostics] == [("queue-encrypted", queue.urn)]


# --- The README's GRC table ---------------------------------------------------------------------
def test_readme_grc_table_names_every_rule_with_tests_that_exist() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = readme[readme.index("<!-- section:governance -->"):readme.index("<!-- /section:governance -->")]
    assert set(re.findall(r"\| `([a-z-]+)` \|", section)) == {r.name for r in rules.RULES}
    current, missing = "", []
    for path, test in re.findall(r"`(test_\w+\.py)?::(test_\w+)`", section):
        current = path or current
        if f"def {test}(" not in (root / "tests" / current).read_text():
            missing.append(f"{current}::{test}")
    assert missing == []
