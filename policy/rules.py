"""The GRC controls of DESIGN.md as checks over the resource graph, in plain Python.

Each rule is a pure function over plain data: `Resource` (type token, name, URN, input properties
with the engine's camelCase names, parent, dependencies) or the list of them, returning violation
messages. policy/__main__.py wraps the same functions for the Pulumi engine
(`pulumi preview --policy-pack policy`); tests run them against the mocked program graphs.

Properties may be Pulumi policy proxies during a preview: reading an unknown value raises there, and
the engine reports that rule as "can't run during preview" instead of guessing. `pulumi up` sees
every value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import contracts
from training.pipeline_definition import iter_steps

# --- Plain data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    parent: str | None = None
    depends_on: tuple[str, ...] = ()
    """URNs this resource depends on (explicit and through its properties)."""
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Violation:
    message: str
    urn: str | None = None


@dataclass(frozen=True)
class Options:
    """Policy configuration (`--policy-pack-config`): facts about the stack the graph cannot show."""

    require_audit_trail: bool = False
    """The stack enables `auditTrail`: a trail must exist even if someone removes the component."""


ResourceCheck = Callable[[Resource], list[str]]
StackCheck = Callable[[Sequence[Resource], Options], list[Violation]]


@dataclass(frozen=True)
class Rule:
    name: str
    control: str
    description: str
    check: ResourceCheck | None = None
    stack_check: StackCheck | None = None

    def run(self, resources: Sequence[Resource], options: Options | None = None) -> list[Violation]:
        """Offline evaluation, the same answers the engine gets."""
        if self.check is not None:
            return [Violation(msg, r.urn) for r in resources for msg in self.check(r)]
        assert self.stack_check is not None
        return self.stack_check(resources, options or Options())


# --- Type tokens --------------------------------------------------------------------------------
BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
ENCRYPTION_TYPES = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
VERSIONING_TYPES = ("aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketVersioningV2:BucketVersioningV2")
PUBLIC_ACCESS_TYPE = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
BUCKET_POLICY_TYPE = "aws:s3/bucketPolicy:BucketPolicy"
QUEUE_TYPE = "aws:sqs/queue:Queue"
QUEUE_POLICY_TYPE = "aws:sqs/queuePolicy:QueuePolicy"
TOPIC_POLICY_TYPE = "aws:sns/topicPolicy:TopicPolicy"
LOG_GROUP_TYPE = "aws:cloudwatch/logGroup:LogGroup"
FUNCTION_TYPE = "aws:lambda/function:Function"
ROLE_TYPE = "aws:iam/role:Role"
ROLE_POLICY_TYPE = "aws:iam/rolePolicy:RolePolicy"
MANAGED_POLICY_TYPE = "aws:iam/policy:Policy"
ACCESS_KEY_TYPE = "aws:iam/accessKey:AccessKey"
GROUP_TYPE = "aws:sagemaker/modelPackageGroup:ModelPackageGroup"
SAGEMAKER_PIPELINE_TYPE = "aws:sagemaker/pipeline:Pipeline"
PIPELINE_TYPE = "aws:codepipeline/pipeline:Pipeline"
CODEBUILD_TYPE = "aws:codebuild/project:Project"
EVENT_RULE_TYPE = "aws:cloudwatch/eventRule:EventRule"
TRAIL_TYPE = "aws:cloudtrail/trail:Trail"
AUDIT_COMPONENT_TYPE = "sagemaker-mlops:audit:AuditTrail"
GITHUB_ENVIRONMENT_TYPE = "github:index/repositoryEnvironment:RepositoryEnvironment"
GITHUB_VARIABLE_TYPE = "github:index/actionsVariable:ActionsVariable"

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
STS_AUDIENCE = "sts.amazonaws.com"


# --- Helpers ------------------------------------------------------------------------------------
def _of(resources: Iterable[Resource], *types: str) -> list[Resource]:
    return [r for r in resources if r.type in types]


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | Mapping):
        return [value]
    return list(value)


def _document(value: Any) -> dict[str, Any] | None:
    """A policy document from a property: JSON text (how the program passes it) or an object."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {"__invalid__": value}
        return parsed if isinstance(parsed, dict) else {"__invalid__": value}
    return dict(value)


def _statements(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s for s in _list(document.get("Statement")) if isinstance(s, Mapping)]


def policy_documents(resource: Resource) -> list[tuple[str, dict[str, Any]]]:
    """Every IAM policy document a resource carries, labelled (role trust, inline, resource policies)."""
    props = resource.props
    found: list[tuple[str, Any]] = []
    if resource.type == ROLE_TYPE:
        found.append(("assumeRolePolicy", props.get("assumeRolePolicy")))
        for inline in _list(props.get("inlinePolicies")):
            found.append((f"inlinePolicies[{inline.get('name')}]", inline.get("policy")))
    elif resource.type in (ROLE_POLICY_TYPE, MANAGED_POLICY_TYPE, BUCKET_POLICY_TYPE, QUEUE_POLICY_TYPE,
                           TOPIC_POLICY_TYPE):
        found.append(("policy", props.get("policy")))
    return [(label, doc) for label, value in found if (doc := _document(value)) is not None]


def _refers_to(resource: Resource, target: Resource, prop: str, target_keys: Sequence[str]) -> bool:
    """Does `resource.props[prop]` point at `target`? By dependency when the graph records it,
    else by value: the target's name as given, or Pulumi's auto-name for it."""
    deps = resource.property_dependencies.get(prop)
    if deps:
        return target.urn in deps
    value = resource.props.get(prop)
    if value is None:
        return False
    if value in [target.props[k] for k in target_keys if k in target.props]:
        return True
    # An auto-named resource's physical name is its logical name plus a 7-character hex suffix.
    return re.fullmatch(rf"{re.escape(target.name)}-[0-9a-f]{{7}}", str(value)) is not None


def _for_bucket(resources: Sequence[Resource], bucket: Resource, types: Sequence[str]) -> list[Resource]:
    return [r for r in _of(resources, *types) if _refers_to(r, bucket, "bucket", ("bucket", "id"))]


def deployment_stages(resources: Sequence[Resource]) -> list[contracts.DeploymentStage]:
    """DEPLOYMENT_STAGES as the stack hands it to the deployer (CodeBuild env or GitHub variable)."""
    texts: list[Any] = []
    for project in _of(resources, CODEBUILD_TYPE):
        for var in _list((project.props.get("environment") or {}).get("environmentVariables")):
            if var.get("name") == contracts.ENV_DEPLOYMENT_STAGES:
                texts.append(var.get("value"))
    for var in _of(resources, GITHUB_VARIABLE_TYPE):
        if var.props.get("variableName") == contracts.ENV_DEPLOYMENT_STAGES:
            texts.append(var.props.get("value"))
    stages: dict[str, contracts.DeploymentStage] = {}
    for text in texts:
        for stage in contracts.parse_deployment_stages(str(text)):
            stages[stage.name] = stage
    return list(stages.values())


# --- Change management --------------------------------------------------------------------------
def _is_manual_approval(action: Mapping[str, Any]) -> bool:
    return action.get("category") == "Approval" and action.get("provider") == "Manual"


def _deploys(stage: Mapping[str, Any], name: str) -> bool:
    """Does this pipeline stage deploy deployment stage `name`? (action `Deploy-<name>`, or the stage
    name passed to the deploy project as an environment variable override)"""
    for action in _list(stage.get("actions")):
        if _is_manual_approval(action):
            continue
        if str(action.get("name", "")) == f"Deploy-{name}":
            return True
        overrides = (action.get("configuration") or {}).get("EnvironmentVariables")
        if overrides:
            try:
                values = [v.get("value") for v in json.loads(str(overrides)) if isinstance(v, Mapping)]
            except json.JSONDecodeError:
                continue
            if name in values:
                return True
    return False


def approval_gate_before_production(resources: Sequence[Resource], _options: Options) -> list[Violation]:
    gated = [s for s in deployment_stages(resources) if s.requires_approval]
    if not gated:
        return []
    violations: list[Violation] = []
    pipelines = _of(resources, PIPELINE_TYPE)
    for pipeline in pipelines:
        stages = _list(pipeline.props.get("stages"))
        for target in gated:
            deploy_at = next((i for i, s in enumerate(stages) if _deploys(s, target.name)), None)
            if deploy_at is None:
                violations.append(Violation(
                    f"pipeline {pipeline.name} has no deploy stage for '{target.name}', which requires approval; "
                    "add one after a manual approval stage", pipeline.urn))
                continue
            if not any(_is_manual_approval(a) for s in stages[:deploy_at] for a in _list(s.get("actions"))):
                violations.append(Violation(
                    f"pipeline {pipeline.name} deploys '{target.name}' (requires approval) without a manual approval "
                    "action before it; add an Approval/Manual action in an earlier stage", pipeline.urn))
    if not pipelines:
        environments = [e for e in _of(resources, GITHUB_ENVIRONMENT_TYPE)
                        if e.props.get("environment") == contracts.PRODUCTION_ENVIRONMENT]
        reviewed = [e for e in environments
                    if any(_list(r.get("users")) or _list(r.get("teams")) for r in _list(e.props.get("reviewers")))]
        if not reviewed:
            names = ", ".join(s.name for s in gated)
            violations.append(Violation(
                f"stages requiring approval ({names}) deploy from GitHub Actions, but the stack has no "
                f"'{contracts.PRODUCTION_ENVIRONMENT}' environment with required reviewers; "
                "set manageGithubSettings and productionReviewers"))
    return violations


def production_requires_approval(resources: Sequence[Resource], _options: Options) -> list[Violation]:
    return [
        Violation(f"deployment stage '{s.name}' does not require approval; set requiresApproval: true "
                  "(a human gate stands before every production deploy)")
        for s in deployment_stages(resources)
        if s.name == contracts.PRODUCTION_ENVIRONMENT and not s.requires_approval
    ]


# --- Access control -----------------------------------------------------------------------------
def _actions(statement: Mapping[str, Any]) -> list[str]:
    return [str(a) for a in _list(statement.get("Action"))]


def no_wildcard_actions(resource: Resource) -> list[str]:
    messages: list[str] = []
    for label, document in policy_documents(resource):
        if "__invalid__" in document:
            messages.append(f"{resource.name} {label} is not a JSON policy document")
            continue
        for statement in _statements(document):
            if statement.get("Effect") != "Allow":
                continue  # a Deny with s3:* (TLS-only) narrows access; only grants must be specific
            if "NotAction" in statement:
                messages.append(f"{resource.name} {label} allows NotAction {statement['NotAction']}: list the actions")
            wild = [a for a in _actions(statement) if a == "*" or a.endswith(":*")]
            if wild:
                messages.append(f"{resource.name} {label} statement {statement.get('Sid', '?')} allows wildcard "
                                f"actions {wild}: name each call the principal makes")
    return messages


def passrole_scoped(resource: Resource) -> list[str]:
    messages: list[str] = []
    for label, document in policy_documents(resource):
        for statement in _statements(document):
            actions = [a.lower() for a in _actions(statement)]
            if statement.get("Effect") != "Allow" or not any(a in ("iam:passrole", "iam:*", "*") for a in actions):
                continue
            resources = [str(r) for r in _list(statement.get("Resource"))]
            conditions = statement.get("Condition") or {}
            passed_to = [v for op in conditions.values() if isinstance(op, Mapping)
                         for k, v in op.items() if k.lower() == "iam:passedtoservice"]
            if not resources or any(r == "*" or r.endswith(":role/*") for r in resources):
                messages.append(f"{resource.name} {label} lets iam:PassRole pass any role {resources}; "
                                "name the SageMaker execution role's ARN")
            if not passed_to:
                messages.append(f"{resource.name} {label} allows iam:PassRole without an iam:PassedToService "
                                "condition; add StringEquals iam:PassedToService sagemaker.amazonaws.com")
    return messages


def _condition_values(statement: Mapping[str, Any], key: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for operator, block in (statement.get("Condition") or {}).items():
        if isinstance(block, Mapping):
            for k, v in block.items():
                if k.lower() == key.lower():
                    found.setdefault(operator, []).extend(str(x) for x in _list(v))
    return found


def oidc_trust_scoped(resource: Resource) -> list[str]:
    if resource.type != ROLE_TYPE:
        return []
    document = _document(resource.props.get("assumeRolePolicy"))
    if document is None:
        return []
    messages: list[str] = []
    for statement in _statements(document):
        principal = statement.get("Principal")
        federated = [str(p) for p in _list(principal.get("Federated"))] if isinstance(principal, Mapping) else []
        if statement.get("Effect") != "Allow" or not any(GITHUB_OIDC_HOST in p for p in federated):
            continue
        audiences = _condition_values(statement, f"{GITHUB_OIDC_HOST}:aud")
        if audiences.get("StringEquals") != [STS_AUDIENCE]:
            messages.append(f"{resource.name} trusts GitHub OIDC without StringEquals {GITHUB_OIDC_HOST}:aud = "
                            f"{STS_AUDIENCE}")
        subjects = _condition_values(statement, f"{GITHUB_OIDC_HOST}:sub")
        values = [v for vs in subjects.values() for v in vs]
        repos = {v.split(":")[1] if v.startswith("repo:") and v.count(":") >= 2 else "" for v in values}
        bad_operator = set(subjects) - {"StringEquals", "StringLike"}
        if not values or bad_operator or len(repos) != 1 or "" in repos or any("*" in r for r in repos):
            messages.append(f"{resource.name} trusts GitHub OIDC subjects {values or 'of any repository'}; "
                            "scope :sub to repo:<owner>/<repo>:... of exactly one repository")
    return messages


def no_long_lived_keys(resource: Resource) -> list[str]:
    if resource.type == ACCESS_KEY_TYPE:
        return [f"{resource.name} creates an IAM access key; use roles (OIDC for GitHub) instead"]
    return []


# --- Asset management ---------------------------------------------------------------------------
def one_model_package_group(resources: Sequence[Resource], _options: Options) -> list[Violation]:
    groups = _of(resources, GROUP_TYPE)
    if len(groups) == 1:
        return []
    return [Violation(f"the stack has {len(groups)} model package groups; it needs exactly one "
                      "(the inventory of its models)")]


def builds_register_into_the_group(resources: Sequence[Resource], _options: Options) -> list[Violation]:
    """The build that registers packages (CodeBuild train, or the GitHub workflow through its
    variables) targets the stack's group, and the train project runs the buildspec that attaches
    the metrics and the commit."""
    groups = {str(g.props.get("modelPackageGroupName")) for g in _of(resources, GROUP_TYPE)}
    violations: list[Violation] = []
    targets: list[tuple[str, str | None, Any]] = []
    for project in _of(resources, CODEBUILD_TYPE):
        env = {v.get("name"): v.get("value")
               for v in _list((project.props.get("environment") or {}).get("environmentVariables"))}
        if contracts.ENV_INFERENCE_IMAGE_URI not in env:
            continue  # only the train project registers (it needs the inference image)
        buildspec = (project.props.get("source") or {}).get("buildspec")
        if buildspec != contracts.TRAIN_BUILDSPEC:
            violations.append(Violation(f"CodeBuild project {project.name} registers models with buildspec "
                                        f"{buildspec!r}, not {contracts.TRAIN_BUILDSPEC} (which attaches metrics)",
                                        project.urn))
        targets.append((f"CodeBuild project {project.name}", project.urn,
                        env.get(contracts.ENV_MODEL_PACKAGE_GROUP_NAME)))
    for var in _of(resources, GITHUB_VARIABLE_TYPE):
        if var.props.get("variableName") == contracts.ENV_MODEL_PACKAGE_GROUP_NAME:
            targets.append((f"GitHub variable {var.name}", var.urn, var.props.get("value")))
    violations.extend(Violation(f"{what} registers into {group!r}, not the stack's group {sorted(groups)}", urn)
                      for what, urn, group in targets if str(group) not in groups)
    if _of(resources, PIPELINE_TYPE) and not targets:
        violations.append(Violation("the pipeline has no train project that registers models into the group"))
    return violations


def _register_steps(pipeline: Resource) -> list[Mapping[str, Any]] | None:
    """The RegisterModel steps of a SageMaker pipeline's definition, those behind a Condition's branches
    included; None if the definition is not readable JSON."""
    definition = _document(pipeline.props.get("pipelineDefinition"))
    if definition is None or "__invalid__" in definition:
        return None
    return [step for step in iter_steps(definition) if step.get("Type") == "RegisterModel"]


def pipeline_registers_into_the_group(resources: Sequence[Resource], _options: Options) -> list[Violation]:
    """The model-build pipeline registers only into the stack's group and only as PendingManualApproval
    (the approval gate decides, never the pipeline), and the build starts the stack's own pipeline."""
    groups = {str(g.props.get("modelPackageGroupName")) for g in _of(resources, GROUP_TYPE)}
    violations: list[Violation] = []
    pipelines = _of(resources, SAGEMAKER_PIPELINE_TYPE)
    for pipeline in pipelines:
        steps = _register_steps(pipeline)
        if steps is None:
            violations.append(Violation(f"SageMaker pipeline {pipeline.name} has no readable pipelineDefinition; "
                                        "pass the definition as JSON text", pipeline.urn))
            continue
        if not steps:
            violations.append(Violation(f"SageMaker pipeline {pipeline.name} has no RegisterModel step: its models "
                                        "would never reach the registry's inventory", pipeline.urn))
        for step in steps:
            arguments = step.get("Arguments") or {}
            group = arguments.get("ModelPackageGroupName")
            if str(group) not in groups:
                violations.append(Violation(
                    f"SageMaker pipeline {pipeline.name} step {step.get('Name')} registers into {group!r}, not the "
                    f"stack's group {sorted(groups)}", pipeline.urn))
            status = arguments.get("ModelApprovalStatus")
            if status != contracts.STATUS_PENDING:
                violations.append(Violation(
                    f"SageMaker pipeline {pipeline.name} step {step.get('Name')} registers with status {status!r}; "
                    f"register as {contracts.STATUS_PENDING} so the approval gate decides", pipeline.urn))
    names = {str(p.props.get("pipelineName")) for p in pipelines}
    started: list[tuple[str, str | None, Any]] = []
    for project in _of(resources, CODEBUILD_TYPE):
        for var in _list((project.props.get("environment") or {}).get("environmentVariables")):
            if var.get("name") == contracts.ENV_MODEL_BUILD_PIPELINE:
                started.append((f"CodeBuild project {project.name}", project.urn, var.get("value")))
    for var in _of(resources, GITHUB_VARIABLE_TYPE):
        if var.props.get("variableName") == contracts.ENV_MODEL_BUILD_PIPELINE:
            started.append((f"GitHub variable {var.name}", var.urn, var.props.get("value")))
    violations.extend(Violation(f"{what} starts SageMaker pipeline {name!r}, not one of the stack's {sorted(names)}",
                                urn)
                      for what, urn, name in started if str(name) not in names)
    return violations


# --- Secure configuration -----------------------------------------------------------------------
def _bucket_rule(kind: str, types: Sequence[str], ok: Callable[[Resource], bool], fix: str) -> StackCheck:
    def check(resources: Sequence[Resource], _options: Options) -> list[Violation]:
        violations: list[Violation] = []
        for bucket in _of(resources, *BUCKET_TYPES):
            attached = _for_bucket(resources, bucket, types)
            if not any(ok(r) for r in attached):
                violations.append(Violation(f"bucket {bucket.name} has no {kind}; {fix}", bucket.urn))
        return violations
    return check


def _encrypted(r: Resource) -> bool:
    return any((rule.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm") in ("AES256", "aws:kms",
                                                                                               "aws:kms:dsse")
               for rule in _list(r.props.get("rules")))


def _blocks_all(r: Resource) -> bool:
    return all(r.props.get(k) is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                                "restrictPublicBuckets"))


def _versioned(r: Resource) -> bool:
    return (r.props.get("versioningConfiguration") or {}).get("status") == "Enabled"


def _tls_only(r: Resource) -> bool:
    document = _document(r.props.get("policy")) or {}
    for statement in _statements(document):
        insecure = _condition_values(statement, "aws:SecureTransport").get("Bool", [])
        resources = [str(x) for x in _list(statement.get("Resource"))]
        if (statement.get("Effect") == "Deny" and statement.get("Principal") in ("*", {"AWS": "*"})
                and "false" in [v.lower() for v in insecure] and any(x.endswith("/*") for x in resources)
                and any(not x.endswith("/*") for x in resources)):
            return True
    return False


bucket_encrypted = _bucket_rule("default encryption", ENCRYPTION_TYPES, _encrypted,
                                "add a BucketServerSideEncryptionConfiguration (AES256 or aws:kms)")
bucket_public_access_blocked = _bucket_rule("public-access block with all four settings", (PUBLIC_ACCESS_TYPE,),
                                            _blocks_all, "add a BucketPublicAccessBlock with all four set to true")
bucket_versioned = _bucket_rule("versioning", VERSIONING_TYPES, _versioned,
                                "add a BucketVersioning with status Enabled")
bucket_tls_only = _bucket_rule("TLS-only bucket policy", (BUCKET_POLICY_TYPE,), _tls_only,
                               "add a Deny for aws:SecureTransport=false on the bucket and its objects")


def queue_encrypted(resource: Resource) -> list[str]:
    if resource.type != QUEUE_TYPE:
        return []
    if resource.props.get("sqsManagedSseEnabled") is True or resource.props.get("kmsMasterKeyId"):
        return []
    return [f"queue {resource.name} is not encrypted; set sqs_managed_sse_enabled=True or kms_master_key_id"]


def log_retention(resource: Resource) -> list[str]:
    if resource.type != LOG_GROUP_TYPE:
        return []
    days = resource.props.get("retentionInDays")
    if isinstance(days, int | float) and days > 0:
        return []
    return [f"log group {resource.name} keeps logs forever (no retentionInDays); set the stack's logRetentionDays"]


# --- Audit and accountability -------------------------------------------------------------------
def _logs_to_stack_group(resource: Resource, wanted: str | None, groups: Mapping[str, Resource], prop: str) -> bool:
    linked = [g for g in groups.values() if g.urn in resource.property_dependencies.get(prop, ())]
    return wanted in groups or bool(linked)


def log_groups(resources: Sequence[Resource], _options: Options) -> list[Violation]:
    """Every Lambda function and CodeBuild project logs to a log group the stack creates (so it has
    retention and is deleted with the stack); otherwise the service creates one that keeps logs forever."""
    groups = {str(g.props.get("name")): g for g in _of(resources, LOG_GROUP_TYPE)}
    violations: list[Violation] = []
    for function in _of(resources, FUNCTION_TYPE):
        configured = (function.props.get("loggingConfig") or {}).get("logGroup")
        name = function.props.get("name")
        wanted = str(configured) if configured else f"/aws/lambda/{name}" if name else None
        if not _logs_to_stack_group(function, wanted, groups, "loggingConfig"):
            violations.append(Violation(f"Lambda {function.name} logs to {wanted or 'an unnamed log group'}, which "
                                        "the stack does not create; add a LogGroup with retention", function.urn))
    for project in _of(resources, CODEBUILD_TYPE):
        cloudwatch = (project.props.get("logsConfig") or {}).get("cloudwatchLogs") or {}
        if cloudwatch.get("status") == "DISABLED":
            violations.append(Violation(f"CodeBuild project {project.name} has CloudWatch logs disabled: its builds "
                                        "would leave no record; enable logsConfig.cloudwatchLogs", project.urn))
            continue
        name = project.props.get("name")
        configured = cloudwatch.get("groupName")
        wanted = str(configured) if configured else f"/aws/codebuild/{name}" if name else None
        if not _logs_to_stack_group(project, wanted, groups, "logsConfig"):
            violations.append(Violation(f"CodeBuild project {project.name} logs to {wanted or 'an unnamed log group'}, "
                                        "which the stack does not create; add a LogGroup with retention", project.urn))
    return violations


def pipeline_execution_history(resources: Sequence[Resource], _options: Options) -> list[Violation]:
    """Every release runs through a recorder: a V2 CodePipeline, or GitHub Actions (the Approved
    rule that dispatches the workflow, whose runs GitHub records)."""
    pipelines = _of(resources, PIPELINE_TYPE)
    violations = [Violation(f"pipeline {p.name} is type {p.props.get('pipelineType', 'V1')!r}; use V2 (execution "
                            "history with trigger and source revision)", p.urn)
                  for p in pipelines if p.props.get("pipelineType") != "V2"]
    if pipelines:
        return violations
    dispatch = [r for r in _of(resources, EVENT_RULE_TYPE)
                if contracts.STATUS_APPROVED in str(r.props.get("eventPattern", ""))]
    if not dispatch:
        violations.append(Violation("the stack has neither a CodePipeline nor the Approved rule that dispatches the "
                                    "GitHub deploy workflow: releases would leave no execution history"))
    return violations


def audit_trail(resources: Sequence[Resource], options: Options) -> list[Violation]:
    wanted = options.require_audit_trail or bool(_of(resources, AUDIT_COMPONENT_TYPE))
    if not wanted:
        return []
    trails = _of(resources, TRAIL_TYPE)
    if not trails:
        return [Violation("the stack enables auditTrail but has no CloudTrail trail")]
    violations: list[Violation] = []
    buckets = _of(resources, *BUCKET_TYPES)
    for trail in trails:
        if trail.props.get("enableLogFileValidation") is not True:
            violations.append(Violation(f"trail {trail.name} has no log file validation", trail.urn))
        if trail.props.get("enableLogging") is False:
            violations.append(Violation(f"trail {trail.name} has logging stopped", trail.urn))
        if not any(_refers_to(trail, b, "s3BucketName", ("bucket", "id")) for b in buckets):
            violations.append(Violation(f"trail {trail.name} delivers to a bucket outside the stack (its encryption, "
                                        "access and retention are not checked)", trail.urn))
    return violations


# --- The pack -----------------------------------------------------------------------------------
CHANGE, ACCESS, ASSETS, CONFIG, AUDIT = (
    "change management", "access control", "asset management", "secure configuration", "audit and accountability")

RULES: tuple[Rule, ...] = (
    Rule("approval-gate-before-production", CHANGE,
         "Every stage that requires approval is deployed only after a human gate (pipeline manual approval "
         "action, or the GitHub production environment's reviewers).", stack_check=approval_gate_before_production),
    Rule("production-requires-approval", CHANGE,
         "The production deployment stage is marked requiresApproval.", stack_check=production_requires_approval),
    Rule("no-wildcard-actions", ACCESS, "IAM grants name their actions: no '*' or 'service:*', no NotAction.",
         check=no_wildcard_actions),
    Rule("passrole-scoped", ACCESS, "iam:PassRole names the role and carries iam:PassedToService.",
         check=passrole_scoped),
    Rule("oidc-trust-scoped", ACCESS,
         "GitHub OIDC trust: audience sts.amazonaws.com and subjects of exactly one repository.",
         check=oidc_trust_scoped),
    Rule("no-long-lived-keys", ACCESS, "No IAM access keys.", check=no_long_lived_keys),
    Rule("one-model-package-group", ASSETS, "Exactly one model package group per stack.",
         stack_check=one_model_package_group),
    Rule("builds-register-into-the-group", ASSETS,
         "The build that registers packages (with metrics) targets the stack's group.",
         stack_check=builds_register_into_the_group),
    Rule("pipeline-registers-into-the-group", ASSETS,
         "The model-build pipeline registers into the stack's group as PendingManualApproval, and the build "
         "starts the stack's own pipeline.", stack_check=pipeline_registers_into_the_group),
    Rule("bucket-encrypted", CONFIG, "Every bucket has default encryption.", stack_check=bucket_encrypted),
    Rule("bucket-public-access-blocked", CONFIG, "Every bucket blocks public access (all four settings).",
         stack_check=bucket_public_access_blocked),
    Rule("bucket-tls-only", CONFIG, "Every bucket policy denies non-TLS requests.", stack_check=bucket_tls_only),
    Rule("bucket-versioned", CONFIG, "Every bucket is versioned.", stack_check=bucket_versioned),
    Rule("queue-encrypted", CONFIG, "Every SQS queue is encrypted.", check=queue_encrypted),
    Rule("log-retention", CONFIG, "Every log group has a retention period.", check=log_retention),
    Rule("log-groups", AUDIT, "Every Lambda function and CodeBuild project logs to a log group the stack creates.",
         stack_check=log_groups),
    Rule("pipeline-execution-history", AUDIT,
         "Releases run through a V2 CodePipeline or the GitHub workflow dispatch.",
         stack_check=pipeline_execution_history),
    Rule("audit-trail", AUDIT, "With auditTrail on: a CloudTrail trail with log file validation, into a stack bucket.",
         stack_check=audit_trail),
)


def evaluate(resources: Sequence[Resource], options: Options | None = None) -> dict[str, list[Violation]]:
    """All rules over one graph: rule name -> violations (empty lists for passing rules)."""
    return {rule.name: rule.run(resources, options) for rule in RULES}
