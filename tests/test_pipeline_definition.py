"""The model-build pipeline definition: valid requests for SageMaker, references that resolve, the gate.

SageMaker accepts a definition at CreatePipeline and finds most mistakes only when an execution reaches
the step (a Get of a missing output, an argument CreateTrainingJob refuses). So each job step's
Arguments are resolved here with sample values, the way the service resolves them, and validated
against botocore's own model of CreateProcessingJob / CreateTrainingJob / CreateModelPackage; every
Get must name a parameter, an execution variable, an earlier step's property that exists in the
Describe* output of its job type, or a declared property file.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from api_limits import limit_problems
from botocore.validate import ParamValidator

import contracts
from training import pipeline_definition as pd
from training import register

ROOT = Path(__file__).resolve().parent.parent
SAGEMAKER = botocore.session.get_session().get_service_model("sagemaker")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
BUILD_ID = "sagemaker-mlops-dev-train:5f1c2c8e-1111-2222-3333-444455556666"
EXECUTION_ID = "k3x9q2m1z8ab"
JOB_NAMES = {contracts.STEP_PREPARE: "pipelines-k3x9q2m1z8ab-Prepare-Zq1", contracts.STEP_TRAIN:
             "pipelines-k3x9q2m1z8ab-Train-Zq2", contracts.STEP_EVALUATE: "pipelines-k3x9q2m1z8ab-Evaluate-Zq3"}
# Which Describe* answer holds the properties of a step of each type, and which Create* takes its Arguments.
DESCRIBE = {"Processing": "DescribeProcessingJob", "Training": "DescribeTrainingJob"}
CREATE = {"Processing": "CreateProcessingJob", "Training": "CreateTrainingJob", "RegisterModel": "CreateModelPackage"}
NAME_MEMBER = {"Processing": "ProcessingJobName", "Training": "TrainingJobName"}
# The exception types SageMaker Pipelines retry policies accept (Developer Guide, "Retry Policy for
# Pipeline Steps"); Step.* apply to any retryable step, SageMaker.* to job steps only.
STEP_EXCEPTIONS = {"Step.SERVICE_FAULT", "Step.THROTTLING"}
JOB_EXCEPTIONS = {"SageMaker.JOB_INTERNAL_ERROR", "SageMaker.CAPACITY_ERROR", "SageMaker.RESOURCE_LIMIT"}


def _stack_profile(stack: str) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith(f"{contracts.PROJECT}:")}


def _target(stack: str, training: contracts.TrainingSettings | None = None) -> pd.PipelineTarget:
    thresholds = {m: float(v) for m, v in _stack_profile(stack)["approvalThresholds"].items()}
    return pd.sample_target(stack, thresholds=thresholds, training=training)


# dev: the shipped profile's bars at default training settings; prod: its bars, three processing
# instances and managed spot training, the settings that change the arguments the most.
PROD_TRAINING = contracts.TrainingSettings(instance_type="ml.m5.2xlarge", processing_instance_count=3,
                                           volume_size_gb=50, max_runtime_seconds=7200, spot=True,
                                           max_wait_seconds=10800)
TARGETS = {"dev": _target("dev"), "prod": _target("prod", PROD_TRAINING)}


@pytest.fixture(scope="module")
def evaluation() -> dict[str, Any]:
    """evaluation.json as training writes it (the real function), the file the property file reads."""
    from training.train import evaluate

    return evaluate([0, 1, 1, 0, 1, 0, 1, 1], [0.1, 0.8, 0.7, 0.3, 0.9, 0.45, 0.35, 0.6], bootstrap_rounds=5)


# --- A resolver that does what the service does with the expressions -----------------------------
class Resolver:
    """Resolves Get / Std:Join / Std:JsonGet of one definition; fails on anything that does not exist."""

    def __init__(self, pipeline: Mapping[str, Any], target: pd.PipelineTarget, evaluation: Mapping[str, Any],
                 parameters: Mapping[str, Any] | None = None) -> None:
        self.pipeline = pipeline
        self.steps = {s["Name"]: s for s in pd.iter_steps(pipeline)}
        defaults = {p["Name"]: p.get("DefaultValue") for p in pipeline["Parameters"]}
        self.parameters = {**defaults, pd.PARAM_CODE_URI: target.code_uri(COMMIT), pd.PARAM_COMMIT: COMMIT,
                           pd.PARAM_BUILD_ID: BUILD_ID, **(parameters or {})}
        self.execution = {
            "PipelineExecutionId": EXECUTION_ID,
            "PipelineExecutionArn": f"arn:aws:sagemaker:{target.region}:123456789012:pipeline/"
                                    f"{target.pipeline_name}/execution/{EXECUTION_ID}",
        }
        self.evaluation = evaluation
        self.gets: list[str] = []

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Get"}:
            self.gets.append(value["Get"])
            return self.get(value["Get"])
        if set(value) == {"Std:Join"}:
            spec = value["Std:Join"]
            return spec["On"].join(str(self(v)) for v in spec["Values"])
        if set(value) == {"Std:JsonGet"}:
            return self.json_get(value["Std:JsonGet"])
        return {k: self(v) for k, v in value.items()}

    def get(self, path: str) -> Any:
        kind, _, rest = path.partition(".")
        if kind == "Parameters":
            assert rest in self.parameters, f"{path}: no parameter {rest!r}"
            return self.parameters[rest]
        if kind == "Execution":
            assert rest in self.execution, f"{path}: not an execution variable this test knows"
            return self.execution[rest]
        assert kind == "Steps", f"{path}: Get must start with Parameters., Execution. or Steps."
        name, _, prop = rest.partition(".")
        assert name in self.steps, f"{path}: no step {name!r}"
        step = self.steps[name]
        assert step["Type"] in DESCRIBE, f"{path}: a {step['Type']} step has no properties this pipeline may read"
        _check_describe_path(step, prop, path)
        arguments = self(step["Arguments"])
        if prop.startswith("ProcessingOutputConfig.Outputs["):
            output_name = re.match(r"ProcessingOutputConfig\.Outputs\['([^']+)'\]", prop)
            assert output_name, path
            outputs = {o["OutputName"]: o for o in arguments["ProcessingOutputConfig"]["Outputs"]}
            assert output_name.group(1) in outputs, f"{path}: step {name} has no output {output_name.group(1)!r}"
            assert prop.endswith(".S3Output.S3Uri"), path
            return outputs[output_name.group(1)]["S3Output"]["S3Uri"]
        if prop == "ModelArtifacts.S3ModelArtifacts":
            return f"{arguments['OutputDataConfig']['S3OutputPath']}/{JOB_NAMES[name]}/output/{contracts.MODEL_ARCHIVE}"
        raise AssertionError(f"{path}: the resolver does not know this property")

    def json_get(self, spec: Mapping[str, Any]) -> Any:
        ref = spec["PropertyFile"]["Get"]
        match = re.fullmatch(r"Steps\.([^.]+)\.PropertyFiles\.([^.]+)", ref)
        assert match, f"{ref}: a property file is read as Steps.<step>.PropertyFiles.<name>"
        step = self.steps[match.group(1)]
        declared = {f["PropertyFileName"]: f for f in step.get("PropertyFiles", [])}
        assert match.group(2) in declared, f"{ref}: step {step['Name']} declares no such property file"
        prop_file = declared[match.group(2)]
        outputs = [o["OutputName"] for o in step["Arguments"]["ProcessingOutputConfig"]["Outputs"]]
        assert prop_file["OutputName"] in outputs, f"{ref}: OutputName {prop_file['OutputName']} is not an output"
        assert prop_file["FilePath"] == contracts.EVALUATION_FILE
        value: Any = self.evaluation
        for key in spec["Path"].split("."):
            assert isinstance(value, dict) and key in value, f"{spec['Path']} is not in evaluation.json"
            value = value[key]
        return value


def _check_describe_path(step: Mapping[str, Any], prop: str, path: str) -> None:
    """The property path exists in the output shape of the Describe call for the step's job type."""
    shape: Any = SAGEMAKER.operation_model(DESCRIBE[step["Type"]]).output_shape
    for token in re.findall(r"[A-Za-z0-9]+|\['[^']+'\]", prop):
        if token.startswith("["):
            assert shape.type_name == "list", f"{path}: {token} indexes a {shape.type_name}"
            shape = shape.member
            continue
        assert shape.type_name == "structure" and token in shape.members, (
            f"{path}: {token} is not in {DESCRIBE[step['Type']]}'s answer")
        shape = shape.members[token]


def _request(step: Mapping[str, Any], resolve: Resolver) -> dict[str, Any]:
    """The Create* request SageMaker makes for a step: its resolved Arguments plus the job name it picks."""
    request = resolve(step["Arguments"])
    if step["Type"] in NAME_MEMBER:
        request[NAME_MEMBER[step["Type"]]] = JOB_NAMES[step["Name"]]
    return request


# --- Validity ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stack", sorted(TARGETS))
def test_job_and_register_arguments_pass_botocore_validation_of_their_create_call(
        stack: str, evaluation: dict[str, Any]) -> None:
    pipeline = pd.definition(TARGETS[stack])
    resolve = Resolver(pipeline, TARGETS[stack], evaluation)
    checked = []
    for step in pd.iter_steps(pipeline):
        if step["Type"] not in CREATE:
            continue
        shape = SAGEMAKER.operation_model(CREATE[step["Type"]]).input_shape
        request = _request(step, resolve)
        report = ParamValidator().validate(request, shape)
        assert not report.has_errors(), f"{step['Name']}: {report.generate_report()}"
        assert limit_problems(shape, request, step["Name"]) == []
        checked.append(step["Name"])
    assert checked == [contracts.STEP_PREPARE, contracts.STEP_TRAIN, contracts.STEP_EVALUATE, contracts.STEP_REGISTER]


@pytest.mark.parametrize("stack", sorted(TARGETS))
def test_every_get_and_json_get_names_something_that_exists(stack: str, evaluation: dict[str, Any]) -> None:
    pipeline = pd.definition(TARGETS[stack])
    resolve = Resolver(pipeline, TARGETS[stack], evaluation)
    resolve(pipeline["Steps"])  # raises on a reference to nothing
    assert any(g.startswith("Steps.Prepare.ProcessingOutputConfig.Outputs['train']") for g in resolve.gets)
    assert f"Steps.{contracts.STEP_TRAIN}.ModelArtifacts.S3ModelArtifacts" in resolve.gets
    # Every parameter is read somewhere: a parameter nothing reads would be a setting that does nothing.
    assert {g.removeprefix("Parameters.") for g in resolve.gets if g.startswith("Parameters.")} == {
        p["Name"] for p in pipeline["Parameters"]}


def test_a_get_of_an_output_prepare_does_not_declare_is_caught(evaluation: dict[str, Any]) -> None:
    pipeline = pd.definition(TARGETS["dev"])
    train = pd.find_step(pipeline, contracts.STEP_TRAIN)
    train["Arguments"]["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = pd.processing_output_uri(
        contracts.STEP_PREPARE, "training")
    with pytest.raises(AssertionError, match="step Prepare has no output 'training'"):
        Resolver(pipeline, TARGETS["dev"], evaluation)(pipeline["Steps"])
    bad_path = {"Get": "Steps.Train.ModelArtifacts.S3Uri"}
    with pytest.raises(AssertionError, match="S3Uri is not in DescribeTrainingJob"):
        Resolver(pipeline, TARGETS["dev"], evaluation)(bad_path)


def test_steps_only_read_steps_that_run_before_them() -> None:
    pipeline = pd.definition(TARGETS["dev"])
    order = [s["Name"] for s in pd.iter_steps(pipeline)]
    for step in pd.iter_steps(pipeline):
        text = json.dumps(step["Arguments"] if step["Type"] != "Condition" else step["Arguments"]["Conditions"])
        for used in re.findall(r"Steps\.([A-Za-z]+)\.", text):
            assert order.index(used) < order.index(step["Name"]), f"{step['Name']} reads {used}"


def test_iter_steps_walks_a_malformed_definition_without_raising() -> None:
    # Readers of any stack's definition (the executor, the policy pack) judge what they find; the walk never raises.
    register = {"Name": "Register", "Type": "RegisterModel"}
    gate = {"Name": "Gate", "Type": "Condition", "Arguments": {"IfSteps": ["Register", register], "ElseSteps": None}}
    broken = {"Steps": [7, gate, {"Name": "Odd", "Type": "Condition", "Arguments": None}]}

    assert list(pd.iter_steps({})) == list(pd.iter_steps({"Steps": "Prepare"})) == []
    assert [s["Name"] for s in pd.iter_steps(broken)] == ["Gate", "Register", "Odd"]
    assert [(e.where, e.branch) for e in pd.step_entries(broken)][1:4] == [
        ("Steps[1]", None), ("Gate.IfSteps[0]", ("Gate", True)), ("Gate.IfSteps[1]", ("Gate", True))]


def test_definition_json_is_compact_sorted_and_the_same_for_the_same_target() -> None:
    target = TARGETS["prod"]
    text = pd.definition_json(target)
    assert text == pd.definition_json(pd.sample_target("prod", thresholds=dict(target.thresholds),
                                                       training=PROD_TRAINING))
    assert json.loads(text) == pd.definition(target)
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert json.loads(text)["Version"] == "2020-12-01"


def test_steps_are_prepare_train_evaluate_then_the_gate_with_register_or_fail() -> None:
    pipeline = pd.definition(TARGETS["dev"])
    assert [(s["Name"], s["Type"]) for s in pipeline["Steps"]] == [
        ("Prepare", "Processing"), ("Train", "Training"), ("Evaluate", "Processing"), ("QualityGate", "Condition")]
    gate = pipeline["Steps"][3]["Arguments"]
    assert [s["Name"] for s in gate["IfSteps"]] == [contracts.STEP_REGISTER]
    assert [(s["Name"], s["Type"]) for s in gate["ElseSteps"]] == [(contracts.STEP_FAIL, "Fail")]


# --- The quality gate ---------------------------------------------------------------------------------
@pytest.mark.parametrize("stack", sorted(TARGETS))
def test_quality_gate_requires_every_threshold_of_the_stack(stack: str, evaluation: dict[str, Any]) -> None:
    target = TARGETS[stack]
    pipeline = pd.definition(target)
    conditions = pd.find_step(pipeline, contracts.STEP_QUALITY_GATE)["Arguments"]["Conditions"]
    resolve = Resolver(pipeline, target, evaluation)
    gated = {}
    for condition in conditions:
        assert condition["Type"] == "GreaterThanOrEqualTo"
        path = condition["LeftValue"]["Std:JsonGet"]["Path"]
        metric = path.split(".")[1]
        assert resolve(condition["LeftValue"]) == evaluation["binary_classification_metrics"][metric]["value"]
        gated[metric] = condition["RightValue"]
    assert gated == dict(target.thresholds)


def test_fail_message_names_every_metric_with_its_value_and_bar(evaluation: dict[str, Any]) -> None:
    target = TARGETS["prod"]
    pipeline = pd.definition(target)
    message = Resolver(pipeline, target, evaluation)(pd.find_step(pipeline, contracts.STEP_FAIL)["Arguments"])
    values = evaluation["binary_classification_metrics"]
    assert message["ErrorMessage"] == (
        f"quality gate: the model must reach every bar; accuracy {values['accuracy']['value']} (bar 0.85), "
        f"auc {values['auc']['value']} (bar 0.9)")


@pytest.mark.parametrize(("thresholds", "problem"), [
    ({}, "thresholds is empty"),
    ({"auc": 0.9, "rmse": 0.1}, "unknown metrics ['rmse']"),
])
def test_bad_thresholds_are_refused_naming_the_problem(thresholds: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        pd.definition(pd.sample_target("dev", thresholds=thresholds))


def test_a_data_prefix_the_package_cannot_record_is_refused() -> None:
    target = dataclasses.replace(pd.sample_target("dev"), training_data_uri="s3://team-data/churn (2024)/")
    with pytest.raises(ValueError, match=re.escape("cannot be recorded on the model package")):
        pd.definition(target)


# --- Register: the package the inline path registers ----------------------------------------------
def _inline_request(target: pd.PipelineTarget, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    settings = register.RegisterSettings(bucket=target.bucket, group=target.group, image_uri=target.image_uri,
                                         stack=target.stack, project=target.project)
    build = register.BuildInfo(build_id=BUILD_ID, commit=COMMIT, pipeline_execution=EXECUTION_ID,
                               generated_by=f"arn:aws:codebuild:us-east-1:123456789012:build/{BUILD_ID}")
    return register.model_package_request(
        settings, build, model_url="s3://b/m.tar.gz", metrics_url="s3://b/evaluation.json",
        metrics_digest="sha256:" + "0" * 64, evaluation=evaluation, training_data=target.training_data_uri,
        client_token="6f1c2c8e-1111-2222-3333-444455556666")


def _key_paths(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        paths = set()
        for key, item in value.items():
            paths |= {f"{prefix}.{key}".lstrip(".")} | _key_paths(item, f"{prefix}.{key}")
        return paths
    if isinstance(value, list):
        return set().union(*(_key_paths(item, f"{prefix}[]") for item in value)) if value else set()
    return set()


def test_register_request_has_the_inline_shape_but_for_token_digest_and_repository(
        evaluation: dict[str, Any]) -> None:
    target = TARGETS["dev"]
    pipeline = pd.definition(target)
    piped = Resolver(pipeline, target, evaluation)(pd.find_step(pipeline, contracts.STEP_REGISTER)["Arguments"])
    inline = _inline_request(target, evaluation)
    # BuildInfo without a repository leaves Repository out of the inline request as well.
    assert _key_paths(inline) - _key_paths(piped) == {
        "ClientToken", "ModelMetrics.ModelQuality.Statistics.ContentDigest"}
    assert _key_paths(piped) - _key_paths(inline) == set()


def test_register_values_equal_the_inline_request_where_the_pipeline_knows_them(evaluation: dict[str, Any]) -> None:
    target = TARGETS["dev"]
    pipeline = pd.definition(target)
    resolve = Resolver(pipeline, target, evaluation)
    piped = resolve(pd.find_step(pipeline, contracts.STEP_REGISTER)["Arguments"])
    inline = _inline_request(target, evaluation)
    for key in ("ModelPackageGroupName", "ModelApprovalStatus", "Domain", "Task", "Tags"):
        assert piped[key] == inline[key], key
    spec, inline_spec = piped["InferenceSpecification"], inline["InferenceSpecification"]
    assert {k: v for k, v in spec.items() if k != "Containers"} == {
        k: v for k, v in inline_spec.items() if k != "Containers"}
    container = dict(spec["Containers"][0])
    assert container.pop("ModelDataUrl") == (f"{target.runs_uri}/{EXECUTION_ID}/Train/{JOB_NAMES['Train']}"
                                            f"/output/{contracts.MODEL_ARCHIVE}")
    assert container == {k: v for k, v in inline_spec["Containers"][0].items() if k != "ModelDataUrl"}
    assert piped["ModelMetrics"]["ModelQuality"]["Statistics"] == {
        "ContentType": "application/json",
        "S3Uri": f"{target.runs_uri}/{EXECUTION_ID}/Evaluate/evaluation/{contracts.EVALUATION_FILE}"}
    assert piped["MetadataProperties"] == {"CommitId": COMMIT, "ProjectId": target.stack,
                                           "GeneratedBy": resolve.execution["PipelineExecutionArn"]}
    assert piped["CustomerMetadataProperties"] == {
        "Stack": inline["CustomerMetadataProperties"]["Stack"], "TrainingData": target.training_data_uri,
        "PipelineExecution": EXECUTION_ID, "BuildId": inline["CustomerMetadataProperties"]["BuildId"]}
    auc = evaluation["binary_classification_metrics"]["auc"]["value"]
    about = f"{target.project}/{target.stack} churn model from commit"
    assert inline["ModelPackageDescription"] == f"{about} {COMMIT[:12]}, build {BUILD_ID}, holdout AUC {auc:.4f}"
    assert piped["ModelPackageDescription"] == f"{about} {COMMIT}, build {BUILD_ID}, holdout AUC {auc}"


def test_register_goes_into_the_stack_group_pending_manual_approval() -> None:
    arguments = pd.find_step(pd.definition(TARGETS["prod"]), contracts.STEP_REGISTER)["Arguments"]
    assert arguments["ModelPackageGroupName"] == TARGETS["prod"].group
    assert arguments["ModelApprovalStatus"] == contracts.STATUS_PENDING


# --- Jobs ------------------------------------------------------------------------------------------------
def test_training_runs_the_program_of_the_uploaded_code_in_script_mode(evaluation: dict[str, Any]) -> None:
    target = TARGETS["dev"]
    pipeline = pd.definition(target)
    hyperparameters = _request(pd.find_step(pipeline, contracts.STEP_TRAIN),
                               Resolver(pipeline, target, evaluation))["HyperParameters"]
    # The toolkit json-decodes each value (sagemaker_training.environment.read_hyperparameters).
    decoded = {name: json.loads(value) for name, value in hyperparameters.items()}
    assert decoded["sagemaker_program"] == pd.TRAIN_PROGRAM
    assert (ROOT / pd.TRAIN_PROGRAM).is_file()
    assert decoded["sagemaker_submit_directory"] == target.code_uri(COMMIT)
    assert decoded["sagemaker_region"] == target.region
    # A one-letter name would reach the script as `-x`, not `--x` (sagemaker_training.mapping.to_cmd_args).
    assert all(len(name) > 1 for name in hyperparameters)


def test_training_reads_prepare_train_and_validation_splits() -> None:
    train = pd.find_step(pd.definition(TARGETS["dev"]), contracts.STEP_TRAIN)["Arguments"]
    assert {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in train["InputDataConfig"]} == {
        "train": pd.processing_output_uri("Prepare", "train"),
        "validation": pd.processing_output_uri("Prepare", "validation"),
    }


def test_spot_settings_turn_on_managed_spot_with_the_wait_limit() -> None:
    dev = pd.find_step(pd.definition(TARGETS["dev"]), contracts.STEP_TRAIN)["Arguments"]
    prod = pd.find_step(pd.definition(TARGETS["prod"]), contracts.STEP_TRAIN)["Arguments"]
    assert dev["EnableManagedSpotTraining"] is False and "MaxWaitTimeInSeconds" not in dev["StoppingCondition"]
    assert prod["EnableManagedSpotTraining"] is True
    assert prod["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 10800}


def test_spot_without_a_wait_limit_is_refused() -> None:
    settings = contracts.TrainingSettings(spot=True)
    with pytest.raises(ValueError, match="needs max_wait_seconds"):
        pd.definition(pd.sample_target("dev", training=settings))


def test_instance_settings_are_parameters_defaulting_to_the_stack_settings() -> None:
    parameters = {p["Name"]: p for p in pd.definition(TARGETS["prod"])["Parameters"]}
    assert parameters[pd.PARAM_INSTANCE_TYPE] == {"Name": "InstanceType", "Type": "String",
                                                  "DefaultValue": "ml.m5.2xlarge"}
    assert parameters[pd.PARAM_PROCESSING_INSTANCE_COUNT] == {"Name": "ProcessingInstanceCount", "Type": "Integer",
                                                              "DefaultValue": 3}
    assert parameters[pd.PARAM_DATA_URI]["DefaultValue"] == TARGETS["prod"].training_data_uri
    # What each execution must name has no default: an execution without it fails at start, not mid-way.
    assert all("DefaultValue" not in parameters[n] for n in (pd.PARAM_CODE_URI, pd.PARAM_COMMIT, pd.PARAM_BUILD_ID))


def test_prepare_shards_the_data_over_the_processing_instances_and_evaluate_uses_one() -> None:
    pipeline = pd.definition(TARGETS["prod"])
    prepare = pd.find_step(pipeline, contracts.STEP_PREPARE)["Arguments"]
    evaluate = pd.find_step(pipeline, contracts.STEP_EVALUATE)["Arguments"]
    assert prepare["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == pd.parameter(
        pd.PARAM_PROCESSING_INSTANCE_COUNT)
    inputs = {i["InputName"]: i["S3Input"] for i in prepare["ProcessingInputs"]}
    assert inputs["data"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert inputs["code"]["S3DataDistributionType"] == "FullyReplicated"
    assert evaluate["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1


@pytest.mark.parametrize("stack", sorted(TARGETS))
def test_every_job_writes_below_this_execution_and_is_tagged(stack: str, evaluation: dict[str, Any]) -> None:
    target = TARGETS[stack]
    pipeline = pd.definition(target)
    resolve = Resolver(pipeline, target, evaluation)
    for step in pd.iter_steps(pipeline):
        if step["Type"] not in NAME_MEMBER:
            continue
        request = _request(step, resolve)
        if step["Type"] == "Processing":
            uris = [o["S3Output"]["S3Uri"] for o in request["ProcessingOutputConfig"]["Outputs"]]
        else:
            uris = [request["OutputDataConfig"]["S3OutputPath"]]
        assert all(u.startswith(f"{target.runs_uri}/{EXECUTION_ID}/{step['Name']}") for u in uris), uris
        assert request["RoleArn"] == target.role_arn
        assert {t["Key"]: t["Value"] for t in request["Tags"]} == {
            contracts.TAG_PROJECT: target.project, contracts.TAG_STACK: target.stack}


def test_retry_policies_cover_capacity_and_throttling_with_documented_exception_types() -> None:
    for step in pd.iter_steps(pd.definition(TARGETS["dev"])):
        policies = step.get("RetryPolicies", [])
        caught = {e for p in policies for e in p["ExceptionType"]}
        if step["Type"] in ("Processing", "Training"):
            assert {"SageMaker.CAPACITY_ERROR", "Step.THROTTLING"} <= caught <= STEP_EXCEPTIONS | JOB_EXCEPTIONS
        elif step["Type"] == "RegisterModel":
            assert caught == STEP_EXCEPTIONS  # no job behind it: SageMaker.* would never match
        else:
            assert not policies, step["Name"]
        for policy in policies:
            assert 1 <= policy["MaxAttempts"] <= 20 and 0 < policy["IntervalSeconds"] <= 43200


def test_no_step_caches_because_the_data_prefix_is_not_content_addressed() -> None:
    assert all("CacheConfig" not in step for step in pd.iter_steps(pd.definition(TARGETS["dev"])))


# --- The processing entrypoint, run with bash as the container runs it ------------------------------------
@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_processing_entrypoint_unpacks_the_code_and_runs_its_module_with_the_arguments(tmp_path: Path) -> None:
    # A stand-in source archive whose training.prepare prints what it got: the test is of the entrypoint.
    source = tmp_path / "source"
    (source / "training").mkdir(parents=True)
    (source / "contracts.py").write_text("NAME = 'contracts from the archive'\n")
    (source / "training" / "__init__.py").write_text("")
    (source / "training" / "prepare.py").write_text(
        "import sys, contracts\nprint(contracts.NAME, sys.argv[1:])\n")
    root = tmp_path / "opt" / "ml"
    code = root / "processing" / "input" / "code"
    code.mkdir(parents=True)
    with tarfile.open(code / contracts.SOURCE_ARCHIVE, "w:gz") as tar:
        for name in ("contracts.py", "training/__init__.py", "training/prepare.py"):
            tar.add(source / name, arcname=name)
    prepare = pd.find_step(pd.definition(TARGETS["dev"]), contracts.STEP_PREPARE)["Arguments"]["AppSpecification"]

    def local(arg: str) -> str:
        return arg.replace("/opt/ml/", f"{root}/")

    argv: list[Any] = [local(a) if isinstance(a, str) else a
                       for a in prepare["ContainerEntrypoint"] + prepare["ContainerArguments"]]
    data_uri = TARGETS["dev"].training_data_uri
    argv = [data_uri if isinstance(a, dict) else a for a in argv]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"contracts from the archive ['--input', '{root}/processing/input/data', '--output', "
        f"'{root}/processing/output', '--source-uri', '{data_uri}', '--failure-file', '{root}/output/message']")


@pytest.mark.parametrize(("step", "module"), [(contracts.STEP_PREPARE, "training.prepare"),
                                              (contracts.STEP_EVALUATE, "training.evaluate")])
def test_processing_arguments_are_accepted_by_the_script_the_step_runs(
        step: str, module: str, evaluation: dict[str, Any]) -> None:
    import importlib

    pipeline = pd.definition(TARGETS["dev"])
    app = _request(pd.find_step(pipeline, step), Resolver(pipeline, TARGETS["dev"], evaluation))["AppSpecification"]
    assert app["ContainerEntrypoint"][-1] == module
    args = importlib.import_module(module).parse_args(app["ContainerArguments"])
    assert args.failure_file == Path(contracts.EXIT_MESSAGE_FILE)
    if step == contracts.STEP_PREPARE:
        assert (args.input, args.output) == (Path("/opt/ml/processing/input/data"), Path("/opt/ml/processing/output"))
        assert args.source_uri == TARGETS["dev"].training_data_uri
    else:
        assert args.model == Path(f"/opt/ml/processing/input/model/{contracts.MODEL_ARCHIVE}")


IMAGE_PYTHON = ROOT / ".venv-image" / "bin" / "python"


@pytest.mark.skipif(not IMAGE_PYTHON.exists(), reason=".venv-image is not built (make install builds it)")
def test_training_command_line_made_by_the_toolkit_is_accepted_by_train(evaluation: dict[str, Any]) -> None:
    from training import train

    pipeline = pd.definition(TARGETS["dev"])
    hyperparameters = _request(pd.find_step(pipeline, contracts.STEP_TRAIN),
                               Resolver(pipeline, TARGETS["dev"], evaluation))["HyperParameters"]
    # What the image's toolkit does: json-decode each value, keep the user's (non-sagemaker_) ones and turn
    # them into a command line with its own mapping.to_cmd_args.
    script = ("import json, sys\n"
              "from sagemaker_training import mapping\n"
              "hps = {k: json.loads(v) for k, v in json.loads(sys.argv[1]).items()}\n"
              "user = {k: v for k, v in hps.items() if not k.startswith('sagemaker_')}\n"
              "print(json.dumps(mapping.to_cmd_args(user)))\n")
    done = subprocess.run([str(IMAGE_PYTHON), "-c", script, json.dumps(hyperparameters)], capture_output=True,
                          text=True, timeout=60, check=True)
    argv = json.loads(done.stdout)
    assert argv == ["--seed", "42"]
    assert train.parse_args(argv, {}).seed == 42


# --- Cost on paper -----------------------------------------------------------------------------------------
def test_run_cost_counts_every_processing_instance_and_caps_spot_training_at_its_wait() -> None:
    costs = {c.step: c for c in pd.run_cost(pd.definition(TARGETS["prod"]))}
    assert set(costs) == {contracts.STEP_PREPARE, contracts.STEP_TRAIN, contracts.STEP_EVALUATE}
    prepare = costs[contracts.STEP_PREPARE]
    assert (prepare.instance_type, prepare.instance_count) == ("ml.m5.2xlarge", 3)
    assert prepare.estimated_instance_minutes == 3 * pd.ESTIMATED_BILLED_MINUTES[contracts.STEP_PREPARE]
    assert prepare.cap_instance_minutes == 3 * 120
    assert costs[contracts.STEP_TRAIN].cap_minutes == 180  # MaxWaitTimeInSeconds 10800
    assert costs[contracts.STEP_EVALUATE].instance_count == 1


def test_wait_bound_grows_with_the_job_caps() -> None:
    short = pd.sample_target("dev", training=contracts.TrainingSettings(max_runtime_seconds=600))
    long = pd.sample_target("dev", training=contracts.TrainingSettings(max_runtime_seconds=6000))
    assert pd.wait_bound_minutes(pd.definition(long)) - pd.wait_bound_minutes(pd.definition(short)) == 3 * 90


def test_cost_command_prints_the_default_settings_table_the_readme_shows(capsys: pytest.CaptureFixture[str]) -> None:
    assert pd.main([]) == 0
    out = capsys.readouterr().out
    table = pd.format_cost(pd.run_cost(pd.definition(pd.sample_target())))
    assert table in out
    assert f"```\n{table}\n```" in (ROOT / "README.md").read_text()
    assert "ml.m5.xlarge" in out
    total = sum(c.estimated_instance_minutes for c in pd.run_cost(pd.definition(pd.sample_target())))
    assert re.search(rf"^total\s+{total:.1f}\s+180$", out, re.MULTILINE), out
