"""The names every part of sagemaker-mlops agrees on, as plain data.

Imported by the Pulumi program (config.py, components/), the Lambda handlers (packaged beside them),
the training scripts, the embedded run and the tests. No Pulumi import and no I/O here, so the
Lambda package and the CodeBuild scripts can carry it unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

PROJECT = "sagemaker-mlops"

# Tag keys on everything the program creates (provider default tags) and on what the pipeline
# creates outside Pulumi state, so teardown finds exactly one stack's resources.
TAG_PROJECT = "mlops:project"
TAG_STACK = "mlops:stack"
# Traceability beyond the two tags above: which model package a model/endpoint config/endpoint serves.
TAG_MODEL_PACKAGE = "mlops:model-package-arn"

# The one production variant deploy.py creates: blue/green needs the same name in the old and new
# endpoint config, and SageMaker reports endpoint metrics (the rollback alarms) per variant.
VARIANT_NAME = "AllTraffic"

# --- Environment variables (the design's contract table) -------------------------------------
ENV_ARTIFACT_BUCKET = "ARTIFACT_BUCKET"
ENV_MODEL_PACKAGE_GROUP_NAME = "MODEL_PACKAGE_GROUP_NAME"
ENV_INFERENCE_IMAGE_URI = "INFERENCE_IMAGE_URI"
ENV_SAGEMAKER_EXECUTION_ROLE_ARN = "SAGEMAKER_EXECUTION_ROLE_ARN"
ENV_DEPLOYMENT_STAGES = "DEPLOYMENT_STAGES"
ENV_APPROVAL_THRESHOLDS = "APPROVAL_THRESHOLDS"
ENV_CHAMPION_METRIC = "CHAMPION_METRIC"
ENV_CHAMPION_MIN_DELTA = "CHAMPION_MIN_DELTA"
ENV_DEPLOY_REPOSITORY = "DEPLOY_REPOSITORY"
ENV_DEPLOY_WORKFLOW = "DEPLOY_WORKFLOW"
ENV_DEPLOY_REF = "DEPLOY_REF"
ENV_GITHUB_TOKEN_SECRET_ID = "GITHUB_TOKEN_SECRET_ID"  # noqa: S105 - a variable name, not a secret
ENV_GITHUB_API_URL = "GITHUB_API_URL"
# Set per pipeline action (CodePipeline action environment), not per project: which deployment
# stage a Deploy action serves, whether it first records the manual approval, and the execution id.
ENV_DEPLOY_STAGE = "DEPLOY_STAGE"
ENV_RECORD_PIPELINE_APPROVAL = "RECORD_PIPELINE_APPROVAL"
ENV_PIPELINE_EXECUTION_ID = "PIPELINE_EXECUTION_ID"
# Not in the contract table but read by register/deploy/teardown for tags and metadata.
ENV_MLOPS_PROJECT = "MLOPS_PROJECT"
ENV_MLOPS_STACK = "MLOPS_STACK"
# The model build (training.model_build, run by CodeBuild `train` and model-build.yml): where the team's
# data lives, where the model is built (`pipeline`: the stack's SageMaker pipeline; `build`: inline in
# the build box), and the SageMaker pipeline to start (set exactly when the compute is `pipeline`).
ENV_TRAINING_DATA_URI = "TRAINING_DATA_URI"
ENV_MODEL_BUILD_COMPUTE = "MODEL_BUILD_COMPUTE"
ENV_MODEL_BUILD_PIPELINE = "MODEL_BUILD_PIPELINE_NAME"

DEFAULT_GITHUB_API_URL = "https://api.github.com"

# Which component sets which variables, and who reads them. Tests compare the program's
# CodeBuild/Lambda environments with these sets exactly.
TRAIN_BUILD_ENV = (
    ENV_ARTIFACT_BUCKET,
    ENV_MODEL_PACKAGE_GROUP_NAME,
    ENV_INFERENCE_IMAGE_URI,
    ENV_MLOPS_PROJECT,
    ENV_MLOPS_STACK,
    ENV_TRAINING_DATA_URI,
    ENV_MODEL_BUILD_COMPUTE,
    ENV_MODEL_BUILD_PIPELINE,
)
# Of TRAIN_BUILD_ENV, set only where the compute is `pipeline` (a `build` stack has no pipeline to name).
PIPELINE_ONLY_BUILD_ENV = (ENV_MODEL_BUILD_PIPELINE,)
DEPLOY_BUILD_ENV = (
    ENV_ARTIFACT_BUCKET,
    ENV_MODEL_PACKAGE_GROUP_NAME,
    ENV_SAGEMAKER_EXECUTION_ROLE_ARN,
    ENV_DEPLOYMENT_STAGES,
    ENV_MLOPS_PROJECT,
    ENV_MLOPS_STACK,
)
AUTO_APPROVE_ENV = (
    ENV_MODEL_PACKAGE_GROUP_NAME,
    ENV_APPROVAL_THRESHOLDS,
    ENV_CHAMPION_METRIC,
    ENV_CHAMPION_MIN_DELTA,
)
GITHUB_TRIGGER_ENV = (
    # The trigger ignores Approved events of other groups (defence behind the rule's filter).
    ENV_MODEL_PACKAGE_GROUP_NAME,
    ENV_DEPLOY_REPOSITORY,
    ENV_DEPLOY_WORKFLOW,
    ENV_DEPLOY_REF,
    ENV_GITHUB_TOKEN_SECRET_ID,
    ENV_GITHUB_API_URL,
)

# --- Files ----------------------------------------------------------------------------------
MODEL_FILE = "model.joblib"
EVALUATION_FILE = "evaluation.json"
MODEL_ARCHIVE = "model.tar.gz"
MODEL_PACKAGE_ARN_FILE = "model_package_arn.txt"
INFERENCE_SCRIPT = "inference.py"
TRAIN_BUILDSPEC = "training/buildspec-train.yml"
DEPLOY_BUILDSPEC = "training/buildspec-deploy.yml"
AUTO_APPROVE_HANDLER = "handlers/auto_approve.py"
GITHUB_TRIGGER_HANDLER = "handlers/github_trigger.py"

# Container environment that makes the SageMaker scikit-learn image load code/inference.py.
CONTAINER_ENVIRONMENT = {
    "SAGEMAKER_PROGRAM": INFERENCE_SCRIPT,
    "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
}
CONTENT_TYPES = ("text/csv", "application/json")
TARGET_COLUMN = "churn"
# The synthetic table's object name: under the stack's data prefix (seeded by the program) and in a folder
# the inline build or the embedded run trains on.
SAMPLE_FILE = "churn.csv"
# Where a processing job leaves the message DescribeProcessingJob returns as ExitMessage (its first 1 KB):
# the pipeline definition passes it to prepare and evaluate, which default to it inside a container.
EXIT_MESSAGE_FILE = "/opt/ml/output/message"

# --- The data contract: the churn table, declared once -----------------------------------------
# Prepare, training, evaluation and the sample data read columns by these declarations; no type is
# ever inferred from the data. The fitted model carries the split into numeric and categorical columns
# (its ColumnTransformer), which is how code/inference.py, which cannot import this module inside the
# serving image, converts request values the way the model was trained.
NUMERIC = "numeric"
CATEGORICAL = "categorical"


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    kind: str
    """NUMERIC (a number; empty cells are imputed) or CATEGORICAL (text; empty cells are imputed)."""
    description: str


CHURN_FEATURES: tuple[FeatureColumn, ...] = (
    FeatureColumn("tenure_months", NUMERIC, "months the customer has stayed"),
    FeatureColumn("monthly_charges", NUMERIC, "current monthly bill"),
    FeatureColumn("total_charges", NUMERIC, "billed since the start"),
    FeatureColumn("contract_type", CATEGORICAL, "month-to-month, one-year, two-year"),
    FeatureColumn("payment_method", CATEGORICAL, "electronic_check, mailed_check, bank_transfer, credit_card"),
    FeatureColumn("internet_service", CATEGORICAL, "fiber_optic, dsl, none"),
    FeatureColumn("support_calls", NUMERIC, "support calls in the last quarter"),
    FeatureColumn("paperless_billing", NUMERIC, "1 if billed paperless, else 0"),
    FeatureColumn("senior_citizen", NUMERIC, "1 if a senior citizen, else 0"),
    FeatureColumn("has_partner", NUMERIC, "1 if the customer has a partner, else 0"),
)
TARGET_VALUES = (0, 1)


def feature_names(kind: str | None = None) -> tuple[str, ...]:
    """Declared feature names in table order, optionally only those of one kind."""
    return tuple(c.name for c in CHURN_FEATURES if kind is None or c.kind == kind)


# What Prepare writes: one folder per split (each a ProcessingOutput of the Prepare step and, for train and
# validation, a channel of the Train step) holding `<split>.csv`, plus `report/data_report.json`.
DATA_SPLITS = ("train", "validation", "test")
DATA_REPORT_OUTPUT = "report"
DATA_REPORT_FILE = "data_report.json"
# First words of every data-contract rejection the scripts print and leave in the job's failure message
# (a processing job's ExitMessage, a training job's FailureReason), so the build can tell a rejection
# (exit EXIT_DATA_REJECTED) from any other failure.
DATA_REJECTED_MARKER = "data rejected:"


# --- The model-build pipeline (SageMaker Pipelines) ------------------------------------------------
# Step names of the definition (training.pipeline_definition); the build prints them, the local
# executor runs them, the policy pack reads the Register step.
STEP_PREPARE = "Prepare"
STEP_TRAIN = "Train"
STEP_EVALUATE = "Evaluate"
STEP_QUALITY_GATE = "QualityGate"
STEP_REGISTER = "Register"
STEP_FAIL = "Fail"
EVALUATION_PROPERTY_FILE = "EvaluationReport"
SOURCE_ARCHIVE = "sourcedir.tar.gz"
# Exit codes of training.model_build (and of the scripts it runs), which the embedded run passes on.
EXIT_QUALITY_GATE = 3
EXIT_DATA_REJECTED = 4


def model_build_pipeline_name(project: str, stack: str) -> str:
    return f"{project}-{stack}-model-build"


# Keys under the artifact bucket, all below the stack's own prefix (the roles are scoped to these).
def training_data_prefix(stack: str) -> str:
    """Default `trainingData` prefix, which `sampleData` seeds with the synthetic table."""
    return f"{stack}/training-data/"


def default_training_data_uri(bucket: str, stack: str) -> str:
    """Where the model build reads its CSV files when `trainingData` is not set."""
    return f"s3://{bucket}/{training_data_prefix(stack)}"


def source_code_prefix(stack: str) -> str:
    """`<prefix><commit>/sourcedir.tar.gz`: the training code of one commit, uploaded by the build."""
    return f"{stack}/code/"


def source_archive_key(stack: str, commit: str) -> str:
    """The key of one commit's sourcedir.tar.gz (the pipeline's CodeUri)."""
    return f"{source_code_prefix(stack)}{commit}/{SOURCE_ARCHIVE}"


def pipeline_runs_prefix(stack: str) -> str:
    """`<prefix><execution id>/<step>/<output>`: what the pipeline's jobs write."""
    return f"{stack}/pipeline-runs/"


def model_builds_prefix(stack: str) -> str:
    """`<prefix><build id>/model.tar.gz` and `evaluation.json`: what the inline path (training.register) uploads."""
    return f"{stack}/model-builds/"


# --- The model package ----------------------------------------------------------------------
# The same package comes from the inline path (training.register) and the pipeline's Register step
# (training.pipeline_definition); both build these parts from here.
# Real-time instance types offered for the package. Serverless endpoints take no instance type:
# the scikit-learn CPU image runs on serverless inference as it is, so nothing is declared for it.
REALTIME_INSTANCE_TYPES = (
    "ml.t2.medium", "ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.large", "ml.c5.xlarge", "ml.c5.2xlarge",
)
TRANSFORM_INSTANCE_TYPES = ("ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge")
# CustomerMetadataProperties values: the API allows [\p{L}\p{Z}\p{N}_.:/=+-@]{1,256}. Python's re has no \p
# classes: \w is exactly letters, digits (str.isalnum) and the underscore; of \p{Z} only the space is kept
# (tabs and newlines are not \p{Z}).
METADATA_VALUE_CHARS = r"\w .:/=+\-@"
METADATA_VALUE_MAX = 256
_METADATA_VALUE = re.compile(f"[{METADATA_VALUE_CHARS}]{{1,{METADATA_VALUE_MAX}}}")
_METADATA_UNSAFE = re.compile(f"[^{METADATA_VALUE_CHARS}]")


def metadata_value(value: str) -> str:
    """`value` as a CustomerMetadataProperties value: other characters become _, cut to 256, never empty."""
    return _METADATA_UNSAFE.sub("_", value)[:METADATA_VALUE_MAX] or "none"


def is_metadata_value(value: str) -> bool:
    """Whether CustomerMetadataProperties takes `value` as it is."""
    return _METADATA_VALUE.fullmatch(value) is not None


def inference_specification(image_uri: str, model_url: Any) -> dict[str, Any]:
    """The package's InferenceSpecification: the scikit-learn image serving code/inference.py from
    `model_url` (an s3:// URI, or the pipeline's reference to the Train step's artifact)."""
    return {
        "Containers": [{
            "Image": image_uri,
            "ModelDataUrl": model_url,
            "Environment": dict(CONTAINER_ENVIRONMENT),
            "Framework": "SKLEARN",
            "FrameworkVersion": SKLEARN_IMAGE["framework_version"],
        }],
        "SupportedContentTypes": list(CONTENT_TYPES),
        "SupportedResponseMIMETypes": list(CONTENT_TYPES),
        "SupportedRealtimeInferenceInstanceTypes": list(REALTIME_INSTANCE_TYPES),
        "SupportedTransformInstanceTypes": list(TRANSFORM_INSTANCE_TYPES),
    }


# --- The team's data ------------------------------------------------------------------------
_S3_PREFIX = re.compile(r"s3://(?P<bucket>[^/]*)(?P<rest>/?.*)", re.DOTALL)
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


def data_uri_problem(uri: str) -> tuple[str, str] | None:
    """(problem, fix) if `uri` cannot be the training data prefix, else None.

    The prefix is the pipeline's DataUri, the folder the roles are scoped to, and a value of the package's
    CustomerMetadataProperties (TrainingData): config.py checks it when the stack is configured, the build
    and the definition again, so a prefix that one of them refuses never reaches a build.
    """
    match = _S3_PREFIX.fullmatch(uri)
    if match is None:
        return "is not an s3:// URI", "give the S3 prefix that holds the CSV files, like s3://bucket/churn/"
    bucket, rest = match.group("bucket"), match.group("rest")
    if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        return ("does not start with a valid bucket name (3-63 lowercase letters, digits, dots, hyphens)",
                "use s3://<bucket>/<prefix>/")
    if not rest.endswith("/"):
        return ("does not end with '/'",
                f"end the prefix with a slash ({uri}/): a prefix is a folder of CSV files, and without the slash "
                "it would also match its neighbours (e.g. data-old/)")
    if any(c in rest for c in "*?") or "${" in rest or "//" in rest:
        return ("holds a wildcard, a policy variable or an empty folder name",
                "use the literal folder of the CSV files: the roles are scoped to exactly this prefix")
    if not is_metadata_value(uri):
        return (f"cannot be recorded on the model package (letters, digits, spaces and _.:/=+-@ only, at most "
                f"{METADATA_VALUE_MAX} characters)", "move the files to a prefix named with those")
    return None

# --- The inference image --------------------------------------------------------------------
# Training pins the library versions of the image registration names; tests/test_pins.py checks
# requirements.txt against this table so a model never meets a container that cannot unpickle it.
SKLEARN_IMAGE = {
    "framework_version": "1.4-2",
    "tag": "1.4-2-cpu-py3",
    "repository": "sagemaker-scikit-learn",
    "scikit-learn": "1.4.2",
    "numpy": "2.1.0",
    "python": "3.10",
}
# Account that hosts the SageMaker scikit-learn images, per region.
SKLEARN_IMAGE_ACCOUNTS = {
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
    "eu-west-1": "141502667606",
    "eu-west-2": "764974769150",
    "eu-central-1": "492215442770",
    "ap-southeast-2": "783357654285",
}


def inference_image_uri(region: str) -> str:
    """The scikit-learn inference image URI for a region; KeyError names the supported regions."""
    try:
        account = SKLEARN_IMAGE_ACCOUNTS[region]
    except KeyError:
        raise KeyError(
            f"no SageMaker scikit-learn image account known for region {region!r}; "
            f"supported: {', '.join(sorted(SKLEARN_IMAGE_ACCOUNTS))} "
            "(add it to contracts.SKLEARN_IMAGE_ACCOUNTS)"
        ) from None
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{suffix}/{SKLEARN_IMAGE['repository']}:{SKLEARN_IMAGE['tag']}"


# --- Events ---------------------------------------------------------------------------------
EVENT_SOURCE = "aws.sagemaker"
EVENT_DETAIL_TYPE = "SageMaker Model Package State Change"
STATUS_PENDING = "PendingManualApproval"
STATUS_APPROVED = "Approved"
STATUS_REJECTED = "Rejected"


def model_package_state_pattern(group_name: str, status: str) -> dict[str, Any]:
    """EventBridge pattern for a status change of a package in one group (design: Events)."""
    return {
        "source": [EVENT_SOURCE],
        "detail-type": [EVENT_DETAIL_TYPE],
        "detail": {
            "ModelPackageGroupName": [group_name],
            "ModelApprovalStatus": [status],
        },
    }


def auto_approval_pattern(group_name: str) -> dict[str, Any]:
    return model_package_state_pattern(group_name, STATUS_PENDING)


def github_trigger_pattern(group_name: str) -> dict[str, Any]:
    return model_package_state_pattern(group_name, STATUS_APPROVED)


def _same_json_value(expected: Any, actual: Any) -> bool:
    # JSON types as EventBridge compares them: "1" is not 1, and true is not 1 (Python's True == 1 is).
    return type(expected) is type(actual) and expected == actual


def _value_matches(expected: list[Any], actual: Any) -> bool:
    if isinstance(actual, list):
        # EventBridge: an array in the event matches when it shares a value with the pattern's list.
        return any(_value_matches(expected, item) for item in actual if not isinstance(item, list | dict))
    return any(_same_json_value(value, actual) for value in expected)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def pattern_mismatch(pattern: dict[str, Any], event: Any, where: str = "") -> str | None:
    """Why EventBridge would not deliver `event` to a rule with `pattern`; None when it would.

    EventBridge's matching for the subset our patterns use (nested objects, lists of exact values): every
    pattern field must be present; a value matches when it equals one of the pattern's values exactly
    (case, whitespace and JSON type included; nothing is trimmed); an array in the event matches when any
    of its elements does. Stricter than EventBridge in one corner our events never reach: an array of
    objects where the pattern expects an object does not match.
    """
    if not isinstance(event, dict):
        return f"{where or 'event'} is not an object"
    for key, expected in pattern.items():
        path = f"{where}.{key}" if where else key
        if key not in event:
            return f"{path} is missing"
        actual = event[key]
        if isinstance(expected, dict):
            problem = pattern_mismatch(expected, actual, path)
            if problem is not None:
                return problem
        elif not _value_matches(expected, actual):
            return f"{path} is {_shown(actual)}, the rule matches only {expected!r}"
    return None


def matches_pattern(pattern: dict[str, Any], event: Any) -> bool:
    """Whether EventBridge would deliver `event` to a rule with `pattern` (see pattern_mismatch)."""
    return pattern_mismatch(pattern, event) is None


# Versioned packages only: the handlers act on the packages of one group (".../model-package/<group>/<version>").
MODEL_PACKAGE_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]{9,16}:[0-9]{12}:"
    r"model-package/(?P<group>[A-Za-z0-9](?:-*[A-Za-z0-9]){0,62})/[0-9]+$"
)


class MalformedEventError(ValueError):
    """An event a handler's rule delivers but that cannot be read; the handler raises it, acting on nothing."""


@dataclass(frozen=True)
class PackageStateChange:
    """What the handlers take from a delivered state-change event; the registry has the rest."""

    model_package_arn: str
    group_name: str


def validate_model_package_arn(arn: Any, where: str) -> str:
    """The ARN exactly as given: one that would need trimming (a trailing newline, spaces) is malformed."""
    if not isinstance(arn, str) or not MODEL_PACKAGE_ARN.fullmatch(arn):
        shown = arn[:200] if isinstance(arn, str) else arn
        raise MalformedEventError(
            f"{where} is not a versioned model package ARN "
            f"(arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>): {shown!r}"
        )
    return arn


def package_arn_in_group(arn: str, group_name: str) -> bool:
    """Whether a versioned package ARN (.../model-package/<group>/<version>) names `group_name`.

    SageMaker writes names lowercased in ARNs, and the handlers' roles may read only packages under
    this stack's group (components.naming.Arns.model_packages), so the ARN tells before any call.
    """
    match = MODEL_PACKAGE_ARN.fullmatch(arn)
    return match is not None and match["group"].lower() == group_name.lower()


def _single_string(container: dict[str, Any], key: str, where: str) -> str:
    value = container.get(key)
    if not isinstance(value, str):
        # EventBridge delivers an event whose field is an array holding the wanted value; SageMaker never
        # sends one, and an action must rest on one unambiguous source, type, group and status.
        raise MalformedEventError(f"{where}.{key} must be one string, got {type(value).__name__}")
    return value


def read_state_change(event: Any, pattern: dict[str, Any]) -> PackageStateChange | str:
    """The change an event carries when a rule with `pattern` delivers it; else (a str) why it would not.

    An event the rule would not deliver (another source, detail-type, group or status, in any spelling) is
    the handler's to log and leave alone. A delivered one that cannot be read (a field that is an array, an
    ARN that is not exactly a versioned package ARN) raises MalformedEventError naming the field.
    """
    if not isinstance(event, dict):
        raise MalformedEventError(f"event must be a JSON object, got {type(event).__name__}")
    not_delivered = pattern_mismatch(pattern, event)
    if not_delivered is not None:
        return not_delivered
    _single_string(event, "source", "event")
    _single_string(event, "detail-type", "event")
    detail = event["detail"]  # an object: the pattern matched inside it
    group = _single_string(detail, "ModelPackageGroupName", "detail")
    _single_string(detail, "ModelApprovalStatus", "detail")
    return PackageStateChange(validate_model_package_arn(detail.get("ModelPackageArn"), "detail.ModelPackageArn"),
                              group)


def arn_for_log(event: dict[str, Any]) -> str | None:
    """The package ARN an event names, cut short, for the log line of an event left alone."""
    detail = event.get("detail")
    arn = detail.get("ModelPackageArn") if isinstance(detail, dict) else None
    return arn[:200] if isinstance(arn, str) else None


def is_not_found(error: Exception) -> bool:
    """Whether an AWS error (botocore's ClientError) says the resource asked for does not exist.

    SageMaker's Describe* calls answer ValidationException with "does not exist" or "not found" in the
    message; anything else (throttling, access denied) is no answer about the resource.
    """
    details = getattr(error, "response", {}).get("Error", {})
    message = str(details.get("Message", "")).lower()
    return details.get("Code") in ("ValidationException", "ResourceNotFound") and (
        "not found" in message or "does not exist" in message
    )


# --- GitHub ---------------------------------------------------------------------------------
# The deploy workflow's workflow_dispatch inputs; handlers/github_trigger.py sends exactly these.
DISPATCH_INPUTS = ("model_package_arn", "model_package_group")
DEPLOY_WORKFLOW_FILE = "model-deploy.yml"
PRODUCTION_ENVIRONMENT = "production"

# Repository Actions variables and secrets that GitHubIntegration creates and the workflows read.
GITHUB_VARIABLES = (
    "AWS_REGION",
    "ARTIFACT_BUCKET",
    "MODEL_PACKAGE_GROUP_NAME",
    "INFERENCE_IMAGE_URI",
    "SAGEMAKER_EXECUTION_ROLE_ARN",
    "DEPLOYMENT_STAGES",
    "PULUMI_STACK",
    # model-build.yml: where the data is, where the model is built, and (compute `pipeline` only) which
    # SageMaker pipeline it starts.
    ENV_TRAINING_DATA_URI,
    ENV_MODEL_BUILD_COMPUTE,
    ENV_MODEL_BUILD_PIPELINE,
)
GITHUB_SECRETS = (
    "AWS_PREVIEW_ROLE_ARN",
    "AWS_DEPLOY_ROLE_ARN",
    "AWS_INFRA_ROLE_ARN",
    "PULUMI_ACCESS_TOKEN",
)


# --- Deployment stages (DEPLOYMENT_STAGES is a JSON list of these) -----------------------------
@dataclass(frozen=True)
class Serverless:
    memory_size_mb: int = 2048
    max_concurrency: int = 5


@dataclass(frozen=True)
class Instances:
    instance_type: str = "ml.m5.large"
    initial_instance_count: int = 1


@dataclass(frozen=True)
class Autoscaling:
    min_capacity: int = 1
    max_capacity: int = 2
    target_invocations_per_instance: float = 100.0


@dataclass(frozen=True)
class Rollout:
    """Blue/green canary: shift canary_percent, bake wait_seconds, roll back on any alarm."""

    canary_percent: int = 10
    wait_seconds: int = 300
    alarm_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataCapture:
    sampling_percent: int = 20
    destination_s3_uri: str = ""


@dataclass(frozen=True)
class TrainingSettings:
    """Where and on what the model is built (config key `training`)."""

    compute: str = "pipeline"
    """`pipeline`: the stack's SageMaker pipeline on managed instances; `build`: inline in the build box."""
    instance_type: str = "ml.m5.xlarge"
    """Instance type of the Prepare, Train and Evaluate jobs."""
    processing_instance_count: int = 1
    volume_size_gb: int = 30
    max_runtime_seconds: int = 3600
    spot: bool = False
    """Managed spot training for the Train step (needs max_wait_seconds >= max_runtime_seconds)."""
    max_wait_seconds: int | None = None

    @property
    def uses_pipeline(self) -> bool:
        return self.compute == "pipeline"


COMPUTE_CHOICES = ("pipeline", "build")


@dataclass(frozen=True)
class DeploymentStage:
    name: str
    endpoint_name: str
    serverless: Serverless | None = None
    instances: Instances | None = None
    autoscaling: Autoscaling | None = None
    rollout: Rollout | None = None
    data_capture: DataCapture | None = None
    # A human gate stands before this stage (CodePipeline manual action / GitHub environment).
    requires_approval: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: v for k, v in data.items() if v is not None}


_STAGE_PARTS = {
    "serverless": Serverless,
    "instances": Instances,
    "autoscaling": Autoscaling,
    "rollout": Rollout,
    "data_capture": DataCapture,
}


def parse_deployment_stages(text: str) -> list[DeploymentStage]:
    """Parse DEPLOYMENT_STAGES; ValueError names the stage and key at fault and how to fix it."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ENV_DEPLOYMENT_STAGES} is not valid JSON ({exc}); expected a JSON list of stages") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{ENV_DEPLOYMENT_STAGES} must be a non-empty JSON list of stages")
    stages: list[DeploymentStage] = []
    for index, item in enumerate(raw):
        where = f"{ENV_DEPLOYMENT_STAGES}[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object with at least 'name' and 'endpoint_name'")
        unknown = set(item) - set(DeploymentStage.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{where} has unknown keys {sorted(unknown)}")
        for key in ("name", "endpoint_name"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ValueError(f"{where}.{key} must be a non-empty string")
        kwargs: dict[str, Any] = {"name": item["name"], "endpoint_name": item["endpoint_name"],
                                  "requires_approval": bool(item.get("requires_approval", False))}
        for key, cls in _STAGE_PARTS.items():
            value = item.get(key)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{key} must be an object")
            try:
                if key == "rollout" and "alarm_names" in value:
                    value = {**value, "alarm_names": tuple(value["alarm_names"])}
                kwargs[key] = cls(**value)
            except TypeError as exc:
                raise ValueError(f"{where}.{key}: {exc}") from None
        stage = DeploymentStage(**kwargs)
        if (stage.serverless is None) == (stage.instances is None):
            raise ValueError(f"{where} ({stage.name}) needs exactly one of 'serverless' or 'instances'")
        if stage.serverless is not None and (stage.autoscaling or stage.rollout or stage.data_capture):
            raise ValueError(
                f"{where} ({stage.name}): autoscaling, blue/green rollout and data capture need 'instances', "
                "not 'serverless' (SageMaker scales serverless endpoints itself and cannot capture their data)"
            )
        stages.append(stage)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"{ENV_DEPLOYMENT_STAGES} has duplicate stage names: {names}")
    return stages


def dump_deployment_stages(stages: list[DeploymentStage]) -> str:
    return json.dumps([s.to_dict() for s in stages], sort_keys=True)
