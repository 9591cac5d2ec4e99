"""The embedded run's SageMaker Pipelines: executes a pipeline definition (the program's own JSON) on this machine.

moto stores pipelines but runs nothing, so this module plays the Pipelines service for one execution:

- The definition is checked first, as CreatePipeline/StartPipelineExecution would: every step type known,
  every `Get` naming a parameter, a step or a property file that exists, no cycle. A step type this executor
  does not run fails the execution naming the step, before any job starts.
- Steps run in dependency order (`Get` references, `DependsOn`, a Condition's branches), one at a time.
  Values are resolved as the service resolves them: `{"Get": "Parameters.X" | "Steps.S.<property path>" |
  "Execution.X"}`, `{"Std:Join": {"On", "Values"}}`, `{"Std:JsonGet": {"PropertyFile", "Path"}}` (read from
  the property file's S3 object, as the service does).
- Processing: the resolved CreateProcessingJob request is validated against botocore's model, S3 inputs are
  downloaded from the emulator to their LocalPath, ContainerEntrypoint + ContainerArguments run as a
  subprocess with `.venv-image/bin` first on PATH (python3 = the image's Python), and the outputs are uploaded
  on exit 0. Every `/opt/ml` in the entrypoint, arguments, environment and paths is mapped to
  `<jobs>/<execution id>/<step>/opt/ml`, and the container's `/` (its working directory) to the folder above.
  /opt/ml/config/processingjobconfig.json and resourceconfig.json are written as SageMaker writes them;
  /opt/ml/output/message becomes ExitMessage; a non-zero exit fails the job with SageMaker's FailureReason.
- Training: the scikit-learn image's launcher for real: sagemaker-training's trainer
  (`python -m sagemaker_training.cli.train`) with SAGEMAKER_BASE_DIR=<job>/opt/ml and
  SAGEMAKER_TRAINING_MODULE=image_training:main (local/image_training.py, what the image's
  sagemaker_sklearn_container.training does). hyperparameters.json, inputdataconfig.json and
  resourceconfig.json are written as SageMaker writes them, channels downloaded to input/data/<channel>,
  /opt/ml/model tarred to <S3OutputPath>/<job>/output/model.tar.gz (and output/data to output.tar.gz).
- Condition decides its branch (the other branch's steps do not run, as in SageMaker); RegisterModel sends
  its CreateModelPackage request to the emulator; Fail fails the execution with its ErrorMessage.

Where this differs from SageMaker (said in the README too): steps run one at a time; retry policies never fire
(no capacity or throttling errors happen here); a Training step runs on one instance (more is refused);
managed spot is never interrupted; the toolkit's DNS wait for `algo-N` hosts is skipped with its own switch
(SM_STUDIO_LOCAL_MODE), since no such hosts resolve here; only the scikit-learn image 1.4-2 can be played.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import random
import re
import shutil
import string
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
from botocore.validate import validate_parameters

import contracts
from local.process_groups import stop_process_group
from training.pipeline_definition import VERSION, step_entries

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE_BIN = REPO_ROOT / ".venv-image" / "bin"
LAUNCHER_SOURCE = Path(__file__).with_name("image_training.py")
LAUNCHER_MODULE = "image_training:main"
# Where a training container leaves its model (SM_MODEL_DIR); SageMaker packs it as model.tar.gz.
MODEL_DIR = "/opt/ml/model"

PROCESSING, TRAINING, CONDITION, REGISTER_MODEL, FAIL = "Processing", "Training", "Condition", "RegisterModel", "Fail"
STEP_TYPES = (PROCESSING, TRAINING, CONDITION, REGISTER_MODEL, FAIL)
PARAMETER_TYPES = ("String", "Integer", "Float", "Boolean")
EXECUTION_VARIABLES = ("PipelineExecutionId", "PipelineExecutionArn", "StartDateTime", "CurrentDateTime",
                       "PipelineName", "PipelineArn")

# Statuses as the Pipelines API reports them.
EXECUTING, SUCCEEDED, FAILED, STOPPING, STOPPED = "Executing", "Succeeded", "Failed", "Stopping", "Stopped"
STARTING = "Starting"
TERMINAL = (SUCCEEDED, FAILED, STOPPED)
# A failed execution's reason, in the service's words.
EXECUTION_STEP_FAILURE = "Step failure: One or multiple steps failed."
# DescribeProcessingJob's FailureReason when the container exits non-zero (its own words go to ExitMessage).
PROCESSING_ALGORITHM_ERROR = "AlgorithmError: See job logs for more information"
MESSAGE_LIMIT = 1024  # FailureReason, ExitMessage: the first 1 KB
STEP_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,64}$")
_CONTAINER_ROOT = re.compile(r"(?<![\w./-])/opt/ml(?=/|$|[\s\"':;=,)])")
_SAFE_ROOT = re.compile(r"^[\w./+-]+$")
# The image the embedded run can play: the scikit-learn image of any region, this project's tag.
_SKLEARN_IMAGE = re.compile(
    rf"^\d{{12}}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/{re.escape(contracts.SKLEARN_IMAGE['repository'])}"
    rf":{re.escape(contracts.SKLEARN_IMAGE['tag'])}$"
)
_HOST_PATH = ("PATH", "HOME", "TMPDIR", "LANG")
# What the image's Dockerfile sets for every process in the container.
_IMAGE_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "UTF-8",
              "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
_POLL_SECONDS = 0.1
# A stopped job gets this long to end after SIGTERM before its process group is killed.
JOB_STOP_GRACE_SECONDS = 5.0
# Outputs up to this size go up in one PutObject; larger ones through the multipart transfer manager.
_SINGLE_PUT_BYTES = 64 * 1024 * 1024


# --- Errors -----------------------------------------------------------------------------------------------
class DefinitionError(ValueError):
    """The definition cannot run; the message names the step (if any), the key and the fix."""

    def __init__(self, message: str, step: str | None = None) -> None:
        super().__init__(message)
        self.step = step


class StepFailed(Exception):
    """A step ended Failed; `reason` is what ListPipelineExecutionSteps reports as its FailureReason."""

    def __init__(self, reason: str, metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metadata = dict(metadata or {})


class _Stopped(Exception):
    """StopPipelineExecution arrived while the step ran."""


# --- The definition ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: Any = None
    has_default: bool = False


@dataclass(frozen=True)
class PropertyFile:
    name: str
    output_name: str
    file_path: str


@dataclass(frozen=True)
class Step:
    name: str
    type: str
    arguments: Any
    depends_on: tuple[str, ...] = ()
    property_files: tuple[PropertyFile, ...] = ()
    cache_enabled: bool = False
    cache_expire_after: timedelta | None = None


@dataclass(frozen=True)
class Definition:
    parameters: Mapping[str, Parameter]
    steps: Mapping[str, Step]
    """Steps by name, in the definition's order."""
    dependencies: Mapping[str, frozenset[str]]
    """step -> the steps it waits for (Get references, DependsOn, the Condition whose branch holds it)."""
    branch_of: Mapping[str, tuple[str, bool]]
    """step -> (Condition step, outcome that runs it), for steps in a Condition's IfSteps/ElseSteps."""
    order: tuple[str, ...]
    """The order the steps run in: after every step they depend on, ties in the definition's order."""


def _iter_expressions(value: Any) -> Iterator[tuple[str, Any]]:
    """Every ("Get", ref) and ("Std:JsonGet", body) inside a value, depth first."""
    if isinstance(value, Mapping):
        if set(value) == {"Get"}:
            yield "Get", value["Get"]
            return
        for key, inner in value.items():
            if key == "Std:JsonGet":
                yield "Std:JsonGet", inner
            yield from _iter_expressions(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _iter_expressions(inner)


def _step_of_reference(ref: str) -> str | None:
    if ref.startswith("Steps."):
        return re.split(r"[.\[]", ref[len("Steps."):], maxsplit=1)[0]
    return None


def _parse_duration(text: str, where: str) -> timedelta:
    """ISO 8601 durations as CacheConfig.ExpireAfter uses them (P30D, PT1H, P4W ...)."""
    match = re.fullmatch(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", text)
    if not match or text in ("P", "PT"):
        raise DefinitionError(f"{where}: {text!r} is not an ISO 8601 duration; use e.g. 'P30D' or 'PT12H'")
    years, months, weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=365 * years + 30 * months + 7 * weeks + days, hours=hours, minutes=minutes,
                     seconds=seconds)


def parse_definition(document: Mapping[str, Any] | str) -> Definition:
    """Check a definition the way the service does before it runs anything; DefinitionError names the fault."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as exc:
            raise DefinitionError(f"the pipeline definition is not JSON ({exc})") from None
    if not isinstance(document, Mapping):
        raise DefinitionError("the pipeline definition must be a JSON object with Version, Parameters and Steps")
    if document.get("Version") != VERSION:
        raise DefinitionError(f"definition Version is {document.get('Version')!r}; SageMaker Pipelines reads "
                              f"{VERSION!r}")
    parameters: dict[str, Parameter] = {}
    for index, raw in enumerate(document.get("Parameters") or []):
        where = f"Parameters[{index}]"
        if not isinstance(raw, Mapping) or not isinstance(raw.get("Name"), str):
            raise DefinitionError(f"{where} needs a Name")
        kind = raw.get("Type", "String")
        if kind not in PARAMETER_TYPES:
            raise DefinitionError(f"{where} ({raw['Name']}): Type {kind!r} is not one of {', '.join(PARAMETER_TYPES)}")
        if raw["Name"] in parameters:
            raise DefinitionError(f"{where}: parameter {raw['Name']!r} is declared twice")
        parameters[raw["Name"]] = Parameter(raw["Name"], kind, raw.get("DefaultValue"), "DefaultValue" in raw)

    raw_steps = document.get("Steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise DefinitionError("the definition has no Steps")
    steps: list[Step] = []
    branch_of: dict[str, tuple[str, bool]] = {}
    # SageMaker nests a Condition's branches in its IfSteps/ElseSteps: whole steps, each in one branch.
    for entry in step_entries(document):
        raw = entry.value
        if not isinstance(raw, Mapping) or not isinstance(raw.get("Name"), str):
            raise DefinitionError(f"{entry.where} must be a step object with a Name (a Condition's IfSteps and "
                                  "ElseSteps hold whole steps, not names)")
        name = raw["Name"]
        if not STEP_NAME.match(name):
            raise DefinitionError(f"step name {name!r} must match {STEP_NAME.pattern}", step=name)
        kind = raw.get("Type")
        if kind not in STEP_TYPES:
            raise DefinitionError(
                f"step {name!r} has type {kind!r}, which the embedded run's executor does not run (it runs "
                f"{', '.join(STEP_TYPES)}); run this pipeline on SageMaker, or add the type to "
                "local/pipeline_executor.py", step=name)
        if not isinstance(raw.get("Arguments", {}), Mapping):
            raise DefinitionError(f"step {name}: Arguments must be an object", step=name)
        if kind == CONDITION:
            for key in ("IfSteps", "ElseSteps"):
                if not isinstance(raw.get("Arguments", {}).get(key) or [], list):
                    raise DefinitionError(f"step {name}: {key} must be a list of step objects", step=name)
        cache = raw.get("CacheConfig") or {}
        expire = cache.get("ExpireAfter")
        steps.append(Step(
            name=name, type=kind, arguments=raw.get("Arguments", {}),
            depends_on=tuple(raw.get("DependsOn") or ()),
            property_files=tuple(
                PropertyFile(p["PropertyFileName"], p["OutputName"], p["FilePath"])
                for p in raw.get("PropertyFiles") or ()),
            cache_enabled=bool(cache.get("Enabled")),
            cache_expire_after=_parse_duration(expire, f"step {name} CacheConfig.ExpireAfter") if expire else None,
        ))
        if entry.branch is not None:
            branch_of[name] = entry.branch
    names = [s.name for s in steps]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DefinitionError(f"step names must be unique; repeated: {', '.join(duplicates)}", step=duplicates[0])
    by_name = {s.name: s for s in steps}

    dependencies: dict[str, set[str]] = {s.name: set() for s in steps}
    for step in steps:
        # A Condition's own values are its Conditions; its branches' steps are steps of their own.
        values = step.arguments.get("Conditions") if step.type == CONDITION else step.arguments
        for kind, body in _iter_expressions(values):
            if kind == "Get":
                _check_reference(body, step.name, parameters, by_name)
                target = _step_of_reference(body)
                if target is not None:
                    dependencies[step.name].add(target)
            elif not isinstance(body, Mapping) or "Path" not in body or "PropertyFile" not in body:
                raise DefinitionError(f"step {step.name}: Std:JsonGet needs PropertyFile and Path", step=step.name)
        for other in step.depends_on:
            if other not in by_name:
                raise DefinitionError(f"step {step.name}: DependsOn names {other!r}, which is not a step of this "
                                      "pipeline", step=step.name)
            dependencies[step.name].add(other)
        if step.name in branch_of:
            dependencies[step.name].add(branch_of[step.name][0])
    for step in steps:
        for other in dependencies[step.name]:
            if by_name[other].type == FAIL:
                raise DefinitionError(f"step {step.name} can not depend on Fail step {other}: a Fail step ends the "
                                      "execution", step=step.name)
    return Definition(parameters, by_name, {k: frozenset(v) for k, v in dependencies.items()}, branch_of,
                      _execution_order(names, dependencies))


def _check_reference(ref: Any, step: str, parameters: Mapping[str, Parameter], steps: Mapping[str, Step]) -> None:
    if not isinstance(ref, str):
        raise DefinitionError(f"step {step}: Get takes a string, got {ref!r}", step=step)
    head, _, rest = ref.partition(".")
    if head == "Parameters":
        if rest not in parameters:
            raise DefinitionError(f"step {step}: {ref} names no declared parameter (declared: "
                                  f"{', '.join(parameters) or 'none'})", step=step)
    elif head == "Execution":
        if rest not in EXECUTION_VARIABLES:
            raise DefinitionError(f"step {step}: {ref} is not an execution variable ({', '.join(EXECUTION_VARIABLES)})",
                                  step=step)
    elif head == "Steps":
        target = _step_of_reference(ref)
        if target is None or target not in steps:
            raise DefinitionError(f"step {step}: {ref} names step {target!r}, which is not in this pipeline", step=step)
        if target == step:
            raise DefinitionError(f"step {step}: {ref} refers to the step itself", step=step)
        tail = ref[len(f"Steps.{target}"):]
        if tail.startswith(".PropertyFiles."):
            wanted = tail[len(".PropertyFiles."):]
            known = [p.name for p in steps[target].property_files]
            if wanted not in known:
                raise DefinitionError(f"step {step}: {ref} names property file {wanted!r}, but step {target} declares "
                                      f"{', '.join(known) or 'none'}", step=step)
    else:
        raise DefinitionError(f"step {step}: Get {ref!r} must start with Parameters., Steps. or Execution.", step=step)


def _execution_order(names: Sequence[str], dependencies: Mapping[str, set[str]]) -> tuple[str, ...]:
    """Steps in an order that honours every dependency, ties broken by the definition's order; raises on a cycle."""
    remaining = {name: set(deps) for name, deps in dependencies.items()}
    order: list[str] = []
    while remaining:
        ready = [name for name in names if name in remaining and not remaining[name]]
        if not ready:
            cycle = ", ".join(sorted(remaining))
            raise DefinitionError(f"the steps {cycle} depend on each other in a cycle; break it (check Get "
                                  "references and DependsOn)", step=sorted(remaining)[0])
        for name in ready:
            order.append(name)
            del remaining[name]
            for deps in remaining.values():
                deps.discard(name)
    return tuple(order)


def parameter_values(definition: Definition, given: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter values for one execution (defaults + given), typed; ValueError names the parameter."""
    unknown = sorted(set(given) - set(definition.parameters))
    if unknown:
        raise ValueError(f"parameters {', '.join(unknown)} are not defined in the pipeline "
                         f"(defined: {', '.join(definition.parameters)})")
    values: dict[str, Any] = {}
    for name, parameter in definition.parameters.items():
        if name in given:
            raw = given[name]
        elif parameter.has_default:
            raw = parameter.default
        else:
            raise ValueError(f"parameter {name} has no default value; pass it in PipelineParameters")
        values[name] = _typed(raw, parameter)
    return values


def _typed(raw: Any, parameter: Parameter) -> Any:
    try:
        if parameter.type == "Integer":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if parameter.type == "Float":
            return float(raw)
        if parameter.type == "Boolean":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "false"):
                return str(raw).lower() == "true"
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"parameter {parameter.name} is {parameter.type}; {raw!r} is not one") from None
    return str(raw)


# --- Values: Get, Std:Join, Std:JsonGet -------------------------------------------------------------------------
_PATH_TOKEN = re.compile(r"\.?([A-Za-z_][\w]*)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[\s*(-?\d+)\s*\]")


def split_path(path: str) -> list[str | int]:
    """`A.B['x'][0].C` -> ['A', 'B', 'x', 0, 'C']; ValueError on anything else."""
    tokens: list[str | int] = []
    position = 0
    while position < len(path):
        match = _PATH_TOKEN.match(path, position)
        if not match or match.end() == position:
            raise ValueError(f"cannot read {path!r} at position {position}")
        name, single, double, number = match.groups()
        if number is not None:
            tokens.append(int(number))
        else:
            tokens.append(name if name is not None else single if single is not None else double)
        position = match.end()
    return tokens


def walk(value: Any, tokens: Sequence[str | int]) -> Any:
    """Follow a property path; a string index on a list picks the item whose *Name field equals it."""
    for token in tokens:
        if isinstance(token, int):
            if not isinstance(value, list) or not -len(value) <= token < len(value):
                raise KeyError(token)
            value = value[token]
        elif isinstance(value, Mapping):
            if token not in value:
                raise KeyError(token)
            value = value[token]
        elif isinstance(value, list):
            matches = [item for item in value if isinstance(item, Mapping)
                       and any(k.endswith("Name") and v == token for k, v in item.items())]
            if not matches:
                raise KeyError(token)
            value = matches[0]
        else:
            raise KeyError(token)
    return value


def text_of(value: Any) -> str:
    """A resolved value as Std:Join writes it (booleans lower-case, as the service prints them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[5:].partition("/") if isinstance(uri, str) and uri.startswith("s3://") else ("", "", "")
    if not bucket:
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    return bucket, key


# --- Records the API reports -------------------------------------------------------------------------------------
@dataclass
class StepRecord:
    """One step's row in ListPipelineExecutionSteps."""

    name: str
    type: str
    status: str = STARTING
    start_time: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    end_time: datetime | None = None
    failure_reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    cache_source: str | None = None
    log_paths: list[Path] = field(default_factory=list)
    """Where the job's output went (the embedded run's CloudWatch)."""

    @property
    def seconds(self) -> float:
        end = self.end_time or datetime.now(timezone.utc)
        return (end - self.start_time).total_seconds()

    def api(self) -> dict[str, Any]:
        row: dict[str, Any] = {"StepName": self.name, "StartTime": self.start_time, "StepStatus": self.status,
                               "Metadata": copy.deepcopy(self.metadata), "AttemptCount": 1}
        if self.end_time is not None:
            row["EndTime"] = self.end_time
        if self.failure_reason:
            row["FailureReason"] = self.failure_reason
        if self.cache_source:
            row["CacheHitResult"] = {"SourcePipelineExecutionArn": self.cache_source}
        return row


@dataclass
class JobRecord:
    """A job the executor ran, as DescribeProcessingJob / DescribeTrainingJob would describe it."""

    kind: str
    """"ProcessingJob" or "TrainingJob"."""
    name: str
    description: dict[str, Any]

    @property
    def status_key(self) -> str:
        return f"{self.kind}Status"


@dataclass(frozen=True)
class _Done:
    """What a finished step leaves for later steps."""

    properties: Any
    metadata: dict[str, Any]
    property_files: dict[str, str]
    """property file name -> S3 URI of the file."""


@dataclass
class StepCache:
    """Successful step runs by their resolved arguments, shared by the executions of one service (CacheConfig)."""

    entries: dict[str, tuple[datetime, str, _Done]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def key(pipeline_arn: str, step: Step, arguments: Any) -> str:
        return json.dumps([pipeline_arn, step.name, step.type, arguments], sort_keys=True, default=text_of)

    def get(self, key: str, expire_after: timedelta | None) -> tuple[str, _Done] | None:
        with self.lock:
            entry = self.entries.get(key)
        if entry is None:
            return None
        created, source, done = entry
        if expire_after is not None and datetime.now(timezone.utc) - created > expire_after:
            return None
        return source, done

    def put(self, key: str, source: str, done: _Done) -> None:
        with self.lock:
            self.entries[key] = (datetime.now(timezone.utc), source, done)


@dataclass(frozen=True)
class Sandbox:
    """Where jobs run on this machine and with what."""

    jobs_root: Path
    """Job folders: <jobs_root>/<execution id>/<step>/opt/ml."""
    job_env: Mapping[str, str]
    """Environment of every job process besides the image's own (the emulator's AWS_* variables)."""
    image_bin: Path = IMAGE_BIN

    def check(self) -> None:
        python = self.image_bin / "python3"
        if not python.exists():
            raise DefinitionError(f"{python} not found: the scikit-learn image's Python runs the jobs; build it with "
                                  "`make install` (or `python -m local.image_env`)")
        if not _SAFE_ROOT.match(str(self.jobs_root.resolve())):
            # Paths are substituted into the container's shell commands: they must survive word splitting.
            raise DefinitionError(f"the job folder {self.jobs_root.resolve()} holds spaces or shell characters; "
                                  "use a work directory without them")


def new_execution_id() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=12))  # noqa: S311 - an id, not a secret


def _job_name(execution_id: str, step: str) -> str:
    suffix = "".join(random.choices(string.ascii_letters + string.digits, k=10))  # noqa: S311 - a name
    base = re.sub(r"[^A-Za-z0-9-]", "-", f"pipelines-{execution_id}-{step}")[: 63 - len(suffix) - 1]
    return f"{base}-{suffix}"


def _truncate(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit]


# --- One execution -----------------------------------------------------------------------------------------------
class PipelineExecution:
    """One execution of a definition. `run()` blocks until it ends; `stop()` may be called from another thread.

    Step failures never raise: they end the execution Failed, as the service reports them.
    """

    def __init__(self, definition: Definition, *, pipeline_arn: str, parameters: Mapping[str, Any],
                 sagemaker: Any, s3: Any, sandbox: Sandbox, execution_id: str | None = None,
                 display_name: str | None = None, cache: StepCache | None = None,
                 definition_text: str = "") -> None:
        self.definition = definition
        self.definition_text = definition_text
        self.pipeline_arn = pipeline_arn
        self.pipeline_name = pipeline_arn.rsplit("/", 1)[-1]
        self.region = pipeline_arn.split(":")[3]
        self.account = pipeline_arn.split(":")[4]
        self.execution_id = execution_id or new_execution_id()
        self.arn = f"{pipeline_arn}/execution/{self.execution_id}"
        self.display_name = display_name or f"execution-{int(time.time() * 1000)}"
        self.parameters = parameter_values(definition, parameters)
        self.given_parameters = {k: text_of(v) for k, v in parameters.items()}
        self.sagemaker = sagemaker
        self.s3 = s3
        self.sandbox = sandbox
        self.cache = cache
        self.status = EXECUTING
        self.failure_reason: str | None = None
        self.created = datetime.now(timezone.utc)
        self.last_modified = self.created
        self.steps: list[StepRecord] = []
        self.jobs: dict[str, JobRecord] = {}
        """Jobs by lower-cased name: SageMaker job names are case-insensitive, and ARNs carry them lower-cased."""
        self._done: dict[str, _Done] = {}
        self._not_run: set[str] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()

    @property
    def folder(self) -> Path:
        return self.sandbox.jobs_root / self.execution_id

    # --- control ---------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """StopPipelineExecution: the running job is stopped, no further step starts."""
        with self._lock:
            if self.status in TERMINAL:
                return
            self.status = STOPPING
            self._touch()
        self._stop.set()

    def snapshot(self) -> dict[str, Any]:
        """Status, reason and step rows, copied under the lock (the shim reads while the executor writes)."""
        with self._lock:
            return {"status": self.status, "failure_reason": self.failure_reason,
                    "last_modified": self.last_modified, "steps": [s.api() for s in self.steps]}

    def step_records(self) -> list[StepRecord]:
        """Copies of the step records (the executor keeps writing the originals)."""
        with self._lock:
            return [copy.deepcopy(record) for record in self.steps]

    def exit_message(self, record: StepRecord) -> str:
        """A processing step's ExitMessage (what its container said in /opt/ml/output/message), or ""."""
        arn = record.metadata.get("ProcessingJob", {}).get("Arn", "")
        with self._lock:
            job = self.jobs.get(arn.rsplit("/", 1)[-1])
            return str(job.description.get("ExitMessage", "")) if job is not None else ""

    def container_path(self, step: str, path: str) -> Path:
        """Where a path of a step's container is on this machine (for a job on one instance)."""
        return Path(map_container_paths(path, self.folder / step))

    def output_folder(self, step: str, output: str) -> Path:
        """Where a Processing step wrote its output `output` on this machine: the output's LocalPath, mapped."""
        outputs = self.definition.steps[step].arguments["ProcessingOutputConfig"]["Outputs"]
        [local_path] = [item["S3Output"]["LocalPath"] for item in outputs if item["OutputName"] == output]
        return self.container_path(step, local_path)

    def _touch(self) -> None:
        self.last_modified = datetime.now(timezone.utc)

    def _changed(self) -> None:
        with self._lock:
            self._touch()

    # --- the run ---------------------------------------------------------------------------------------------
    def run(self) -> PipelineExecution:
        try:
            self.sandbox.check()
            for name in self.definition.order:
                if self._stop.is_set():
                    break
                if self._skipped(name):
                    self._not_run.add(name)
                    continue
                if not self._run_step(self.definition.steps[name]):
                    break
        except Exception as exc:  # an executor fault must still end the execution, with its reason
            with self._lock:
                self.failure_reason = _truncate(f"InternalError: {type(exc).__name__}: {exc}")
                self.status = FAILED
                for record in self.steps:
                    if record.status not in TERMINAL:
                        record.status, record.end_time = FAILED, datetime.now(timezone.utc)
                        record.failure_reason = self.failure_reason
            self._changed()
            return self
        with self._lock:
            if self._stop.is_set():
                self.status = STOPPED
            elif any(s.status == FAILED for s in self.steps):
                self.status = FAILED
                self.failure_reason = EXECUTION_STEP_FAILURE
            else:
                self.status = SUCCEEDED
        self._changed()
        return self

    def _skipped(self, name: str) -> bool:
        """Not run: in a Condition branch that was not taken, or after a step that did not run."""
        branch = self.definition.branch_of.get(name)
        if branch is not None:
            condition, outcome = branch
            done = self._done.get(condition)
            if done is None or bool(done.properties.get("Outcome")) != outcome:
                return True
        return any(dep in self._not_run for dep in self.definition.dependencies[name])

    def _run_step(self, step: Step) -> bool:
        record = StepRecord(step.name, step.type)
        with self._lock:
            self.steps.append(record)
        self._changed()
        with self._lock:
            record.status = EXECUTING
        self._changed()
        try:
            done = self._execute(step, record)
        except StepFailed as failure:
            with self._lock:
                record.status, record.end_time = FAILED, datetime.now(timezone.utc)
                record.failure_reason = _truncate(failure.reason) or None
                record.metadata.update(failure.metadata)
            self._changed()
            return False
        except _Stopped:
            with self._lock:
                record.status, record.end_time = STOPPED, datetime.now(timezone.utc)
            self._changed()
            return False
        with self._lock:
            self._done[step.name] = done
            record.metadata.update(done.metadata)
            record.status, record.end_time = SUCCEEDED, datetime.now(timezone.utc)
        self._changed()
        return True

    def _execute(self, step: Step, record: StepRecord) -> _Done:
        if step.type == FAIL:
            message = text_of(self.resolve(step.arguments.get("ErrorMessage", ""), step))
            raise StepFailed(message, {"Fail": {"ErrorMessage": message}})
        if step.type == CONDITION:
            outcome = all(self._condition(c, step) for c in step.arguments.get("Conditions") or ())
            return _Done({"Outcome": outcome}, {"Condition": {"Outcome": "True" if outcome else "False"}}, {})
        arguments = self.resolve(step.arguments, step)
        key = StepCache.key(self.pipeline_arn, step, arguments) if self.cache and step.cache_enabled else None
        if key is not None and self.cache is not None:
            hit = self.cache.get(key, step.cache_expire_after)
            if hit is not None:
                record.cache_source = hit[0]
                return hit[1]
        if step.type == PROCESSING:
            done = self._processing(step, arguments, record)
        elif step.type == TRAINING:
            done = self._training(step, arguments, record)
        else:
            done = self._register(arguments)
        if key is not None and self.cache is not None:
            self.cache.put(key, self.arn, done)
        return done

    # --- values ----------------------------------------------------------------------------------------------
    def resolve(self, value: Any, step: Step) -> Any:
        """A value with every Get / Std:Join / Std:JsonGet replaced by what it stands for in this execution."""
        if isinstance(value, Mapping):
            if set(value) == {"Get"}:
                return self._get(value["Get"], step)
            if set(value) == {"Std:Join"}:
                body = value["Std:Join"]
                separator = text_of(self.resolve(body.get("On", ""), step))
                return separator.join(text_of(self.resolve(v, step)) for v in body.get("Values") or ())
            if set(value) == {"Std:JsonGet"}:
                return self._json_get(value["Std:JsonGet"], step)
            return {k: self.resolve(v, step) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, step) for v in value]
        return value

    def _get(self, ref: str, step: Step) -> Any:
        head, _, rest = ref.partition(".")
        if head == "Parameters":
            return self.parameters[rest]
        if head == "Execution":
            return {"PipelineExecutionId": self.execution_id, "PipelineExecutionArn": self.arn,
                    "StartDateTime": self.created, "CurrentDateTime": datetime.now(timezone.utc),
                    "PipelineName": self.pipeline_name, "PipelineArn": self.pipeline_arn}[rest]
        target = _step_of_reference(ref)
        assert target is not None
        done = self._done.get(target)
        if done is None:
            raise StepFailed(f"{ref}: step {target} has not succeeded in this execution, so step {step.name} cannot "
                             "read it")
        tail = ref[len(f"Steps.{target}"):].lstrip(".")
        if tail.startswith("PropertyFiles."):
            return {"PropertyFile": tail[len("PropertyFiles."):], "Step": target}
        try:
            return copy.deepcopy(walk(done.properties, split_path(tail)))
        except (KeyError, ValueError):
            raise StepFailed(f"{ref}: step {target} has no property {tail!r}; step {step.name} cannot resolve it")\
                from None

    def _json_get(self, body: Mapping[str, Any], step: Step) -> Any:
        reference = self.resolve(body.get("PropertyFile"), step)
        path = text_of(self.resolve(body.get("Path"), step))
        if not isinstance(reference, Mapping) or "PropertyFile" not in reference:
            raise StepFailed(f"step {step.name}: Std:JsonGet's PropertyFile must be "
                             '{"Get": "Steps.<step>.PropertyFiles.<name>"}')
        source = reference["Step"]
        name = reference["PropertyFile"]
        uri = self._done[source].property_files.get(name)
        if uri is None:
            raise StepFailed(f"step {step.name}: property file {name} of step {source} was not produced")
        try:
            bucket, key = parse_s3_uri(uri)
            document = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except (ClientError, ValueError) as exc:
            raise StepFailed(f"step {step.name}: cannot read property file {name} of step {source} at {uri}: "
                             f"{exc}") from None
        try:
            return walk(document, split_path(path))
        except (KeyError, ValueError):
            raise StepFailed(f"step {step.name}: property file {name} ({uri}) has no value at path {path!r}") from None

    def _condition(self, condition: Mapping[str, Any], step: Step) -> bool:
        kind = condition.get("Type")
        if kind == "Not":
            return not self._condition(condition["Expression"], step)
        if kind == "Or":
            return any(self._condition(c, step) for c in condition.get("Conditions") or ())
        if kind == "In":
            query = self.resolve(condition.get("QueryValue"), step)
            return any(_equal(query, self.resolve(v, step)) for v in condition.get("Values") or ())
        left = self.resolve(condition.get("LeftValue"), step)
        right = self.resolve(condition.get("RightValue"), step)
        if kind == "Equals":
            return _equal(left, right)
        compare = {"GreaterThan": lambda a, b: a > b, "GreaterThanOrEqualTo": lambda a, b: a >= b,
                   "LessThan": lambda a, b: a < b, "LessThanOrEqualTo": lambda a, b: a <= b}.get(str(kind))
        if compare is None:
            raise StepFailed(f"step {step.name}: condition type {kind!r} is not one SageMaker Pipelines knows "
                             "(Equals, GreaterThan, GreaterThanOrEqualTo, LessThan, LessThanOrEqualTo, In, Not, Or)")
        if not _is_number(left) or not _is_number(right):
            raise StepFailed(f"step {step.name}: {kind} compares numbers; got {left!r} and {right!r}")
        return bool(compare(float(left), float(right)))

    # --- request checks ---------------------------------------------------------------------------------------
    def _validate(self, operation: str, request: Mapping[str, Any]) -> None:
        """What the service's call would reject, it rejects here too, in the words the service uses."""
        shape = self.sagemaker.meta.service_model.operation_model(operation).input_shape
        try:
            validate_parameters(request, shape)
        except ParamValidationError as exc:
            raise StepFailed(f"ClientError: Failed to invoke sagemaker:{operation}. Error Details: {exc}") from None

    def _check_image(self, image: Any, step: Step, key: str) -> None:
        if not isinstance(image, str) or not _SKLEARN_IMAGE.match(image):
            raise StepFailed(
                f"ClientError: step {step.name}: {key} {image!r} is not the scikit-learn image "
                f"{contracts.SKLEARN_IMAGE['tag']}, the only image the embedded run can play (its packages are "
                ".venv-image); run this step on SageMaker")

    # --- S3 ------------------------------------------------------------------------------------------------
    def _download(self, uri: str, destination: Path, *, shard: tuple[int, int] | None = None) -> None:
        """Objects under an S3Prefix into a folder (relative keys kept), as a File-mode input."""
        bucket, prefix = parse_s3_uri(uri)
        keys: list[str] = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys.extend(o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/"))
        except ClientError as exc:
            raise StepFailed(f"ClientError: cannot list {uri}: {exc}") from None
        if not keys:
            raise StepFailed(f"ClientError: No S3 objects found under S3 URL \"{uri}\" given in input data source. "
                             "Please ensure that the bucket exists in the selected region, that objects exist under "
                             "that S3 prefix, and that the role has s3:ListBucket permissions on the bucket.")
        if shard is not None:
            index, count = shard
            keys = sorted(keys)[index::count]
        destination.mkdir(parents=True, exist_ok=True)
        for key in keys:
            relative = key[len(prefix):].lstrip("/") or key.rsplit("/", 1)[-1]
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            # One GET per object, streamed: the transfer manager's thread pool costs more than these files take.
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
            with target.open("wb") as out:
                shutil.copyfileobj(body, out, 1024 * 1024)

    def _upload_folder(self, folder: Path, uri: str) -> None:
        bucket, prefix = parse_s3_uri(uri)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = "/".join(filter(None, [prefix.rstrip("/"), path.relative_to(folder).as_posix()]))
            if path.stat().st_size > _SINGLE_PUT_BYTES:
                self.s3.upload_file(str(path), bucket, key)  # multipart, as large outputs need
            else:
                with path.open("rb") as data:
                    self.s3.put_object(Bucket=bucket, Key=key, Body=data)

    # --- container processes -----------------------------------------------------------------------------------
    def _container_env(self, root: Path, extra: Mapping[str, str]) -> dict[str, str]:
        """A container's environment: the image's variables, the job's, the emulator's AWS - not this process's."""
        env = {k: os.environ[k] for k in _HOST_PATH if k in os.environ}
        env["PATH"] = os.pathsep.join([str(self.sandbox.image_bin), os.environ.get("PATH", "/usr/bin:/bin")])
        env.update(_IMAGE_ENV)
        env.update(self.sandbox.job_env)
        env.update({k: map_container_paths(v, root) for k, v in extra.items()})
        return env

    def _run_container(self, command: Sequence[str], *, root: Path, env: Mapping[str, str], log_path: Path,
                       max_runtime: float) -> tuple[int | None, str]:
        """Run one container process to its end; returns (exit code or None, "exited" | "timeout")."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            # Its own session: the job's processes are stopped as one group (stop, max runtime, Ctrl-C upstream).
            process = subprocess.Popen(list(command), cwd=root, env=dict(env), stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                deadline = time.monotonic() + max_runtime
                while True:
                    try:
                        return process.wait(timeout=_POLL_SECONDS), "exited"
                    except subprocess.TimeoutExpired:
                        if self._stop.is_set():
                            stop_process_group(process, JOB_STOP_GRACE_SECONDS)
                            raise _Stopped() from None
                        if time.monotonic() > deadline:
                            stop_process_group(process, JOB_STOP_GRACE_SECONDS)
                            return None, "timeout"
            finally:
                if process.poll() is None:
                    stop_process_group(process, JOB_STOP_GRACE_SECONDS)

    # --- Processing ------------------------------------------------------------------------------------------
    def _processing(self, step: Step, arguments: Mapping[str, Any], record: StepRecord) -> _Done:
        name = _job_name(self.execution_id, step.name)
        request = {**arguments, "ProcessingJobName": name}
        self._validate("CreateProcessingJob", request)
        app = request["AppSpecification"]
        self._check_image(app.get("ImageUri"), step, "AppSpecification.ImageUri")
        entrypoint = list(app.get("ContainerEntrypoint") or [])
        if not entrypoint:
            raise StepFailed(f"ClientError: step {step.name} gives no AppSpecification.ContainerEntrypoint; the "
                             "scikit-learn image has no processing entrypoint of its own, so name the command")
        cluster = request["ProcessingResources"]["ClusterConfig"]
        hosts = [f"algo-{i}" for i in range(1, int(cluster["InstanceCount"]) + 1)]
        inputs = list(request.get("ProcessingInputs") or [])
        outputs = list((request.get("ProcessingOutputConfig") or {}).get("Outputs") or [])
        for item in inputs:
            s3_input = item.get("S3Input")
            if s3_input is None or s3_input.get("S3DataType", "S3Prefix") != "S3Prefix" \
                    or s3_input.get("S3InputMode", "File") != "File":
                raise StepFailed(f"ClientError: step {step.name} input {item.get('InputName')}: the embedded run "
                                 "reads S3Prefix inputs in File mode only")
        for item in outputs:
            if "S3Output" not in item:
                raise StepFailed(f"ClientError: step {step.name} output {item.get('OutputName')}: the embedded run "
                                 "writes S3 outputs only")
        max_runtime = float((request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds", 86400))
        arn = f"arn:aws:sagemaker:{self.region}:{self.account}:processing-job/{name.lower()}"
        started = datetime.now(timezone.utc)
        description = {**{k: v for k, v in request.items() if k != "Tags"}, "ProcessingJobArn": arn,
                       "ProcessingJobStatus": "InProgress", "CreationTime": started, "ProcessingStartTime": started,
                       "LastModifiedTime": started}
        job = JobRecord("ProcessingJob", name, description)
        with self._lock:
            self.jobs[name.lower()] = job
            record.metadata["ProcessingJob"] = {"Arn": arn}
        self._changed()

        step_dir = self.folder / step.name
        messages: list[str] = []
        with self._ends_with_its_step(job, messages):
            failure: str | None = None
            roots: list[Path] = []
            for index, host in enumerate(hosts):
                root = step_dir if len(hosts) == 1 else step_dir / host
                roots.append(root)
                opt_ml = root / "opt" / "ml"
                config = opt_ml / "config"
                config.mkdir(parents=True, exist_ok=True)
                (config / "processingjobconfig.json").write_text(json.dumps(_json_ready(request)))
                (config / "resourceconfig.json").write_text(json.dumps({"current_host": host, "hosts": hosts}))
                (opt_ml / "output").mkdir(parents=True, exist_ok=True)
                for item in inputs:
                    s3_input = item["S3Input"]
                    sharded = s3_input.get("S3DataDistributionType") == "ShardedByS3Key"
                    self._download(s3_input["S3Uri"], Path(map_container_paths(s3_input["LocalPath"], root)),
                                   shard=(index, len(hosts)) if sharded else None)
                for item in outputs:
                    Path(map_container_paths(item["S3Output"]["LocalPath"], root)).mkdir(parents=True, exist_ok=True)
                command = [map_container_paths(part, root)
                           for part in entrypoint + list(app.get("ContainerArguments") or [])]
                log_path = step_dir / "logs" / f"{host}.log"
                record.log_paths.append(log_path)
                try:
                    code, how = self._run_container(command, root=root, log_path=log_path, max_runtime=max_runtime,
                                                    env=self._container_env(root, request.get("Environment") or {}))
                except OSError as exc:
                    code, how = 127, "exited"
                    log_path.write_text(f"cannot start {command[0]}: {exc}\n")
                message_file = opt_ml / "output" / "message"
                if message_file.is_file():
                    messages.append(message_file.read_text(errors="replace"))
                if how == "timeout":
                    failure = f"ClientError: MaxRuntimeExceeded: the job ran longer than its {max_runtime:.0f} s " \
                              "StoppingCondition.MaxRuntimeInSeconds"
                    break
                if code != 0:
                    failure = PROCESSING_ALGORITHM_ERROR
                    break
            if failure is not None:
                raise StepFailed(failure)
            uploaded: dict[str, str] = {}
            for item in outputs:
                s3_output = item["S3Output"]
                try:
                    for root in roots:
                        self._upload_folder(Path(map_container_paths(s3_output["LocalPath"], root)),
                                            s3_output["S3Uri"])
                except (ClientError, BotoCoreError, OSError) as exc:
                    raise StepFailed(f"ClientError: cannot upload output {item['OutputName']} to "
                                     f"{s3_output['S3Uri']}: {exc}") from None
                uploaded[item["OutputName"]] = s3_output["S3Uri"]
            self._finish_job(job, "Completed", messages=messages)
        property_files = {}
        for prop in step.property_files:
            if prop.output_name not in uploaded:
                raise StepFailed(f"step {step.name}: property file {prop.name} reads output {prop.output_name!r}, "
                                 f"which the step does not have (outputs: {', '.join(uploaded) or 'none'})")
            property_files[prop.name] = f"{uploaded[prop.output_name].rstrip('/')}/{prop.file_path.lstrip('/')}"
        return _Done(copy.deepcopy(job.description), {"ProcessingJob": {"Arn": arn}}, property_files)

    def _finish_job(self, job: JobRecord, status: str, *, messages: Sequence[str] = (),
                    failure: str | None = None, **extra: Any) -> None:
        now = datetime.now(timezone.utc)
        with self._lock:
            job.description[job.status_key] = status
            job.description["LastModifiedTime"] = now
            if job.kind == "ProcessingJob":
                job.description["ProcessingEndTime"] = now
                if messages:
                    job.description["ExitMessage"] = _truncate("".join(messages))
            else:
                job.description["TrainingEndTime"] = now
                job.description["SecondaryStatus"] = status
            if failure:
                job.description["FailureReason"] = _truncate(failure)
            job.description.update(extra)

    @contextlib.contextmanager
    def _ends_with_its_step(self, job: JobRecord, messages: Sequence[str] = ()) -> Iterator[None]:
        """A job still InProgress when its step stops or fails ends with it: Stopped, or Failed with the reason.

        SageMaker never leaves a job running behind a failed step, whether the container ran or not (an input
        prefix without objects fails the job before its container starts).
        """
        try:
            yield
        except Exception as exc:
            if isinstance(exc, _Stopped):
                status, reason = "Stopped", None
            elif isinstance(exc, StepFailed):
                status, reason = "Failed", exc.reason
            else:
                status, reason = "Failed", f"InternalError: {type(exc).__name__}: {exc}"
            with self._lock:
                still_open = job.description[job.status_key] == "InProgress"
            if still_open:
                self._finish_job(job, status, messages=messages, failure=reason)
            raise

    # --- Training ----------------------------------------------------------------------------------------------
    def _training(self, step: Step, arguments: Mapping[str, Any], record: StepRecord) -> _Done:
        name = _job_name(self.execution_id, step.name)
        request = {**arguments, "TrainingJobName": name}
        self._validate("CreateTrainingJob", request)
        algorithm = request["AlgorithmSpecification"]
        self._check_image(algorithm.get("TrainingImage"), step, "AlgorithmSpecification.TrainingImage")
        if algorithm.get("TrainingInputMode", "File") != "File" or algorithm.get("ContainerEntrypoint"):
            raise StepFailed(f"ClientError: step {step.name}: the embedded run trains in File mode through the "
                             "image's own entrypoint (no ContainerEntrypoint)")
        resources = request["ResourceConfig"]
        if int(resources.get("InstanceCount", 1)) != 1:
            raise StepFailed(f"ClientError: step {step.name} asks for {resources.get('InstanceCount')} training "
                             "instances; the embedded run trains on one (set the Training step's InstanceCount to 1, "
                             "or run this pipeline on SageMaker)")
        output_path = request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        max_runtime = float((request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds", 86400))
        arn = f"arn:aws:sagemaker:{self.region}:{self.account}:training-job/{name.lower()}"
        started = datetime.now(timezone.utc)
        description = {**{k: v for k, v in request.items() if k != "Tags"}, "TrainingJobArn": arn,
                       "TrainingJobStatus": "InProgress", "SecondaryStatus": "Training", "CreationTime": started,
                       "TrainingStartTime": started, "LastModifiedTime": started,
                       "EnableManagedSpotTraining": bool(request.get("EnableManagedSpotTraining", False))}
        job = JobRecord("TrainingJob", name, description)
        with self._lock:
            self.jobs[name.lower()] = job
            record.metadata["TrainingJob"] = {"Arn": arn}
        self._changed()

        with self._ends_with_its_step(job):
            root = self.folder / step.name
            opt_ml = root / "opt" / "ml"
            config = opt_ml / "input" / "config"
            config.mkdir(parents=True, exist_ok=True)
            # SageMaker creates these before the container starts; the toolkit's failure path needs output/ to exist
            # (without it its trainer exits 0 on a failed script).
            for folder in (opt_ml / "model", opt_ml / "output" / "data", opt_ml / "code"):
                folder.mkdir(parents=True, exist_ok=True)
            channels = list(request.get("InputDataConfig") or [])
            (config / "hyperparameters.json").write_text(json.dumps(request.get("HyperParameters") or {}))
            (config / "inputdataconfig.json").write_text(json.dumps({
                c["ChannelName"]: {**({"ContentType": c["ContentType"]} if c.get("ContentType") else {}),
                                   "TrainingInputMode": c.get("InputMode", algorithm.get("TrainingInputMode", "File")),
                                   "S3DistributionType": c["DataSource"]["S3DataSource"].get(
                                       "S3DataDistributionType", "FullyReplicated"),
                                   "RecordWrapperType": c.get("RecordWrapperType", "None")}
                for c in channels}))
            instance_type = resources.get("InstanceType", "local")
            (config / "resourceconfig.json").write_text(json.dumps({
                "current_host": "algo-1", "current_instance_type": instance_type,
                "current_group_name": "homogeneousCluster", "hosts": ["algo-1"],
                "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": instance_type,
                                     "hosts": ["algo-1"]}],
                "network_interface_name": "eth0"}))
            for channel in channels:
                source = channel["DataSource"].get("S3DataSource")
                if source is None or source.get("S3DataType", "S3Prefix") != "S3Prefix":
                    raise StepFailed(f"ClientError: step {step.name} channel {channel['ChannelName']}: the embedded "
                                     "run reads S3Prefix channels only")
                self._download(source["S3Uri"], opt_ml / "input" / "data" / channel["ChannelName"])
            launcher = root / "launcher"
            launcher.mkdir(exist_ok=True)
            shutil.copy2(LAUNCHER_SOURCE, launcher / LAUNCHER_SOURCE.name)
            container_env = {
                "SAGEMAKER_TRAINING_MODULE": LAUNCHER_MODULE,
                "SM_INPUT": "/opt/ml/input",
                "SM_INPUT_TRAINING_CONFIG_FILE": "/opt/ml/input/config/hyperparameters.json",
                "SM_INPUT_DATA_CONFIG_FILE": "/opt/ml/input/config/inputdataconfig.json",
                "SM_CHECKPOINT_CONFIG_FILE": "/opt/ml/input/config/checkpointconfig.json",
                "SM_MODEL_DIR": MODEL_DIR,
                "TRAINING_JOB_NAME": name,
                "TRAINING_JOB_ARN": arn,
                **(request.get("Environment") or {}),
            }
            env = self._container_env(root, container_env)
            env.update({
                # The toolkit's own switch for "not on SageMaker": it reads /opt/ml from here.
                "SAGEMAKER_BASE_DIR": str(opt_ml),
                # The toolkit waits for every host's DNS name (algo-1 ...), which only SageMaker's network resolves;
                # this is the switch it offers for running outside it (Studio local mode).
                "SM_STUDIO_LOCAL_MODE": "true",
                # Stands in for the image's site-packages, where sagemaker_sklearn_container lives; nothing else of
                # the repository is importable by the job.
                "PYTHONPATH": str(launcher),
            })
            # `train` is installed by both toolkits in the image; the image's training module is built on
            # sagemaker-training, so its CLI module is called by name.
            command = [str(self.sandbox.image_bin / "python3"), "-m", "sagemaker_training.cli.train"]
            log_path = root / "logs" / "algo-1.log"
            record.log_paths.append(log_path)
            code, how = self._run_container(command, root=root, env=env, log_path=log_path, max_runtime=max_runtime)
            if how == "timeout":
                failure = (f"ClientError: MaxRuntimeExceeded: the training job ran longer than its {max_runtime:.0f} s "
                           "StoppingCondition.MaxRuntimeInSeconds")
                self._finish_job(job, "Failed", failure=failure, SecondaryStatus="MaxRuntimeExceeded")
                raise StepFailed(failure)
            if code != 0:
                failure_file = opt_ml / "output" / "failure"
                said = failure_file.read_text(errors="replace").strip() if failure_file.is_file() else ""
                raise StepFailed(_truncate(f"AlgorithmError: {said}, exit code: {code}"))
            model_uri = f"{output_path}/{name}/output/{contracts.MODEL_ARCHIVE}"
            try:
                self._upload_archive(opt_ml / "model", model_uri)
                if any((opt_ml / "output" / "data").iterdir()):
                    self._upload_archive(opt_ml / "output" / "data", f"{output_path}/{name}/output/output.tar.gz")
            except (ClientError, BotoCoreError, OSError) as exc:
                raise StepFailed(f"ClientError: cannot upload the model to {model_uri}: {exc}") from None
            seconds = int((datetime.now(timezone.utc) - started).total_seconds()) or 1
            self._finish_job(job, "Completed", ModelArtifacts={"S3ModelArtifacts": model_uri},
                             TrainingTimeInSeconds=seconds, BillableTimeInSeconds=seconds)
        return _Done(copy.deepcopy(job.description), {"TrainingJob": {"Arn": arn}}, {})

    def _upload_archive(self, folder: Path, uri: str) -> None:
        """The folder's contents at the archive's root, as SageMaker packs /opt/ml/model."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(folder.rglob("*")):
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
        bucket, key = parse_s3_uri(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())

    # --- RegisterModel ----------------------------------------------------------------------------------------
    def _register(self, arguments: Mapping[str, Any]) -> _Done:
        self._validate("CreateModelPackage", arguments)
        try:
            arn = self.sagemaker.create_model_package(**arguments)["ModelPackageArn"]
            description = self.sagemaker.describe_model_package(ModelPackageName=arn)
        except ClientError as exc:
            raise StepFailed(f"ClientError: Failed to invoke sagemaker:CreateModelPackage. Error Details: "
                             f"{exc.response.get('Error', {}).get('Message', exc)}") from None
        description.pop("ResponseMetadata", None)
        return _Done(description, {"RegisterModel": {"Arn": arn}}, {})


def map_container_paths(text: Any, root: Path) -> Any:
    """Every /opt/ml path in a container string, moved under `root` (the folder that stands for `/`)."""
    if not isinstance(text, str):
        return text
    return _CONTAINER_ROOT.sub(lambda _m: f"{root.resolve()}/opt/ml", text)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    if _is_number(left) and _is_number(right):
        return float(left) == float(right)
    return left == right


def _json_ready(value: Any) -> Any:
    return json.loads(json.dumps(value, default=text_of))


