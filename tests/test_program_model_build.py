"""The model-build pipeline in the real __main__.py under Pulumi's mock engine: the SageMaker pipeline each
stack holds, the definition it carries, the data it reads, the sample table it seeds, and how the build
and the execution role meet it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from program_harness import ROOT, ProgramGraph, Resource, prefetch, run_program

import contracts
from components import model_build as model_build_component
from components import roles as roles_component
from training.pipeline_definition import PipelineTarget, definition_json, iter_steps, wait_bound_minutes

PIPELINE = "aws:sagemaker/pipeline:Pipeline"
OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
CODEBUILD = "aws:codebuild/project:Project"
TEAM_DATA = {"trainingData": "s3://team-data/churn/2026/", "sampleData": False}
BUILD = {"training": {"compute": "build"}}
# Managed spot training: the Train step may wait for capacity beyond its runtime, so executions last longer.
SPOT = {"training": {"maxRuntimeSeconds": 7200, "spot": True, "maxWaitSeconds": 14400}}
JOB_STEPS = ("Processing", "Training")


@pytest.fixture(scope="module", autouse=True)
def _runs_in_parallel() -> None:
    prefetch([("dev", None), ("prod", None), ("dev", TEAM_DATA), ("dev", BUILD), ("dev", SPOT)])


@pytest.fixture(scope="module")
def dev() -> ProgramGraph:
    return run_program("dev")


@pytest.fixture(scope="module")
def prod() -> ProgramGraph:
    return run_program("prod")


def _definition(graph: ProgramGraph) -> dict[str, Any]:
    return json.loads(graph.one(PIPELINE).inputs["pipelineDefinition"])


def _execution_policy(graph: ProgramGraph) -> dict[str, Any]:
    return json.loads(graph.one("aws:iam/rolePolicy:RolePolicy", "roles-sagemaker-execution-policy").inputs["policy"])


def _statement(policy: dict[str, Any], sid: str) -> dict[str, Any]:
    [found] = [s for s in policy["Statement"] if s.get("Sid") == sid]
    return found


def _train_env(graph: ProgramGraph) -> dict[str, str]:
    [project] = [p for p in graph.of_type(CODEBUILD) if p.inputs["name"].endswith("-train")]
    return {v["name"]: v["value"] for v in project.inputs["environment"]["environmentVariables"]}


# --- The pipeline --------------------------------------------------------------------------------
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_both_stacks_hold_the_model_build_pipeline_run_by_the_execution_role(stack: str) -> None:
    graph = run_program(stack)
    pipeline = graph.one(PIPELINE)
    name = contracts.model_build_pipeline_name(contracts.PROJECT, stack)
    assert (pipeline.inputs["pipelineName"], pipeline.inputs["pipelineDisplayName"]) == (name, name)
    assert pipeline.inputs["roleArn"] == graph.outputs["sagemakerExecutionRoleArn"]
    assert graph.outputs["modelBuildPipelineName"] == name
    component = graph.one(model_build_component.COMPONENT_TOKEN)
    assert pipeline.parent == component.urn


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_pipeline_carries_the_definition_function_output_for_the_stack(stack: str) -> None:
    # The same function the embedded run executes and the build starts: any drift between what
    # `pulumi up` deploys and what `make demo` proves shows here.
    graph = run_program(stack)
    bucket = graph.outputs["artifactBucket"]
    expected = definition_json(PipelineTarget(
        project=contracts.PROJECT, stack=stack, region=graph.config["aws:region"],
        pipeline_name=contracts.model_build_pipeline_name(contracts.PROJECT, stack),
        group=graph.outputs["modelPackageGroupName"], bucket=bucket,
        role_arn=graph.outputs["sagemakerExecutionRoleArn"],
        image_uri=contracts.inference_image_uri(graph.config["aws:region"]),
        training_data_uri=f"s3://{bucket}/{contracts.training_data_prefix(stack)}",
        thresholds=json.loads(graph.config[f"{contracts.PROJECT}:approvalThresholds"]),
        training=contracts.TrainingSettings(),
    ))
    assert graph.one(PIPELINE).inputs["pipelineDefinition"] == expected


def test_training_settings_reach_the_definition() -> None:
    training = {"instanceType": "ml.c5.2xlarge", "processingInstanceCount": 2, "volumeSizeGb": 50,
                "maxRuntimeSeconds": 1800, "spot": True, "maxWaitSeconds": 3600}
    definition = _definition(run_program("dev", {"training": training}))
    parameters = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    assert (parameters["InstanceType"], parameters["ProcessingInstanceCount"]) == ("ml.c5.2xlarge", 2)
    [train] = [s for s in iter_steps(definition) if s["Type"] == "Training"]
    assert train["Arguments"]["EnableManagedSpotTraining"] is True
    assert train["Arguments"]["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800, "MaxWaitTimeInSeconds": 3600}
    assert train["Arguments"]["ResourceConfig"]["VolumeSizeInGB"] == 50


def test_pipeline_registers_into_the_stacks_group_pending_approval(prod: ProgramGraph) -> None:
    [register] = [s for s in iter_steps(_definition(prod)) if s["Type"] == "RegisterModel"]
    assert register["Arguments"]["ModelPackageGroupName"] == prod.outputs["modelPackageGroupName"]
    assert register["Arguments"]["ModelApprovalStatus"] == contracts.STATUS_PENDING


def test_pipeline_waits_for_the_group_and_the_execution_role_policy(dev: ProgramGraph) -> None:
    # A pipeline started at once must find its role's permissions and the group it registers into.
    pipeline = dev.one(PIPELINE)
    policy = dev.one("aws:iam/rolePolicy:RolePolicy", "roles-sagemaker-execution-policy")
    group = dev.one("aws:sagemaker/modelPackageGroup:ModelPackageGroup")
    assert {policy.urn, group.urn} <= set(pipeline.dependencies)


def test_pipeline_is_deleted_before_the_janitor_empties_the_group(dev: ProgramGraph) -> None:
    # Children go before their component, the component before what it depends on: no execution can
    # register a package after the janitor has swept the group on destroy.
    component = dev.one(model_build_component.COMPONENT_TOKEN)
    assert dev.by_name("janitor").urn in component.dependencies


# --- The build meets the pipeline --------------------------------------------------------------------
def test_train_build_names_the_data_the_compute_and_the_pipeline(dev: ProgramGraph) -> None:
    env = _train_env(dev)
    assert env[contracts.ENV_TRAINING_DATA_URI] == dev.outputs["trainingDataUri"]
    assert env[contracts.ENV_MODEL_BUILD_COMPUTE] == "pipeline"
    assert env[contracts.ENV_MODEL_BUILD_PIPELINE] == dev.one(PIPELINE).inputs["pipelineName"]


@pytest.mark.parametrize("training", [None, SPOT], ids=["on-demand", "spot"])
def test_train_build_outlasts_the_builds_wait_for_an_execution(training: dict[str, Any] | None) -> None:
    # The build stops an execution after wait_bound_minutes; a CodeBuild timeout before that would end the
    # build and leave the execution running unwatched.
    graph = run_program("dev", training)
    [project] = [p for p in graph.of_type(CODEBUILD) if p.inputs["name"].endswith("-train")]
    assert project.inputs["buildTimeout"] > wait_bound_minutes(_definition(graph))


def test_every_job_step_carries_the_tags_the_execution_role_requires(dev: ProgramGraph) -> None:
    # The role may create jobs only with the stack's tags in the request; a step without them would
    # fail with AccessDenied in the cloud, which no mock would notice.
    condition = _statement(_execution_policy(dev), "StartStackPipelineJobs")["Condition"]["StringEquals"]
    required = {key.removeprefix("aws:RequestTag/"): value for key, value in condition.items()}
    assert required == {contracts.TAG_PROJECT: contracts.PROJECT, contracts.TAG_STACK: "dev"}
    steps = [s for s in iter_steps(_definition(dev)) if s["Type"] in JOB_STEPS]
    assert {s["Name"] for s in steps} == {contracts.STEP_PREPARE, contracts.STEP_TRAIN, contracts.STEP_EVALUATE}
    for step in steps:
        tags = {t["Key"]: t["Value"] for t in step["Arguments"]["Tags"]}
        assert required.items() <= tags.items(), step["Name"]


def test_job_steps_leave_naming_to_pipelines_so_the_role_covers_their_arns(dev: ProgramGraph) -> None:
    # Without a job name in the arguments, SageMaker Pipelines names the jobs pipelines-<execution>-...,
    # the only job ARNs the execution role may create, watch and stop.
    resources = _statement(_execution_policy(dev), "WatchAndStopPipelineJobs")["Resource"]
    assert all(arn.rsplit("/", 1)[1] == f"{roles_component.PIPELINE_JOB_PREFIX}*" for arn in resources)
    for step in (s for s in iter_steps(_definition(dev)) if s["Type"] in JOB_STEPS):
        assert not {"ProcessingJobName", "TrainingJobName"} & set(step["Arguments"]), step["Name"]


def _s3_literals(value: Any) -> list[str]:
    """The s3:// literal every output location starts with (Std:Join's first value, or a plain string)."""
    if isinstance(value, str):
        return [value] if value.startswith("s3://") else []
    if isinstance(value, dict):
        if "Std:Join" in value:
            first = value["Std:Join"]["Values"][0]
            return [first] if isinstance(first, str) and first.startswith("s3://") else []
        return [uri for v in value.values() for uri in _s3_literals(v)]
    if isinstance(value, list):
        return [uri for v in value for uri in _s3_literals(v)]
    return []


def test_job_outputs_land_where_the_execution_role_may_write(dev: ProgramGraph) -> None:
    bucket = dev.outputs["artifactBucket"]
    [granted] = _statement(_execution_policy(dev), "WritePipelineRunOutputs")["Resource"]
    assert granted == f"arn:aws:s3:::{bucket}/{contracts.pipeline_runs_prefix('dev')}*"
    outputs = []
    for step in iter_steps(_definition(dev)):
        arguments = step["Arguments"]
        if step["Type"] == "Processing":
            outputs += [o["S3Output"]["S3Uri"] for o in arguments["ProcessingOutputConfig"]["Outputs"]]
        elif step["Type"] == "Training":
            outputs.append(arguments["OutputDataConfig"]["S3OutputPath"])
    uris = _s3_literals(outputs)
    assert len(uris) == len(outputs) == 6, outputs
    for uri in uris:
        key = uri.removeprefix(f"s3://{bucket}/")
        assert key != uri and f"{key}/".startswith(contracts.pipeline_runs_prefix("dev")), uri


# --- The data --------------------------------------------------------------------------------------
def _source_file(resource: Resource) -> Path:
    path = Path(resource.inputs["source"]["__asset__"]["path"])
    return path if path.is_absolute() else ROOT / path


def test_sample_table_seeds_the_default_prefix_from_a_generated_file(dev: ProgramGraph) -> None:
    from training.sample_data import sample_csv

    seeded = dev.one(OBJECT)
    assert seeded.inputs["bucket"] == dev.outputs["artifactBucket"]
    assert f"s3://{seeded.inputs['bucket']}/{seeded.inputs['key']}" == \
        f"{dev.outputs['trainingDataUri']}{contracts.SAMPLE_FILE}"
    assert seeded.inputs["contentType"] == "text/csv"
    # Written once the bucket's default encryption applies (S3 would otherwise use its own default).
    encryption = dev.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert encryption.urn in seeded.dependencies
    # A file asset: the state keeps the path and hash, not 8000 rows; the file holds exactly the sample.
    assert _source_file(seeded).read_bytes() == sample_csv()


def test_own_training_data_is_read_where_it_is_and_never_seeded() -> None:
    graph = run_program("dev", TEAM_DATA)
    uri = TEAM_DATA["trainingData"]
    assert graph.of_type(OBJECT) == []
    assert graph.outputs["trainingDataUri"] == uri
    assert _train_env(graph)[contracts.ENV_TRAINING_DATA_URI] == uri
    parameters = {p["Name"]: p.get("DefaultValue") for p in _definition(graph)["Parameters"]}
    assert parameters["DataUri"] == uri


def test_execution_role_reads_exactly_the_own_training_data_prefix() -> None:
    policy = _execution_policy(run_program("dev", TEAM_DATA))
    listing = _statement(policy, "ListTrainingData")
    assert (listing["Action"], listing["Resource"]) == (["s3:ListBucket"], ["arn:aws:s3:::team-data"])
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["churn/2026/*"]}}
    reading = _statement(policy, "ReadTrainingData")
    assert (reading["Action"], reading["Resource"]) == (["s3:GetObject"], ["arn:aws:s3:::team-data/churn/2026/*"])


def test_default_training_data_needs_no_grant_beyond_the_artifact_bucket(dev: ProgramGraph) -> None:
    # The default prefix is inside the artifact bucket, which the execution role already reads.
    sids = {s.get("Sid") for s in _execution_policy(dev)["Statement"]}
    assert {"ListArtifactBucket", "ReadArtifacts"} <= sids
    assert not {"ListTrainingData", "ReadTrainingData"} & sids


# --- compute: build ---------------------------------------------------------------------------------
def test_build_compute_has_no_pipeline_but_still_seeds_the_data() -> None:
    graph = run_program("dev", BUILD)
    assert graph.of_type(PIPELINE) == []
    assert "modelBuildPipelineName" not in graph.outputs
    assert graph.outputs["modelBuildCompute"] == "build"
    # The inline build reads the same prefix, so the sample is there for its first push too.
    assert len(graph.of_type(OBJECT)) == 1
    env = _train_env(graph)
    assert env[contracts.ENV_MODEL_BUILD_COMPUTE] == "build"
    assert contracts.ENV_MODEL_BUILD_PIPELINE not in env
    sids = {s.get("Sid") for s in _execution_policy(graph)["Statement"]}
    assert not {"StartStackPipelineJobs", "RegisterIntoStackGroup", "PassExecutionRoleToSageMakerOnly"} & sids
