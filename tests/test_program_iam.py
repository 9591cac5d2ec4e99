"""Least privilege, read from every policy document the program hands to AWS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from program_harness import ProgramGraph, Resource, run_program

from components.roles import GITHUB_OIDC_HOST

# Actions that have no resource-level permissions: the only ones allowed on Resource "*".
NO_RESOURCE_LEVEL = {
    "sagemaker:ListModelPackages",
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "codepipeline:PutJobSuccessResult",
    "codepipeline:PutJobFailureResult",
    "application-autoscaling:DescribeScalableTargets",
    "application-autoscaling:DescribeScalingPolicies",
}
# Input properties that carry IAM / resource policy documents.
POLICY_PROPERTIES = ("policy", "assumeRolePolicy")


def _graphs() -> list[ProgramGraph]:
    combos = [{}, {"approvalMode": "auto"}, {"orchestrator": "codepipeline"},
              {"orchestrator": "codepipeline", "approvalMode": "auto"}]
    return [run_program("dev"), *(run_program("prod", c or None) for c in combos)]


def _documents(graph: ProgramGraph) -> Iterator[tuple[Resource, dict[str, Any]]]:
    for resource in graph.custom_resources():
        for prop in POLICY_PROPERTIES:
            value = resource.inputs.get(prop)
            if isinstance(value, str) and value.lstrip().startswith("{"):
                yield resource, json.loads(value)


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    statements = document["Statement"]
    return statements if isinstance(statements, list) else [statements]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_policy(graph: ProgramGraph, principal: str) -> dict[str, Any]:
    [policy] = [p for p in graph.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == f"roles-{principal}-policy"]
    return json.loads(policy.inputs["policy"])


def _role(graph: ProgramGraph, principal: str) -> Resource:
    return graph.one("aws:iam/role:Role", f"roles-{principal}")


def test_policy_documents_are_found_in_every_graph() -> None:
    # Guards the walkers below: a renamed property would otherwise make them vacuous.
    for graph in _graphs():
        kinds = {r.type for r, _ in _documents(graph)}
        expected = {"aws:iam/rolePolicy:RolePolicy", "aws:iam/role:Role", "aws:s3/bucketPolicy:BucketPolicy"}
        if graph.of_type("aws:sqs/queue:Queue"):
            expected.add("aws:sqs/queuePolicy:QueuePolicy")
        assert expected <= kinds, kinds


def test_no_allow_statement_grants_a_wildcard_action() -> None:
    for graph in _graphs():
        for resource, document in _documents(graph):
            for statement in _statements(document):
                if statement["Effect"] != "Allow":
                    continue
                assert "NotAction" not in statement, resource
                for action in _as_list(statement["Action"]):
                    assert "*" not in action, f"{resource}: {action}"


def test_only_the_tls_guard_uses_a_wildcard_and_it_denies() -> None:
    for graph in _graphs():
        for resource, document in _documents(graph):
            for statement in _statements(document):
                if any("*" in a for a in _as_list(statement["Action"])):
                    assert statement["Effect"] == "Deny", resource
                    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, resource


def test_resource_star_only_for_actions_without_resource_level_permissions() -> None:
    for graph in _graphs():
        for resource, document in _documents(graph):
            for statement in _statements(document):
                if statement["Effect"] == "Allow" and "*" in _as_list(statement.get("Resource", [])):
                    assert set(_as_list(statement["Action"])) <= NO_RESOURCE_LEVEL, f"{resource}: {statement}"


def test_pass_role_only_passes_the_sagemaker_execution_role_to_sagemaker() -> None:
    for graph in _graphs():
        execution_arn = graph.outputs["sagemakerExecutionRoleArn"]
        found = 0
        for resource, document in _documents(graph):
            for statement in _statements(document):
                if statement["Effect"] == "Allow" and "iam:PassRole" in _as_list(statement["Action"]):
                    found += 1
                    assert _as_list(statement["Resource"]) == [execution_arn], resource
                    assert statement["Condition"] == {
                        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}, resource
        assert found >= 1, f"{graph.stack}: some role deploys, so some role passes the execution role"


def test_no_iam_users_access_keys_or_managed_admin_policies() -> None:
    for graph in _graphs():
        types = {r.type for r in graph.resources}
        assert not {"aws:iam/user:User", "aws:iam/accessKey:AccessKey"} & types
        for attachment in graph.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment"):
            assert "AdministratorAccess" not in attachment.inputs["policyArn"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_preview_role_trusts_only_pull_requests_of_the_repository(stack: str) -> None:
    trust = json.loads(_role(run_program(stack), "github-preview").inputs["assumeRolePolicy"])
    [statement] = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"]["Federated"].endswith(f":oidc-provider/{GITHUB_OIDC_HOST}")
    assert statement["Condition"] == {"StringEquals": {
        f"{GITHUB_OIDC_HOST}:aud": "sts.amazonaws.com",
        f"{GITHUB_OIDC_HOST}:sub": ["repo:your-org/churn-model:pull_request"],
    }}


def test_deploy_role_trusts_only_the_production_environment_and_main() -> None:
    trust = json.loads(_role(run_program("prod"), "github-deploy").inputs["assumeRolePolicy"])
    [statement] = trust["Statement"]
    assert statement["Condition"] == {"StringEquals": {
        f"{GITHUB_OIDC_HOST}:aud": "sts.amazonaws.com",
        f"{GITHUB_OIDC_HOST}:sub": ["repo:your-org/churn-model:environment:production",
                                    "repo:your-org/churn-model:ref:refs/heads/main"],
    }}


def test_preview_role_can_only_read() -> None:
    policy = _role_policy(run_program("prod"), "github-preview")
    readers = ("Get", "List", "Describe")
    for statement in _statements(policy):
        for action in _as_list(statement["Action"]):
            assert action.split(":", 1)[1].startswith(readers), action


def test_oidc_provider_has_the_sts_audience_and_an_existing_one_is_reused() -> None:
    provider = run_program("dev").one("aws:iam/openIdConnectProvider:OpenIdConnectProvider").inputs
    assert provider["url"] == f"https://{GITHUB_OIDC_HOST}"
    assert provider["clientIdLists"] == ["sts.amazonaws.com"]
    existing = f"arn:aws:iam::123456789012:oidc-provider/{GITHUB_OIDC_HOST}"
    graph = run_program("dev", {"githubOidcProviderArn": existing})
    assert graph.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider") == []
    trust = json.loads(_role(graph, "github-preview").inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"]["Federated"] == existing


def test_s3_permissions_stay_in_the_stack_bucket() -> None:
    for graph in _graphs():
        bucket = graph.outputs["artifactBucket"]
        for resource, document in _documents(graph):
            if resource.type != "aws:iam/rolePolicy:RolePolicy":
                continue
            for statement in _statements(document):
                if any(a.startswith("s3:") for a in _as_list(statement["Action"])):
                    for arn in _as_list(statement["Resource"]):
                        assert arn in (f"arn:aws:s3:::{bucket}",) or arn.startswith(f"arn:aws:s3:::{bucket}/"), \
                            f"{resource}: {arn}"


def test_sagemaker_hosting_permissions_stay_on_the_stack_endpoint_prefix() -> None:
    graph = run_program("prod")
    prefix = "sagemaker-mlops-prod-"
    for statement in _statements(_role_policy(graph, "github-deploy")):
        if statement["Sid"] in ("HostOnlyStackEndpoints", "SmokeTestStackEndpoints"):
            for arn in statement["Resource"]:
                assert arn.rsplit("/", 1)[1] == f"{prefix}*", arn


def test_model_package_permissions_stay_in_the_stack_group() -> None:
    for graph in _graphs():
        group = graph.outputs["modelPackageGroupName"].lower()
        for resource, document in _documents(graph):
            for statement in _statements(document):
                for arn in _as_list(statement.get("Resource", [])):
                    if ":model-package" in arn:
                        assert arn.endswith((f"model-package-group/{group}", f"model-package/{group}/*")), \
                            f"{resource}: {arn}"


def test_trigger_role_reads_only_the_token_secret() -> None:
    policy = _role_policy(run_program("prod"), "github-trigger")
    [read] = [s for s in _statements(policy) if "secretsmanager:GetSecretValue" in s["Action"]]
    assert read["Resource"] == [
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:sagemaker-mlops/prod/github-token-??????"]


def test_each_service_role_is_assumable_only_by_its_service() -> None:
    graph = run_program("prod", {"orchestrator": "codepipeline", "approvalMode": "auto"})
    expected = {
        "codepipeline": "codepipeline.amazonaws.com",
        "codebuild-train": "codebuild.amazonaws.com",
        "codebuild-deploy": "codebuild.amazonaws.com",
        "sagemaker-execution": "sagemaker.amazonaws.com",
        "auto-approve": "lambda.amazonaws.com",
    }
    for principal, service in expected.items():
        trust = json.loads(_role(graph, principal).inputs["assumeRolePolicy"])
        assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": service},
                                       "Action": "sts:AssumeRole"}], principal
