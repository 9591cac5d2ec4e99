"""The stack's model-build pipeline as plain data: SageMaker Pipelines JSON, built by one pure function.

    python -m training.pipeline_definition [--json]

`definition(target)` returns the pipeline (Version 2020-12-01): Prepare (Processing) -> Train (Training,
script mode) -> Evaluate (Processing, evaluation.json as a property file) -> QualityGate (Condition over
every approval threshold) -> Register (RegisterModel, the package the inline path registers) or Fail.
The program passes `definition_json(target)` to aws.sagemaker.Pipeline, the embedded run executes the
same dict, and the build starts executions of it. Nothing here calls AWS or imports more than the
standard library and contracts, so the program, the build box and the executor can all import it.

Without --json the command prints what a run costs on paper: instance-minutes per step at the default
instance settings, from a stated per-step estimate and from each job's runtime cap.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import contracts

VERSION = "2020-12-01"

# Parameter names: the build passes the first four per execution; the instance settings default to
# the stack's config (owned by `pulumi up`) and may be overridden for one execution.
PARAM_DATA_URI = "DataUri"
PARAM_CODE_URI = "CodeUri"
PARAM_COMMIT = "Commit"
PARAM_BUILD_ID = "BuildId"
PARAM_INSTANCE_TYPE = "InstanceType"
PARAM_PROCESSING_INSTANCE_COUNT = "ProcessingInstanceCount"

# Execution variables SageMaker resolves per execution.
EXECUTION_ID = {"Get": "Execution.PipelineExecutionId"}
EXECUTION_ARN = {"Get": "Execution.PipelineExecutionArn"}

# Processing containers: inputs are downloaded below input/, outputs uploaded from output/.
PROCESSING_ROOT = "/opt/ml/processing"
CODE_INPUT = "code"
DATA_INPUT = "data"
MODEL_INPUT = "model"
TEST_INPUT = "test"
PREPARE_OUTPUTS = (*contracts.DATA_SPLITS, contracts.DATA_REPORT_OUTPUT)
EVALUATION_OUTPUT = "evaluation"
TRAIN_CHANNELS = ("train", "validation")

# Script mode: the toolkit in the image unpacks sagemaker_submit_directory (our sourcedir.tar.gz) and runs
# `python <sagemaker_program> --<hyperparameter> <value> ...` from it. Values are JSON-encoded strings,
# as the SageMaker SDK writes them; the toolkit json-decodes each before making the command line.
TRAIN_PROGRAM = "training/train.py"
CONTAINER_LOG_LEVEL = 20  # logging.INFO
# Our own hyperparameters. Names are passed as `--<name>`, except that a one-letter name becomes `-<n>`
# (sagemaker_training.mapping.to_cmd_args), so none is one letter long.
TRAIN_HYPERPARAMETERS: Mapping[str, int | float | str] = {"seed": 42}

# Metrics of SageMaker's model-quality statistics that a threshold may name (evaluation.json).
GATE_METRICS = ("accuracy", "precision", "recall", "f1", "auc")
METRICS_PATH = "binary_classification_metrics.{metric}.value"

# Retries. The service already retries throttling and its own faults a few times; these policies make
# that explicit and longer, and add the two job failures that a new job usually fixes: no capacity of
# the instance type right now, and an account quota (e.g. concurrent jobs) momentarily exhausted.
SERVICE_RETRY = {
    "ExceptionType": ["Step.SERVICE_FAULT", "Step.THROTTLING"],
    "IntervalSeconds": 5,
    "BackoffRate": 2.0,
    "MaxAttempts": 5,
}
CAPACITY_RETRY = {
    "ExceptionType": ["SageMaker.CAPACITY_ERROR", "SageMaker.RESOURCE_LIMIT"],
    "IntervalSeconds": 60,
    "BackoffRate": 2.0,
    "MaxAttempts": 4,
}
JOB_RETRY_POLICIES = (SERVICE_RETRY, CAPACITY_RETRY)
# Why no step sets CacheConfig: a cache hit reuses a step whose cache-key arguments are unchanged
# (Processing: AppSpecification, Environment, ProcessingInputs; Training: HyperParameters,
# InputDataConfig, ...). Prepare's data input is the DataUri *prefix*, which keeps its URI when the team
# adds or replaces files, so a hit would silently train on yesterday's data. Train and Evaluate read
# Prepare's outputs, which live under this execution's id, so their keys never repeat and a lookup
# could not hit. Only CodeUri (code/<commit>/) is content-addressed, and no step depends on it alone.


@dataclass(frozen=True)
class PipelineTarget:
    """Everything of one stack that the definition depends on."""

    project: str
    stack: str
    region: str
    pipeline_name: str
    group: str
    """Model package group the Register step registers into (the stack's own)."""
    bucket: str
    """Artifact bucket: code/ and pipeline-runs/ below the stack's prefix."""
    role_arn: str
    """SageMaker execution role the jobs run as."""
    image_uri: str
    """SageMaker scikit-learn image: Prepare, Train and Evaluate run in it, and it serves the package."""
    training_data_uri: str
    """Default of the DataUri parameter: an s3:// prefix of CSV files."""
    thresholds: Mapping[str, float] = field(default_factory=dict)
    """Approval thresholds (metric -> minimum); the QualityGate requires every one."""
    training: contracts.TrainingSettings = field(default_factory=contracts.TrainingSettings)

    def code_uri(self, commit: str) -> str:
        """Where the build uploads the training code of a commit (the CodeUri parameter)."""
        return f"s3://{self.bucket}/{contracts.source_archive_key(self.stack, commit)}"

    @property
    def runs_uri(self) -> str:
        """s3:// prefix (no trailing slash) below which each execution's jobs write."""
        return f"s3://{self.bucket}/{contracts.pipeline_runs_prefix(self.stack).rstrip('/')}"


# --- Expressions ------------------------------------------------------------------------------------
def parameter(name: str) -> dict[str, str]:
    return {"Get": f"Parameters.{name}"}


def join(*values: Any, on: str = "") -> dict[str, Any]:
    return {"Std:Join": {"On": on, "Values": list(values)}}


def processing_output_uri(step: str, output: str) -> dict[str, str]:
    return {"Get": f"Steps.{step}.ProcessingOutputConfig.Outputs['{output}'].S3Output.S3Uri"}


def evaluation_metric(metric: str) -> dict[str, Any]:
    """The value of one metric in Evaluate's evaluation.json, read through the property file."""
    return {"Std:JsonGet": {
        "PropertyFile": {"Get": f"Steps.{contracts.STEP_EVALUATE}.PropertyFiles.{contracts.EVALUATION_PROPERTY_FILE}"},
        "Path": METRICS_PATH.format(metric=metric),
    }}


def _run_uri(target: PipelineTarget, step: str, *rest: str) -> dict[str, Any]:
    """s3://<bucket>/<stack>/pipeline-runs/<execution id>/<step>/<rest...>: unique per execution."""
    return join(target.runs_uri, EXECUTION_ID, step, *rest, on="/")


def _json_string(value: str) -> str:
    return json.dumps(value)


def _tags(target: PipelineTarget) -> list[dict[str, str]]:
    return [{"Key": contracts.TAG_PROJECT, "Value": target.project},
            {"Key": contracts.TAG_STACK, "Value": target.stack}]


# --- Steps ------------------------------------------------------------------------------------------
def _entrypoint(module: str) -> list[str]:
    """Unpack the commit's sourcedir.tar.gz to a scratch directory and run one of its modules there.

    Processing has no script mode: this does by hand what the training toolkit does for Train (the
    unpacked directory on PYTHONPATH, so `import contracts` and `from training import ...` work).
    ContainerArguments follow the script as "$@".
    """
    archive = f"{PROCESSING_ROOT}/input/{CODE_INPUT}/{contracts.SOURCE_ARCHIVE}"
    script = (
        "set -eu; "
        'src="$(mktemp -d)"; '
        f'tar -xzf {archive} -C "$src"; '
        'export PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}"; '
        f'exec python3 -m {module} "$@"'
    )
    return ["/bin/bash", "-c", script, module]


def _s3_input(name: str, uri: Any, *, sharded: bool = False) -> dict[str, Any]:
    return {
        "InputName": name,
        "AppManaged": False,
        "S3Input": {
            "S3Uri": uri,
            "LocalPath": f"{PROCESSING_ROOT}/input/{name}",
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": "ShardedByS3Key" if sharded else "FullyReplicated",
        },
    }


def _s3_output(target: PipelineTarget, step: str, name: str) -> dict[str, Any]:
    return {
        "OutputName": name,
        "AppManaged": False,
        "S3Output": {
            "S3Uri": _run_uri(target, step, name),
            "LocalPath": f"{PROCESSING_ROOT}/output/{name}",
            "S3UploadMode": "EndOfJob",
        },
    }


def _processing_resources(target: PipelineTarget, count: Any) -> dict[str, Any]:
    return {"ClusterConfig": {
        "InstanceCount": count,
        "InstanceType": parameter(PARAM_INSTANCE_TYPE),
        "VolumeSizeInGB": target.training.volume_size_gb,
    }}


def _prepare(target: PipelineTarget) -> dict[str, Any]:
    return {
        "Name": contracts.STEP_PREPARE,
        "Type": "Processing",
        "Arguments": {
            # With several instances each takes its share of the files (ShardedByS3Key) and names its
            # split files by host, so the uploads of all instances land side by side.
            "ProcessingResources": _processing_resources(target, parameter(PARAM_PROCESSING_INSTANCE_COUNT)),
            "AppSpecification": {
                "ImageUri": target.image_uri,
                "ContainerEntrypoint": _entrypoint("training.prepare"),
                "ContainerArguments": [
                    "--input", f"{PROCESSING_ROOT}/input/{DATA_INPUT}",
                    "--output", f"{PROCESSING_ROOT}/output",
                    # Messages then name the files as the team knows them, s3://... rather than /opt/ml/...
                    "--source-uri", parameter(PARAM_DATA_URI),
                    # Where a processing job leaves what DescribeProcessingJob returns as ExitMessage.
                    "--failure-file", contracts.EXIT_MESSAGE_FILE,
                ],
            },
            "ProcessingInputs": [
                _s3_input(CODE_INPUT, parameter(PARAM_CODE_URI)),
                _s3_input(DATA_INPUT, parameter(PARAM_DATA_URI), sharded=True),
            ],
            "ProcessingOutputConfig": {
                "Outputs": [_s3_output(target, contracts.STEP_PREPARE, name) for name in PREPARE_OUTPUTS],
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": target.training.max_runtime_seconds},
            "RoleArn": target.role_arn,
            "Tags": _tags(target),
        },
        "RetryPolicies": [dict(p) for p in JOB_RETRY_POLICIES],
    }


def _hyperparameters(target: PipelineTarget) -> dict[str, Any]:
    return {
        "sagemaker_program": _json_string(TRAIN_PROGRAM),
        # JSON-quoted like the other values: the toolkit json-decodes every hyperparameter.
        "sagemaker_submit_directory": join('"', parameter(PARAM_CODE_URI), '"'),
        "sagemaker_region": _json_string(target.region),
        "sagemaker_container_log_level": json.dumps(CONTAINER_LOG_LEVEL),
        **{name: json.dumps(value) for name, value in TRAIN_HYPERPARAMETERS.items()},
    }


def _train(target: PipelineTarget) -> dict[str, Any]:
    settings = target.training
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": settings.max_runtime_seconds}
    if settings.spot:
        if settings.max_wait_seconds is None:
            raise ValueError("training.spot needs max_wait_seconds (managed spot training requires a wait limit)")
        stopping["MaxWaitTimeInSeconds"] = settings.max_wait_seconds
    return {
        "Name": contracts.STEP_TRAIN,
        "Type": "Training",
        "Arguments": {
            "AlgorithmSpecification": {"TrainingImage": target.image_uri, "TrainingInputMode": "File"},
            "HyperParameters": _hyperparameters(target),
            "InputDataConfig": [
                {
                    "ChannelName": channel,
                    "DataSource": {"S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": processing_output_uri(contracts.STEP_PREPARE, channel),
                        "S3DataDistributionType": "FullyReplicated",
                    }},
                    "ContentType": "text/csv",
                }
                for channel in TRAIN_CHANNELS
            ],
            # SageMaker writes <S3OutputPath>/<training job name>/output/model.tar.gz from SM_MODEL_DIR.
            "OutputDataConfig": {"S3OutputPath": _run_uri(target, contracts.STEP_TRAIN)},
            # scikit-learn fits on one machine: one instance, whatever ProcessingInstanceCount says.
            "ResourceConfig": {
                "InstanceCount": 1,
                "InstanceType": parameter(PARAM_INSTANCE_TYPE),
                "VolumeSizeInGB": settings.volume_size_gb,
            },
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": settings.spot,
            "RoleArn": target.role_arn,
            "Tags": _tags(target),
        },
        "RetryPolicies": [dict(p) for p in JOB_RETRY_POLICIES],
    }


def _evaluate(target: PipelineTarget) -> dict[str, Any]:
    return {
        "Name": contracts.STEP_EVALUATE,
        "Type": "Processing",
        "Arguments": {
            # One instance: the metrics are of the whole test split.
            "ProcessingResources": _processing_resources(target, 1),
            "AppSpecification": {
                "ImageUri": target.image_uri,
                "ContainerEntrypoint": _entrypoint("training.evaluate"),
                "ContainerArguments": [
                    "--model", f"{PROCESSING_ROOT}/input/{MODEL_INPUT}/{contracts.MODEL_ARCHIVE}",
                    "--test", f"{PROCESSING_ROOT}/input/{TEST_INPUT}",
                    "--output", f"{PROCESSING_ROOT}/output/{EVALUATION_OUTPUT}",
                    "--failure-file", contracts.EXIT_MESSAGE_FILE,
                ],
            },
            "ProcessingInputs": [
                _s3_input(CODE_INPUT, parameter(PARAM_CODE_URI)),
                _s3_input(MODEL_INPUT, {"Get": f"Steps.{contracts.STEP_TRAIN}.ModelArtifacts.S3ModelArtifacts"}),
                _s3_input(TEST_INPUT, processing_output_uri(contracts.STEP_PREPARE, "test")),
            ],
            "ProcessingOutputConfig": {
                "Outputs": [_s3_output(target, contracts.STEP_EVALUATE, EVALUATION_OUTPUT)],
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": target.training.max_runtime_seconds},
            "RoleArn": target.role_arn,
            "Tags": _tags(target),
        },
        "PropertyFiles": [{
            "PropertyFileName": contracts.EVALUATION_PROPERTY_FILE,
            "OutputName": EVALUATION_OUTPUT,
            "FilePath": contracts.EVALUATION_FILE,
        }],
        "RetryPolicies": [dict(p) for p in JOB_RETRY_POLICIES],
    }


def _register(target: PipelineTarget) -> dict[str, Any]:
    # The same CreateModelPackage request as training.register.model_package_request, with these
    # differences (tests/test_pipeline_definition.py checks exactly them): no ClientToken (the service
    # makes the call) and no ContentDigest (a pipeline cannot hash the metrics file); the description
    # carries the full commit and the AUC as evaluation.json writes it (expressions cannot slice or
    # format); GeneratedBy is the pipeline execution (the build is in BuildId); no Repository.
    metrics_uri = join(processing_output_uri(contracts.STEP_EVALUATE, EVALUATION_OUTPUT), contracts.EVALUATION_FILE,
                       on="/")
    return {
        "Name": contracts.STEP_REGISTER,
        "Type": "RegisterModel",
        "Arguments": {
            "ModelPackageGroupName": target.group,
            "ModelPackageDescription": join(
                f"{target.project}/{target.stack} churn model from commit ", parameter(PARAM_COMMIT),
                ", build ", parameter(PARAM_BUILD_ID), ", holdout AUC ", evaluation_metric("auc"),
            ),
            "ModelApprovalStatus": contracts.STATUS_PENDING,
            "InferenceSpecification": contracts.inference_specification(
                target.image_uri, {"Get": f"Steps.{contracts.STEP_TRAIN}.ModelArtifacts.S3ModelArtifacts"}),
            "ModelMetrics": {
                "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": metrics_uri}},
            },
            "MetadataProperties": {
                "CommitId": parameter(PARAM_COMMIT),
                "GeneratedBy": EXECUTION_ARN,
                "ProjectId": target.stack,
            },
            "CustomerMetadataProperties": {
                "Stack": contracts.metadata_value(target.stack),
                "TrainingData": parameter(PARAM_DATA_URI),
                "PipelineExecution": EXECUTION_ID,
                "BuildId": parameter(PARAM_BUILD_ID),
            },
            "Domain": "MACHINE_LEARNING",
            "Task": "CLASSIFICATION",
            "Tags": _tags(target),
        },
        "RetryPolicies": [dict(SERVICE_RETRY)],
    }


def fail_message_parts(thresholds: Mapping[str, float]) -> list[Any]:
    """ErrorMessage of the Fail step: every gated metric with its value and its bar."""
    parts: list[Any] = ["quality gate: the model must reach every bar; "]
    for index, (metric, bar) in enumerate(sorted(thresholds.items())):
        parts += [("" if index == 0 else ", ") + f"{metric} ", evaluation_metric(metric), f" (bar {bar:g})"]
    return parts


def _fail(target: PipelineTarget) -> dict[str, Any]:
    return {
        "Name": contracts.STEP_FAIL,
        "Type": "Fail",
        "Arguments": {"ErrorMessage": join(*fail_message_parts(target.thresholds))},
    }


def _quality_gate(target: PipelineTarget) -> dict[str, Any]:
    return {
        "Name": contracts.STEP_QUALITY_GATE,
        "Type": "Condition",
        "Arguments": {
            # Every condition must hold for IfSteps to run.
            "Conditions": [
                {"Type": "GreaterThanOrEqualTo", "LeftValue": evaluation_metric(metric), "RightValue": float(bar)}
                for metric, bar in sorted(target.thresholds.items())
            ],
            "IfSteps": [_register(target)],
            "ElseSteps": [_fail(target)],
        },
    }


def _check(target: PipelineTarget) -> None:
    problems = []
    if not target.thresholds:
        problems.append("thresholds is empty (the QualityGate needs at least one metric -> minimum)")
    unknown = sorted(set(target.thresholds) - set(GATE_METRICS))
    if unknown:
        problems.append(f"thresholds names unknown metrics {unknown} (known: {', '.join(GATE_METRICS)})")
    # The DataUri default is also the package's TrainingData value: the one check config.py and the build make.
    data_problem = contracts.data_uri_problem(target.training_data_uri)
    if data_problem is not None:
        problems.append(f"training_data_uri {target.training_data_uri!r} {data_problem[0]} ({data_problem[1]})")
    if target.training.processing_instance_count < 1:
        problems.append("training.processing_instance_count must be at least 1")
    if problems:
        raise ValueError("cannot build the pipeline definition: " + "; ".join(problems))


def definition(target: PipelineTarget) -> dict[str, Any]:
    """The SageMaker Pipelines definition of the stack's model build."""
    _check(target)
    settings = target.training
    return {
        "Version": VERSION,
        "Metadata": {},
        "Parameters": [
            {"Name": PARAM_DATA_URI, "Type": "String", "DefaultValue": target.training_data_uri},
            # No defaults: every execution names its code, commit and build (the build passes them).
            {"Name": PARAM_CODE_URI, "Type": "String"},
            {"Name": PARAM_COMMIT, "Type": "String"},
            {"Name": PARAM_BUILD_ID, "Type": "String"},
            {"Name": PARAM_INSTANCE_TYPE, "Type": "String", "DefaultValue": settings.instance_type},
            {"Name": PARAM_PROCESSING_INSTANCE_COUNT, "Type": "Integer",
             "DefaultValue": settings.processing_instance_count},
        ],
        "Steps": [_prepare(target), _train(target), _evaluate(target), _quality_gate(target)],
    }


def definition_json(target: PipelineTarget) -> str:
    """definition(target) as compact JSON with sorted keys: the same target gives the same bytes."""
    return json.dumps(definition(target), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class StepEntry:
    """One entry of a definition's step lists, as written, and where it stands."""

    where: str
    """`Steps[0]`, or `<Condition>.IfSteps[1]` for a step in a Condition's branch."""
    value: Any
    """The step object, or whatever else the list holds at that place."""
    branch: tuple[str, bool] | None
    """(Condition, the outcome that runs it) for a step in IfSteps (True) or ElseSteps (False)."""


def step_entries(pipeline: Any) -> Iterator[StepEntry]:
    """Every entry of Steps and of each Condition's IfSteps and ElseSteps, in document order (a Condition's
    branches right after it). Reads any JSON: a missing or non-list step list holds nothing, and an entry that is
    not a step object is yielded as it stands, for the caller to judge."""
    yield from _entries(pipeline.get("Steps") if isinstance(pipeline, Mapping) else None, "Steps", None)


def _entries(steps: Any, where: str, branch: tuple[str, bool] | None) -> Iterator[StepEntry]:
    if not isinstance(steps, list):
        return
    for index, value in enumerate(steps):
        yield StepEntry(f"{where}[{index}]", value, branch)
        if not isinstance(value, Mapping) or value.get("Type") != "Condition":
            continue
        arguments = value.get("Arguments")
        if isinstance(arguments, Mapping):
            name = value.get("Name")
            label = name if isinstance(name, str) else f"{where}[{index}]"
            for key, outcome in (("IfSteps", True), ("ElseSteps", False)):
                yield from _entries(arguments.get(key), f"{label}.{key}", (label, outcome))


def iter_steps(pipeline: Any) -> Iterator[dict[str, Any]]:
    """Every step object of a definition, those in a Condition's IfSteps and ElseSteps included, in document
    order; anything else in a step list is skipped."""
    for entry in step_entries(pipeline):
        if isinstance(entry.value, dict):
            yield entry.value


def find_step(pipeline: Any, name: str) -> dict[str, Any]:
    for step in iter_steps(pipeline):
        if step.get("Name") == name:
            return step
    raise KeyError(f"the pipeline definition has no step named {name!r}")


# --- What a run costs on paper -----------------------------------------------------------------------
# SageMaker bills a job's instances from the start of the job on its instances to its end (training:
# TrainingStartTime to TrainingEndTime), not the provisioning before. These estimates are per job and
# assumptions, not measurements: on the sample table the scripts run for seconds, so they stand for
# the image download, data download, container start and upload around them. The caps are exact: a
# job is stopped at its MaxRuntimeInSeconds.
ESTIMATED_BILLED_MINUTES = {contracts.STEP_PREPARE: 3.0, contracts.STEP_TRAIN: 4.0, contracts.STEP_EVALUATE: 3.0}
# Provisioning before a job's clock starts: a few minutes normally; this is a generous bound.
JOB_STARTUP_ALLOWANCE_SECONDS = 10 * 60


@dataclass(frozen=True)
class StepCost:
    step: str
    instance_type: str
    instance_count: int
    estimated_minutes: float
    """Assumed billed minutes per instance (ESTIMATED_BILLED_MINUTES)."""
    cap_minutes: float
    """The job's runtime cap (MaxRuntimeInSeconds, or with spot MaxWaitTimeInSeconds) in minutes."""

    @property
    def estimated_instance_minutes(self) -> float:
        return self.instance_count * self.estimated_minutes

    @property
    def cap_instance_minutes(self) -> float:
        return self.instance_count * self.cap_minutes


def run_cost(pipeline: Mapping[str, Any]) -> list[StepCost]:
    """Instance-minutes of each job step at the definition's default parameters."""
    defaults = {p["Name"]: p.get("DefaultValue") for p in pipeline["Parameters"]}

    def value(expr: Any) -> Any:
        if isinstance(expr, dict) and "Get" in expr and expr["Get"].startswith("Parameters."):
            return defaults[expr["Get"].removeprefix("Parameters.")]
        return expr

    costs = []
    for step in iter_steps(pipeline):
        arguments = step["Arguments"]
        if step["Type"] == "Processing":
            cluster = arguments["ProcessingResources"]["ClusterConfig"]
        elif step["Type"] == "Training":
            cluster = arguments["ResourceConfig"]
        else:
            continue  # Condition, RegisterModel and Fail run no instances
        stopping = arguments["StoppingCondition"]
        cap = stopping.get("MaxWaitTimeInSeconds", stopping["MaxRuntimeInSeconds"])
        costs.append(StepCost(step["Name"], str(value(cluster["InstanceType"])), int(value(cluster["InstanceCount"])),
                              ESTIMATED_BILLED_MINUTES.get(step["Name"], 0.0), cap / 60))
    return costs


def wait_bound_minutes(pipeline: Mapping[str, Any]) -> int:
    """The longest an execution can legitimately run: every job to its cap, after every capacity retry.

    The build waits this long by default before it stops the execution, so the build's own timeout
    (CodeBuild project, workflow job) must be longer.
    """
    total_seconds = 0.0
    for step in iter_steps(pipeline):
        if step["Type"] not in ("Processing", "Training"):
            continue
        stopping = step["Arguments"]["StoppingCondition"]
        total_seconds += stopping.get("MaxWaitTimeInSeconds", stopping["MaxRuntimeInSeconds"])
        for policy in step.get("RetryPolicies", []):
            interval, rate = policy["IntervalSeconds"], policy["BackoffRate"]
            total_seconds += sum(interval * rate ** n for n in range(policy["MaxAttempts"]))
        total_seconds += JOB_STARTUP_ALLOWANCE_SECONDS
    return math.ceil(total_seconds / 60)



def format_cost(costs: Sequence[StepCost]) -> str:
    lines = [f"{'step':<10} {'instance':<14} {'count':>5} {'estimate':>10} {'instance-min':>13} "
             f"{'cap':>8} {'cap instance-min':>17}"]
    for c in costs:
        lines.append(f"{c.step:<10} {c.instance_type:<14} {c.instance_count:>5} {c.estimated_minutes:>8.1f} m "
                     f"{c.estimated_instance_minutes:>13.1f} {c.cap_minutes:>6.0f} m {c.cap_instance_minutes:>17.0f}")
    total = sum(c.estimated_instance_minutes for c in costs)
    cap = sum(c.cap_instance_minutes for c in costs)
    lines.append(f"{'total':<10} {'':<14} {'':>5} {'':>10} {total:>13.1f} {'':>8} {cap:>17.0f}")
    return "\n".join(lines)


def sample_target(stack: str = "dev", thresholds: Mapping[str, float] | None = None,
                  training: contracts.TrainingSettings | None = None, region: str = "us-east-1") -> PipelineTarget:
    """A target with placeholder account resources, for printing and reading the definition offline."""
    account = "123456789012"
    bucket = f"{contracts.PROJECT}-{stack}-artifacts-example"
    return PipelineTarget(
        project=contracts.PROJECT,
        stack=stack,
        region=region,
        pipeline_name=contracts.model_build_pipeline_name(contracts.PROJECT, stack),
        group=f"{contracts.PROJECT}-{stack}",
        bucket=bucket,
        role_arn=f"arn:aws:iam::{account}:role/{contracts.PROJECT}-{stack}-sagemaker-execution",
        image_uri=contracts.inference_image_uri(region),
        training_data_uri=contracts.default_training_data_uri(bucket, stack),
        thresholds=dict(thresholds if thresholds is not None else {"accuracy": 0.8, "auc": 0.85}),
        training=training or contracts.TrainingSettings(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.pipeline_definition", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true",
                        help="print the definition (placeholder bucket, role and account) instead of the cost")
    args = parser.parse_args(argv)
    target = sample_target()
    pipeline = definition(target)
    if args.json:
        print(json.dumps(pipeline, indent=2, sort_keys=True))
        return 0
    settings = target.training
    wrap = textwrap.TextWrapper(width=100).fill
    print(wrap(f"What one run of the model-build pipeline costs on paper, at the default training settings "
               f"(instance type {settings.instance_type}, {settings.processing_instance_count} processing "
               f"instance(s), max runtime {settings.max_runtime_seconds} s per job, spot "
               f"{'on' if settings.spot else 'off'}):"))
    print(format_cost(run_cost(pipeline)))
    print(wrap("estimate: assumed billed minutes per instance (image and data download, container start, upload; "
               "the scripts run for seconds on the sample table). cap: the job's MaxRuntimeInSeconds (with spot: "
               "MaxWaitTimeInSeconds), where SageMaker stops it. QualityGate, Register and Fail run no instances."))
    print(wrap(f"The build waits at most {wait_bound_minutes(pipeline)} min for an execution (every job to its "
               "cap, every capacity retry, 10 min start-up each) before it stops it."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
