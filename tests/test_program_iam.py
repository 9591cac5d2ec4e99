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
# The files whose AWS calls run under each principal, per compute. Compute matters only to the build
# principals: `pipeline` starts the stack's SageMaker pipeline (training/model_build.py's pipeline path),
# `build` trains and registers in the build box (its inline path).
_INLINE_BUILD_FILES = ("training/model_build.py", "training/prepare.py", "training/train.py", "training/evaluate.py",
                       "training/register.py")
ROLE_CODE: dict[tuple[str, str], tuple[str, ...]] = {
    ("codebuild-train", "pipeline"): ("training/model_build.py",),
    ("codebuild-train", "build"): _INLINE_BUILD_FILES,
    ("codebuild-deploy", "pipeline"): ("training/deploy.py",),
    ("auto-approve", "pipeline"): ("handlers/auto_approve.py",),
    ("github-deploy", "pipeline"): ("training/model_build.py", "training/deploy.py"),
    ("github-deploy", "build"): (*_INLINE_BUILD_FILES, "training/deploy.py"),
    ("github-trigger", "pipeline"): ("handlers/github_trigger.py",),
}
# The boto3 services each file makes clients for (sagemaker-runtime is IAM prefix sagemaker): operation
# names repeat across services (codepipeline and sagemaker both have StartPipelineExecution).
_TRAINING_SERVICES = ("sagemaker", "s3")
FILE_SERVICES = {
    **{file: _TRAINING_SERVICES for file in _INLINE_BUILD_FILES},
    "handlers/github_trigger.py": ("sagemaker", "secretsmanager"),
    "training/deploy.py": ("sagemaker", "sagemaker-runtime", "application-autoscaling", "codepipeline"),
    "handlers/auto_approve.py": ("sagemaker", "s3", "codepipeline"),
}
# S3 transfer helpers are not API operations: uploads are PutObject (multipart parts included), downloads
# GetObject. Paginated and S3 operations whose IAM action has another name map here too.
TRANSFER_CALLS = {"upload_file": "s3:PutObject", "upload_fileobj": "s3:PutObject",
                  "download_file": "s3:GetObject", "download_fileobj": "s3:GetObject"}
OPERATION_ACTIONS = {"s3:ListObjectsV2": "s3:ListBucket", "s3:ListObjects": "s3:ListBucket",
                     "s3:HeadObject": "s3:GetObject"}
_CODEBUILD = {"logs:CreateLogStream", "logs:PutLogEvents",  # the build's own log group
              # CodeBuild fetches the pipeline's input artifacts from the bucket.
              "s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject", "s3:GetObjectVersion"}
_REGISTER = {"sagemaker:AddTags",  # CreateModelPackage carries Tags
             # delete_object with a VersionId (cleanup after a failed registration) is DeleteObjectVersion.
             "s3:DeleteObjectVersion"}
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
    ("codebuild-train", "pipeline"): _CODEBUILD | {"s3:PutObject"},  # CodeBuild uploads the BuildArtifact
    ("codebuild-train", "build"): _CODEBUILD | _REGISTER,
    ("codebuild-deploy", "pipeline"): _CODEBUILD | _DEPLOY,
    ("auto-approve", "pipeline"): {"logs:CreateLogStream", "logs:PutLogEvents",
                                   "sqs:SendMessage"},  # Lambda's own dead-letter queue for failed invocations
    ("github-trigger", "pipeline"): {"logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage"},  # as auto-approve
    ("github-deploy", "pipeline"): _DEPLOY,
    ("github-deploy", "build"): _REGISTER | _DEPLOY,
}
# model_build.py holds both paths; a stack runs one of them.
_PIPELINE_PATH = {"sagemaker:DescribePipeline", "sagemaker:StartPipelineExecution",
                  "sagemaker:DescribePipelineExecution", "sagemaker:ListPipelineExecutionSteps",
                  "sagemaker:StopPipelineExecution", "sagemaker:DescribeProcessingJob"}
_INLINE_DATA_DOWNLOAD = {"s3:ListBucket", "s3:GetObject"}
# Called by the code but deliberately not granted, and why.
# register.remove_uploads deletes without a version id only in an unversioned bucket; the stack's bucket
# keeps versions, so there it always deletes by version (s3:DeleteObjectVersion, granted above).
_UNVERSIONED_DELETE = {"s3:DeleteObject"}
CALLED_NOT_GRANTED = {
    # compute `build` has no pipeline: model_build's pipeline path never runs.
    ("codebuild-train", "build"): _PIPELINE_PATH | _UNVERSIONED_DELETE,
    # compute `pipeline`: the inline path's data download never runs (the pipeline's jobs read the data).
    ("github-deploy", "pipeline"): _INLINE_DATA_DOWNLOAD
    # --record-pipeline-approval is the CodePipeline path; the workflows never pass it.
    | {"codepipeline:GetPipelineState"},
    ("github-deploy", "build"): _PIPELINE_PATH | _UNVERSIONED_DELETE | {"codepipeline:GetPipelineState"},
}


def _source_names(source: str) -> tuple[set[str], set[str]]:
    """(every name written after a dot, every string passed to get_paginator) in a source file.

    Tokens, not ast.parse: CPython 3.11.7's AST constructor can raise "recursion depth mismatch" when
    another thread of the test process builds ASTs at the same time (fixed in 3.11.8).
    """
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)]
    attributes = {tok.string for before, tok in itertools.pairwise(tokens)
                  if before.type == tokenize.OP and before.string == "." and tok.type == tokenize.NAME}
    paginated = {value.string.strip("\"'") for name, paren, value in zip(tokens, tokens[1:], tokens[2:], strict=False)
                 if name.string == "get_paginator" and paren.string == "(" and value.type == tokenize.STRING}
    return attributes, paginated


def _iam_actions_called(files: tuple[str, ...]) -> set[str]:
    """IAM actions for every boto3 operation the files reference (calls, bound methods passed on, paginators)."""
    session = botocore.session.get_session()
    actions: set[str] = set()
    for file in files:
        attributes, paginated = _source_names((ROOT / file).read_text())
        names = attributes | paginated
        actions |= {TRANSFER_CALLS[name] for name in names & set(TRANSFER_CALLS)}
        for service in FILE_SERVICES[file]:
            model = session.get_service_model(service)
            prefix = model.signing_name if service != "application-autoscaling" else service
            actions |= {f"{prefix}:{op}" for op in model.operation_names if xform_name(op) in names}
    return {OPERATION_ACTIONS.get(action, action) for action in actions}


def _granted(policy: dict[str, Any]) -> set[str]:
    return {action for statement in _statements(policy) if statement["Effect"] == "Allow"
            for action in _as_list(statement["Action"])}


def test_the_call_scan_sees_paginators_and_downloads() -> None:
    # Guards the scan below: model_build's inline path lists with a paginator and downloads with a helper.
    attributes, paginated = _source_names('s3.get_paginator("list_objects_v2")\ns3.download_file(b, k, p)\n')
    assert paginated == {"list_objects_v2"} and "download_file" in attributes
    assert _iam_actions_called(("training/model_build.py",)) >= {"s3:ListBucket", "s3:GetObject", "s3:PutObject"}


@pytest.mark.parametrize(("principal", "compute"), sorted(ROLE_CODE))
def test_role_allows_exactly_the_calls_its_code_makes(principal: str, compute: str) -> None:
    files = ROLE_CODE[principal, compute]
    called = _iam_actions_called(files)
    assert called, f"no AWS calls found in {files}: the scan is broken"
    overrides: dict[str, object] = {} if compute == "pipeline" else dict(INLINE_BUILD)
    if principal not in ("github-deploy", "github-trigger"):
        overrides.update(orchestrator="codepipeline", approvalMode="auto")
    graph = run_program("prod", overrides or None)
    granted = _granted(_role_policy(graph, principal))
    expected = (called - CALLED_NOT_GRANTED.get((principal, compute), set())) | NEEDED_BEYOND_CALLS[principal, compute]
    assert granted >= expected, f"{principal} ({compute}) lacks {sorted(expected - granted)}"
    assert granted <= expected, f"{principal} ({compute}) is granted more than it uses: {sorted(granted - expected)}"


# What SageMaker Pipelines calls with the pipeline's role for each step type of the definition (IAM Access
# Management for Pipelines: Create and Describe per job type; a stopped execution stops its running jobs).
STEP_TYPE_CALLS = {
    "Processing": {"sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob"},
    "Training": {"sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"},
    "RegisterModel": {"sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage"},
    "Condition": set(),
    "Fail": set(),
}


def test_execution_role_allows_exactly_what_the_pipeline_definition_makes_sagemaker_call() -> None:
    from training.pipeline_definition import iter_steps

    graph = run_program("dev")
    definition = json.loads(graph.one("aws:sagemaker/pipeline:Pipeline").inputs["pipelineDefinition"])
    steps = list(iter_steps(definition))
    expected = {call for step in steps for call in STEP_TYPE_CALLS[step["Type"]]}
    if any("Tags" in step["Arguments"] for step in steps):
        expected.add("sagemaker:AddTags")
    granted = {a for a in _granted(_role_policy(graph, "sagemaker-execution")) if a.startswith("sagemaker:")}
    assert granted == expected
    # The jobs run as the pipeline's role, which passes itself on: the only role any step names.
    assert {step["Arguments"]["RoleArn"] for step in steps if "RoleArn" in step["Arguments"]} == {
        graph.outputs["sagemakerExecutionRoleArn"]}


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
_PIPELINE_CONTROL = {"sagemaker:DescribePipeline", "sagemaker:StartPipelineExecution",
                     "sagemaker:DescribePipelineExecution", "sagemaker:ListPipelineExecutionSteps",
                     "sagemaker:StopPipelineExecution"}
_ON_PIPELINE = {"sagemaker:DescribePipeline", "sagemaker:StartPipelineExecution"}


def _build_role_graphs(overrides: dict[str, object] | None = None) -> list[tuple[str, ProgramGraph]]:
    """(principal, graph) for both build principals: CodeBuild train (dev) and the GitHub deploy role (prod)."""
    return [("codebuild-train", run_program("dev", overrides)), ("github-deploy", run_program("prod", overrides))]


def test_build_roles_may_run_only_the_stacks_pipeline_and_its_executions() -> None:
    for principal, graph in _build_role_graphs():
        pipeline = f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{graph.outputs['modelBuildPipelineName']}"
        granted = {(action, arn) for statement in _statements(_role_policy(graph, principal))
                   for action in _as_list(statement["Action"]) if action in _PIPELINE_CONTROL
                   for arn in _as_list(statement["Resource"])}
        assert granted == {*((a, pipeline) for a in _ON_PIPELINE),
                           *((a, f"{pipeline}/execution/*") for a in _PIPELINE_CONTROL - _ON_PIPELINE)}, principal


def _build_artifact_prefix(graph: ProgramGraph) -> str:
    """Where CodePipeline keeps the Train action's output: `<pipeline name>/<artifact name>/`, each cut short."""
    pipeline = graph.one("aws:codepipeline/pipeline:Pipeline").inputs
    [artifact] = [artifact for stage in pipeline["stages"] for action in stage["actions"]
                  if action["name"] == "Train" for artifact in action["outputArtifacts"]]
    return f"{pipeline['name'][:20]}/{artifact[:10]}/"


@pytest.mark.parametrize("compute", ["pipeline", "build"])
def test_build_roles_write_only_their_own_prefix_and_codebuilds_build_artifact(compute: str) -> None:
    # compute pipeline: the build uploads the commit's code; compute build: register uploads the model and
    # its metrics under model-builds/. CodeBuild also uploads the Train action's output artifact, with the
    # project's role, where CodePipeline keeps it. Nothing else of the bucket.
    for principal, graph in _build_role_graphs(INLINE_BUILD if compute == "build" else None):
        objects = f"arn:aws:s3:::{graph.outputs['artifactBucket']}"
        own = "code" if compute == "pipeline" else "model-builds"
        expected = {f"{objects}/{graph.stack}/{own}/*"}
        if principal == "codebuild-train":
            expected.add(f"{objects}/{_build_artifact_prefix(graph)}*")
        written = {arn for statement in _statements(_role_policy(graph, principal))
                   if "s3:PutObject" in _as_list(statement["Action"]) for arn in _as_list(statement["Resource"])}
        assert written == expected, principal


def test_build_artifact_prefix_is_cut_as_codepipeline_cuts_its_keys() -> None:
    from components.pipeline import BUILD_ARTIFACT, artifact_key_prefix

    # A pipeline name longer than the 20 characters CodePipeline keeps of it (keys as S3 lists them).
    assert artifact_key_prefix("sagemaker-mlops-staging", BUILD_ARTIFACT) == "sagemaker-mlops-stag/BuildArtif/"


def test_build_roles_register_only_when_the_build_trains_inline() -> None:
    # compute pipeline: the pipeline registers, the build only starts and watches it; compute build: the
    # build registers and there is no pipeline to start.
    for principal, graph in _build_role_graphs():
        actions = _granted(_role_policy(graph, principal))
        assert "sagemaker:CreateModelPackage" not in actions and actions >= _PIPELINE_CONTROL, principal
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
