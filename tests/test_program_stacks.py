"""The real __main__.py under Pulumi's mock engine: what each stack creates and how it is wired."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from program_harness import ROOT, TEST_SECRETS, ProgramGraph, Resource, prefetch, run_program

import contracts

COMBINATIONS = [(o, a) for o in ("codepipeline", "github-actions") for a in ("auto", "manual")]
LAMBDA = "aws:lambda/function:Function"
CODEBUILD = "aws:codebuild/project:Project"
PIPELINE = "aws:codepipeline/pipeline:Pipeline"


def _combination_overrides(orchestrator: str, approval: str) -> dict[str, object]:
    # prod is github-actions + manual: only the differing keys, so equal runs share the cache.
    overrides: dict[str, object] = {}
    if orchestrator != "github-actions":
        overrides["orchestrator"] = orchestrator
    if approval != "manual":
        overrides["approvalMode"] = approval
    return overrides


@pytest.fixture(scope="module", autouse=True)
def _runs_in_parallel() -> None:
    prefetch([("dev", None), *(("prod", _combination_overrides(o, a)) for o, a in COMBINATIONS)])


@pytest.fixture(scope="module")
def dev() -> ProgramGraph:
    return run_program("dev")


@pytest.fixture(scope="module")
def prod() -> ProgramGraph:
    return run_program("prod")


@pytest.fixture(scope="module")
def prod_on_codepipeline() -> ProgramGraph:
    """The prod stages (staging, then gated production) run by CodePipeline with manual approval."""
    return _combination("codepipeline", "manual")


def _combination(orchestrator: str, approval: str) -> ProgramGraph:
    return run_program("prod", _combination_overrides(orchestrator, approval) or None)


def _all_graphs() -> list[ProgramGraph]:
    return [run_program("dev"), *(_combination(o, a) for o, a in COMBINATIONS)]


# --- Every stack and combination -------------------------------------------------------------------
@pytest.mark.parametrize(("orchestrator", "approval"), COMBINATIONS)
def test_every_orchestrator_and_approval_combination_builds_a_graph(orchestrator: str, approval: str) -> None:
    graph = _combination(orchestrator, approval)
    assert graph.outputs["orchestrator"] == orchestrator
    assert graph.outputs["approvalMode"] == approval
    assert bool(graph.of_type(PIPELINE)) == (orchestrator == "codepipeline")
    # Every combination builds its models on the stack's SageMaker pipeline (compute `pipeline`, the default).
    [model_build] = graph.of_type("aws:sagemaker/pipeline:Pipeline")
    assert model_build.inputs["pipelineName"] == contracts.model_build_pipeline_name(contracts.PROJECT, "prod")
    auto_functions = [f for f in graph.of_type(LAMBDA) if f.inputs["name"].endswith("-auto-approve")]
    assert bool(auto_functions) == (approval == "auto")


def test_no_resource_or_property_is_deprecated() -> None:
    for graph in _all_graphs():
        deprecated = [log["message"] for log in graph.logs if "deprecated" in log["message"].lower()]
        assert deprecated == [], f"{graph.stack} {graph.config.get('sagemaker-mlops:orchestrator')}: {deprecated}"


def test_every_aws_resource_uses_the_provider_with_project_and_stack_default_tags() -> None:
    for graph in _all_graphs():
        provider = graph.one("pulumi:providers:aws")
        # Providers receive object inputs JSON-encoded, as the engine passes them.
        default_tags = provider.inputs["defaultTags"]
        default_tags = json.loads(default_tags) if isinstance(default_tags, str) else default_tags
        assert default_tags["tags"] == {
            contracts.TAG_PROJECT: contracts.PROJECT, contracts.TAG_STACK: graph.stack}
        untagged = [r for r in graph.custom_resources() if r.type.startswith("aws:") and r.provider != provider.urn]
        assert untagged == [], f"{graph.stack}: AWS resources outside the tagged provider: {untagged}"


def test_github_resources_use_the_provider_configured_from_stack_config(prod: ProgramGraph) -> None:
    provider = prod.one("pulumi:providers:github")
    assert provider.inputs["owner"] == "your-org"
    assert "token" in provider.secret_paths
    github_resources = [r for r in prod.custom_resources() if r.type.startswith("github:")]
    assert github_resources, "prod manages the repository settings"
    assert all(r.provider == provider.urn for r in github_resources), github_resources


# --- Storage ------------------------------------------------------------------------------------------
def _bucket_settings(graph: ProgramGraph, type_token: str) -> Resource:
    store = graph.one("sagemaker-mlops:storage:ArtifactStore")
    [resource] = [r for r in graph.children_of(store.urn) if r.type == f"aws:s3/{type_token}"]
    return resource


def test_bucket_blocks_all_public_access(dev: ProgramGraph) -> None:
    block = _bucket_settings(dev, "bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(block[key] is True for key in
               ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))


def test_bucket_is_versioned_encrypted_and_expires_old_versions(dev: ProgramGraph) -> None:
    assert _bucket_settings(dev, "bucketVersioning:BucketVersioning").inputs[
        "versioningConfiguration"]["status"] == "Enabled"
    rule = _bucket_settings(dev, "bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
                            ).inputs["rules"][0]
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    lifecycle = _bucket_settings(dev, "bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"][0]
    assert lifecycle["status"] == "Enabled"
    assert lifecycle["noncurrentVersionExpiration"]["noncurrentDays"] > 0


def test_old_versions_expire_only_once_versioning_is_on(dev: ProgramGraph) -> None:
    lifecycle = _bucket_settings(dev, "bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    versioning = _bucket_settings(dev, "bucketVersioning:BucketVersioning")
    assert versioning.urn in lifecycle.dependencies
    # An empty filter: the rule covers every object (pulumi-aws 7 warns when neither filter nor prefix is set).
    assert lifecycle.inputs["rules"][0]["filter"] == {}


def test_bucket_policy_denies_requests_without_tls(dev: ProgramGraph) -> None:
    policy = json.loads(_bucket_settings(dev, "bucketPolicy:BucketPolicy").inputs["policy"])
    bucket_arn = f"arn:aws:s3:::{dev.outputs['artifactBucket']}"
    [statement] = policy["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert set(statement["Resource"]) == {bucket_arn, f"{bucket_arn}/*"}


def test_only_dev_storage_is_force_destroyed(dev: ProgramGraph, prod: ProgramGraph) -> None:
    assert dev.one("aws:s3/bucket:Bucket", "artifacts-bucket").inputs["forceDestroy"] is True
    assert prod.one("aws:s3/bucket:Bucket", "artifacts-bucket").inputs["forceDestroy"] is False


# --- Events, Lambdas, dead letters ------------------------------------------------------------------
def test_auto_approval_rule_matches_pending_packages_of_the_group_exactly(dev: ProgramGraph) -> None:
    rule = dev.one("aws:cloudwatch/eventRule:EventRule")
    assert json.loads(rule.inputs["eventPattern"]) == contracts.auto_approval_pattern("churn-model-dev")


def test_github_trigger_rule_matches_approved_packages_of_the_group_exactly(prod: ProgramGraph) -> None:
    [rule] = prod.of_type("aws:cloudwatch/eventRule:EventRule")
    assert json.loads(rule.inputs["eventPattern"]) == contracts.github_trigger_pattern("churn-model-prod")


def _function(graph: ProgramGraph, suffix: str) -> Resource:
    [function] = [f for f in graph.of_type(LAMBDA) if f.inputs["name"].endswith(suffix)]
    return function


def test_auto_approval_lambda_environment_is_exactly_the_contract(dev: ProgramGraph) -> None:
    env = _function(dev, "-auto-approve").inputs["environment"]["variables"]
    assert set(env) == set(contracts.AUTO_APPROVE_ENV)
    assert env[contracts.ENV_MODEL_PACKAGE_GROUP_NAME] == "churn-model-dev"
    assert json.loads(env[contracts.ENV_APPROVAL_THRESHOLDS]) == {"accuracy": 0.8, "auc": 0.85}
    assert env[contracts.ENV_CHAMPION_METRIC] == "auc"
    assert float(env[contracts.ENV_CHAMPION_MIN_DELTA]) == 0.0


def test_github_trigger_lambda_environment_is_exactly_the_contract(prod: ProgramGraph) -> None:
    env = _function(prod, "-github-trigger").inputs["environment"]["variables"]
    assert set(env) == set(contracts.GITHUB_TRIGGER_ENV)
    assert env[contracts.ENV_DEPLOY_REPOSITORY] == "your-org/churn-model"
    assert env[contracts.ENV_DEPLOY_WORKFLOW] == contracts.DEPLOY_WORKFLOW_FILE


def _archive_files(function: Resource) -> dict[str, Path]:
    archive = function.inputs["code"]["__archive__"]
    return {name: Path(asset["__asset__"]["path"]) for name, asset in archive.items()}


@pytest.mark.parametrize(("stack", "suffix", "handler_file"), [
    ("dev", "-auto-approve", contracts.AUTO_APPROVE_HANDLER),
    ("prod", "-github-trigger", contracts.GITHUB_TRIGGER_HANDLER),
])
def test_lambda_package_holds_the_handler_and_contracts_beside_it(stack: str, suffix: str, handler_file: str) -> None:
    function = _function(run_program(stack), suffix)
    files = _archive_files(function)
    assert files[Path(handler_file).name] == ROOT / handler_file
    assert files["contracts.py"] == ROOT / "contracts.py"
    assert all(path.is_file() for path in files.values())
    assert function.inputs["handler"] == f"{Path(handler_file).stem}.handler"
    assert function.inputs["runtime"] in ("python3.12", "python3.13")


@pytest.mark.parametrize(("stack", "suffix"), [("dev", "-auto-approve"), ("prod", "-github-trigger")])
def test_lambda_handler_imports_from_its_package_alone(stack: str, suffix: str, tmp_path: Path) -> None:
    function = _function(run_program(stack), suffix)
    for name, path in _archive_files(function).items():
        shutil.copy(path, tmp_path / name)
    module, attribute = function.inputs["handler"].rsplit(".", 1)
    # Only the package on sys.path (plus the interpreter's site-packages for boto3, as Lambda's runtime
    # has): an import of anything from the repository that the archive lacks fails here.
    check = (f"import sys; sys.path = [p for p in sys.path if not p.startswith({str(ROOT)!r}) or 'site-packages' in p];"
             f"import {module}; assert callable({module}.{attribute}); "
             f"assert {module}.contracts.__file__.startswith({str(tmp_path)!r})")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_event_targets_retry_and_dead_letter_into_encrypted_queues() -> None:
    for graph in (run_program("dev"), run_program("prod")):
        for target in graph.of_type("aws:cloudwatch/eventTarget:EventTarget"):
            assert target.inputs["retryPolicy"]["maximumRetryAttempts"] > 0
            dlq_arn = target.inputs["deadLetterConfig"]["arn"]
            [queue] = [q for q in graph.of_type("aws:sqs/queue:Queue") if dlq_arn.endswith(":" + q.inputs["name"])]
            assert queue.inputs["sqsManagedSseEnabled"] is True


def test_dead_letter_queue_accepts_messages_only_from_its_rule(dev: ProgramGraph) -> None:
    rule = dev.one("aws:cloudwatch/eventRule:EventRule")
    policy = json.loads(dev.one("aws:sqs/queuePolicy:QueuePolicy").inputs["policy"])
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": f"arn:aws:events:us-east-1:123456789012:rule/"
                                                                       f"{rule.inputs['name']}"}}


def test_lambda_permission_lets_only_its_rule_invoke(dev: ProgramGraph) -> None:
    permission = dev.one("aws:lambda/permission:Permission").inputs
    rule = dev.one("aws:cloudwatch/eventRule:EventRule")
    assert permission["principal"] == "events.amazonaws.com"
    assert permission["sourceArn"].endswith(f":rule/{rule.inputs['name']}")


def test_lambda_and_codebuild_log_groups_exist_with_retention(dev: ProgramGraph) -> None:
    groups = {g.inputs["name"]: g.inputs["retentionInDays"] for g in dev.of_type("aws:cloudwatch/logGroup:LogGroup")}
    for function in dev.of_type(LAMBDA):
        assert groups[f"/aws/lambda/{function.inputs['name']}"] == 14
        assert function.inputs["loggingConfig"]["logGroup"] == f"/aws/lambda/{function.inputs['name']}"
    for project in dev.of_type(CODEBUILD):
        log_group = project.inputs["logsConfig"]["cloudwatchLogs"]["groupName"]
        assert groups[log_group] == 14


# --- CodeBuild and CodePipeline ---------------------------------------------------------------------
def _project(graph: ProgramGraph, suffix: str) -> Resource:
    [project] = [p for p in graph.of_type(CODEBUILD) if p.inputs["name"].endswith(suffix)]
    return project


def _env(project: Resource) -> dict[str, str]:
    return {v["name"]: v["value"] for v in project.inputs["environment"]["environmentVariables"]}


def test_train_build_environment_is_exactly_the_contract_and_its_buildspec_exists(dev: ProgramGraph) -> None:
    project = _project(dev, "-train")
    env = _env(project)
    assert set(env) == set(contracts.TRAIN_BUILD_ENV)
    assert env[contracts.ENV_MODEL_BUILD_PIPELINE] == dev.outputs["modelBuildPipelineName"]
    assert env[contracts.ENV_INFERENCE_IMAGE_URI] == contracts.inference_image_uri("us-east-1")
    assert env[contracts.ENV_ARTIFACT_BUCKET] == dev.outputs["artifactBucket"]
    assert project.inputs["source"]["buildspec"] == contracts.TRAIN_BUILDSPEC
    assert (ROOT / contracts.TRAIN_BUILDSPEC).is_file()
    assert project.inputs["environment"]["image"] == "aws/codebuild/standard:7.0"


def test_inline_train_build_environment_names_no_pipeline() -> None:
    env = _env(_project(run_program("dev", {"training": {"compute": "build"}}), "-train"))
    assert set(env) == set(contracts.TRAIN_BUILD_ENV) - set(contracts.PIPELINE_ONLY_BUILD_ENV)
    assert env[contracts.ENV_MODEL_BUILD_COMPUTE] == "build"


def test_deploy_build_environment_is_exactly_the_contract_and_its_buildspec_exists(dev: ProgramGraph) -> None:
    project = _project(dev, "-deploy")
    env = _env(project)
    assert set(env) == set(contracts.DEPLOY_BUILD_ENV)
    assert env[contracts.ENV_SAGEMAKER_EXECUTION_ROLE_ARN] == dev.outputs["sagemakerExecutionRoleArn"]
    stages = contracts.parse_deployment_stages(env[contracts.ENV_DEPLOYMENT_STAGES])
    assert [s.name for s in stages] == ["dev"]
    assert project.inputs["source"]["buildspec"] == contracts.DEPLOY_BUILDSPEC
    assert (ROOT / contracts.DEPLOY_BUILDSPEC).is_file()


def _stages(graph: ProgramGraph) -> list[dict]:
    return graph.one(PIPELINE).inputs["stages"]


def test_pipeline_stages_run_source_build_approval_deploy_with_their_artifacts(dev: ProgramGraph) -> None:
    stages = _stages(dev)
    assert [s["name"] for s in stages] == ["Source", "Build", "Approval", "Deploy"]
    [source], [build], [approval], [deploy] = (s["actions"] for s in stages)
    assert source["provider"] == "CodeStarSourceConnection"
    assert source["configuration"]["ConnectionArn"] == dev.outputs["connectionArn"]
    assert source["outputArtifacts"] == ["SourceArtifact"]
    assert (build["provider"], build["inputArtifacts"], build["outputArtifacts"]) == (
        "CodeBuild", ["SourceArtifact"], ["BuildArtifact"])
    assert build["configuration"]["ProjectName"].endswith("-train")
    # register.py names the pipeline execution on the package it registers.
    assert json.loads(build["configuration"]["EnvironmentVariables"]) == [
        {"name": contracts.ENV_PIPELINE_EXECUTION_ID, "value": "#{codepipeline.PipelineExecutionId}",
         "type": "PLAINTEXT"}]
    assert (approval["category"], approval["provider"]) == ("Invoke", "Lambda")
    assert approval["configuration"]["FunctionName"] == dev.outputs["autoApprovalFunctionName"]
    assert approval["inputArtifacts"] == ["BuildArtifact"]
    assert deploy["inputArtifacts"] == ["SourceArtifact", "BuildArtifact"]
    assert deploy["configuration"]["PrimarySource"] == "SourceArtifact"
    assert deploy["configuration"]["ProjectName"].endswith("-deploy")


def test_pipeline_is_v2_superseded_and_triggered_by_training_changes_on_the_branch(dev: ProgramGraph) -> None:
    pipeline = dev.one(PIPELINE).inputs
    assert (pipeline["pipelineType"], pipeline["executionMode"]) == ("V2", "SUPERSEDED")
    [trigger] = pipeline["triggers"]
    [push] = trigger["gitConfiguration"]["pushes"]
    assert trigger["gitConfiguration"]["sourceActionName"] == "Source"
    assert push["branches"]["includes"] == ["main"]
    assert push["filePaths"]["includes"] == ["training/**"]
    assert pipeline["artifactStores"] == [{"type": "S3", "location": dev.outputs["artifactBucket"]}]


def test_manual_pipeline_approval_notifies_the_topic_and_gates_production(
        prod_on_codepipeline: ProgramGraph) -> None:
    stages = _stages(prod_on_codepipeline)
    assert [s["name"] for s in stages] == [
        "Source", "Build", "Approval", "Deploy-staging", "Approve-production", "Deploy-production"]
    topic = prod_on_codepipeline.outputs["approvalTopicArn"]
    for name in ("Approval", "Approve-production"):
        [action] = next(s for s in stages if s["name"] == name)["actions"]
        assert (action["category"], action["provider"]) == ("Approval", "Manual")
        assert action["configuration"]["NotificationArn"] == topic
    deploys = [s["actions"][0] for s in stages if s["name"].startswith("Deploy-")]
    envs = [{v["name"]: v["value"] for v in json.loads(a["configuration"]["EnvironmentVariables"])} for a in deploys]
    # The first deploy records the pipeline approval on the package; the gated one only deploys.
    assert envs == [
        {contracts.ENV_DEPLOY_STAGE: "staging", contracts.ENV_RECORD_PIPELINE_APPROVAL: "true",
         contracts.ENV_PIPELINE_EXECUTION_ID: "#{codepipeline.PipelineExecutionId}"},
        {contracts.ENV_DEPLOY_STAGE: "production"},
    ]


def test_auto_approved_deploys_record_nothing_and_name_their_stage(dev: ProgramGraph) -> None:
    [deploy] = _stages(dev)[-1]["actions"]
    assert json.loads(deploy["configuration"]["EnvironmentVariables"]) == [
        {"name": contracts.ENV_DEPLOY_STAGE, "value": "dev", "type": "PLAINTEXT"}]


@pytest.mark.parametrize("approval", ["manual", "auto"])
def test_pipeline_role_may_publish_to_every_topic_its_manual_approvals_notify(approval: str) -> None:
    # CodePipeline publishes a manual approval's notice with the pipeline's service role.
    graph = _combination("codepipeline", approval)
    topics = {a["configuration"]["NotificationArn"] for s in _stages(graph) for a in s["actions"]
              if a["provider"] == "Manual"}
    assert topics, "prod gates production with a manual approval"
    role_arn = graph.one(PIPELINE).inputs["roleArn"]
    [role] = [r for r in graph.of_type("aws:iam/role:Role") if role_arn.endswith(f"/{r.inputs['name']}")]
    statements = [s for p in graph.of_type("aws:iam/rolePolicy:RolePolicy") if role.urn in p.dependencies
                  for s in json.loads(p.inputs["policy"])["Statement"]]
    publishable = {r for s in statements if s["Effect"] == "Allow" and "sns:Publish" in s["Action"]
                   for r in s["Resource"]}
    assert topics <= publishable


def test_pipeline_without_manual_approvals_has_no_topic_and_may_not_publish(dev: ProgramGraph) -> None:
    # dev: auto approval and no gated stage, so nothing to notify and no sns:Publish to hold.
    assert dev.of_type("aws:sns/topic:Topic") == []
    role_arn = dev.one(PIPELINE).inputs["roleArn"]
    [role] = [r for r in dev.of_type("aws:iam/role:Role") if role_arn.endswith(f"/{r.inputs['name']}")]
    actions = {a for p in dev.of_type("aws:iam/rolePolicy:RolePolicy") if role.urn in p.dependencies
               for st in json.loads(p.inputs["policy"])["Statement"] for a in st["Action"]}
    assert "lambda:InvokeFunction" in actions
    assert not any(a.startswith("sns:") for a in actions)


def test_sns_topic_for_approvals_is_encrypted(prod_on_codepipeline: ProgramGraph) -> None:
    assert prod_on_codepipeline.one("aws:sns/topic:Topic").inputs["kmsMasterKeyId"] == "alias/aws/sns"


def test_codeconnection_is_tagged_for_sagemaker_and_reported_pending(dev: ProgramGraph) -> None:
    connection = dev.one("aws:codeconnections/connection:Connection").inputs
    assert connection["providerType"] == "GitHub"
    assert connection["tags"] == {"sagemaker": "true"}
    assert dev.outputs["connectionStatus"].startswith("PENDING: activate it in the console")


def test_existing_connection_arn_is_used_instead_of_creating_one() -> None:
    arn = "arn:aws:codeconnections:us-east-1:123456789012:connection/11111111-2222-3333-4444-555555555555"
    graph = run_program("dev", {"connectionArn": arn})
    assert graph.of_type("aws:codeconnections/connection:Connection") == []
    assert _stages(graph)[0]["actions"][0]["configuration"]["ConnectionArn"] == arn
    assert not graph.outputs["connectionStatus"].startswith("PENDING")


def test_studio_code_repository_points_at_the_repository(dev: ProgramGraph) -> None:
    repo = dev.one("aws:sagemaker/codeRepository:CodeRepository").inputs
    assert repo["gitConfig"] == {"repositoryUrl": "https://github.com/your-org/churn-model.git", "branch": "main"}


# --- Deployment stages, alarms, teardown, outputs --------------------------------------------------------
def test_production_rollout_rolls_back_on_alarms_the_program_creates(prod: ProgramGraph) -> None:
    stages = {s.name: s for s in contracts.parse_deployment_stages(prod.outputs["deploymentStages"])}
    production = stages["production"]
    assert production.rollout is not None and production.rollout.alarm_names
    alarms = {a.inputs["name"]: a.inputs for a in prod.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert set(production.rollout.alarm_names) == set(alarms)
    for alarm in alarms.values():
        assert alarm["namespace"] == "AWS/SageMaker"
        assert alarm["dimensions"]["EndpointName"] == production.endpoint_name


def test_rollback_alarms_watch_the_stage_variant_with_latency_in_microseconds(prod: ProgramGraph) -> None:
    alarms = {a.inputs["metricName"]: a.inputs for a in prod.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert set(alarms) == {"Invocation5XXErrors", "ModelLatency"}
    for alarm in alarms.values():
        # SageMaker publishes per-variant endpoint metrics with exactly these two dimensions.
        assert alarm["dimensions"] == {"EndpointName": "sagemaker-mlops-prod-production",
                                       "VariantName": contracts.VARIANT_NAME}
        # A canary bake without traffic is no evidence of failure.
        assert alarm["treatMissingData"] == "notBreaching"
    latency_ms = int(prod.config["sagemaker-mlops:rollbackAlarmLatencyMs"])
    assert alarms["ModelLatency"]["threshold"] == latency_ms * 1000  # ModelLatency is in microseconds
    assert alarms["ModelLatency"]["extendedStatistic"] == "p99"
    errors = alarms["Invocation5XXErrors"]
    assert (errors["statistic"], errors["threshold"], errors["comparisonOperator"]) == (
        "Sum", 0, "GreaterThanThreshold")


def test_data_capture_goes_to_the_artifact_bucket(prod: ProgramGraph) -> None:
    stages = {s.name: s for s in contracts.parse_deployment_stages(prod.outputs["deploymentStages"])}
    capture = stages["production"].data_capture
    assert capture is not None
    assert capture.destination_s3_uri.startswith(f"s3://{prod.outputs['artifactBucket']}/data-capture/")


def test_janitor_depends_on_the_group_and_the_bucket_so_it_is_deleted_first() -> None:
    for graph in (run_program("dev"), run_program("prod")):
        janitor = graph.by_name("janitor")
        group = graph.one("aws:sagemaker/modelPackageGroup:ModelPackageGroup")
        bucket = graph.one("aws:s3/bucket:Bucket", "artifacts-bucket")
        assert {group.urn, bucket.urn} <= set(janitor.dependencies)
        assert janitor.inputs["group"] == graph.outputs["modelPackageGroupName"]


def test_outputs_tell_the_user_what_comes_next(dev: ProgramGraph, prod: ProgramGraph) -> None:
    for key in ("artifactBucket", "modelPackageGroupName", "pipelineName", "pipelineConsoleUrl", "connectionArn",
                "connectionStatus", "endpointNames", "githubPreviewRoleArn", "autoApprovalDeadLetterQueueUrl",
                "trainingDataUri", "modelBuildCompute", "modelBuildPipelineName"):
        assert dev.outputs.get(key), key
    for key in ("githubDeployRoleArn", "githubTriggerDeadLetterQueueUrl", "githubTokenSecretArn", "auditTrailArn"):
        assert prod.outputs.get(key), key
    assert dev.outputs["endpointNames"] == ["sagemaker-mlops-dev-dev"]
    assert prod.outputs["endpointNames"] == ["sagemaker-mlops-prod-staging", "sagemaker-mlops-prod-production"]
    assert dev.outputs["pipelineConsoleUrl"].endswith("/pipelines/sagemaker-mlops-dev/view?region=us-east-1")


def test_github_token_reaches_only_secrets_manager_and_stays_secret(prod: ProgramGraph) -> None:
    token = TEST_SECRETS["githubToken"]
    holders = []
    for resource in prod.resources:
        if token in json.dumps(resource.inputs):
            holders.append(resource)
            assert resource.secret_paths, f"{resource} holds the token outside a secret"
    assert {r.type for r in holders} == {"aws:secretsmanager/secretVersion:SecretVersion", "pulumi:providers:github"}
    assert token not in json.dumps(prod.outputs)
