"""Auto-approval gate: decide Approved / Rejected for a new model package from its metrics.

Two callers reach the same decision code (design: Approval semantics):
- the EventBridge rule on "SageMaker Model Package State Change" (PendingManualApproval, our group);
- the CodePipeline Lambda-invoke action, whose input artifact carries model_package_arn.txt.
Whichever runs first decides and writes the reason on the package; a later call finds the decision and,
for a pipeline job, reports success exactly when the package is Approved.

An EventBridge event is handled only when the rule's own pattern (contracts.auto_approval_pattern)
matches it as EventBridge would; anything else is logged and left alone. Of the events it matches, one
that cannot be read (an ARN that is not exactly a package ARN, a status that is not one string) raises.

Shipped at the root of the Lambda archive with contracts.py beside it, hence `import contracts`.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

import contracts

LOGGER = logging.getLogger(__name__)
LOGGER.setLevel(logging.INFO)

MAX_APPROVAL_DESCRIPTION = 1024  # UpdateModelPackage limit
MAX_JOB_MESSAGE = 5000  # PutJobFailureResult failureDetails.message limit
MAX_JOB_SUMMARY = 2048  # PutJobSuccessResult executionDetails.summary limit
METRICS_SECTION = "binary_classification_metrics"
GAIN_TOLERANCE = 1e-9


# --- Errors ---------------------------------------------------------------------------------
class ConfigError(ValueError):
    """The function's environment is wrong; nothing can be decided until the stack is fixed."""


# An event this handler cannot read; the state-change reading (contracts.read_state_change) raises it.
MalformedEventError = contracts.MalformedEventError


class MalformedJobError(MalformedEventError):
    """A CodePipeline job event that cannot be read; `job_id` is set when the job's id could be."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class MetricsUnavailable(Exception):
    """The package's metrics cannot be used (absent, missing object, not the model-quality format)."""


class PackageNotFound(Exception):
    pass


# --- Configuration --------------------------------------------------------------------------
@dataclass(frozen=True)
class ApprovalConfig:
    group_name: str
    thresholds: Mapping[str, float]
    champion_metric: str | None  # None: no champion comparison
    champion_min_delta: float


def _unit_interval(name: str, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0.0 <= float(raw) <= 1.0:
        raise ConfigError(f"{name} must be a number between 0 and 1, got {raw!r}")
    return float(raw)


def load_config(environ: Mapping[str, str]) -> ApprovalConfig:
    """Read and validate the contract variables (contracts.AUTO_APPROVE_ENV); ConfigError says what to fix."""
    group = environ.get(contracts.ENV_MODEL_PACKAGE_GROUP_NAME, "").strip()
    if not group:
        raise ConfigError(
            f"{contracts.ENV_MODEL_PACKAGE_GROUP_NAME} is not set; the program sets it to the stack's group"
        )

    raw_thresholds = environ.get(contracts.ENV_APPROVAL_THRESHOLDS, "")
    try:
        thresholds = json.loads(raw_thresholds)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{contracts.ENV_APPROVAL_THRESHOLDS} is not valid JSON ({exc}); "
            'expected an object of metric -> minimum, e.g. {"accuracy": 0.85, "auc": 0.9}'
        ) from None
    # An empty bar would approve every model: fail closed instead.
    if not isinstance(thresholds, dict) or not thresholds:
        raise ConfigError(
            f"{contracts.ENV_APPROVAL_THRESHOLDS} must be a non-empty JSON object of metric -> minimum, "
            'e.g. {"accuracy": 0.85, "auc": 0.9}'
        )
    parsed = {
        str(metric): _unit_interval(f"{contracts.ENV_APPROVAL_THRESHOLDS}[{metric!r}]", bar)
        for metric, bar in thresholds.items()
    }

    champion_metric = environ.get(contracts.ENV_CHAMPION_METRIC, "").strip() or None
    raw_delta = environ.get(contracts.ENV_CHAMPION_MIN_DELTA, "").strip() or "0"
    try:
        delta: Any = float(raw_delta)
    except ValueError:
        delta = raw_delta
    delta = _unit_interval(contracts.ENV_CHAMPION_MIN_DELTA, delta)  # NaN fails the range check too
    return ApprovalConfig(group, parsed, champion_metric, delta)


# --- Events ---------------------------------------------------------------------------------
class ArtifactCredentials:
    """The job's temporary S3 credentials; repr and str never show them."""

    __slots__ = ("access_key_id", "secret_access_key", "session_token")

    def __init__(self, access_key_id: str, secret_access_key: str, session_token: str) -> None:
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.session_token = session_token

    def __repr__(self) -> str:
        return "ArtifactCredentials(<redacted>)"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


@dataclass(frozen=True)
class PipelineJob:
    job_id: str
    artifacts: tuple[S3Location, ...]
    credentials: ArtifactCredentials = field(repr=False)


def _require_str(container: Mapping[str, Any], key: str, where: str, job_id: str | None = None) -> str:
    value = container.get(key)
    if not isinstance(value, str) or not value:
        # Name the field, never echo the value: the CodePipeline event carries credentials.
        raise MalformedJobError(f"{where}.{key} must be a non-empty string", job_id)
    return value


def _require_dict(container: Mapping[str, Any], key: str, where: str, job_id: str | None = None) -> dict[str, Any]:
    value = container.get(key)
    if not isinstance(value, dict):
        raise MalformedJobError(f"{where}.{key} must be an object", job_id)
    return value


def parse_pipeline_job(job: Any) -> PipelineJob:
    if not isinstance(job, dict):
        raise MalformedJobError("event['CodePipeline.job'] must be an object")
    job_id = _require_str(job, "id", "CodePipeline.job")
    where = "CodePipeline.job.data"
    data = _require_dict(job, "data", "CodePipeline.job", job_id)
    raw_artifacts = data.get("inputArtifacts")
    if not isinstance(raw_artifacts, list) or not raw_artifacts:
        raise MalformedJobError(
            f"{where}.inputArtifacts must be a non-empty list; give the approval action the build output "
            f"artifact that holds {contracts.MODEL_PACKAGE_ARN_FILE}",
            job_id,
        )
    artifacts = []
    for index, artifact in enumerate(raw_artifacts):
        item = f"{where}.inputArtifacts[{index}]"
        if not isinstance(artifact, dict):
            raise MalformedJobError(f"{item} must be an object", job_id)
        location = _require_dict(artifact, "location", item, job_id)
        s3 = _require_dict(location, "s3Location", f"{item}.location", job_id)
        artifacts.append(
            S3Location(
                _require_str(s3, "bucketName", f"{item}.location.s3Location", job_id),
                _require_str(s3, "objectKey", f"{item}.location.s3Location", job_id),
            )
        )
    creds = _require_dict(data, "artifactCredentials", where, job_id)
    credentials = ArtifactCredentials(
        _require_str(creds, "accessKeyId", f"{where}.artifactCredentials", job_id),
        _require_str(creds, "secretAccessKey", f"{where}.artifactCredentials", job_id),
        _require_str(creds, "sessionToken", f"{where}.artifactCredentials", job_id),
    )
    return PipelineJob(job_id, tuple(artifacts), credentials)


def parse_event(event: Any, group_name: str) -> contracts.PackageStateChange | PipelineJob | str:
    """Typed view of either accepted event; MalformedEventError names the field at fault.

    An EventBridge event that the program's own rule would not deliver (contracts.auto_approval_pattern)
    yields the reason it was not delivered, as a str: the handler logs it and decides nothing.
    """
    if isinstance(event, dict) and "CodePipeline.job" in event:
        return parse_pipeline_job(event["CodePipeline.job"])
    return contracts.read_state_change(event, contracts.auto_approval_pattern(group_name))


# --- Clients --------------------------------------------------------------------------------
def artifact_s3_client(credentials: ArtifactCredentials) -> Any:
    # Pipeline artifact buckets are KMS-encrypted: SigV4 is required to read them.
    return boto3.client(
        "s3",
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
        config=Config(signature_version="s3v4"),
    )


class Clients:
    """boto3 clients, created on first use and kept for the container's life; any can be injected."""

    def __init__(
        self,
        sagemaker: Any = None,
        s3: Any = None,
        codepipeline: Any = None,
        artifact_s3: Callable[[ArtifactCredentials], Any] = artifact_s3_client,
    ) -> None:
        self._sagemaker = sagemaker
        self._s3 = s3
        self._codepipeline = codepipeline
        self.artifact_s3 = artifact_s3

    @property
    def sagemaker(self) -> Any:
        if self._sagemaker is None:
            self._sagemaker = boto3.client("sagemaker")
        return self._sagemaker

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = boto3.client("s3")
        return self._s3

    @property
    def codepipeline(self) -> Any:
        if self._codepipeline is None:
            self._codepipeline = boto3.client("codepipeline")
        return self._codepipeline


_clients: Clients | None = None


def default_clients() -> Clients:
    global _clients
    if _clients is None:
        _clients = Clients()
    return _clients


# --- Metrics --------------------------------------------------------------------------------
def parse_model_quality(document: Any) -> dict[str, float]:
    """metric -> value from SageMaker's model-quality statistics (binary_classification_metrics.<m>.value)."""
    if not isinstance(document, dict) or not isinstance(document.get(METRICS_SECTION), dict):
        raise MetricsUnavailable(f"metrics file has no {METRICS_SECTION!r} object (SageMaker model-quality format)")
    values: dict[str, float] = {}
    for name, entry in document[METRICS_SECTION].items():
        # Curves and the confusion matrix carry no scalar "value"; only scalars can meet a bar.
        if isinstance(entry, dict):
            value = entry.get("value")
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                values[name] = float(value)
    return values


def _read_object(s3: Any, location: S3Location) -> bytes | None:
    """The object's bytes, or None when it does not exist; any other S3 error raises (retries, DLQ)."""
    try:
        return s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "NoSuchBucket", "404"):
            return None
        raise


def _split_s3_uri(uri: str) -> S3Location:
    match = re.match(r"^s3://([^/]+)/(.+)$", uri)
    if not match:
        raise MetricsUnavailable(f"metrics location {uri[:200]!r} is not an s3://bucket/key URI")
    return S3Location(match.group(1), match.group(2))


def read_package_metrics(package: Mapping[str, Any], s3: Any) -> dict[str, float]:
    """The package's ModelQuality statistics from S3.

    A missing or malformed file is the package's problem -> MetricsUnavailable (it will be rejected).
    Access denied, throttling and server errors are ours or transient -> ClientError propagates, so the
    package stays pending and Lambda's retries / the dead-letter queue see the failure.
    """
    statistics = package.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {})
    uri = statistics.get("S3Uri")
    if not isinstance(uri, str) or not uri:
        raise MetricsUnavailable("package has no ModelMetrics.ModelQuality.Statistics.S3Uri")
    body = _read_object(s3, _split_s3_uri(uri))
    if body is None:
        raise MetricsUnavailable(f"metrics file {uri} does not exist")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetricsUnavailable(f"metrics file {uri} is not valid JSON ({exc})") from None
    return parse_model_quality(document)


# --- Decision -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    status: str  # contracts.STATUS_APPROVED or contracts.STATUS_REJECTED
    checks: tuple[str, ...]

    @property
    def description(self) -> str:
        text = f"auto-approval: {self.status}. " + "; ".join(self.checks)
        if len(text) > MAX_APPROVAL_DESCRIPTION:
            text = text[: MAX_APPROVAL_DESCRIPTION - 3] + "..."
        return text


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def find_champion(sagemaker: Any, group_name: str) -> dict[str, Any] | None:
    """The newest Approved package of the group, described; None when nothing was approved yet."""
    page = sagemaker.list_model_packages(
        ModelPackageGroupName=group_name,
        ModelApprovalStatus=contracts.STATUS_APPROVED,
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=1,
    )
    summaries = page.get("ModelPackageSummaryList", [])
    if not summaries:
        return None
    return sagemaker.describe_model_package(ModelPackageName=summaries[0]["ModelPackageArn"])


def evaluate(package: Mapping[str, Any], config: ApprovalConfig, clients: Clients) -> Decision:
    """Compare the package's metrics with the bars and the champion; never approves without readable metrics."""
    try:
        metrics = read_package_metrics(package, clients.s3)
    except MetricsUnavailable as exc:
        return Decision(contracts.STATUS_REJECTED, (f"metrics unavailable: {exc}",))

    checks: list[str] = []
    passed = True
    for metric, bar in sorted(config.thresholds.items()):
        if metric not in metrics:
            checks.append(f"{metric} absent from metrics (bar {_fmt(bar)}) FAIL")
            passed = False
        elif metrics[metric] >= bar:
            checks.append(f"{metric} {_fmt(metrics[metric])} >= {_fmt(bar)} ok")
        else:
            checks.append(f"{metric} {_fmt(metrics[metric])} < {_fmt(bar)} FAIL")
            passed = False

    if config.champion_metric is None:
        checks.append("champion comparison disabled")
    else:
        passed = _compare_with_champion(metrics, config, clients, checks) and passed

    return Decision(contracts.STATUS_APPROVED if passed else contracts.STATUS_REJECTED, tuple(checks))


def _compare_with_champion(
    metrics: Mapping[str, float], config: ApprovalConfig, clients: Clients, checks: list[str]
) -> bool:
    metric = config.champion_metric
    assert metric is not None
    champion = find_champion(clients.sagemaker, config.group_name)
    if champion is None:
        checks.append("no approved champion yet ok")
        return True
    champion_arn = champion["ModelPackageArn"]
    if metric not in metrics:
        checks.append(f"champion {champion_arn}: {metric} absent from new metrics FAIL")
        return False
    try:
        champion_value = read_package_metrics(champion, clients.s3).get(metric)
    except MetricsUnavailable as exc:
        champion_value = None
        checks.append(f"champion {champion_arn} metrics unavailable ({exc})")
    if champion_value is None:
        # Fail closed: without the champion's figure the new model is not shown to be better.
        checks.append(f"champion {champion_arn}: cannot compare {metric} FAIL (fix its metrics or approve by hand)")
        return False
    gain = metrics[metric] - champion_value
    # "Beat the champion by at least the delta": gain >= delta, so with delta 0 a tie passes (a rebuild
    # that changes only code/inference.py must stay deployable); delta > 0 demands a real improvement.
    # The tolerance absorbs float noise (0.905 - 0.9 is 0.004999...), never a real shortfall.
    ok = gain >= config.champion_min_delta - GAIN_TOLERANCE
    checks.append(
        f"champion {champion_arn} {metric} {_fmt(champion_value)}: new {_fmt(metrics[metric])}, "
        f"gain {gain:+.4f} {'>=' if ok else '<'} {_fmt(config.champion_min_delta)} {'ok' if ok else 'FAIL'}"
    )
    return ok


def describe_package(sagemaker: Any, arn: str) -> dict[str, Any]:
    try:
        return sagemaker.describe_model_package(ModelPackageName=arn)
    except ClientError as exc:
        if contracts.is_not_found(exc):
            raise PackageNotFound(f"model package {arn} does not exist") from None
        raise


def log_json(**fields: Any) -> None:
    LOGGER.info(json.dumps(fields, sort_keys=True, default=str))


def decide_package(package: Mapping[str, Any], config: ApprovalConfig, clients: Clients) -> str:
    """Decide a PendingManualApproval package and record the decision on it; returns the new status."""
    arn = package["ModelPackageArn"]
    decision = evaluate(package, config, clients)
    clients.sagemaker.update_model_package(
        ModelPackageArn=arn,
        ModelApprovalStatus=decision.status,
        ApprovalDescription=decision.description,
    )
    log_json(action="decided", model_package_arn=arn, decision=decision.status, reason=decision.description)
    return decision.status


# --- The two entry paths --------------------------------------------------------------------
def handle_state_change(
    change: contracts.PackageStateChange, config: ApprovalConfig, clients: Clients
) -> dict[str, Any]:
    arn = change.model_package_arn
    # The event matched the rule (our group, PendingManualApproval); the registry has the last word, so
    # replays and packages of another group under our group's name stay harmless.
    if not contracts.package_arn_in_group(arn, config.group_name):
        # Our role may read only our group's packages: in AWS, describing this one would be AccessDenied.
        log_json(action="ignored", model_package_arn=arn, reason="the ARN names a package of another group")
        return {"action": "ignored", "model_package_arn": arn}
    package = describe_package(clients.sagemaker, arn)
    if package.get("ModelPackageGroupName") != config.group_name:
        log_json(action="ignored", model_package_arn=arn, reason="package is not in our group")
        return {"action": "ignored", "model_package_arn": arn}
    status = package.get("ModelApprovalStatus")
    if status != contracts.STATUS_PENDING:
        log_json(action="ignored", model_package_arn=arn, reason=f"already decided: {status}")
        return {"action": "ignored", "model_package_arn": arn, "status": status}
    return {"action": "decided", "model_package_arn": arn, "status": decide_package(package, config, clients)}


class ArtifactError(Exception):
    pass


def read_arn_from_artifacts(job: PipelineJob, clients: Clients) -> str:
    """The package ARN from the first input artifact whose zip holds model_package_arn.txt."""
    s3 = clients.artifact_s3(job.credentials)
    for location in job.artifacts:
        body = _read_object(s3, location)
        if body is None:
            raise ArtifactError(f"input artifact s3://{location.bucket}/{location.key} does not exist")
        try:
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                names = {name.removeprefix("./"): name for name in archive.namelist()}
                member = names.get(contracts.MODEL_PACKAGE_ARN_FILE)
                if member is None:
                    continue
                text = archive.read(member).decode("utf-8")
        except (zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise ArtifactError(
                f"input artifact s3://{location.bucket}/{location.key} is not a readable zip ({exc})"
            ) from None
        # One line ending closes a text file (`echo arn > file`); anything more is not the ARN register wrote.
        line = text.removesuffix("\n").removesuffix("\r")
        return contracts.validate_model_package_arn(line, f"{contracts.MODEL_PACKAGE_ARN_FILE} in the input artifact")
    raise ArtifactError(
        f"no input artifact contains {contracts.MODEL_PACKAGE_ARN_FILE}; the build stage must write it "
        "(training/register.py) and pass its output artifact to the approval action"
    )


def _put_job_result(call: Callable[..., Any], job_id: str, **result: Any) -> bool:
    """Report the job's result; False when the job already has one.

    Lambda retries an asynchronous invocation that timed out or crashed after reporting: the replay
    must not fail on the finished job (InvalidJobStateException), or its retries end in the dead-letter
    queue although the pipeline went on correctly.
    """
    try:
        call(jobId=job_id, **result)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "InvalidJobStateException":
            raise
        log_json(action="job_already_finished", job_id=job_id)
        return False
    return True


def _fail_job(codepipeline: Any, job_id: str, failure_type: str, message: str) -> dict[str, Any]:
    failure = {"type": failure_type, "message": message[:MAX_JOB_MESSAGE]}
    if not _put_job_result(codepipeline.put_job_failure_result, job_id, failureDetails=failure):
        return {"action": "job_already_finished", "job_id": job_id}
    log_json(action="pipeline_job_failed", job_id=job_id, failure_type=failure_type, reason=message)
    return {"action": "job_failed", "job_id": job_id, "reason": message}


def handle_pipeline_job(job: PipelineJob, config: ApprovalConfig, clients: Clients) -> dict[str, Any]:
    """Decide (if still pending) the build's package and end the job: success exactly when Approved.

    Problems that a retry cannot fix (artifact without the ARN, unknown package, another group) end the job
    with a failure at once, so the pipeline shows the reason instead of waiting for the action's timeout.
    AWS errors (throttling, access denied) raise: CodePipeline invokes the function asynchronously, so
    Lambda retries it, and deciding again is harmless because the decision is recorded on the package.
    """
    try:
        arn = read_arn_from_artifacts(job, clients)
        # Our role may read only our group's packages: in AWS, describing another group's would be AccessDenied.
        package = (describe_package(clients.sagemaker, arn)
                   if contracts.package_arn_in_group(arn, config.group_name) else {})
    except (ArtifactError, MalformedEventError, PackageNotFound) as exc:
        return _fail_job(clients.codepipeline, job.job_id, "ConfigurationError", str(exc))
    group = package.get("ModelPackageGroupName", arn.rsplit("/", 2)[-2])
    if group != config.group_name:
        return _fail_job(
            clients.codepipeline,
            job.job_id,
            "ConfigurationError",
            f"model package {arn} is in group {group!r}, not this stack's group {config.group_name!r}",
        )
    status = package.get("ModelApprovalStatus")
    if status == contracts.STATUS_PENDING:
        status = decide_package(package, config, clients)
        package = describe_package(clients.sagemaker, arn)
    else:
        log_json(action="already_decided", model_package_arn=arn, status=status, job_id=job.job_id)
    description = str(package.get("ApprovalDescription") or "")
    if status == contracts.STATUS_APPROVED:
        summary = f"{arn} Approved. {description}"[:MAX_JOB_SUMMARY]
        if not _put_job_result(clients.codepipeline.put_job_success_result, job.job_id,
                               executionDetails={"summary": summary}):
            return {"action": "job_already_finished", "job_id": job.job_id, "model_package_arn": arn}
        log_json(action="pipeline_job_succeeded", job_id=job.job_id, model_package_arn=arn)
        return {"action": "job_succeeded", "job_id": job.job_id, "model_package_arn": arn}
    return _fail_job(
        clients.codepipeline, job.job_id, "JobFailed", f"model package {arn} is {status}, not Approved. {description}"
    )


def handle(event: Any, config: ApprovalConfig, clients: Clients) -> dict[str, Any]:
    try:
        parsed = parse_event(event, config.group_name)
    except MalformedJobError as exc:
        if exc.job_id is None:
            raise
        # A readable job id: end the job with the reason instead of letting the action time out.
        return _fail_job(clients.codepipeline, exc.job_id, "ConfigurationError", f"malformed job event: {exc}")
    if isinstance(parsed, str):
        reason = f"not an event the auto-approval rule delivers: {parsed}"
        log_json(action="ignored", model_package_arn=contracts.arn_for_log(event), reason=reason)
        return {"action": "ignored", "reason": reason}
    if isinstance(parsed, PipelineJob):
        return handle_pipeline_job(parsed, config, clients)
    return handle_state_change(parsed, config, clients)


def handler(event: Any, context: Any, clients: Clients | None = None) -> dict[str, Any]:
    """Lambda entry point. Never logs the event: a CodePipeline job carries temporary credentials."""
    return handle(event, load_config(os.environ), clients or default_clients())
