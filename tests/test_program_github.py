"""GitHubIntegration under Pulumi's mock engine: what it registers, what stays secret, what it refuses.

The component is constructed inside a mocked program (pulumi.runtime.set_mocks with a recording
monitor), so the assertions read the exact wire form the engine would receive, secret markers
included. Tests through the real __main__ (tests/program_harness.py) are at the end of the file.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_github as github
import pytest
from google.protobuf import json_format
from program_harness import ACCOUNT_ID, TEST_SECRETS, ProgramGraph, Resource, run_program
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.rpc import (
    _special_archive_sig,
    _special_asset_sig,
    _special_secret_sig,
    _special_sig_key,
)

import contracts
from components import event_function
from components import github as gh
from components.naming import Arns, StackNames

ROOT = Path(__file__).resolve().parent.parent
STACK = "prod"
OWNER = "acme"
REPOSITORY = f"{OWNER}/churn-model"
GROUP = "churn-models-prod"
TOKEN = "ghp_TESTTOKENthatMustNeverAppearInPlainText0001"
ROLE_ARN = "arn:aws:iam::123456789012:role/sagemaker-mlops-prod-github-trigger"
ACCOUNT = "123456789012"
REGION = "us-east-1"
NAMES = StackNames(project=contracts.PROJECT, stack=STACK, group=GROUP)
ARNS = Arns(partition="aws", region=REGION, account=ACCOUNT)
# getUser answers of the mock GitHub API: login -> numeric user id.
USER_IDS = {"alice": 1001, "bob-smith": 2002}
VARIABLES = {name: f"value-of-{name.lower()}" for name in contracts.GITHUB_VARIABLES}
SECRET_VALUES = {
    "AWS_PREVIEW_ROLE_ARN": "arn:aws:iam::123456789012:role/preview-SECRETVALUE-A",
    "AWS_DEPLOY_ROLE_ARN": "arn:aws:iam::123456789012:role/deploy-SECRETVALUE-B",
    "PULUMI_ACCESS_TOKEN": "pul-SECRETVALUE-C",
}


# --- A recording mock engine -------------------------------------------------------------------
@dataclass
class Registered:
    type: str
    name: str
    urn: str
    parent: str
    dependencies: list[str]
    raw: dict[str, Any]  # wire form: secrets still wrapped in their signature objects

    @property
    def inputs(self) -> dict[str, Any]:
        return _unwrap(self.raw)


@dataclass
class Graph:
    resources: list[Registered] = field(default_factory=list)
    invokes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # component urn -> raw outputs
    logs: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Registered:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {[r.name for r in found]}"
        return found[0]


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(_special_sig_key) == _special_secret_sig


def _unwrap(value: Any) -> Any:
    if _is_secret(value):
        return _unwrap(value["value"])
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def _plain_occurrences(value: Any, needle: str, path: str = "") -> list[str]:
    """Paths where needle occurs outside any secret-wrapped subtree."""
    if _is_secret(value):
        return []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _plain_occurrences(v, needle, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _plain_occurrences(v, needle, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and needle in value else []


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi_mocks.Mocks, graph: Graph) -> None:
        super().__init__(mocks)
        self.graph = graph

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.graph.resources.append(
                Registered(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    raw=json_format.MessageToDict(request.object),
                )
            )
        return response

    def RegisterResourceOutputs(self, request):
        self.graph.outputs[request.urn] = json_format.MessageToDict(request.outputs)
        return super().RegisterResourceOutputs(request)

    def Invoke(self, request):
        self.graph.invokes.append((request.tok, rpc.deserialize_properties(request.args)))
        return super().Invoke(request)


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        service = args.typ.split(":")[1].split("/")[0] if ":" in args.typ else "x"
        state.setdefault("arn", f"arn:aws:{service}:{REGION}:{ACCOUNT}:{args.name}")
        if args.typ == "aws:sqs/queue:Queue":
            state["url"] = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{args.inputs['name']}"
            state["arn"] = ARNS.queue(args.inputs["name"])
        if args.typ == "aws:secretsmanager/secret:Secret":
            state["arn"] = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{args.inputs['name']}-AbCdEf"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == "github:index/getUser:getUser":
            login = args.args["username"]
            return {"id": str(USER_IDS[login]), "login": login}, []
        raise NotImplementedError(f"unexpected invoke {args.token}")


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


def base_args(**overrides: Any) -> gh.GitHubIntegrationArgs:
    args: dict[str, Any] = {
        "repository": REPOSITORY,
        "names": NAMES,
        "token": pulumi.Output.secret(TOKEN),
        "variables": dict(VARIABLES),
        "secrets": dict(SECRET_VALUES),
        "production_reviewers": list(USER_IDS),
        "deploy_branch": "main",
        "manage_repository_settings": True,
        "trigger": {"role_arn": ROLE_ARN, "group_name": GROUP, "deploy_ref": "main", "log_retention_days": 90},
    }
    args.update(overrides)
    return args  # type: ignore[return-value] - built from a dict so tests can override keys


def build(
    args: gh.GitHubIntegrationArgs,
    name: str = "github",
    graph: Graph | None = None,
    extra: Callable[[], object] | None = None,
) -> Graph:
    """Run a mocked program holding one GitHubIntegration; record into graph (a fresh one by default)."""
    graph = Graph() if graph is None else graph
    mocks = Mocks()
    logger = logging.getLogger(f"test-program-github-{id(graph)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(_ListHandler(graph.logs))
    pulumi.runtime.set_mocks(
        mocks, project=contracts.PROJECT, stack=STACK, preview=False,
        logger=logger, monitor=RecordingMonitor(mocks, graph),
    )

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        provider = github.Provider("github-provider", owner=OWNER)
        component = gh.GitHubIntegration(name, args, opts=pulumi.ResourceOptions(providers={"github": provider}))
        graph.result["component"] = component
        if extra is not None:
            extra()
        return pulumi.Output.all(
            component.secret_arn,
            component.trigger_function_name,
            component.dead_letter_queue_url,
        ).apply(lambda values: graph.result.update(secret_arn=values[0], function_name=values[1], dlq_url=values[2]))

    program()
    return graph


@pytest.fixture(scope="module")
def full() -> Graph:
    return build(base_args())


@pytest.fixture(scope="module")
def unmanaged() -> Graph:
    return build(base_args(manage_repository_settings=False, production_reviewers=[], trigger=None))


@pytest.fixture(scope="module")
def without_trigger() -> Graph:
    args = base_args()
    del args["trigger"]
    return build(args)


def _component_urn(graph: Graph) -> str:
    return graph.one(gh.COMPONENT_TOKEN).urn


# --- Repository settings ---------------------------------------------------------------------
def test_creates_exactly_the_given_contract_variables_with_their_values(full: Graph) -> None:
    created = {r.inputs["variableName"]: r.inputs for r in full.of_type("github:index/actionsVariable:ActionsVariable")}
    assert set(created) == set(contracts.GITHUB_VARIABLES)
    assert {k: v["value"] for k, v in created.items()} == VARIABLES
    # The provider carries the owner; resources address the repository by name.
    assert {v["repository"] for v in created.values()} == {"churn-model"}


def test_creates_exactly_the_available_contract_secrets(full: Graph) -> None:
    created = {r.inputs["secretName"]: r.inputs for r in full.of_type("github:index/actionsSecret:ActionsSecret")}
    assert set(created) == set(SECRET_VALUES)  # AWS_INFRA_ROLE_ARN was not given, so not created
    assert {k: v["value"] for k, v in created.items()} == SECRET_VALUES


def test_actions_secret_values_are_secret_on_the_wire(full: Graph) -> None:
    secrets = full.of_type("github:index/actionsSecret:ActionsSecret")
    assert secrets
    for resource in secrets:
        assert _is_secret(resource.raw["value"]), f"{resource.urn}: value is not marked secret"


def test_component_outputs_list_the_created_variable_and_secret_names(full: Graph) -> None:
    component = full.result["component"]
    assert component.variable_names == sorted(contracts.GITHUB_VARIABLES)
    assert component.secret_names == sorted(SECRET_VALUES)
    outputs = full.outputs[_component_urn(full)]
    assert outputs["variable_names"] == sorted(contracts.GITHUB_VARIABLES)
    assert outputs["secret_names"] == sorted(SECRET_VALUES)
    assert outputs["environment_name"] == contracts.PRODUCTION_ENVIRONMENT


def test_production_environment_requires_the_reviewers_by_user_id(full: Graph) -> None:
    env = full.one("github:index/repositoryEnvironment:RepositoryEnvironment").inputs
    assert env["environment"] == contracts.PRODUCTION_ENVIRONMENT
    assert env["repository"] == "churn-model"
    assert env["reviewers"] == [{"users": list(USER_IDS.values())}]
    asked = [args["username"] for tok, args in full.invokes if tok == "github:index/getUser:getUser"]
    assert asked == list(USER_IDS)


def test_production_environment_cannot_be_self_approved_or_bypassed_by_admins(full: Graph) -> None:
    env = full.one("github:index/repositoryEnvironment:RepositoryEnvironment").inputs
    assert env["preventSelfReview"] is True
    assert env["canAdminsBypass"] is False


def test_production_environment_deploys_only_from_the_deploy_branch(full: Graph) -> None:
    # "Protected branches only" would admit every branch of a repository without branch protection rules.
    environment = full.one("github:index/repositoryEnvironment:RepositoryEnvironment")
    assert environment.inputs["deploymentBranchPolicy"] == {"protectedBranches": False, "customBranchPolicies": True}
    policy = full.one("github:index/repositoryEnvironmentDeploymentPolicy:RepositoryEnvironmentDeploymentPolicy")
    assert policy.inputs == {"repository": "churn-model", "environment": contracts.PRODUCTION_ENVIRONMENT,
                             "branchPattern": "main"}
    # Created after the environment it restricts.
    assert environment.urn in policy.dependencies


def test_nothing_repository_level_when_settings_are_not_managed(unmanaged: Graph) -> None:
    github_resources = [r.type for r in unmanaged.resources if r.type.startswith("github:index/")]
    assert github_resources == []
    assert not [tok for tok, _ in unmanaged.invokes if tok.startswith("github:")]
    assert unmanaged.result["component"].variable_names == []
    assert "environment_name" not in unmanaged.outputs[_component_urn(unmanaged)]
    # The token secret does not depend on repository settings.
    assert unmanaged.one("aws:secretsmanager/secret:Secret")


# --- The GitHub token ------------------------------------------------------------------------
def test_token_is_stored_as_secret_json_under_the_deterministic_name(full: Graph) -> None:
    secret = full.one("aws:secretsmanager/secret:Secret").inputs
    assert secret["name"] == f"{contracts.PROJECT}/{STACK}/github-token"
    version = full.one("aws:secretsmanager/secretVersion:SecretVersion")
    assert _is_secret(version.raw["secretString"])
    assert json.loads(version.inputs["secretString"]) == {"token": TOKEN}


@pytest.mark.parametrize("needle", [TOKEN, *SECRET_VALUES.values()], ids=["token", *SECRET_VALUES])
def test_secret_values_never_appear_in_plain_inputs_outputs_or_logs(full: Graph, needle: str) -> None:
    leaks = [f"{r.urn}{p}" for r in full.resources for p in _plain_occurrences(r.raw, needle)]
    leaks += [f"{urn}{p}" for urn, out in full.outputs.items() for p in _plain_occurrences(out, needle)]
    leaks += [f"log: {m[:40]}" for m in full.logs if needle in m]
    assert leaks == []


def test_token_secret_recovery_window_follows_the_argument(full: Graph) -> None:
    assert full.one("aws:secretsmanager/secret:Secret").inputs["recoveryWindowInDays"] == 7
    forced = build(base_args(secret_recovery_window_days=0, manage_repository_settings=False, trigger=None))
    assert forced.one("aws:secretsmanager/secret:Secret").inputs["recoveryWindowInDays"] == 0


def test_blank_token_fails_naming_the_config_key() -> None:
    with pytest.raises(ValueError, match="pulumi config set --secret githubToken"):
        build(base_args(token=pulumi.Output.secret("   "), manage_repository_settings=False, trigger=None))


# --- The trigger -----------------------------------------------------------------------------
def test_trigger_rule_pattern_is_the_contract_pattern(full: Graph) -> None:
    rule = full.one("aws:cloudwatch/eventRule:EventRule").inputs
    assert json.loads(rule["eventPattern"]) == contracts.github_trigger_pattern(GROUP)
    assert rule["state"] == "ENABLED"


def test_trigger_target_retries_then_dead_letters_into_the_queue(full: Graph) -> None:
    target = full.one("aws:cloudwatch/eventTarget:EventTarget").inputs
    assert target["deadLetterConfig"] == {"arn": ARNS.queue(NAMES.github_trigger_dlq)}
    assert target["retryPolicy"] == {"maximumEventAgeInSeconds": 3600, "maximumRetryAttempts": 8}
    assert target["arn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:github-trigger-function"
    assert target["rule"] == NAMES.github_trigger_rule


def test_dead_letter_queue_is_encrypted(full: Graph) -> None:
    queue = full.one("aws:sqs/queue:Queue").inputs
    assert queue["sqsManagedSseEnabled"] is True


def test_dead_letter_queue_accepts_only_the_approved_rule(full: Graph) -> None:
    policy_res = full.one("aws:sqs/queuePolicy:QueuePolicy").inputs
    assert policy_res["queueUrl"] == f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{NAMES.github_trigger_dlq}"
    rule_arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:github-trigger-rule"  # the mock's ARN for the rule
    [statement] = json.loads(policy_res["policy"])["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == ARNS.queue(NAMES.github_trigger_dlq)
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": rule_arn}}


def test_invoke_permission_is_scoped_to_the_rule_arn(full: Graph) -> None:
    permission = full.one("aws:lambda/permission:Permission").inputs
    assert permission["action"] == "lambda:InvokeFunction"
    assert permission["principal"] == "events.amazonaws.com"
    assert permission["sourceArn"] == f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:github-trigger-rule"
    assert permission["function"] == NAMES.github_trigger_function


def test_trigger_function_environment_is_exactly_the_contract(full: Graph) -> None:
    variables = full.one("aws:lambda/function:Function").inputs["environment"]["variables"]
    assert set(variables) == set(contracts.GITHUB_TRIGGER_ENV)
    assert variables == {
        contracts.ENV_MODEL_PACKAGE_GROUP_NAME: GROUP,
        contracts.ENV_DEPLOY_REPOSITORY: REPOSITORY,
        contracts.ENV_DEPLOY_WORKFLOW: contracts.DEPLOY_WORKFLOW_FILE,
        contracts.ENV_DEPLOY_REF: "main",
        contracts.ENV_GITHUB_TOKEN_SECRET_ID: full.result["secret_arn"],
        contracts.ENV_GITHUB_API_URL: contracts.DEFAULT_GITHUB_API_URL,
    }


def test_trigger_archive_carries_the_handler_and_contracts_at_its_root(full: Graph) -> None:
    function = full.one("aws:lambda/function:Function").raw
    code = function["code"]
    assert code[_special_sig_key] == _special_archive_sig
    assets = code["assets"]
    assert set(assets) == {"github_trigger.py", "contracts.py"}
    assert all(a[_special_sig_key] == _special_asset_sig for a in assets.values())
    assert Path(assets["github_trigger.py"]["path"]) == ROOT / contracts.GITHUB_TRIGGER_HANDLER
    assert Path(assets["contracts.py"]["path"]) == ROOT / "contracts.py"
    assert all(Path(a["path"]).is_file() for a in assets.values())
    assert function["handler"] == "github_trigger.handler"
    assert function["runtime"] == "python3.12"


def test_trigger_function_logs_to_its_own_retained_log_group(full: Graph) -> None:
    log_group = full.one("aws:cloudwatch/logGroup:LogGroup")
    assert log_group.inputs["name"] == f"/aws/lambda/{NAMES.github_trigger_function}"
    assert log_group.inputs["retentionInDays"] == 90
    function = full.one("aws:lambda/function:Function")
    assert function.inputs["loggingConfig"]["logGroup"] == log_group.inputs["name"]
    assert log_group.urn in function.dependencies


def test_trigger_function_failures_land_in_the_dead_letter_queue(full: Graph) -> None:
    function = full.one("aws:lambda/function:Function").inputs
    assert function["deadLetterConfig"] == {"targetArn": ARNS.queue(NAMES.github_trigger_dlq)}


def test_trigger_resources_use_the_names_roles_scopes_to(full: Graph) -> None:
    assert full.one("aws:lambda/function:Function").inputs["name"] == NAMES.github_trigger_function
    assert full.one("aws:sqs/queue:Queue").inputs["name"] == NAMES.github_trigger_dlq
    assert full.result["function_name"] == NAMES.github_trigger_function
    assert full.result["dlq_url"].endswith(f"/{NAMES.github_trigger_dlq}")


def test_no_trigger_resources_without_trigger_args(without_trigger: Graph) -> None:
    aws_types = sorted(r.type for r in without_trigger.resources if r.type.startswith("aws:"))
    assert aws_types == ["aws:secretsmanager/secret:Secret", "aws:secretsmanager/secretVersion:SecretVersion"]
    assert "trigger_function_name" not in without_trigger.outputs[_component_urn(without_trigger)]


def test_every_child_is_parented_to_the_component_or_its_trigger(full: Graph) -> None:
    component = _component_urn(full)
    trigger = full.one(event_function.COMPONENT_TOKEN)
    assert trigger.parent == component
    children = [r for r in full.resources if r.type not in (gh.COMPONENT_TOKEN, "pulumi:providers:github")]
    assert {r.type for r in children if r.parent == trigger.urn} >= {
        "aws:lambda/function:Function", "aws:cloudwatch/eventRule:EventRule", "aws:sqs/queue:Queue"}
    assert [r.urn for r in children if r.parent not in (component, trigger.urn)] == []


# --- Deprecations ----------------------------------------------------------------------------
def _deprecated_names(type_token: str) -> set[str]:
    """Names the installed SDK marks deprecated for a resource type (the type itself or its inputs).

    Constructing a resource with keyword arguments does not log deprecated *properties* (only the
    Args classes do), so the SDK source is the reliable list.
    """
    package, module_and_type = type_token.split(":", 1)
    module, type_name = module_and_type.split(":")[0].split("/")
    sdk = Path(pulumi.__file__).parent.parent / f"pulumi_{package}"
    directory = sdk if module == "index" else sdk / (f"{module}_" if module == "lambda" else module)
    source = (directory / f"{re.sub(r'(?<!^)(?=[A-Z])', '_', type_name).lower()}.py").read_text()
    return set(re.findall(r'pulumi\.log\.warn\("""(\w+) is deprecated:', source))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_engine_receives_no_deprecation_warnings(full: Graph) -> None:
    assert [m for m in full.logs if "is deprecated" in m] == []


def test_no_deprecated_resource_types_or_properties_are_used(full: Graph) -> None:
    used = []
    for resource in full.resources:
        if resource.type.startswith((f"{contracts.PROJECT}:", "pulumi:providers:")):  # our components, providers
            continue
        deprecated = _deprecated_names(resource.type)
        class_name = resource.type.rsplit(":", 1)[1]
        used += [f"{resource.urn}: type" for _ in [0] if class_name in deprecated]
        used += [f"{resource.urn}: {key}" for key in resource.raw if _snake(key) in deprecated]
    assert used == []


def test_deprecation_log_capture_sees_what_the_sdk_logs() -> None:
    # Guards test_engine_receives_no_deprecation_warnings against a capture that records nothing.
    graph = build(
        base_args(manage_repository_settings=False, trigger=None),
        extra=lambda: aws.s3.BucketV2("deprecated-on-purpose"),
    )
    assert any("BucketV2 is deprecated" in m for m in graph.logs)


def test_deprecation_scan_detects_a_deprecated_property() -> None:
    # Guards the scan above against silently finding nothing.
    assert "plaintext_value" in _deprecated_names("github:index/actionsSecret:ActionsSecret")
    assert "is_enabled" in _deprecated_names("aws:cloudwatch/eventRule:EventRule")


# --- Bad input -------------------------------------------------------------------------------
BAD_INPUTS = {
    "repository-without-owner": ({"repository": "churn-model"}, "not 'owner/name'"),
    "unknown-variable": ({"variables": {"AWS_REGION": "x", "MY_VAR": "y"}}, r"\['MY_VAR'\].*GITHUB_VARIABLES"),
    "unknown-secret": ({"secrets": {"AWS_SECRET_ACCESS_KEY": "y"}}, "GITHUB_SECRETS"),
    "no-reviewers": ({"production_reviewers": []}, "at least one reviewer.*productionReviewers"),
    "seven-reviewers": ({"production_reviewers": [f"user{i}" for i in range(7)]}, "at most 6"),
    "email-as-reviewer": ({"production_reviewers": ["alice@example.com"]}, "not GitHub usernames"),
    "duplicate-reviewers": ({"production_reviewers": ["alice", "alice"]}, "duplicates"),
    "wildcard-deploy-branch": ({"deploy_branch": "release/*"}, "must be one branch name.*githubBranch"),
    "recovery-window-3": ({"secret_recovery_window_days": 3}, "0 .*or 7..30"),
    "log-retention-10": (
        {"trigger": {"role_arn": ROLE_ARN, "group_name": GROUP, "log_retention_days": 10}},
        "not a CloudWatch Logs retention value",
    ),
    "workflow-path": (
        {"trigger": {"role_arn": ROLE_ARN, "group_name": GROUP, "deploy_workflow": ".github/workflows/x.yml"}},
        "workflow file name",
    ),
    "plain-http-api-url": (
        {"trigger": {"role_arn": ROLE_ARN, "group_name": GROUP, "github_api_url": "http://ghe.example.com/api/v3"}},
        "must start with https://",
    ),
    "event-age-too-short": (
        {"trigger": {"role_arn": ROLE_ARN, "group_name": GROUP, "maximum_event_age_seconds": 10}},
        "60..86400",
    ),
}


@pytest.mark.parametrize(("overrides", "message"), list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_fails_clearly_and_registers_nothing(overrides: dict[str, Any], message: str) -> None:
    graph = Graph()
    with pytest.raises(ValueError, match=message):
        build(base_args(**overrides), graph=graph)
    # The provider is the test's own; the component validates before registering anything.
    assert [r.type for r in graph.resources if r.type != "pulumi:providers:github"] == []


# --- Policy helpers for Roles ----------------------------------------------------------------
def test_trigger_function_policy_grants_only_the_handlers_calls_on_named_resources() -> None:
    function_name = NAMES.github_trigger_function
    secret = ARNS.secret(NAMES.github_token_secret)
    logs = ARNS.log_group(f"/aws/lambda/{function_name}")
    queue = ARNS.queue(NAMES.github_trigger_dlq)
    policy = gh.trigger_function_policy(token_secret_arn=secret, log_group_arn=logs, dead_letter_queue_arn=queue)
    granted = {(a, r) for s in policy["Statement"] for a in s["Action"] for r in s["Resource"]}
    assert granted == {
        ("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:"
                                          f"sagemaker-mlops/{STACK}/github-token-??????"),
        ("logs:CreateLogStream", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{function_name}:*"),
        ("logs:PutLogEvents", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{function_name}:*"),
        ("sqs:SendMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT}:{NAMES.github_trigger_dlq}"),
    }
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])


def test_secret_arn_pattern_matches_real_secret_arns() -> None:
    # Secrets Manager appends six random characters; the pattern must match those and no longer names.
    pattern = ARNS.secret("sagemaker-mlops/prod/github-token")
    regex = re.compile("^" + re.escape(pattern).replace(r"\?", ".") + "$")
    assert regex.match(f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:sagemaker-mlops/prod/github-token-AbC123")
    assert not regex.match(
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:sagemaker-mlops/prod/github-token-extra-AbC123"
    )



# --- Through the real program (tests/program_harness.py) -------------------------------------
@pytest.fixture(scope="module")
def prod_program() -> ProgramGraph:
    return run_program("prod")


@pytest.fixture(scope="module")
def dev_program() -> ProgramGraph:
    return run_program("dev")


def _trigger_function(graph: ProgramGraph) -> Resource:
    functions = graph.of_type("aws:lambda/function:Function")
    [function] = [r for r in functions if r.parent and gh.COMPONENT_TOKEN in r.parent]
    return function


def _occurrences(value: Any, needle: str, path: str = "") -> list[str]:
    """Input paths (in the harness's path notation) whose string value contains needle."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _occurrences(v, needle, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _occurrences(v, needle, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and needle in value else []


def test_program_repository_settings_go_through_the_github_provider_of_the_configured_owner(
    prod_program: ProgramGraph,
) -> None:
    [provider] = [p for p in prod_program.providers() if p.type == "pulumi:providers:github"]
    assert provider.inputs["owner"] == prod_program.config[f"{contracts.PROJECT}:githubRepository"].split("/")[0]
    repo_level = [r for r in prod_program.resources if r.type.startswith("github:index/")]
    assert repo_level
    assert [r.urn for r in repo_level if r.provider != provider.urn] == []


def test_program_creates_every_contract_variable_and_only_contract_secrets(prod_program: ProgramGraph) -> None:
    variables = {r.inputs["variableName"] for r in prod_program.of_type("github:index/actionsVariable:ActionsVariable")}
    secrets = {r.inputs["secretName"] for r in prod_program.of_type("github:index/actionsSecret:ActionsSecret")}
    assert variables == set(contracts.GITHUB_VARIABLES)
    assert secrets <= set(contracts.GITHUB_SECRETS)
    assert {"AWS_PREVIEW_ROLE_ARN", "AWS_DEPLOY_ROLE_ARN"} <= secrets


def test_program_trigger_listens_for_the_stacks_group_and_runs_as_the_trigger_role(
    prod_program: ProgramGraph,
) -> None:
    group = prod_program.one("aws:sagemaker/modelPackageGroup:ModelPackageGroup").inputs["modelPackageGroupName"]
    rule = prod_program.one("aws:cloudwatch/eventRule:EventRule", "github-trigger-rule")
    assert json.loads(rule.inputs["eventPattern"]) == contracts.github_trigger_pattern(group)
    role_name = f"{contracts.PROJECT}-prod-github-trigger"
    [role] = [r for r in prod_program.of_type("aws:iam/role:Role") if r.inputs.get("name") == role_name]
    assert _trigger_function(prod_program).inputs["role"] == f"arn:aws:iam::{ACCOUNT_ID}:role/{role_name}"
    assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {
        "Service": "lambda.amazonaws.com"
    }


def test_program_trigger_role_may_read_the_token_log_and_dead_letter_on_exactly_these_resources(
    prod_program: ProgramGraph,
) -> None:
    # Lambda refuses to create a function whose role cannot send to its DLQ: check the wiring here,
    # since no mock engine would.
    function = _trigger_function(prod_program)
    role_name = function.inputs["role"].rsplit("/", 1)[1]
    [role] = [r for r in prod_program.of_type("aws:iam/role:Role") if r.inputs.get("name") == role_name]
    policies = [
        p for p in prod_program.resources
        if p.type in ("aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        and role.urn in p.dependencies
    ]
    # Inline policies only: a managed-policy attachment would grant what this test cannot see.
    assert {p.type for p in policies} == {"aws:iam/rolePolicy:RolePolicy"}
    statements = [s for p in policies for s in json.loads(p.inputs["policy"])["Statement"]]
    granted = {(a, r) for s in statements if s["Effect"] == "Allow" for a in s["Action"] for r in s["Resource"]}
    secret_name = prod_program.one("aws:secretsmanager/secret:Secret", "github-token").inputs["name"]
    log_group = prod_program.one("aws:cloudwatch/logGroup:LogGroup", "github-trigger-logs").inputs["name"]
    queue = prod_program.one("aws:sqs/queue:Queue", "github-trigger-dlq").inputs["name"]
    prefix = f"arn:aws:{{}}:{REGION}:{ACCOUNT_ID}:"
    assert function.inputs["deadLetterConfig"]["targetArn"] == prefix.format("sqs") + queue
    assert granted == {
        ("secretsmanager:GetSecretValue", prefix.format("secretsmanager") + f"secret:{secret_name}-??????"),
        ("logs:CreateLogStream", prefix.format("logs") + f"log-group:{log_group}:*"),
        ("logs:PutLogEvents", prefix.format("logs") + f"log-group:{log_group}:*"),
        ("sqs:SendMessage", prefix.format("sqs") + queue),
    }


def test_program_trigger_environment_is_exactly_the_contract(prod_program: ProgramGraph) -> None:
    variables = _trigger_function(prod_program).inputs["environment"]["variables"]
    assert set(variables) == set(contracts.GITHUB_TRIGGER_ENV)
    secret_arn = prod_program.outputs["githubTokenSecretArn"]
    assert variables[contracts.ENV_GITHUB_TOKEN_SECRET_ID] == secret_arn
    assert variables[contracts.ENV_DEPLOY_REPOSITORY] == prod_program.config[f"{contracts.PROJECT}:githubRepository"]


def test_program_production_environment_gates_on_the_configured_reviewers(prod_program: ProgramGraph) -> None:
    env = prod_program.one("github:index/repositoryEnvironment:RepositoryEnvironment").inputs
    reviewers = json.loads(prod_program.config[f"{contracts.PROJECT}:productionReviewers"])
    asked = [i["args"]["username"] for i in prod_program.invokes if i["token"] == "github:index/getUser:getUser"]
    assert sorted(asked) == sorted(reviewers)
    assert len(env["reviewers"][0]["users"]) == len(reviewers)
    assert env["deploymentBranchPolicy"] == {"protectedBranches": False, "customBranchPolicies": True}
    [policy] = prod_program.of_type(
        "github:index/repositoryEnvironmentDeploymentPolicy:RepositoryEnvironmentDeploymentPolicy")
    assert policy.inputs["environment"] == contracts.PRODUCTION_ENVIRONMENT
    assert policy.inputs["branchPattern"] == prod_program.config[f"{contracts.PROJECT}:githubBranch"]


def test_dev_program_has_no_repository_settings_and_no_trigger(dev_program: ProgramGraph) -> None:
    assert [r for r in dev_program.resources if r.type.startswith("github:index/")] == []
    assert [r for r in dev_program.resources if r.name.startswith("github-trigger")] == []


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_program_keeps_the_github_token_out_of_plain_text(stack: str) -> None:
    graph = run_program(stack)
    token = TEST_SECRETS["githubToken"]
    leaks = [
        f"{r.urn}: {path}"
        for r in graph.resources
        for path in _occurrences(r.inputs, token)
        if not any(path == s or path.startswith((f"{s}.", f"{s}[")) for s in r.secret_paths)
    ]
    leaks += [
        f"output {k}" for k, v in graph.outputs.items() if token in json.dumps(v) and k not in graph.secret_outputs
    ]
    leaks += [f"log {entry.get('severity')}" for entry in graph.logs if token in entry.get("message", "")]
    assert leaks == []


@pytest.mark.parametrize("stack", ["prod", "dev"])
def test_program_uses_no_deprecated_resource_types_or_properties(stack: str) -> None:
    graph = run_program(stack)
    used = [m["message"][:120] for m in graph.logs if "is deprecated" in m.get("message", "")]
    for resource in graph.custom_resources():
        if resource.type.startswith(("pulumi:providers:", "pulumi-python:dynamic:")):
            continue  # providers are configured, not deprecated types; dynamic resources have no SDK schema
        deprecated = _deprecated_names(resource.type)
        if resource.type.rsplit(":", 1)[1] in deprecated:
            used.append(f"{resource.urn}: type")
        used += [f"{resource.urn}: {key}" for key in resource.inputs if _snake(key) in deprecated]
    assert used == []


def test_program_variables_tell_the_model_build_workflow_its_data_compute_and_pipeline(
    prod_program: ProgramGraph,
) -> None:
    variables = {r.inputs["variableName"]: r.inputs["value"]
                 for r in prod_program.of_type("github:index/actionsVariable:ActionsVariable")}
    assert variables[contracts.ENV_TRAINING_DATA_URI] == prod_program.outputs["trainingDataUri"]
    assert variables[contracts.ENV_MODEL_BUILD_COMPUTE] == "pipeline"
    assert variables[contracts.ENV_MODEL_BUILD_PIPELINE] == prod_program.outputs["modelBuildPipelineName"]


def test_program_inline_build_sets_no_pipeline_variable() -> None:
    graph = run_program("prod", {"training": {"compute": "build"}})
    variables = {r.inputs["variableName"]: r.inputs["value"]
                 for r in graph.of_type("github:index/actionsVariable:ActionsVariable")}
    assert set(variables) == set(contracts.GITHUB_VARIABLES) - {contracts.ENV_MODEL_BUILD_PIPELINE}
    assert variables[contracts.ENV_MODEL_BUILD_COMPUTE] == "build"
