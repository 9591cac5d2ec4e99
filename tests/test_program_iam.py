"""Least privilege, read from every policy document the program hands to AWS."""

from __future__ import annotations

import io
import itertools
import json
import tokenize
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore import xform_name
from program_harness import ROOT, ProgramGraph, Resource, run_program

from components.roles import GITHUB_OIDC_HOST

# Actions that have no resource-level permissions: the only ones allowed on Resource "*".
NO_RESOURCE_LEVEL = {
    "sagemaker:ListModelPackages",
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "codepipeline:PutJobSuccessResult",
    "codepipeline:PutJobFailureResult",
}
# Input properties that carry IAM / resource policy documents.
POLICY_PROPERTIES = ("policy", "assumeRolePolicy")


# The team's data in its own bucket, with each compute: the grants that reach outside the artifact bucket.
TEAM_DATA = {"trainingData": "s3://team-data/churn/2026/", "sampleData": False}
INLINE_BUILD = {"training": {"compute": "build"}}


def _graphs() -> list[ProgramGraph]:
    combos = [{}, {"approvalMode": "auto"}, {"orchestrator": "codepipeline"},
              {"orchestrator": "codepipeline", "approvalMode": "auto"}]
    return [run_program("dev"), *(run_program("prod", c or None) for c in combos),
            run_program("dev", TEAM_DATA), run_program("prod", {**TEAM_DATA, **INLINE_BUILD}),
            run_program("dev", {**TEAM_DATA, **INLINE_BUILD})]


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


def test_s3_permissions_stay_in_the_stack_bucket_or_the_training_data_prefix() -> None:
    for graph in _graphs():
        bucket = graph.outputs["artifactBucket"]
        data_bucket, _, data_prefix = graph.outputs["trainingDataUri"].removeprefix("s3://").partition("/")
        for resource, document in _documents(graph):
            if resource.type != "aws:iam/rolePolicy:RolePolicy":
                continue
            for statement in _statements(document):
                if not any(a.startswith("s3:") for a in _as_list(statement["Action"])):
                    continue
                for arn in _as_list(statement["Resource"]):
                    if arn == f"arn:aws:s3:::{bucket}" or arn.startswith(f"arn:aws:s3:::{bucket}/"):
                        continue
                    # Outside the stack's bucket: exactly the data prefix, read-only, listing scoped to it.
                    assert data_bucket != bucket, f"{resource}: {arn}"
                    assert arn in (f"arn:aws:s3:::{data_bucket}", f"arn:aws:s3:::{data_bucket}/{data_prefix}*"), \
                        f"{resource}: {arn}"
                    assert set(_as_list(statement["Action"])) <= {"s3:ListBucket", "s3:GetObject"}, resource
                    if arn == f"arn:aws:s3:::{data_bucket}":
                        assert statement["Condition"] == {"StringLike": {"s3:prefix": [f"{data_prefix}*"]}}, resource


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


# --- Each role against the code that runs under it -------------------------------------------------
# (files, boto3 services whose calls they make) per principal; sagemaker-runtime is IAM prefix sagemaker.
ROLE_CODE = {
    "codebuild-train": (("training/train.py", "training/register.py"), ("sagemaker", "s3")),
    "codebuild-deploy": (("training/deploy.py",), ("sagemaker", "sagemaker-runtime", "application-autoscaling",
                                                   "codepipeline")),
    "auto-approve": (("handlers/auto_approve.py",), ("sagemaker", "s3", "codepipeline")),
    "github-deploy": (("training/train.py", "training/register.py", "training/deploy.py"),
                      ("sagemaker", "s3", "sagemaker-runtime", "application-autoscaling", "codepipeline")),
}
# S3 transfer helpers are not API operations; both upload with PutObject (multipart parts included).
TRANSFER_CALLS = {"upload_file": "s3:PutObject", "upload_fileobj": "s3:PutObject"}
_CODEBUILD = {"logs:CreateLogStream", "logs:PutLogEvents",  # the build's own log group
              # CodeBuild fetches the pipeline's input artifacts from the bucket.
              "s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject", "s3:GetObjectVersion"}
_REGISTER = {"sagemaker:AddTags"}  # CreateModelPackage carries Tags
_DEPLOY = {
    "iam:PassRole",  # CreateModel names the execution role
    # Application Auto Scaling checks that whoever registers a variant and its target-tracking policy could
    # change the variant's capacity and manage the policy's alarms, and creates its service-linked role.
    "sagemaker:UpdateEndpointWeightsAndCapacities", "cloudwatch:DescribeAlarms", "cloudwatch:PutMetricAlarm",
    "cloudwatch:DeleteAlarms", "iam:CreateServiceLinkedRole",
    "application-autoscaling:TagResource",  # RegisterScalableTarget carries Tags
}
# Granted although the code does not call it, and why.
NEEDED_BEYOND_CALLS = {
    "codebuild-train": _CODEBUILD | _REGISTER,
    "codebuild-deploy": _CODEBUILD | _DEPLOY,
    "auto-approve": {"logs:CreateLogStream", "logs:PutLogEvents",
                     "sqs:SendMessage"},  # Lambda's own dead-letter queue for failed invocations
    "github-deploy": _REGISTER | _DEPLOY,
}
# Called by the code but deliberately not granted, and why.
CALLED_NOT_GRANTED = {
    # register.ensure_group creates a missing group for runs without the program (the embedded run);
    # in a stack the program owns the group, so no role may create one.
    "codebuild-train": {"sagemaker:CreateModelPackageGroup"},
    "github-deploy": {"sagemaker:CreateModelPackageGroup",
                      # --record-pipeline-approval is the CodePipeline path; the workflows never pass it.
                      "codepipeline:GetPipelineState"},
}


def _attribute_names(source: str) -> set[str]:
    """Every name written after a dot (`client.create_model`, `s3.upload_file`).

    Tokens, not ast.parse: CPython 3.11.7's AST constructor can raise "recursion depth mismatch" when
    another thread of the test process builds ASTs at the same time (fixed in 3.11.8).
    """
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.string for before, tok in itertools.pairwise(tokens)
            if before.type == tokenize.OP and before.string == "." and tok.type == tokenize.NAME}


def _iam_actions_called(files: tuple[str, ...], services: tuple[str, ...]) -> set[str]:
    """IAM actions for every boto3 operation the files reference (calls and bound methods passed on)."""
    names: set[str] = set()
    for file in files:
        names |= _attribute_names((ROOT / file).read_text())
    session = botocore.session.get_session()
    actions = {TRANSFER_CALLS[name] for name in names & set(TRANSFER_CALLS)}
    for service in services:
        model = session.get_service_model(service)
        prefix = model.signing_name if service != "application-autoscaling" else service
        actions |= {f"{prefix}:{op}" for op in model.operation_names if xform_name(op) in names}
    return actions


def _granted(policy: dict[str, Any]) -> set[str]:
    return {action for statement in _statements(policy) if statement["Effect"] == "Allow"
            for action in _as_list(statement["Action"])}


@pytest.mark.parametrize("principal", sorted(ROLE_CODE))
def test_role_allows_exactly_the_calls_its_code_makes(principal: str) -> None:
    files, services = ROLE_CODE[principal]
    called = _iam_actions_called(files, services)
    assert called, f"no AWS calls found in {files}: the scan is broken"
    graph = (run_program("prod") if principal == "github-deploy"
             else run_program("prod", {"orchestrator": "codepipeline", "approvalMode": "auto"}))
    granted = _granted(_role_policy(graph, principal))
    expected = (called - CALLED_NOT_GRANTED.get(principal, set())) | NEEDED_BEYOND_CALLS[principal]
    assert granted >= expected, f"{principal} lacks {sorted(expected - granted)}"
    assert granted <= expected, f"{principal} is granted more than it uses: {sorted(granted - expected)}"


def test_policy_statement_ids_are_unique_within_each_document() -> None:
    for graph in _graphs():
        for resource, document in _documents(graph):
            sids = [s["Sid"] for s in _statements(document) if "Sid" in s]
            assert len(sids) == len(set(sids)), f"{resource}: {sids}"


def test_every_role_arn_consumer_waits_for_the_role_policy() -> None:
    # Lambda checks the DLQ's sqs:SendMessage on the role at CreateFunction; a new pipeline runs at once.
    for graph in _graphs():
        roles = {r.inputs["name"]: r for r in graph.of_type("aws:iam/role:Role")}
        consumers = [(r, r.inputs["role"]) for r in graph.of_type("aws:lambda/function:Function")]
        consumers += [(r, r.inputs["serviceRole"]) for r in graph.of_type("aws:codebuild/project:Project")]
        consumers += [(r, r.inputs["roleArn"]) for r in graph.of_type("aws:codepipeline/pipeline:Pipeline")]
        consumers += [(r, r.inputs["roleArn"]) for r in graph.of_type("aws:sagemaker/pipeline:Pipeline")]
        assert consumers
        for resource, role_arn in consumers:
            role = roles[role_arn.rsplit("/", 1)[1]]
            policy = graph.one("aws:iam/rolePolicy:RolePolicy", f"{role.name}-policy")
            assert policy.urn in resource.dependencies, f"{resource} may be created before {policy.name}"


# --- The model build ---------------------------------------------------------------------------------
_PIPELINE_CONTROL = {"sagemaker:StartPipelineExecution", "sagemaker:DescribePipelineExecution",
                     "sagemaker:ListPipelineExecutionSteps", "sagemaker:StopPipelineExecution"}


def _build_role_graphs(overrides: dict[str, object] | None = None) -> list[tuple[str, ProgramGraph]]:
    """(principal, graph) for both build principals: CodeBuild train (dev) and the GitHub deploy role (prod)."""
    return [("codebuild-train", run_program("dev", overrides)), ("github-deploy", run_program("prod", overrides))]


def test_build_roles_may_run_only_the_stacks_pipeline_and_its_executions() -> None:
    for principal, graph in _build_role_graphs():
        pipeline = f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{graph.outputs['modelBuildPipelineName']}"
        granted = {(action, arn) for statement in _statements(_role_policy(graph, principal))
                   for action in _as_list(statement["Action"]) if action in _PIPELINE_CONTROL
                   for arn in _as_list(statement["Resource"])}
        assert granted == {("sagemaker:StartPipelineExecution", pipeline),
                           *((a, f"{pipeline}/execution/*") for a in _PIPELINE_CONTROL
                             if a != "sagemaker:StartPipelineExecution")}, principal


def test_build_roles_upload_code_only_below_the_stacks_code_prefix() -> None:
    graph = run_program("prod")
    [upload] = [s for s in _statements(_role_policy(graph, "github-deploy")) if s["Sid"] == "UploadTrainingCode"]
    assert upload["Resource"] == [f"arn:aws:s3:::{graph.outputs['artifactBucket']}/prod/code/*"]
    assert not [s for s in _statements(_role_policy(graph, "github-deploy")) if s["Sid"] == "WriteArtifacts"]


def test_build_roles_register_only_when_the_build_trains_inline() -> None:
    # compute pipeline: the pipeline registers, the build only starts and watches it; compute build: the
    # build registers and there is no pipeline to start.
    for principal, graph in _build_role_graphs():
        actions = _granted(_role_policy(graph, principal))
        assert "sagemaker:CreateModelPackage" not in actions and _PIPELINE_CONTROL <= actions, principal
    for principal, graph in _build_role_graphs(INLINE_BUILD):
        actions = _granted(_role_policy(graph, principal))
        assert "sagemaker:CreateModelPackage" in actions and not _PIPELINE_CONTROL & actions, principal


def test_inline_build_reads_own_training_data_exactly() -> None:
    graph = run_program("prod", {**TEAM_DATA, **INLINE_BUILD})
    reads = {(a, arn) for s in _statements(_role_policy(graph, "github-deploy")) if s["Sid"].endswith("TrainingData")
             for a in _as_list(s["Action"]) for arn in _as_list(s["Resource"])}
    assert reads == {("s3:ListBucket", "arn:aws:s3:::team-data"),
                     ("s3:GetObject", "arn:aws:s3:::team-data/churn/2026/*")}


def test_execution_role_runs_pipeline_jobs_only_with_a_pipeline() -> None:
    job_actions = {"sagemaker:CreateProcessingJob", "sagemaker:CreateTrainingJob", "sagemaker:CreateModelPackage"}
    assert job_actions <= _granted(_role_policy(run_program("dev"), "sagemaker-execution"))
    assert not job_actions & _granted(_role_policy(run_program("dev", INLINE_BUILD), "sagemaker-execution"))
