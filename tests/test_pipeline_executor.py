"""The embedded run's Pipelines executor, on small hand-written definitions against moto's server.

Jobs run for real: processing commands and the training toolkit under `.venv-image` (the scikit-learn image's
Python and packages), with /opt/ml mapped into the test's folder.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import needs_image

import contracts
from local.emulator import aws_env
from local.pipeline_executor import (
    EXECUTION_STEP_FAILURE,
    PROCESSING_ALGORITHM_ERROR,
    DefinitionError,
    PipelineExecution,
    Sandbox,
    StepCache,
    map_container_paths,
    parameter_values,
    parse_definition,
    split_path,
    walk,
)

REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "executor-test"
GROUP = "executor-test-group"
IMAGE = contracts.inference_image_uri(REGION)
ROLE = f"arn:aws:iam::{ACCOUNT}:role/sagemaker-execution"
PIPELINE_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:pipeline/executor-test"


# --- Definition builders -----------------------------------------------------------------------------------
def join(*values: Any, on: str = "/") -> dict[str, Any]:
    return {"Std:Join": {"On": on, "Values": list(values)}}


def get(ref: str) -> dict[str, str]:
    return {"Get": ref}


def run_prefix(step: str, output: str) -> dict[str, Any]:
    return join(f"s3://{BUCKET}/runs", get("Execution.PipelineExecutionId"), step, output)


def processing(name: str, script: str, *, inputs: dict[str, Any] | None = None, outputs: tuple[str, ...] = (),
               property_files: list[dict[str, str]] | None = None, **extra: Any) -> dict[str, Any]:
    """A Processing step whose container runs `bash -c script`, with inputs/outputs under /opt/ml/processing."""
    step: dict[str, Any] = {
        "Name": name, "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                                                      "VolumeSizeInGB": 30}},
            "AppSpecification": {"ImageUri": IMAGE, "ContainerEntrypoint": ["bash", "-c", script]},
            "RoleArn": ROLE,
            "ProcessingInputs": [
                {"InputName": key, "S3Input": {"S3Uri": uri, "LocalPath": f"/opt/ml/processing/input/{key}",
                                               "S3DataType": "S3Prefix", "S3InputMode": "File"}}
                for key, uri in (inputs or {}).items()],
            "ProcessingOutputConfig": {"Outputs": [
                {"OutputName": key, "S3Output": {"S3Uri": run_prefix(name, key),
                                                 "LocalPath": f"/opt/ml/processing/output/{key}",
                                                 "S3UploadMode": "EndOfJob"}}
                for key in outputs]},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        },
    }
    if property_files:
        step["PropertyFiles"] = property_files
    step.update(extra)
    return step


def gate(name: str, metric_step: str, bar: Any, if_steps: list[dict[str, Any]],
         else_steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Name": name, "Type": "Condition", "Arguments": {
        "Conditions": [{"Type": "GreaterThanOrEqualTo", "LeftValue": {"Std:JsonGet": {
            "PropertyFile": get(f"Steps.{metric_step}.PropertyFiles.Report"), "Path": "metrics.auc.value"}},
            "RightValue": bar}],
        "IfSteps": if_steps, "ElseSteps": else_steps}}


def register_step(name: str, model_url: Any) -> dict[str, Any]:
    return {"Name": name, "Type": "RegisterModel", "Arguments": {
        "ModelPackageGroupName": GROUP,
        "ModelApprovalStatus": contracts.STATUS_PENDING,
        "InferenceSpecification": {"Containers": [{"Image": IMAGE, "ModelDataUrl": model_url}],
                                   "SupportedContentTypes": ["text/csv"],
                                   "SupportedResponseMIMETypes": ["application/json"]},
        "CustomerMetadataProperties": {"Execution": get("Execution.PipelineExecutionId")},
    }}


def fail_step(name: str, metric_step: str) -> dict[str, Any]:
    return {"Name": name, "Type": "Fail", "Arguments": {"ErrorMessage": join(
        "auc", {"Std:JsonGet": {"PropertyFile": get(f"Steps.{metric_step}.PropertyFiles.Report"),
                                "Path": "metrics.auc.value"}}, "is below the bar", get("Parameters.Bar"), on=" ")}}


def definition(*steps: dict[str, Any], parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"Version": "2020-12-01", "Parameters": parameters or [], "Steps": list(steps)}


# A Processing step that writes a report whose AUC comes from its input file, and declares it a property file.
SCORE_SCRIPT = (
    'set -e; auc=$(cat /opt/ml/processing/input/data/auc.txt); '
    'echo "{\\"metrics\\": {\\"auc\\": {\\"value\\": $auc}}}" > /opt/ml/processing/output/report/report.json; '
    'echo model-bytes > /opt/ml/processing/output/report/model.bin'
)


def scored_pipeline() -> dict[str, Any]:
    return definition(
        processing("Score", SCORE_SCRIPT, inputs={"data": get("Parameters.DataUri")}, outputs=("report",),
                   property_files=[{"PropertyFileName": "Report", "OutputName": "report", "FilePath": "report.json"}]),
        gate("Gate", "Score", get("Parameters.Bar"),
             [register_step("Register", join(
                 get("Steps.Score.ProcessingOutputConfig.Outputs['report'].S3Output.S3Uri"), "model.bin"))],
             [fail_step("Stop", "Score")]),
        parameters=[{"Name": "DataUri", "Type": "String", "DefaultValue": f"s3://{BUCKET}/data/"},
                    {"Name": "Bar", "Type": "Float", "DefaultValue": 0.8}],
    )


# --- Fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture
def emulator(aws: str) -> dict[str, Any]:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    sagemaker = boto3.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    return {"url": aws, "s3": s3, "sagemaker": sagemaker}


def _execution(emulator: dict[str, Any], tmp_path: Path, document: dict[str, Any],
               cache: StepCache | None = None, **parameters: Any) -> PipelineExecution:
    return PipelineExecution(
        parse_definition(document), pipeline_arn=PIPELINE_ARN, parameters=parameters,
        sagemaker=emulator["sagemaker"], s3=emulator["s3"], cache=cache,
        sandbox=Sandbox(jobs_root=tmp_path / "jobs", job_env=aws_env(emulator["url"], REGION, base={})))


def _execute(emulator: dict[str, Any], tmp_path: Path, document: dict[str, Any], cache: StepCache | None = None,
             **parameters: Any) -> PipelineExecution:
    return _execution(emulator, tmp_path, document, cache, **parameters).run()


def _stop_once_started(execution: PipelineExecution, pid_file: str) -> str:
    """Run the execution in a thread and stop it once its job has written its pid to `pid_file` (relative to the
    execution's folder); returns that pid, after the execution has ended."""
    runner = threading.Thread(target=execution.run)
    runner.start()
    path = execution.folder / pid_file
    while not path.exists() or not path.read_text().strip():
        assert runner.is_alive(), execution.snapshot()
        time.sleep(0.05)

    execution.stop()
    runner.join(timeout=30)

    assert not runner.is_alive()
    return path.read_text().strip()


def _steps(execution: PipelineExecution) -> dict[str, dict[str, Any]]:
    return {row["StepName"]: row for row in execution.snapshot()["steps"]}


def _job(execution: PipelineExecution) -> dict[str, Any]:
    """The description of the execution's one job, as DescribeProcessingJob / DescribeTrainingJob give it."""
    [job] = execution.jobs.values()
    return job.description


def _put(s3: Any, key: str, body: bytes | str) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode() if isinstance(body, str) else body)


def _packages(sagemaker: Any) -> list[dict[str, Any]]:
    return sagemaker.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]


# --- The definition, checked before anything runs -------------------------------------------------------------
def test_unknown_step_type_fails_naming_the_step() -> None:
    document = definition({"Name": "Tune", "Type": "Tuning", "Arguments": {}})

    with pytest.raises(DefinitionError, match=r"step 'Tune' has type 'Tuning'.*does not run") as raised:
        parse_definition(document)
    assert raised.value.step == "Tune"


def test_get_of_an_undeclared_parameter_is_refused_naming_step_and_parameter() -> None:
    document = definition(processing("Score", "true", inputs={"data": get("Parameters.Missing")}))

    with pytest.raises(DefinitionError, match=r"step Score: Parameters.Missing names no declared parameter"):
        parse_definition(document)


def test_json_get_of_an_undeclared_property_file_is_refused() -> None:
    document = scored_pipeline()
    document["Steps"][0].pop("PropertyFiles")

    with pytest.raises(DefinitionError, match=r"property file 'Report', but step Score declares none"):
        parse_definition(document)


def test_steps_run_after_what_they_get_and_depend_on_whatever_the_listed_order() -> None:
    document = scored_pipeline()
    document["Steps"].reverse()
    document["Steps"].insert(0, {"Name": "Last", "Type": "Fail", "Arguments": {}, "DependsOn": ["Register"]})

    order = parse_definition(document).order

    assert order.index("Score") < order.index("Gate") < order.index("Register") < order.index("Last")
    assert order.index("Gate") < order.index("Stop")


def test_steps_that_depend_on_each_other_in_a_cycle_are_refused() -> None:
    document = definition({"Name": "A", "Type": "Condition", "Arguments": {"Conditions": []}, "DependsOn": ["B"]},
                          {"Name": "B", "Type": "Condition", "Arguments": {"Conditions": []}, "DependsOn": ["A"]})

    with pytest.raises(DefinitionError, match=r"the steps A, B depend on each other in a cycle"):
        parse_definition(document)


def test_a_conditions_branch_steps_are_nested_objects_not_names() -> None:
    document = definition({"Name": "Gate", "Type": "Condition",
                           "Arguments": {"Conditions": [], "IfSteps": ["Register"], "ElseSteps": []}})

    with pytest.raises(DefinitionError, match=r"Gate.IfSteps\[0\] must be a step object"):
        parse_definition(document)
    document["Steps"][0]["Arguments"]["IfSteps"] = "Register"
    with pytest.raises(DefinitionError, match=r"step Gate: IfSteps must be a list of step objects"):
        parse_definition(document)


def test_nothing_may_depend_on_a_fail_step() -> None:
    document = definition({"Name": "Stop", "Type": "Fail", "Arguments": {}},
                          {"Name": "After", "Type": "Condition", "Arguments": {"Conditions": []},
                           "DependsOn": ["Stop"]})

    with pytest.raises(DefinitionError, match=r"step After can not depend on Fail step Stop"):
        parse_definition(document)


def test_parameters_take_their_declared_type_and_unknown_ones_are_refused() -> None:
    parsed = parse_definition(definition(
        {"Name": "Stop", "Type": "Fail", "Arguments": {}},
        parameters=[{"Name": "Count", "Type": "Integer", "DefaultValue": 1},
                    {"Name": "Bar", "Type": "Float", "DefaultValue": 0.5}]))

    assert parameter_values(parsed, {"Count": "3"}) == {"Count": 3, "Bar": 0.5}
    with pytest.raises(ValueError, match=r"parameters Typo are not defined in the pipeline"):
        parameter_values(parsed, {"Typo": "x"})
    with pytest.raises(ValueError, match=r"parameter Count is Integer; 'three' is not one"):
        parameter_values(parsed, {"Count": "three"})


def test_property_paths_index_lists_by_their_name_fields() -> None:
    properties = {"ProcessingOutputConfig": {"Outputs": [
        {"OutputName": "train", "S3Output": {"S3Uri": "s3://b/train"}},
        {"OutputName": "test", "S3Output": {"S3Uri": "s3://b/test"}}]}}

    path = split_path("ProcessingOutputConfig.Outputs['test'].S3Output.S3Uri")

    assert walk(properties, path) == "s3://b/test"
    assert walk(properties, split_path("ProcessingOutputConfig.Outputs[0].OutputName")) == "train"


def test_container_paths_move_under_the_job_folder_and_nothing_else_does(tmp_path: Path) -> None:
    root = tmp_path / "job"

    mapped = map_container_paths("cd /opt/ml/processing/input/code && cp /tmp/x /opt/ml/model/; echo /opt/mlx", root)

    assert mapped == (f"cd {root.resolve()}/opt/ml/processing/input/code && cp /tmp/x {root.resolve()}/opt/ml/model/; "
                      "echo /opt/mlx")


# --- Executions against the emulator ---------------------------------------------------------------------------
@needs_image
def test_passing_gate_registers_the_package_with_values_resolved_from_the_run(
        emulator: dict[str, Any], tmp_path: Path) -> None:
    _put(emulator["s3"], "data/auc.txt", "0.91")

    execution = _execute(emulator, tmp_path, scored_pipeline())

    steps = _steps(execution)
    assert execution.status == "Succeeded", steps
    assert [s["StepName"] for s in execution.snapshot()["steps"]] == ["Score", "Gate", "Register"]
    assert steps["Gate"]["Metadata"] == {"Condition": {"Outcome": "True"}}
    package_arn = steps["Register"]["Metadata"]["RegisterModel"]["Arn"]
    package = emulator["sagemaker"].describe_model_package(ModelPackageName=package_arn)
    model_url = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert model_url == f"s3://{BUCKET}/runs/{execution.execution_id}/Score/report/model.bin"
    assert emulator["s3"].get_object(Bucket=BUCKET, Key=model_url.split("/", 3)[3])["Body"].read() == b"model-bytes\n"
    assert package["CustomerMetadataProperties"] == {"Execution": execution.execution_id}


@needs_image
def test_failing_gate_registers_nothing_and_fails_with_the_fail_steps_message(
        emulator: dict[str, Any], tmp_path: Path) -> None:
    _put(emulator["s3"], "data/auc.txt", "0.61")

    execution = _execute(emulator, tmp_path, scored_pipeline())

    steps = _steps(execution)
    assert execution.status == "Failed"
    assert execution.failure_reason == EXECUTION_STEP_FAILURE
    assert list(steps) == ["Score", "Gate", "Stop"]
    assert steps["Gate"]["Metadata"] == {"Condition": {"Outcome": "False"}}
    assert steps["Stop"]["StepStatus"] == "Failed"
    assert steps["Stop"]["FailureReason"] == "auc 0.61 is below the bar 0.8"
    assert steps["Stop"]["Metadata"] == {"Fail": {"ErrorMessage": "auc 0.61 is below the bar 0.8"}}
    assert _packages(emulator["sagemaker"]) == []


@needs_image
def test_processing_container_sees_container_paths_the_images_python_and_its_resource_config(
        emulator: dict[str, Any], tmp_path: Path) -> None:
    script = ("set -e; out=/opt/ml/processing/output/seen; python3 -c 'import sys; print(sys.version_info[:2])' "
              "> $out/python.txt; cp /opt/ml/config/resourceconfig.json $out/; pwd > $out/cwd.txt; "
              "ls /opt/ml/processing/input/data > $out/inputs.txt")
    _put(emulator["s3"], "data/a.csv", "x\n1\n")
    _put(emulator["s3"], "data/nested/b.csv", "x\n2\n")
    document = definition(processing("Look", script, inputs={"data": f"s3://{BUCKET}/data/"}, outputs=("seen",)))

    execution = _execute(emulator, tmp_path, document)

    assert execution.status == "Succeeded", _steps(execution)
    seen = tmp_path / "jobs" / execution.execution_id / "Look" / "opt" / "ml" / "processing" / "output" / "seen"
    assert (seen / "python.txt").read_text().strip() == "(3, 10)"
    assert json.loads((seen / "resourceconfig.json").read_text()) == {"current_host": "algo-1", "hosts": ["algo-1"]}
    job_root = (tmp_path / "jobs" / execution.execution_id / "Look").resolve()
    assert (seen / "cwd.txt").read_text().strip() == str(job_root)
    assert (seen / "inputs.txt").read_text().split() == ["a.csv", "nested"]
    uploaded = emulator["s3"].list_objects_v2(Bucket=BUCKET, Prefix=f"runs/{execution.execution_id}/Look/seen/")
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in uploaded["Contents"]) == [
        "cwd.txt", "inputs.txt", "python.txt", "resourceconfig.json"]


@needs_image
def test_several_processing_instances_each_get_their_shard_and_all_their_outputs_are_uploaded(
        emulator: dict[str, Any], tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d"):
        _put(emulator["s3"], f"data/{name}.csv", name)
    script = ("host=$(python3 -c 'import json; print(json.load(open(\"/opt/ml/config/resourceconfig.json\"))"
              "[\"current_host\"])'); ls /opt/ml/processing/input/data > /opt/ml/processing/output/seen/$host.txt")
    document = definition(processing("Split", script, inputs={"data": f"s3://{BUCKET}/data/"}, outputs=("seen",)))
    document["Steps"][0]["Arguments"]["ProcessingInputs"][0]["S3Input"]["S3DataDistributionType"] = "ShardedByS3Key"
    document["Steps"][0]["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = 2

    execution = _execute(emulator, tmp_path, document)

    assert execution.status == "Succeeded", _steps(execution)
    prefix = f"runs/{execution.execution_id}/Split/seen/"
    seen = {key.rsplit("/", 1)[1]: emulator["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read().split()
            for key in (o["Key"] for o in emulator["s3"].list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"])}
    assert seen == {"algo-1.txt": [b"a.csv", b"c.csv"], "algo-2.txt": [b"b.csv", b"d.csv"]}


@needs_image
def test_failed_processing_job_reports_the_containers_message_and_uploads_nothing(
        emulator: dict[str, Any], tmp_path: Path) -> None:
    script = ("echo partial > /opt/ml/processing/output/report/report.json; "
              "echo 'data rejected: churn.csv column churn' > /opt/ml/output/message; exit 4")
    _put(emulator["s3"], "data/auc.txt", "0.9")
    document = scored_pipeline()
    document["Steps"][0] = processing("Score", script, inputs={"data": get("Parameters.DataUri")}, outputs=("report",),
                                      property_files=[{"PropertyFileName": "Report", "OutputName": "report",
                                                       "FilePath": "report.json"}])

    execution = _execute(emulator, tmp_path, document)

    steps = _steps(execution)
    assert execution.status == "Failed"
    assert list(steps) == ["Score"]
    assert steps["Score"]["FailureReason"] == PROCESSING_ALGORITHM_ERROR
    job = _job(execution)
    assert job["ProcessingJobStatus"] == "Failed"
    assert job["ExitMessage"] == "data rejected: churn.csv column churn\n"
    assert steps["Score"]["Metadata"]["ProcessingJob"]["Arn"] == job["ProcessingJobArn"]
    assert "Contents" not in emulator["s3"].list_objects_v2(Bucket=BUCKET, Prefix="runs/")
    assert _packages(emulator["sagemaker"]) == []


@needs_image
def test_an_input_prefix_without_objects_fails_the_job_before_the_container_runs(
        emulator: dict[str, Any], tmp_path: Path) -> None:
    execution = _execute(emulator, tmp_path, scored_pipeline(), DataUri=f"s3://{BUCKET}/nothing-here/")

    reason = _steps(execution)["Score"]["FailureReason"]
    assert execution.status == "Failed"
    assert "No S3 objects found under S3 URL \"s3://executor-test/nothing-here/\"" in reason
    assert not (tmp_path / "jobs" / execution.execution_id / "Score" / "logs").exists()
    job = _job(execution)
    assert (job["ProcessingJobStatus"], job["FailureReason"]) == ("Failed", reason)


@needs_image
def test_an_output_that_cannot_be_uploaded_fails_the_step_and_its_job(
        emulator: dict[str, Any], tmp_path: Path) -> None:
    document = definition(processing("Score", "echo done > /opt/ml/processing/output/report/done.txt",
                                     outputs=("report",)))
    document["Steps"][0]["Arguments"]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = \
        "s3://no-such-bucket/report"

    execution = _execute(emulator, tmp_path, document)

    reason = _steps(execution)["Score"]["FailureReason"]
    assert execution.failure_reason == EXECUTION_STEP_FAILURE
    assert reason.startswith("ClientError: cannot upload output report to s3://no-such-bucket/report:")
    assert "NoSuchBucket" in reason
    job = _job(execution)
    assert (job["ProcessingJobStatus"], job["FailureReason"]) == ("Failed", reason)


@needs_image
def test_a_request_the_api_would_reject_fails_the_step_in_the_services_words(
        emulator: dict[str, Any], tmp_path: Path) -> None:
    document = definition(processing("Score", "true"))
    document["Steps"][0]["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = "one"

    execution = _execute(emulator, tmp_path, document)

    reason = _steps(execution)["Score"]["FailureReason"]
    assert reason.startswith("ClientError: Failed to invoke sagemaker:CreateProcessingJob. Error Details:")
    assert "InstanceCount" in reason


@needs_image
def test_an_image_other_than_the_scikit_learn_one_is_refused(emulator: dict[str, Any], tmp_path: Path) -> None:
    document = definition(processing("Score", "true"))
    document["Steps"][0]["Arguments"]["AppSpecification"]["ImageUri"] = "123.dkr.ecr.us-east-1.amazonaws.com/x:1"

    execution = _execute(emulator, tmp_path, document)

    assert "is not the scikit-learn image 1.4-2-cpu-py3" in _steps(execution)["Score"]["FailureReason"]


@needs_image
def test_stop_ends_the_running_job_and_the_execution_is_stopped(emulator: dict[str, Any], tmp_path: Path) -> None:
    document = definition(processing("Wait", "echo $$ > /opt/ml/processing/output/pid/pid; sleep 120",
                                     outputs=("pid",)))
    execution = _execution(emulator, tmp_path, document)

    pid = _stop_once_started(execution, "Wait/opt/ml/processing/output/pid/pid")

    assert execution.status == "Stopped"
    assert _steps(execution)["Wait"]["StepStatus"] == "Stopped"
    assert _job(execution)["ProcessingJobStatus"] == "Stopped"
    assert not Path(f"/proc/{pid}").exists()


@needs_image
def test_a_job_past_its_max_runtime_fails(emulator: dict[str, Any], tmp_path: Path) -> None:
    document = definition(processing("Slow", "sleep 30"))
    document["Steps"][0]["Arguments"]["StoppingCondition"]["MaxRuntimeInSeconds"] = 1

    execution = _execute(emulator, tmp_path, document)

    assert "MaxRuntimeExceeded" in _steps(execution)["Slow"]["FailureReason"]


@needs_image
def test_a_cached_step_with_the_same_arguments_reuses_the_earlier_run(emulator: dict[str, Any], tmp_path: Path) -> None:
    _put(emulator["s3"], "data/auc.txt", "0.91")
    document = scored_pipeline()
    # Content-addressed output (no execution id in it): the only kind of step worth caching.
    document["Steps"][0]["Arguments"]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = \
        f"s3://{BUCKET}/cached/report"
    document["Steps"][0]["CacheConfig"] = {"Enabled": True, "ExpireAfter": "P30D"}
    cache = StepCache()

    first = _execute(emulator, tmp_path, document, cache)
    second = _execute(emulator, tmp_path, document, cache)

    assert first.status == second.status == "Succeeded"
    assert _steps(second)["Score"]["CacheHitResult"] == {"SourcePipelineExecutionArn": first.arn}
    assert not (tmp_path / "jobs" / second.execution_id / "Score").exists()
    assert len(_packages(emulator["sagemaker"])) == 2


# --- Training: the image's launcher ---------------------------------------------------------------------------------
TRAIN_SCRIPT = """
import argparse, json, os, sys
from helpers.names import MODEL_NAME  # a sibling package: the toolkit puts the unpacked source on PYTHONPATH

parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int)
parser.add_argument("--fail", type=int, default=0)
parser.add_argument("--sleep", type=int, default=0)
args = parser.parse_args()
if args.fail:
    sys.exit("training went wrong on purpose")
if args.sleep:
    import time
    with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "pid"), "w") as pid:
        pid.write(str(os.getpid()))
    time.sleep(args.sleep)
channel = os.environ["SM_CHANNEL_TRAIN"]
seen = sorted(os.listdir(channel))
os.makedirs(os.path.join(os.environ["SM_MODEL_DIR"], "code"), exist_ok=True)
with open(os.path.join(os.environ["SM_MODEL_DIR"], MODEL_NAME), "w") as model:
    json.dump({"rows": args.rows, "seen": seen, "hps": json.loads(os.environ["SM_HPS"]),
               "host": os.environ["SM_CURRENT_HOST"]}, model)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "code", "inference.py"), "w") as code:
    code.write("# served\\n")
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "evaluation.json"), "w") as evaluation:
    evaluation.write("{}")
"""


def _source_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in {"fit/train.py": TRAIN_SCRIPT, "helpers/__init__.py": "",
                           "helpers/names.py": "MODEL_NAME = 'model.json'\n"}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def training_pipeline(fail: int = 0, sleep: int = 0) -> dict[str, Any]:
    return definition({
        "Name": "Fit", "Type": "Training", "Arguments": {
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            "RoleArn": ROLE,
            "HyperParameters": {"sagemaker_program": '"fit/train.py"',
                                "sagemaker_submit_directory": join('"', get("Parameters.CodeUri"), '"', on=""),
                                "sagemaker_region": f'"{REGION}"', "rows": "25", "fail": str(fail),
                                **({"sleep": str(sleep)} if sleep else {})},
            "InputDataConfig": [{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/train",
                "S3DataDistributionType": "FullyReplicated"}}}],
            "OutputDataConfig": {"S3OutputPath": join(f"s3://{BUCKET}/runs", get("Execution.PipelineExecutionId"),
                                                      "Fit")},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        }}, parameters=[{"Name": "CodeUri", "Type": "String", "DefaultValue": f"s3://{BUCKET}/code/sourcedir.tar.gz"}])


@pytest.fixture
def training_inputs(emulator: dict[str, Any]) -> dict[str, Any]:
    _put(emulator["s3"], "code/sourcedir.tar.gz", _source_archive())
    _put(emulator["s3"], "train/part-1.csv", "a\n1\n")
    _put(emulator["s3"], "train/part-2.csv", "a\n2\n")
    return emulator


@needs_image
def test_training_runs_the_script_through_the_toolkit_and_uploads_model_tar_gz(
        training_inputs: dict[str, Any], tmp_path: Path) -> None:
    execution = _execute(training_inputs, tmp_path, training_pipeline())

    assert execution.status == "Succeeded", _steps(execution)
    job = _job(execution)
    model_url = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert model_url == f"s3://{BUCKET}/runs/{execution.execution_id}/Fit/{job['TrainingJobName']}/output/model.tar.gz"
    archive = training_inputs["s3"].get_object(Bucket=BUCKET, Key=model_url.split("/", 3)[3])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == ["code/inference.py", "model.json"]
        model = json.loads(tar.extractfile("model.json").read())  # type: ignore[union-attr]
    assert model == {"rows": 25, "seen": ["part-1.csv", "part-2.csv"], "hps": {"rows": 25, "fail": 0},
                     "host": "algo-1"}
    config = tmp_path / "jobs" / execution.execution_id / "Fit" / "opt" / "ml" / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text())["sagemaker_program"] == '"fit/train.py"'
    assert list(json.loads((config / "inputdataconfig.json").read_text())) == ["train"]


@needs_image
def test_failed_training_script_fails_the_step_with_the_toolkits_reason_and_uploads_no_model(
        training_inputs: dict[str, Any], tmp_path: Path) -> None:
    execution = _execute(training_inputs, tmp_path, training_pipeline(fail=1))

    reason = _steps(execution)["Fit"]["FailureReason"]
    assert execution.status == "Failed"
    assert reason.startswith("AlgorithmError: ExecuteUserScriptError:") and reason.endswith(", exit code: 1")
    assert "fit/train.py --fail 1 --rows 25" in reason
    uploaded = training_inputs["s3"].list_objects_v2(Bucket=BUCKET, Prefix="runs/")
    assert "Contents" not in uploaded


@needs_image
def test_a_channel_without_objects_fails_the_training_job_before_the_container_runs(
        emulator: dict[str, Any], tmp_path: Path) -> None:
    execution = _execute(emulator, tmp_path, training_pipeline())

    reason = _steps(execution)["Fit"]["FailureReason"]
    assert execution.status == "Failed"
    assert "No S3 objects found under S3 URL \"s3://executor-test/train\"" in reason
    assert not (tmp_path / "jobs" / execution.execution_id / "Fit" / "logs").exists()
    job = _job(execution)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"], job["FailureReason"]) == ("Failed", "Failed", reason)


# --- The stacks' own definitions, end to end ------------------------------------------------------------------------
def _key_paths(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        paths: set[str] = set()
        for key, item in value.items():
            paths |= {f"{prefix}.{key}".lstrip(".")} | _key_paths(item, f"{prefix}.{key}")
        return paths
    if isinstance(value, list):
        return set().union(*(_key_paths(item, f"{prefix}[]") for item in value)) if value else set()
    return set()


def _clear_signal_table(rows: int) -> bytes:
    """The churn table with a target the model can learn well: it passes every stack's bars."""
    from training.sample_data import make_dataset

    frame = make_dataset(rows, seed=9)
    frame[contracts.TARGET_COLUMN] = ((frame["contract_type"] == "month-to-month")
                                      & (frame["tenure_months"] < 12)).astype(int)
    return frame.to_csv(index=False).encode()


@pytest.mark.slow
@needs_image
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_stacks_definition_runs_end_to_end_and_registers_the_inline_paths_package(
        aws: str, tmp_path: Path, stack: str, trained_model_dir: tuple[Path, Path]) -> None:
    from local.runner import PIPELINE_STEPS, load_profile
    from training import model_build
    from training import pipeline_definition as pd
    from training.register import BuildInfo, RegisterSettings, register

    profile = load_profile(stack)
    target = pd.sample_target(stack, thresholds=profile.approval.thresholds, training=profile.training)
    s3, sagemaker = boto3.client("s3"), boto3.client("sagemaker")
    s3.create_bucket(Bucket=target.bucket)
    sagemaker.create_model_package_group(ModelPackageGroupName=target.group)
    data_bucket, data_key = target.training_data_uri.removeprefix("s3://").split("/", 1)
    s3.put_object(Bucket=data_bucket, Key=f"{data_key}churn.csv", Body=_clear_signal_table(1500))
    commit = "c0ffee" * 6 + "abcd"
    code_uri = target.code_uri(commit)
    s3.put_object(Bucket=target.bucket, Key=code_uri.split("/", 3)[3], Body=model_build.package_source())
    pipeline_arn = f"arn:aws:sagemaker:{target.region}:{ACCOUNT}:pipeline/{target.pipeline_name}"

    execution = PipelineExecution(
        parse_definition(pd.definition_json(target)), pipeline_arn=pipeline_arn, sagemaker=sagemaker, s3=s3,
        parameters={"CodeUri": code_uri, "Commit": commit, "BuildId": "build-7"},
        sandbox=Sandbox(tmp_path / "jobs", aws_env(aws, target.region, base={}))).run()

    steps = _steps(execution)
    assert execution.status == "Succeeded", {name: row.get("FailureReason") for name, row in steps.items()}
    assert list(steps) == list(PIPELINE_STEPS)
    piped = sagemaker.describe_model_package(ModelPackageName=steps["Register"]["Metadata"]["RegisterModel"]["Arn"])
    assert piped["ModelApprovalStatus"] == contracts.STATUS_PENDING
    assert piped["MetadataProperties"]["GeneratedBy"] == execution.arn
    model_url = piped["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=target.bucket, Key=model_url.split("/", 3)[3])
                                         ["Body"].read())) as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == [
            f"code/{contracts.INFERENCE_SCRIPT}", contracts.MODEL_FILE]
    inline_arn = register(*trained_model_dir,
                          RegisterSettings(bucket=target.bucket, group=target.group, image_uri=target.image_uri,
                                           stack=target.stack),
                          BuildInfo(build_id="build-8", generated_by="build-8", commit=commit,
                                    pipeline_execution="none"),
                          sagemaker=sagemaker, s3=s3)
    inline = sagemaker.describe_model_package(ModelPackageName=inline_arn)
    # What a pipeline cannot give (training.pipeline_definition says why): the metrics file's digest.
    assert _key_paths(inline) - _key_paths(piped) == {"ModelMetrics.ModelQuality.Statistics.ContentDigest"}
    assert _key_paths(piped) - _key_paths(inline) == set()


@needs_image
def test_stopping_a_training_step_ends_the_users_script_not_only_the_trainer(
        training_inputs: dict[str, Any], tmp_path: Path) -> None:
    execution = _execution(training_inputs, tmp_path, training_pipeline(sleep=120))

    pid = _stop_once_started(execution, "Fit/opt/ml/output/data/pid")

    assert execution.status == "Stopped"
    assert _job(execution)["TrainingJobStatus"] == "Stopped"
    assert not Path(f"/proc/{pid}").exists()
