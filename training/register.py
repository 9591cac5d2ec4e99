"""Register a trained model in the stack's model package group, pending approval.

    python -m training.register [--model-dir D] [--output-dir D] [--arn-file F] [--training-data URI]

Reads model.joblib (SM_MODEL_DIR or --model-dir) and evaluation.json (SM_OUTPUT_DATA_DIR or
--output-dir), packs model.tar.gz (model.joblib + code/inference.py), checks that the stack's model
package group exists (the program owns it: register never creates one), uploads the archive and the
metrics to ARTIFACT_BUCKET under <stack>/model-builds/<build id>/, creates the package with status
PendingManualApproval, its metrics, the git commit and the build, and writes the package ARN to
model_package_arn.txt for the approval and deploy steps.

A failure after the upload removes what was uploaded (the object versions this run created), so a
failed run leaves nothing behind. Every failure ends in one line on stderr naming the call, the
resource and the likely fix, and exit code 2.

Environment: ARTIFACT_BUCKET, MODEL_PACKAGE_GROUP_NAME, INFERENCE_IMAGE_URI, MLOPS_STACK (required),
MLOPS_PROJECT (default sagemaker-mlops); build identity from CodeBuild (CODEBUILD_BUILD_ID,
CODEBUILD_RESOLVED_SOURCE_VERSION), GitHub Actions (GITHUB_RUN_ID, GITHUB_SHA) or git, and the
pipeline execution from PIPELINE_EXECUTION_ID when the pipeline action sets it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

import contracts
from training import DEFAULT_MODEL_DIR, DEFAULT_OUTPUT_DIR, TRAINING_METADATA_FILE, aws_errors

# Not one of the program's CodeBuild project variables: the CodePipeline build action sets it from
# #{codepipeline.PipelineExecutionId}, so each package names the execution that built it.
ENV_PIPELINE_EXECUTION_ID = contracts.ENV_PIPELINE_EXECUTION_ID

INFERENCE_SOURCE = Path(__file__).with_name(contracts.INFERENCE_SCRIPT)

# The stack output that holds the group's name (__main__.py exports it).
GROUP_STACK_OUTPUT = "modelPackageGroupName"


class RegistrationError(Exception):
    """Registration cannot proceed; the message names what is missing and how to supply it."""


def aws_failure(call: str, resource: str, exc: Exception, hint: str = "") -> RegistrationError:
    """One line: the call (as its IAM action), the resource, what AWS said and the likely fix."""
    return RegistrationError(aws_errors.failure_line(call, resource, exc, hint))


def _client(service: str) -> Any:
    try:
        return boto3.client(service)
    except BotoCoreError as exc:  # NoRegionError for a regional service without a configured region
        raise aws_failure(f"boto3.client({service!r})", "this shell's AWS configuration", exc) from None


@dataclass(frozen=True)
class RegisterSettings:
    bucket: str
    group: str
    image_uri: str
    stack: str
    project: str = contracts.PROJECT

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RegisterSettings:
        required = {
            "bucket": contracts.ENV_ARTIFACT_BUCKET,
            "group": contracts.ENV_MODEL_PACKAGE_GROUP_NAME,
            "image_uri": contracts.ENV_INFERENCE_IMAGE_URI,
            "stack": contracts.ENV_MLOPS_STACK,
        }
        missing = [var for var in required.values() if not environ.get(var, "").strip()]
        if missing:
            raise RegistrationError(
                f"missing environment variable(s) {', '.join(missing)}: the CodeBuild project and the deploy "
                "workflow set them from the stack; to run by hand, export them (see `pulumi stack output`)"
            )
        values = {field: environ[var].strip() for field, var in required.items()}
        project = environ.get(contracts.ENV_MLOPS_PROJECT, "").strip() or contracts.PROJECT
        return cls(project=project, **values)


@dataclass(frozen=True)
class BuildInfo:
    """Who built this package, from which commit, in which pipeline execution."""

    build_id: str
    """Unique per build; part of the S3 key."""
    generated_by: str
    commit: str
    pipeline_execution: str
    repository: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], cwd: Path | None = None) -> BuildInfo:
        github_run = environ.get("GITHUB_RUN_ID", "")
        github_repo = environ.get("GITHUB_REPOSITORY", "")
        github_server = environ.get("GITHUB_SERVER_URL", "https://github.com")
        run_url = f"{github_server}/{github_repo}/actions/runs/{github_run}" if github_run and github_repo else ""
        attempt = environ.get("GITHUB_RUN_ATTEMPT", "1")

        if environ.get("CODEBUILD_BUILD_ID"):
            build_id = environ["CODEBUILD_BUILD_ID"]
            generated_by = environ.get("CODEBUILD_BUILD_ARN") or build_id
        elif github_run:
            build_id = f"github-{github_run}-{attempt}"
            generated_by = f"{run_url}/attempts/{attempt}" if run_url else build_id
        else:
            build_id = f"local-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
            generated_by = build_id

        commit = (environ.get("CODEBUILD_RESOLVED_SOURCE_VERSION") or environ.get("GITHUB_SHA")
                  or _git_head(cwd or Path.cwd()))
        if not commit:
            raise RegistrationError(
                "cannot tell which git commit this model was trained from: set CODEBUILD_RESOLVED_SOURCE_VERSION "
                "or GITHUB_SHA, or run inside the git checkout"
            )
        pipeline_execution = (environ.get(ENV_PIPELINE_EXECUTION_ID) or run_url
                              or environ.get("CODEBUILD_INITIATOR") or "none")
        repository = (f"{github_server}/{github_repo}" if github_repo else None) or environ.get(
            "CODEBUILD_SOURCE_REPO_URL") or None
        return cls(build_id=build_id, generated_by=generated_by, commit=commit,
                   pipeline_execution=pipeline_execution, repository=repository)

    @property
    def key_segment(self) -> str:
        """The build id as one S3 key segment (CodeBuild ids contain ':')."""
        return re.sub(r"[^A-Za-z0-9._-]", "-", self.build_id)


def _git_head(cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    head = done.stdout.strip()
    return head if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", head) else None


def read_evaluation(output_dir: Path) -> tuple[dict[str, Any], bytes]:
    """The evaluation (parsed) and its exact bytes; errors say how to produce a valid one."""
    path = output_dir / contracts.EVALUATION_FILE
    if not path.is_file():
        raise RegistrationError(
            f"{path} not found: run `python -m training.train` first, or point --output-dir / SM_OUTPUT_DATA_DIR "
            "at the directory that holds evaluation.json"
        )
    raw = path.read_bytes()
    try:
        evaluation = json.loads(raw)
        auc = evaluation["binary_classification_metrics"]["auc"]["value"]
        float(auc)
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistrationError(
            f"{path} is not SageMaker model-quality statistics with binary_classification_metrics.auc.value "
            f"({type(exc).__name__}: {exc}); regenerate it with `python -m training.train`"
        ) from None
    return evaluation, raw


def build_model_archive(model_dir: Path, destination: Path) -> Path:
    """model.tar.gz with model.joblib at the root and code/inference.py, as the scikit-learn image expects."""
    model_path = model_dir / contracts.MODEL_FILE
    if not model_path.is_file():
        raise RegistrationError(
            f"{model_path} not found: run `python -m training.train` first, or point --model-dir / SM_MODEL_DIR "
            "at the directory that holds model.joblib"
        )
    archive = destination / contracts.MODEL_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model_path, arcname=contracts.MODEL_FILE)
        tar.add(INFERENCE_SOURCE, arcname=f"code/{contracts.INFERENCE_SCRIPT}")
    return archive


def _training_data(output_dir: Path) -> str:
    path = output_dir / TRAINING_METADATA_FILE
    try:
        return str(json.loads(path.read_text())["data_source"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def require_group(sagemaker: Any, settings: RegisterSettings) -> None:
    """The stack's group must exist. The program owns it (ModelRegistry): a mistyped name must fail here,
    never start a second registry that no approval rule, role or teardown knows about."""
    resource = f"model package group {settings.group!r}"
    try:
        sagemaker.describe_model_package_group(ModelPackageGroupName=settings.group)
    except ClientError as exc:
        if aws_errors.is_not_found(exc):
            raise RegistrationError(
                f"{resource} does not exist: {contracts.ENV_MODEL_PACKAGE_GROUP_NAME} must name the group the "
                f"program created for the stack (`pulumi stack output {GROUP_STACK_OUTPUT}`); register never "
                "creates one"
            ) from None
        raise aws_failure("sagemaker:DescribeModelPackageGroup", resource, exc,
                          f"check {contracts.ENV_MODEL_PACKAGE_GROUP_NAME} "
                          f"(`pulumi stack output {GROUP_STACK_OUTPUT}`)") from None
    except BotoCoreError as exc:
        raise aws_failure("sagemaker:DescribeModelPackageGroup", resource, exc) from None


@dataclass(frozen=True)
class Upload:
    key: str
    version_id: str | None
    """What PutObject answered: set when the bucket keeps versions (the stack's does)."""


def _put(s3: Any, bucket: str, key: str, body: Any, **extra: str) -> Upload:
    # One PutObject per file (the archive of a scikit-learn model is far below its 5 GB limit): its answer
    # carries the version id that cleanup must delete, which the multipart transfer helpers do not return.
    try:
        reply = s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)
    except (ClientError, BotoCoreError) as exc:
        raise aws_failure("s3:PutObject", f"s3://{bucket}/{key}", exc,
                          f"check that {contracts.ENV_ARTIFACT_BUCKET} names the stack's artifact bucket "
                          "(`pulumi stack output artifactBucket`)") from None
    return Upload(key, reply.get("VersionId"))


def remove_uploads(s3: Any, bucket: str, uploads: Sequence[Upload]) -> list[str]:
    """Delete exactly what this run uploaded; the objects that could not be removed, with the reason.

    In a versioned bucket a plain delete only hides the object behind a delete marker (and keeps paying
    for it), so each version this run created is deleted by its id.
    """
    left: list[str] = []
    for upload in reversed(uploads):
        where = f"s3://{bucket}/{upload.key}"
        try:
            if upload.version_id:
                s3.delete_object(Bucket=bucket, Key=upload.key, VersionId=upload.version_id)
            else:
                s3.delete_object(Bucket=bucket, Key=upload.key)
        except (ClientError, BotoCoreError) as exc:
            version = f" version {upload.version_id}" if upload.version_id else ""
            left.append(aws_errors.one_line(f"{where}{version} ({type(exc).__name__}: {exc})"))
    return left


def _create_package(sagemaker: Any, request: Mapping[str, Any], settings: RegisterSettings) -> str:
    try:
        return sagemaker.create_model_package(**request)["ModelPackageArn"]
    except (ClientError, BotoCoreError) as exc:
        raise aws_failure("sagemaker:CreateModelPackage", f"model package group {settings.group!r}", exc,
                          "the request is in training/register.py (model_package_request)") from None


def _tags(settings: RegisterSettings) -> list[dict[str, str]]:
    return [{"Key": contracts.TAG_PROJECT, "Value": settings.project},
            {"Key": contracts.TAG_STACK, "Value": settings.stack}]


def model_package_request(settings: RegisterSettings, build: BuildInfo, *, model_url: str, metrics_url: str,
                          metrics_digest: str, evaluation: Mapping[str, Any], training_data: str,
                          client_token: str) -> dict[str, Any]:
    """CreateModelPackage arguments; a pure function so the request can be read in tests and reviews."""
    auc = float(evaluation["binary_classification_metrics"]["auc"]["value"])
    return {
        "ModelPackageGroupName": settings.group,
        "ModelPackageDescription": (
            f"{settings.project}/{settings.stack} churn model from commit {build.commit[:12]}, "
            f"build {build.build_id}, holdout AUC {auc:.4f}"
        )[:1024],
        "ModelApprovalStatus": contracts.STATUS_PENDING,
        "InferenceSpecification": contracts.inference_specification(settings.image_uri, model_url),
        "ModelMetrics": {
            "ModelQuality": {
                "Statistics": {"ContentType": "application/json", "S3Uri": metrics_url,
                               "ContentDigest": metrics_digest},
            },
        },
        "MetadataProperties": {
            "CommitId": build.commit,
            "GeneratedBy": build.generated_by[:1024],
            "ProjectId": settings.stack,
            **({"Repository": build.repository[:1024]} if build.repository else {}),
        },
        "CustomerMetadataProperties": {
            "Stack": contracts.metadata_value(settings.stack),
            "TrainingData": contracts.metadata_value(training_data),
            "PipelineExecution": contracts.metadata_value(build.pipeline_execution),
            "BuildId": contracts.metadata_value(build.build_id),
        },
        "Domain": "MACHINE_LEARNING",
        "Task": "CLASSIFICATION",
        "ClientToken": client_token,
        "Tags": _tags(settings),
    }


def register(model_dir: Path, output_dir: Path, settings: RegisterSettings | None = None,
             build: BuildInfo | None = None, *, training_data: str | None = None, arn_file: Path | None = None,
             sagemaker: Any = None, s3: Any = None) -> str:
    """Upload the model and its metrics, create the model package, return its ARN (and write it to arn_file).

    Nothing is uploaded unless the group exists; if anything fails after the first upload, the uploads
    are removed again before the error propagates.
    """
    settings = settings or RegisterSettings.from_env(os.environ)
    build = build or BuildInfo.from_env(os.environ)
    evaluation, evaluation_bytes = read_evaluation(output_dir)
    training_data = training_data or _training_data(output_dir)

    prefix = f"{contracts.model_builds_prefix(settings.stack)}{build.key_segment}"
    model_key = f"{prefix}/{contracts.MODEL_ARCHIVE}"
    metrics_key = f"{prefix}/{contracts.EVALUATION_FILE}"
    with tempfile.TemporaryDirectory(prefix="register-") as scratch:
        archive = build_model_archive(model_dir, Path(scratch))
        archive_digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        sagemaker = sagemaker or _client("sagemaker")
        s3 = s3 or _client("s3")
        require_group(sagemaker, settings)
        uploads: list[Upload] = []
        try:
            with archive.open("rb") as body:
                uploads.append(_put(s3, settings.bucket, model_key, body))
            uploads.append(_put(s3, settings.bucket, metrics_key, io.BytesIO(evaluation_bytes),
                                ContentType="application/json"))
            request = model_package_request(
                settings, build,
                model_url=f"s3://{settings.bucket}/{model_key}",
                metrics_url=f"s3://{settings.bucket}/{metrics_key}",
                metrics_digest=f"sha256:{hashlib.sha256(evaluation_bytes).hexdigest()}",
                evaluation=evaluation,
                training_data=training_data,
                # A retried build with the same artifact gets the same package instead of a duplicate.
                client_token=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{settings.group}/{build.build_id}/{archive_digest}")),
            )
            # If SageMaker created the package but its answer was lost, the package now points at deleted
            # files: the approval gate rejects a package whose metrics it cannot read, so that fails closed.
            arn = _create_package(sagemaker, request, settings)
        except BaseException as exc:
            left = remove_uploads(s3, settings.bucket, uploads)
            if left:
                note = f"; could not remove what this run uploaded, delete by hand: {'; '.join(left)}"
                if isinstance(exc, RegistrationError):
                    raise RegistrationError(f"{exc}{note}") from None
                exc.add_note(note)
            raise
    if arn_file is not None:
        try:
            arn_file.parent.mkdir(parents=True, exist_ok=True)
            arn_file.write_text(arn)
        except OSError as exc:
            raise RegistrationError(
                f"registered {arn} but could not write {arn_file} ({exc}); pass --arn-file a writable path"
            ) from None
    return arn


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.register", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path(environ.get("SM_MODEL_DIR") or DEFAULT_MODEL_DIR))
    parser.add_argument("--output-dir", type=Path,
                        default=Path(environ.get("SM_OUTPUT_DATA_DIR") or DEFAULT_OUTPUT_DIR))
    parser.add_argument("--arn-file", type=Path, default=Path(contracts.MODEL_PACKAGE_ARN_FILE),
                        help="where to write the package ARN (default: ./model_package_arn.txt)")
    parser.add_argument("--training-data", default=None,
                        help="training data location for the package metadata (default: from training_metadata.json)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv, os.environ)
    try:
        arn = register(args.model_dir, args.output_dir, training_data=args.training_data, arn_file=args.arn_file)
    except RegistrationError as exc:
        print(f"registration failed: {aws_errors.one_line(exc)}", file=sys.stderr)
        return 2
    print(f"registered {arn} ({contracts.STATUS_PENDING}); ARN written to {args.arn_file}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
