"""The stack's settings: one typed, validated tree, read once by __main__.py.

`parse_settings` is pure (raw config strings in, frozen dataclasses out) so every bad value is
rejected with a message naming the key and the fix BEFORE the program registers any resource.
`load_settings` is the only place that touches `pulumi.Config`. Components never read config.

Config values reach the program as strings (objects and lists as JSON), exactly as the engine
passes them in PULUMI_CONFIG; the defaults below equal the `default:` entries of Pulumi.yaml
(tests/test_config.py keeps the two in step).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import pulumi

import contracts
from components.naming import StackNames, stack_prefix

NAMESPACE = contracts.PROJECT

ORCHESTRATORS = ("codepipeline", "github-actions")
APPROVAL_MODES = ("auto", "manual")
# The binary-classification metrics training/evaluate writes (SageMaker model-quality format).
KNOWN_METRICS = ("accuracy", "precision", "recall", "f1", "auc")
# Retention values CloudWatch Logs accepts; any other number fails only at `pulumi up`.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                      2922, 3288, 3653)
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
MAX_ENVIRONMENT_REVIEWERS = 6  # GitHub's limit of required reviewers per environment

# Secret keys are read with get_secret so their values stay Outputs marked secret end to end.
SECRET_KEYS = ("githubToken", "pulumiAccessToken")

DEFAULTS: dict[str, Any] = {
    "orchestrator": "codepipeline",
    "approvalMode": "auto",
    "modelPackageGroupName": "",
    "approvalThresholds": {"accuracy": 0.8, "auc": 0.85},
    "championMetric": "auc",
    "championMinDelta": 0.0,
    "githubBranch": "main",
    "githubApiUrl": contracts.DEFAULT_GITHUB_API_URL,
    "productionReviewers": [],
    "manageGithubSettings": False,
    "githubOidcProviderArn": "",
    "connectionArn": "",
    "infraRoleArn": "",
    "deploymentStages": [{"name": "staging", "serverless": {"memorySizeMb": 2048, "maxConcurrency": 5}}],
    "forceDestroy": False,
    "logRetentionDays": 30,
    "auditTrail": False,
    "rollbackAlarmLatencyMs": 2000,
    "trainingData": "",
    "sampleData": True,
    "training": {"compute": "pipeline", "instanceType": "ml.m5.xlarge", "processingInstanceCount": 1,
                 "volumeSizeGb": 30, "maxRuntimeSeconds": 3600, "spot": False},
}
REQUIRED_KEYS = ("githubRepository",)
KNOWN_KEYS = (*REQUIRED_KEYS, *DEFAULTS, *SECRET_KEYS)

_REPOSITORY = re.compile(r"^(?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/(?P<name>[A-Za-z0-9._-]{1,100})$")
_GITHUB_USER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
# SageMaker names: endpoints, groups, models (63 characters, alphanumerics and inner hyphens).
_SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_OIDC_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:oidc-provider/token\.actions\.githubusercontent\.com$")
_CONNECTION_ARN = re.compile(
    r"^arn:aws[a-z-]*:(codeconnections|codestar-connections):[a-z0-9-]+:\d{12}:connection/[\w-]+$")
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")
# SageMaker's own limits (botocore's model of CreateProcessingJob / CreateTrainingJob).
MAX_PROCESSING_INSTANCES = 100
MAX_VOLUME_SIZE_GB = 16384
MAX_RUNTIME_SECONDS = 777600  # a processing job's limit, the lower of the two job types
# The longest a CodeBuild build may run; the train project waits for the whole pipeline execution.
CODEBUILD_MAX_TIMEOUT_MINUTES = 2160
# Compute `build` trains and registers inside the build box (tiny data).
INLINE_BUILD_TIMEOUT_MINUTES = 60
# What the build does besides waiting (install, package and upload the code, stop a timed-out execution).
BUILD_OVERHEAD_MINUTES = 15


class ConfigError(pulumi.RunError):
    """A stack setting is missing or invalid; the message names the key and how to fix it.

    A RunError, so the CLI prints the message without a Python traceback.
    """


def _key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


def _fail(name: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"config {_key(name)}: {problem}; {fix}")


# --- The settings tree -----------------------------------------------------------------------
@dataclass(frozen=True)
class ApprovalSettings:
    mode: str
    thresholds: Mapping[str, float]
    champion_metric: str
    champion_min_delta: float


@dataclass(frozen=True)
class GitHubSettings:
    repository: str
    owner: str
    name: str
    branch: str
    api_url: str
    production_reviewers: tuple[str, ...]
    manage_settings: bool
    oidc_provider_arn: str | None
    infra_role_arn: str | None
    token: pulumi.Input[str] | None = field(default=None, repr=False)
    pulumi_access_token: pulumi.Input[str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ModelBuildSettings:
    training: contracts.TrainingSettings
    custom_training_data_uri: str | None
    """`trainingData` as set (s3://bucket/prefix/); None means the stack's own default prefix."""
    sample_data: bool
    """Seed the default prefix with the synthetic churn table (only with the default prefix)."""


@dataclass(frozen=True)
class Settings:
    project: str
    stack: str
    region: str
    orchestrator: str
    approval: ApprovalSettings
    model_package_group_name: str
    deployment_stages: tuple[contracts.DeploymentStage, ...]
    github: GitHubSettings
    connection_arn: str | None
    force_destroy: bool
    log_retention_days: int
    audit_trail: bool
    rollback_alarm_latency_ms: int
    model_build: ModelBuildSettings

    @property
    def names(self) -> StackNames:
        """The stack's deterministic resource names (prefix, endpoint prefix, functions, roles...)."""
        return StackNames(project=self.project, stack=self.stack, group=self.model_package_group_name)

    @property
    def inference_image_uri(self) -> str:
        return contracts.inference_image_uri(self.region)

    @property
    def needs_github_token(self) -> bool:
        """The token is used only by the trigger Lambda and for repository settings."""
        return self.orchestrator == "github-actions" or self.github.manage_settings

    @property
    def has_production_gate(self) -> bool:
        return any(stage.requires_approval for stage in self.deployment_stages)

    def training_data_uri(self, bucket: str) -> str:
        """Where the build and the pipeline read the team's CSV files (the bucket is known only at deploy)."""
        return (self.model_build.custom_training_data_uri
                or contracts.default_training_data_uri(bucket, self.stack))

    @property
    def train_build_timeout_minutes(self) -> int:
        """The train build's timeout: with compute `pipeline` the longest pipeline execution plus the
        build's own work (the build stops the execution before the timeout ends the build)."""
        if not self.model_build.training.uses_pipeline:
            return INLINE_BUILD_TIMEOUT_MINUTES
        return self.model_build_wait_minutes + BUILD_OVERHEAD_MINUTES

    @property
    def model_build_wait_minutes(self) -> int:
        """How long the build waits for one execution before it stops it (the definition's wait bound: every
        job to its cap, every retry, a start-up allowance each); it depends on the training settings only."""
        from training.pipeline_definition import definition, sample_target, wait_bound_minutes

        target = sample_target(self.stack, self.approval.thresholds, self.model_build.training, self.region)
        return wait_bound_minutes(definition(target))


# --- Raw value parsing (one helper per type, each naming the key) ------------------------------
def _string(raw: Mapping[str, str], name: str) -> str:
    value = raw.get(name)
    if value is None:
        default = DEFAULTS[name]
        return str(default)
    return value.strip()


def _json(raw: Mapping[str, str], name: str) -> Any:
    value = raw.get(name)
    if value is None:
        return DEFAULTS[name]
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise _fail(name, f"is not valid JSON/YAML structure ({exc.msg})",
                    "set it as a YAML object/list in the stack file or with `pulumi config set --path`") from None


def _bool(raw: Mapping[str, str], name: str) -> bool:
    value = raw.get(name)
    if value is None:
        return bool(DEFAULTS[name])
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise _fail(name, f"{value!r} is not a boolean", f"set it to true or false: `pulumi config set {name} true`")


def _int(raw: Mapping[str, str], name: str) -> int:
    value = raw.get(name)
    if value is None:
        return int(DEFAULTS[name])
    try:
        return int(value)
    except ValueError:
        raise _fail(name, f"{value!r} is not an integer",
                    f"set a whole number: `pulumi config set {name} 30`") from None


def _number(raw: Mapping[str, str], name: str) -> float:
    value = raw.get(name)
    if value is None:
        return float(DEFAULTS[name])
    try:
        return float(value)
    except ValueError:
        raise _fail(name, f"{value!r} is not a number", f"set a number: `pulumi config set {name} 0.01`") from None


def _optional_arn(raw: Mapping[str, str], name: str, pattern: re.Pattern[str], example: str) -> str | None:
    value = _string(raw, name)
    if not value:
        return None
    if not pattern.match(value):
        raise _fail(name, f"{value!r} is not a valid ARN here", f"use an ARN like {example!r} or remove the key")
    return value


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _snake_to_camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _snake_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel_to_snake(k): _snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(v) for v in value]
    return value


# --- Sections ---------------------------------------------------------------------------------
def _approval(raw: Mapping[str, str]) -> ApprovalSettings:
    mode = _string(raw, "approvalMode")
    if mode not in APPROVAL_MODES:
        raise _fail("approvalMode", f"unknown approval mode {mode!r}",
                    f"use one of {', '.join(APPROVAL_MODES)}: `pulumi config set approvalMode auto`")
    thresholds_raw = _json(raw, "approvalThresholds")
    if not isinstance(thresholds_raw, dict) or not thresholds_raw:
        raise _fail("approvalThresholds", "must be a non-empty object metric -> minimum",
                    'e.g. `pulumi config set --path approvalThresholds.auc 0.9`')
    thresholds: dict[str, float] = {}
    for metric, minimum in thresholds_raw.items():
        if metric not in KNOWN_METRICS:
            raise _fail("approvalThresholds", f"unknown metric {metric!r}",
                        f"use metrics training writes: {', '.join(KNOWN_METRICS)}")
        if isinstance(minimum, bool) or not isinstance(minimum, int | float) or not 0.0 <= float(minimum) <= 1.0:
            raise _fail("approvalThresholds", f"{metric} minimum {minimum!r} is outside [0, 1]",
                        f"set a fraction, e.g. `pulumi config set --path approvalThresholds.{metric} 0.85`")
        thresholds[metric] = float(minimum)
    champion_metric = _string(raw, "championMetric")
    if champion_metric not in KNOWN_METRICS:
        raise _fail("championMetric", f"unknown metric {champion_metric!r}",
                    f"use one of {', '.join(KNOWN_METRICS)}")
    delta = _number(raw, "championMinDelta")
    if not 0.0 <= delta <= 1.0:
        raise _fail("championMinDelta", f"{delta} is outside [0, 1]",
                    "set the margin the new model must beat the champion by, e.g. 0.01")
    return ApprovalSettings(mode=mode, thresholds=thresholds, champion_metric=champion_metric,
                            champion_min_delta=delta)


def _github(raw: Mapping[str, str], secrets: Mapping[str, pulumi.Input[str]]) -> GitHubSettings:
    repository = raw.get("githubRepository", "").strip()
    if not repository:
        raise _fail("githubRepository", "is not set",
                    "set the model repository: `pulumi config set githubRepository your-org/churn-model`")
    match = _REPOSITORY.match(repository)
    if not match:
        raise _fail("githubRepository", f"{repository!r} is not 'owner/name'",
                    "use the repository's full name, e.g. your-org/churn-model (no URL, no .git)")
    branch = _string(raw, "githubBranch")
    if not _BRANCH.match(branch) or branch.startswith(("refs/", "/")) or ".." in branch:
        raise _fail("githubBranch", f"{branch!r} is not a branch name", "use the bare branch name, e.g. main")
    api_url = _string(raw, "githubApiUrl")
    if not api_url.startswith("https://"):
        raise _fail("githubApiUrl", f"{api_url!r} is not an https URL",
                    f"use {contracts.DEFAULT_GITHUB_API_URL} or your GitHub Enterprise API URL")
    reviewers_raw = _json(raw, "productionReviewers")
    if not isinstance(reviewers_raw, list) or not all(isinstance(r, str) for r in reviewers_raw):
        raise _fail("productionReviewers", "must be a list of GitHub usernames",
                    "e.g. `pulumi config set --path 'productionReviewers[0]' octocat`")
    reviewers = tuple(r.strip() for r in reviewers_raw)
    bad = [r for r in reviewers if not _GITHUB_USER.match(r)]
    if bad:
        raise _fail("productionReviewers", f"{bad} are not GitHub usernames",
                    "list usernames without '@' (letters, digits, single hyphens)")
    if len(set(reviewers)) != len(reviewers):
        raise _fail("productionReviewers", f"has duplicates {list(reviewers)}", "list each reviewer once")
    if len(reviewers) > MAX_ENVIRONMENT_REVIEWERS:
        raise _fail("productionReviewers", f"has {len(reviewers)} users",
                    f"GitHub allows at most {MAX_ENVIRONMENT_REVIEWERS} required reviewers per environment")
    return GitHubSettings(
        repository=repository,
        owner=match.group("owner"),
        name=match.group("name"),
        branch=branch,
        api_url=api_url.rstrip("/"),
        production_reviewers=reviewers,
        manage_settings=_bool(raw, "manageGithubSettings"),
        oidc_provider_arn=_optional_arn(
            raw, "githubOidcProviderArn", _OIDC_ARN,
            "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"),
        infra_role_arn=_optional_arn(raw, "infraRoleArn", _ROLE_ARN, "arn:aws:iam::123456789012:role/infra-deploy"),
        token=secrets.get("githubToken"),
        pulumi_access_token=secrets.get("pulumiAccessToken"),
    )


def _stages(raw: Mapping[str, str], prefix: str) -> tuple[contracts.DeploymentStage, ...]:
    name = "deploymentStages"
    stages_raw = _json(raw, name)
    if not isinstance(stages_raw, list) or not stages_raw:
        raise _fail(name, "must be a non-empty list of stages", "see the stage table in README (section config)")
    items: list[Any] = []
    for index, item in enumerate(_snake_keys(stages_raw)):
        if isinstance(item, dict):
            item = dict(item)
            stage_name = item.get("name")
            if isinstance(stage_name, str) and stage_name and "endpoint_name" not in item:
                item["endpoint_name"] = f"{prefix}{stage_name}"
            capture = item.get("data_capture")
            if isinstance(capture, dict) and capture.get("destination_s3_uri"):
                raise _fail(name, f"[{index}].dataCapture.destinationS3Uri is set",
                            "remove it: captures go to the stack's artifact bucket, the only bucket the "
                            "roles may write")
        items.append(item)
    try:
        stages = contracts.parse_deployment_stages(json.dumps(items))
    except ValueError as exc:
        raise _fail(name, str(exc).replace(contracts.ENV_DEPLOYMENT_STAGES, name),
                    "fix the stage in the stack file (keys may be camelCase, e.g. endpointName)") from None
    for index, stage in enumerate(stages):
        where = f"[{index}] ({stage.name})"
        if not _SAGEMAKER_NAME.match(stage.endpoint_name) or not stage.endpoint_name.startswith(prefix):
            raise _fail(name, f"{where} endpointName {stage.endpoint_name!r} is not a SageMaker name starting "
                        f"with {prefix!r}",
                        f"omit endpointName (default {prefix}{stage.name}) or start it with {prefix!r}: the roles "
                        "may only touch endpoints with the stack's prefix")
        if stage.instances is not None:
            if not stage.instances.instance_type.startswith("ml."):
                raise _fail(name, f"{where} instanceType {stage.instances.instance_type!r} is not a SageMaker "
                            "instance type", "use an ml.* type, e.g. ml.m5.large")
            if stage.instances.initial_instance_count < 1:
                raise _fail(name, f"{where} initialInstanceCount must be at least 1", "set it to 1 or more")
        if stage.serverless is not None:
            if stage.serverless.memory_size_mb not in SERVERLESS_MEMORY_MB:
                raise _fail(name, f"{where} serverless.memorySizeMb {stage.serverless.memory_size_mb} is not "
                            "allowed", f"use one of {SERVERLESS_MEMORY_MB}")
            if not 1 <= stage.serverless.max_concurrency <= 200:
                raise _fail(name, f"{where} serverless.maxConcurrency must be 1..200", "e.g. 5")
        if stage.autoscaling is not None:
            scaling = stage.autoscaling
            if not 1 <= scaling.min_capacity <= scaling.max_capacity:
                raise _fail(name, f"{where} autoscaling needs 1 <= minCapacity <= maxCapacity",
                            "e.g. minCapacity 1, maxCapacity 4")
            if scaling.target_invocations_per_instance <= 0:
                raise _fail(name, f"{where} autoscaling.targetInvocationsPerInstance must be positive", "e.g. 100")
        if stage.rollout is not None:
            # SageMaker's blue/green canary may shift at most half of the new fleet's capacity.
            if not 1 <= stage.rollout.canary_percent <= 50:
                raise _fail(name, f"{where} rollout.canaryPercent must be 1..50", "e.g. 10")
            if not 0 <= stage.rollout.wait_seconds <= 3600:
                raise _fail(name, f"{where} rollout.waitSeconds must be 0..3600", "e.g. 300")
        if stage.data_capture is not None and not 0 < stage.data_capture.sampling_percent <= 100:
            raise _fail(name, f"{where} dataCapture.samplingPercent must be 1..100", "e.g. 20")
    endpoints = [s.endpoint_name for s in stages]
    if len(set(endpoints)) != len(endpoints):
        raise _fail(name, f"endpoint names repeat: {endpoints}", "give each stage its own endpoint")
    return tuple(stages)


def _training_data(raw: Mapping[str, str]) -> str | None:
    name = "trainingData"
    value = _string(raw, name)
    if not value:
        return None
    # The same check the build and the pipeline definition make, here so that a prefix they would refuse
    # fails at `pulumi preview`, not at every build.
    problem = contracts.data_uri_problem(value)
    if problem is not None:
        what, fix = problem
        example = ("`pulumi config set trainingData s3://your-bucket/churn/` (or remove the key to use the stack's "
                   "own prefix)")
        raise _fail(name, f"{value!r} {what}", f"{fix}: {example}")
    return value


def _training(raw: Mapping[str, str]) -> contracts.TrainingSettings:
    name = "training"
    given = _json(raw, name)
    if not isinstance(given, dict):
        raise _fail(name, "must be an object", "e.g. `pulumi config set --path training.instanceType ml.m5.xlarge`")
    # camelCase like deploymentStages: each key is a contracts.TrainingSettings field.
    keys = [_snake_to_camel(f.name) for f in fields(contracts.TrainingSettings)]
    unknown = sorted(set(given) - set(keys))
    if unknown:
        raise _fail(name, f"has unknown keys {unknown}", f"use {', '.join(keys)} (camelCase)")
    # A stack file's object replaces Pulumi.yaml's default as a whole: keys left out keep their defaults.
    values = {**DEFAULTS[name], **given}

    def key(k: str) -> str:
        return f"{name}.{k}"

    def integer(k: str, low: int, high: int, example: int) -> int:
        value = values[k]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _fail(key(k), f"{value!r} is not a whole number in {low}..{high}",
                        f"e.g. `pulumi config set --path {key(k)} {example}`")
        return value

    compute = values["compute"]
    if compute not in contracts.COMPUTE_CHOICES:
        raise _fail(key("compute"), f"unknown compute {compute!r}",
                    f"use one of {', '.join(contracts.COMPUTE_CHOICES)}: pipeline runs the jobs on SageMaker, build "
                    "trains inside the build (tiny data only)")
    instance_type = values["instanceType"]
    if not isinstance(instance_type, str) or not instance_type.startswith("ml."):
        raise _fail(key("instanceType"), f"{instance_type!r} is not a SageMaker instance type",
                    "use an ml.* type, e.g. ml.m5.xlarge")
    if instance_type not in _job_instance_types():
        raise _fail(key("instanceType"), f"{instance_type!r} is not a type both training and processing jobs accept",
                    "check the spelling against SageMaker's instance types (e.g. ml.m5.xlarge, ml.c5.2xlarge)")
    spot = values["spot"]
    if not isinstance(spot, bool):
        raise _fail(key("spot"), f"{spot!r} is not a boolean",
                    f"set true or false: `pulumi config set --path {key('spot')} true`")
    runtime = integer("maxRuntimeSeconds", 1, MAX_RUNTIME_SECONDS, 3600)
    max_wait: int | None = None
    if values.get("maxWaitSeconds") is not None:
        max_wait = integer("maxWaitSeconds", 1, MAX_RUNTIME_SECONDS * 3, 7200)
    if spot and max_wait is None:
        raise _fail(key("maxWaitSeconds"), "is not set but spot is true",
                    f"set how long the Train step may wait for spot capacity plus run, at least maxRuntimeSeconds "
                    f"({runtime}): `pulumi config set --path {key('maxWaitSeconds')} {2 * runtime}`")
    if max_wait is not None and not spot:
        raise _fail(key("maxWaitSeconds"), "is set but spot is false",
                    f"remove it, or set `pulumi config set --path {key('spot')} true` for managed spot training")
    if max_wait is not None and max_wait < runtime:
        raise _fail(key("maxWaitSeconds"), f"{max_wait} is less than maxRuntimeSeconds ({runtime})",
                    f"SageMaker requires the spot wait limit to cover the runtime: set it to at least {runtime}")
    return contracts.TrainingSettings(
        compute=compute,
        instance_type=instance_type,
        processing_instance_count=integer("processingInstanceCount", 1, MAX_PROCESSING_INSTANCES, 1),
        volume_size_gb=integer("volumeSizeGb", 1, MAX_VOLUME_SIZE_GB, 30),
        max_runtime_seconds=runtime,
        spot=spot,
        max_wait_seconds=max_wait,
    )


@functools.cache
def _job_instance_types() -> frozenset[str]:
    """Instance types both CreateTrainingJob and CreateProcessingJob accept (botocore's service model):
    the one `training.instanceType` serves the Prepare, Train and Evaluate jobs alike."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return frozenset(model.shape_for("TrainingInstanceType").enum) & frozenset(
        model.shape_for("ProcessingInstanceType").enum)


def _model_build(raw: Mapping[str, str]) -> ModelBuildSettings:
    training = _training(raw)
    custom_uri = _training_data(raw)
    sample_data = _bool(raw, "sampleData")
    if sample_data and custom_uri is not None:
        raise _fail("sampleData", f"is true but trainingData points at {custom_uri}",
                    "the sample table seeds only the stack's own default prefix and never your data: "
                    "`pulumi config set sampleData false`")
    return ModelBuildSettings(training=training, custom_training_data_uri=custom_uri, sample_data=sample_data)


def parse_settings(
    raw: Mapping[str, str],
    *,
    stack: str,
    region: str | None,
    secrets: Mapping[str, pulumi.Input[str]] | None = None,
    project: str = contracts.PROJECT,
) -> Settings:
    """Validate the stack's raw config (key -> string as the engine passes it) into Settings.

    `secrets` holds the secret keys that are set (values are opaque: never inspected or logged).
    """
    secrets = secrets or {}
    if not region:
        raise ConfigError("config aws:region is not set; `pulumi config set aws:region us-east-1`")
    try:
        contracts.inference_image_uri(region)
    except KeyError as exc:
        raise ConfigError(f"config aws:region: {exc.args[0]}") from None

    orchestrator = _string(raw, "orchestrator")
    if orchestrator not in ORCHESTRATORS:
        raise _fail("orchestrator", f"unknown orchestrator {orchestrator!r}",
                    f"use one of {', '.join(ORCHESTRATORS)}: `pulumi config set orchestrator codepipeline`")
    approval = _approval(raw)
    github = _github(raw, secrets)

    group = _string(raw, "modelPackageGroupName") or stack_prefix(project, stack)
    if not _SAGEMAKER_NAME.match(group):
        raise _fail("modelPackageGroupName", f"{group!r} is not a SageMaker name",
                    "use up to 63 letters, digits and inner hyphens, e.g. churn-model-prod")
    stages = _stages(raw, StackNames(project=project, stack=stack, group=group).endpoint_prefix)
    # A stack name SageMaker cannot use (e.g. with "_") already fails above in the endpoint names, which
    # carry it exactly like the pipeline name does.
    model_build = _model_build(raw)

    retention = _int(raw, "logRetentionDays")
    if retention not in LOG_RETENTION_DAYS:
        raise _fail("logRetentionDays", f"{retention} is not a CloudWatch Logs retention value",
                    f"use one of {', '.join(map(str, LOG_RETENTION_DAYS))}")
    latency = _int(raw, "rollbackAlarmLatencyMs")
    if latency <= 0:
        raise _fail("rollbackAlarmLatencyMs", f"{latency} is not positive",
                    "set the model latency (ms) above which a canary rolls back, e.g. 2000")

    settings = Settings(
        project=project,
        stack=stack,
        region=region,
        orchestrator=orchestrator,
        approval=approval,
        model_package_group_name=group,
        deployment_stages=stages,
        github=github,
        connection_arn=_optional_arn(raw, "connectionArn", _CONNECTION_ARN,
                                     "arn:aws:codeconnections:us-east-1:123456789012:connection/abc-123"),
        force_destroy=_bool(raw, "forceDestroy"),
        log_retention_days=retention,
        audit_trail=_bool(raw, "auditTrail"),
        rollback_alarm_latency_ms=latency,
        model_build=model_build,
    )
    _check_cross_key_rules(settings)
    return settings


def _check_cross_key_rules(settings: Settings) -> None:
    github = settings.github
    if settings.needs_github_token and github.token is None:
        why = ("orchestrator github-actions dispatches the deploy workflow with it"
               if settings.orchestrator == "github-actions" else "manageGithubSettings writes repository settings")
        raise _fail("githubToken", f"is not set ({why})",
                    "`pulumi config set --secret githubToken <token>` (fine-grained, on the repository: "
                    "administration, actions, environments, secrets, variables: read/write)")
    if settings.orchestrator == "github-actions" and settings.has_production_gate and not github.production_reviewers:
        raise _fail("productionReviewers", "is empty but a deployment stage requires approval",
                    "list who approves production: `pulumi config set --path 'productionReviewers[0]' octocat`")
    if github.manage_settings and not github.production_reviewers:
        raise _fail("productionReviewers", "is empty but manageGithubSettings creates the production environment",
                    "list at least one GitHub username who approves production deploys")
    training = settings.model_build.training
    # CodeBuild `train` waits for the longest execution the limits allow; model-build.yml (github-actions)
    # waits a fixed MODEL_BUILD_TIMEOUT_MINUTES inside its one-hour OIDC session and stops what runs longer.
    if (training.uses_pipeline and settings.orchestrator == "codepipeline"
            and settings.train_build_timeout_minutes > CODEBUILD_MAX_TIMEOUT_MINUTES):
        wait_hours = settings.model_build_wait_minutes / 60
        raise _fail("training.maxWaitSeconds" if training.spot else "training.maxRuntimeSeconds",
                    f"lets one pipeline execution run {wait_hours:.1f} h (Prepare, Train and Evaluate each up to "
                    f"its limit, with retries and start-up), longer than a CodeBuild build "
                    f"({CODEBUILD_MAX_TIMEOUT_MINUTES // 60} h) can wait for it",
                    "lower training.maxRuntimeSeconds (and training.maxWaitSeconds with spot)")


def load_settings() -> Settings:
    """Read the stack's config once (the only pulumi.Config access in the program)."""
    cfg = pulumi.Config(NAMESPACE)
    raw: dict[str, str] = {}
    for name in KNOWN_KEYS:
        if name in SECRET_KEYS:
            continue
        value = cfg.get(name)
        if value is not None:
            raw[name] = value
    secrets: dict[str, pulumi.Input[str]] = {}
    for name in SECRET_KEYS:
        secret = cfg.get_secret(name)
        if secret is not None:
            secrets[name] = secret
    region = pulumi.Config("aws").get("region")
    return parse_settings(raw, stack=pulumi.get_stack(), region=region, secrets=secrets,
                          project=pulumi.get_project())


def with_capture_destinations(
    stages: tuple[contracts.DeploymentStage, ...], bucket: str
) -> list[contracts.DeploymentStage]:
    """Point each stage's data capture at the artifact bucket (known only once the bucket exists)."""
    result: list[contracts.DeploymentStage] = []
    for stage in stages:
        if stage.data_capture is not None:
            capture = replace(stage.data_capture,
                              destination_s3_uri=f"s3://{bucket}/data-capture/{stage.endpoint_name}")
            stage = replace(stage, data_capture=capture)
        result.append(stage)
    return result


def with_rollback_alarms(
    stages: tuple[contracts.DeploymentStage, ...], alarm_names: Mapping[str, tuple[str, ...]]
) -> tuple[contracts.DeploymentStage, ...]:
    """Name the alarms a stage's blue/green rollout rolls back on (the program creates them)."""
    result: list[contracts.DeploymentStage] = []
    for stage in stages:
        names = alarm_names.get(stage.name)
        if stage.rollout is not None and names:
            merged = tuple(dict.fromkeys((*stage.rollout.alarm_names, *names)))
            stage = replace(stage, rollout=replace(stage.rollout, alarm_names=merged))
        result.append(stage)
    return tuple(result)
