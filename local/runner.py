"""The stage runner of the embedded run: Build -> Approval -> Deploy -> Serve, against the emulator.

It plays the parts the cloud plays around the project's own code, and nothing more:
- CodeBuild: runs the pre_build/build/post_build commands of the buildspecs with bash, in a fresh copy of
  the repository (CodeBuild's checkout), with the environment the program gives each project. The
  install phase is skipped: it installs what the venv running this already holds.
- EventBridge: turns the registry's describe_model_package answer into the "SageMaker Model Package State
  Change" event, delivers it only if the program's rule pattern (contracts.auto_approval_pattern, matched
  with contracts.matches_pattern) matches, to handlers.auto_approve.handler with the Lambda's environment.
- SageMaker hosting: local.hosting answers InvokeEndpoint for endpoints the emulator has InService by
  forwarding to a gunicorn model server for the endpoint's artifact (local.model_server).
- SageMaker Pipelines: local.pipelines_shim answers the build's execution calls for the pipeline the bootstrap
  created (CreatePipeline, the program's own definition) by running it with local.pipeline_executor: the
  Processing and Training jobs run under `.venv-image` in .demo/jobs/, RegisterModel registers in the emulator.

Everything started is stopped on success, failure and Ctrl-C (an ExitStack unwinds in reverse order).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import yaml

import contracts
from local.emulator import Bootstrap, Emulator
from local.process_groups import stop_process_group

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = REPO_ROOT / ".demo"
# Written into the work directory at the end of every run (the summary as data).
RESULT_FILE = "demo-result.json"
LOCAL_STACK = "local"
# The profile whose approval bars and deployment stage the embedded run borrows.
PROFILE_STACK = "dev"
# What a CodeBuild checkout would not contain, and what must not be copied into one.
_SNAPSHOT_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".venv-image", ".demo", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "node_modules",
    "build", "bench-results.json", "*.egg-info",
)
RUN_PHASES = ("pre_build", "build", "post_build")
SKIPPED_PHASE = "install"
HEARTBEAT_SECONDS = 15.0

EXIT_FAILED = 1
# The model did not pass: the pipeline's QualityGate or the approval gate (contracts.EXIT_QUALITY_GATE).
EXIT_REJECTED = contracts.EXIT_QUALITY_GATE
EXIT_DATA_REJECTED = contracts.EXIT_DATA_REJECTED
EXIT_INTERRUPTED = 130


# --- Errors -------------------------------------------------------------------------------------------
class StageFailed(Exception):
    """A stage could not finish; the message says what failed and where to look."""

    exit_code = EXIT_FAILED

    def __init__(self, stage: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.reason = message
        self.status = status
        """Exit status of the buildspec command that failed, if a command did."""


class ModelRejected(StageFailed):
    """The model did not pass (the pipeline's QualityGate or the approval gate): nothing is deployed."""

    exit_code = EXIT_REJECTED


class DataRejected(StageFailed):
    """The data contract rejected the training data: nothing is trained."""

    exit_code = EXIT_DATA_REJECTED


# --- Console ------------------------------------------------------------------------------------------
class Console:
    """Stage lines, command output and a progress display: a spinner on a terminal, plain lines otherwise."""

    _FRAMES = "|/-\\"

    def __init__(self, stream: IO[str] | None = None, interactive: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._lock = threading.Lock()
        self._status = ""

    def print(self, text: str = "") -> None:
        with self._lock:
            self._clear_status()
            self.stream.write(text + "\n")
            self._draw_status()
            self.stream.flush()

    def _clear_status(self) -> None:
        if self.interactive and self._status:
            self.stream.write("\r\x1b[K")

    def _draw_status(self) -> None:
        if self.interactive and self._status:
            self.stream.write(self._status)

    def _set_status(self, text: str) -> None:
        with self._lock:
            self._clear_status()
            self._status = text
            self._draw_status()
            self.stream.flush()

    @contextlib.contextmanager
    def progress(self, label: str, latest: Callable[[], str] = lambda: "") -> Iterator[None]:
        """While the block runs: a spinner with elapsed time and the latest output (TTY), or a heartbeat line."""
        started = time.monotonic()
        done = threading.Event()

        def tick() -> None:
            frames = itertools.cycle(self._FRAMES)
            next_heartbeat = HEARTBEAT_SECONDS
            while not done.wait(0.1):
                elapsed = time.monotonic() - started
                if self.interactive:
                    tail = latest()[:60]
                    self._set_status(f"  {next(frames)} {label}  {elapsed:5.1f}s  {tail}")
                elif elapsed >= next_heartbeat:
                    self.print(f"    ... {label}: still running ({elapsed:.0f}s)")
                    next_heartbeat += HEARTBEAT_SECONDS

        thread = threading.Thread(target=tick, name="progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self._set_status("")


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:6.1f}s"


def _relative(path: Path) -> str:
    """A path as short as it can be said from the current directory."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --- Buildspecs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    name: str
    commands: tuple[str, ...]
    finally_commands: tuple[str, ...] = ()
    on_failure: str = "ABORT"


@dataclass(frozen=True)
class Buildspec:
    path: Path
    variables: Mapping[str, str]
    phases: Mapping[str, Phase]
    artifact_files: tuple[str, ...]


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(c, str | int | float) for c in value):
        raise ValueError(f"{where} must be a list of command strings")
    return tuple(str(c) for c in value)


def load_buildspec(path: Path) -> Buildspec:
    """Parse the subset of buildspec 0.2 the project uses; anything else fails with the key at fault."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read buildspec {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"buildspec {path} is not a YAML mapping")
    if str(document.get("version")) != "0.2":
        raise ValueError(f"buildspec {path}: version {document.get('version')!r} is not supported; use version: 0.2")
    env = document.get("env") or {}
    unsupported = sorted(set(env) - {"variables", "shell"})
    if unsupported:
        # parameter-store / secrets-manager / exported-variables need services the embedded run does not play.
        raise ValueError(f"buildspec {path}: env keys {unsupported} are not supported by the embedded run")
    variables = {str(k): str(v) for k, v in (env.get("variables") or {}).items()}
    phases: dict[str, Phase] = {}
    for name, body in (document.get("phases") or {}).items():
        where = f"{path.name} phases.{name}"
        if not isinstance(body, dict):
            raise ValueError(f"{where} must be a mapping with 'commands'")
        on_failure = str(body.get("on-failure", "ABORT")).upper()
        if on_failure not in ("ABORT", "CONTINUE"):
            raise ValueError(f"{where}.on-failure must be ABORT or CONTINUE")
        phases[str(name)] = Phase(
            name=str(name),
            commands=_strings(body.get("commands"), f"{where}.commands"),
            finally_commands=_strings(body.get("finally"), f"{where}.finally"),
            on_failure=on_failure,
        )
    unknown = sorted(set(phases) - {SKIPPED_PHASE, *RUN_PHASES})
    if unknown:
        raise ValueError(
            f"buildspec {path}: unknown phases {unknown}; CodeBuild knows install, {', '.join(RUN_PHASES)}"
        )
    artifacts = document.get("artifacts") or {}
    return Buildspec(path, variables, phases, _strings(artifacts.get("files"), f"{path.name} artifacts.files"))


@dataclass
class ShellState:
    """What persists between the commands of one build: buildspec 0.2 runs them in one shell session."""

    env: dict[str, str]
    cwd: Path


def _read_env_dump(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in path.read_bytes().split(b"\0"):
        key, sep, value = entry.decode(errors="replace").partition("=")
        if sep and key not in ("_", "SHLVL", "PWD", "OLDPWD"):
            env[key] = value
    return env


# How long a stopped command may take to wind down (the build stops its pipeline execution) before SIGKILL.
STOP_GRACE_SECONDS = 15.0


def run_command(command: str, state: ShellState, console: Console, log: IO[str], scratch: Path) -> int:
    """Run one buildspec command with bash; stream its output; carry its env and cwd to the next command."""
    env_dump = scratch / f"env-{uuid.uuid4().hex}"
    cwd_dump = scratch / f"cwd-{uuid.uuid4().hex}"
    script = f'{command}\n__status=$?\nenv -0 > "{env_dump}"\npwd > "{cwd_dump}"\nexit $__status\n'
    console.print(f"  $ {command}")
    log.write(f"$ {command}\n")
    latest = [""]
    process: subprocess.Popen[str] | None = None
    try:
        # A Ctrl-C inside Popen would leave a started command with no owner to stop it: hold it until
        # `process` is set, then raise it here, where the except below stops the command tree.
        with deferred_interrupts() as arrived:
            process = subprocess.Popen(
                ["bash", "-c", script], cwd=state.cwd, env=state.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                # Own process group: Ctrl-C reaches the runner, which stops the whole command tree in order.
                start_new_session=True,
            )
        if arrived:
            raise KeyboardInterrupt(f"signal {arrived[0]}")
        with console.progress(command.split("\n", 1)[0][:50], lambda: latest[0]):
            assert process.stdout is not None
            for line in process.stdout:
                text = line.rstrip("\n")
                log.write(line)
                latest[0] = text.strip()
                console.print(f"    | {text}")
            status = process.wait()
    except BaseException:
        if process is not None:
            stop_process_group(process, STOP_GRACE_SECONDS)
        raise
    finally:
        if process is not None and process.stdout is not None:
            process.stdout.close()
    if env_dump.exists():
        state.env = _read_env_dump(env_dump)
        env_dump.unlink()
    if cwd_dump.exists():
        state.cwd = Path(cwd_dump.read_text().strip() or state.cwd)
        cwd_dump.unlink()
    return status


def run_buildspec(spec: Buildspec, *, stage: str, source_dir: Path, env: Mapping[str, str], console: Console,
                  log_path: Path) -> ShellState:
    """Run the phases CodeBuild would run after install; StageFailed names the failing command and the log."""
    install = spec.phases.get(SKIPPED_PHASE)
    if install is not None and install.commands:
        console.print(f"  install phase skipped ({len(install.commands)} commands): the venv running this "
                      "already has every package requirements.txt pins")
    # CodeBuild's precedence: project variables override the buildspec's env.variables.
    state = ShellState(env={**spec.variables, **env}, cwd=source_dir)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log, tempfile.TemporaryDirectory(prefix="shell-", dir=log_path.parent) as scratch:
        failure: str | None = None
        failed_status: int | None = None
        for name in RUN_PHASES:
            phase = spec.phases.get(name)
            if phase is None or (failure is not None and name != "post_build"):
                continue
            phase_failed = False
            for command in phase.commands:
                status = run_command(command, state, console, log, Path(scratch))
                if status != 0:
                    phase_failed = True
                    if failure is None:
                        failure = f"`{command}` exited with {status} in phase {name} (output in {log_path})"
                        failed_status = status
                    break
            for command in phase.finally_commands:
                run_command(command, state, console, log, Path(scratch))
            if phase_failed and phase.on_failure == "CONTINUE":
                failure = failed_status = None
        if failure is not None:
            raise StageFailed(stage, failure, failed_status)
    return state


def collect_artifacts(spec: Buildspec, source_dir: Path, destination: Path, stage: str) -> None:
    """Copy the buildspec's artifact files (relative paths kept); a missing one fails, as in CodeBuild."""
    missing = [f for f in spec.artifact_files if not (source_dir / f).is_file()]
    if missing:
        raise StageFailed(stage, f"artifacts listed in {spec.path.name} were not produced: {', '.join(missing)}")
    for name in spec.artifact_files:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source_dir / name, target)


def snapshot_source(destination: Path) -> Path:
    """A copy of the repository as CodeBuild's checkout would hold it (no venv, caches or build outputs)."""
    shutil.copytree(REPO_ROOT, destination, ignore=_SNAPSHOT_IGNORE)
    return destination


def git_head() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=False, timeout=10)
    head = done.stdout.strip()
    # A tarball without .git still builds: the commit metadata then says so instead of inventing one.
    return head if done.returncode == 0 and head else "0" * 40


# --- The model build -------------------------------------------------------------------------------------
# <workdir>/model: the trained model of the last run, whichever execution trained it.
MODEL_LINK = "model"
# How often the build asks the Pipelines shim about its execution (training.model_build's first poll interval).
BUILD_POLL_SECONDS = 0.5
PIPELINE_STEPS = (contracts.STEP_PREPARE, contracts.STEP_TRAIN, contracts.STEP_EVALUATE, contracts.STEP_QUALITY_GATE,
                  contracts.STEP_REGISTER)


def check_data_folder(data_dir: Path) -> None:
    """What --data must name: a folder holding at least one file; ValueError says what is wrong and the fix."""
    if not data_dir.is_dir():
        raise ValueError(f"{data_dir} is not a folder; pass the folder that holds the team's CSV files")
    if not any(path.is_file() for path in data_dir.rglob("*")):
        raise ValueError(f"{data_dir} is empty; put the team's CSV files in it")


def training_files(data_dir: Path | None) -> tuple[dict[str, bytes], str]:
    """The files a stack's data prefix gets (relative name -> bytes) and where they came from.

    Without a folder: the deterministic sample table, as `sampleData` seeds a new stack. With one: every file
    under it (sub-folders kept), as a team would upload them; the pipeline's Prepare step decides what is usable.
    """
    if data_dir is None:
        from training.sample_data import SAMPLE_FILE, sample_csv

        return {SAMPLE_FILE: sample_csv()}, "the synthetic sample table (training.sample_data)"
    check_data_folder(data_dir)
    files = {path.relative_to(data_dir).as_posix(): path.read_bytes()
             for path in sorted(data_dir.rglob("*")) if path.is_file()}
    return files, str(data_dir)


def data_summary(report_folder: Path) -> str:
    """What Prepare read, from its data report: rows, files, and the columns it ignored."""
    try:
        report = json.loads((report_folder / contracts.DATA_REPORT_FILE).read_text())
        ignored = ", ".join(report.get("ignored_columns") or []) or "none"
        return (f"{report['rows']} rows from {len(report['files'])} file(s), churn rate {report['churn_rate']:.1%}, "
                f"ignored columns: {ignored}")
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # several instances, or a report of another shape: the step line says enough


def step_detail(record: Any) -> str:
    """One line about a pipeline step: its job, the gate's outcome, the package, or why it failed."""
    if record.cache_source:
        return f"cached: the step of {record.cache_source.rsplit('/', 1)[-1]}"
    metadata = record.metadata
    if record.status == "Failed" and record.failure_reason:
        return " ".join(record.failure_reason.split())[:240]
    if "Condition" in metadata:
        return "passed" if metadata["Condition"].get("Outcome") == "True" else "not passed"
    if "RegisterModel" in metadata:
        return str(metadata["RegisterModel"]["Arn"])
    for kind in ("ProcessingJob", "TrainingJob"):
        if kind in metadata:
            return f"{kind[0].lower()}{kind[1:].replace('Job', ' job')} {metadata[kind]['Arn'].rsplit('/', 1)[-1]}"
    return ""


# --- Approval -----------------------------------------------------------------------------------------
def _event_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dict):
        return {k: _event_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_event_value(v) for v in value]
    return value


def package_state_change_event(package: Mapping[str, Any], region: str) -> dict[str, Any]:
    """The event EventBridge delivers for a package's status change, built from describe_model_package.

    Shape as in SageMaker's EventBridge documentation: envelope (version, id, detail-type, source, account,
    time, region, resources = [package ARN]) and the package description as `detail`, timestamps as ISO strings.
    """
    arn = str(package["ModelPackageArn"])
    detail = {k: _event_value(v) for k, v in package.items() if k != "ResponseMetadata"}
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": contracts.EVENT_DETAIL_TYPE,
        "source": contracts.EVENT_SOURCE,
        "account": arn.split(":")[4],
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [arn],
        "detail": detail,
    }


@dataclass(frozen=True)
class ApprovalProfile:
    """The auto-approval Lambda's environment values, and where they came from."""

    thresholds: Mapping[str, float]
    champion_metric: str | None
    champion_min_delta: float
    source: str

    def lambda_env(self, group: str) -> dict[str, str]:
        values = {
            contracts.ENV_MODEL_PACKAGE_GROUP_NAME: group,
            contracts.ENV_APPROVAL_THRESHOLDS: json.dumps(dict(self.thresholds), sort_keys=True),
            contracts.ENV_CHAMPION_METRIC: self.champion_metric or "",
            contracts.ENV_CHAMPION_MIN_DELTA: str(self.champion_min_delta),
        }
        return {name: values[name] for name in contracts.AUTO_APPROVE_ENV}


@dataclass(frozen=True)
class Profile:
    approval: ApprovalProfile
    """The approval Lambda's bars; the model-build pipeline's QualityGate checks the same thresholds."""
    stage: contracts.DeploymentStage
    training: contracts.TrainingSettings = field(default_factory=contracts.TrainingSettings)
    """Where and on what the model is built (the profile's `training` config)."""


def _stack_config(path: Path) -> dict[str, str]:
    """A stack file's project keys as the engine passes them to the program: strings, objects as JSON."""
    document = yaml.safe_load(path.read_text()) or {}
    raw: dict[str, str] = {}
    for key, value in (document.get("config") or {}).items():
        namespace, _, name = str(key).partition(":")
        if namespace != contracts.PROJECT or (isinstance(value, dict) and "secure" in value):
            continue
        raw[name] = value if isinstance(value, str) else json.dumps(value)
    return raw


def load_profile(stack: str = PROFILE_STACK, thresholds: Mapping[str, float] | None = None) -> Profile:
    """Approval bars, training settings and first serverless deployment stage of a stack profile (config.py)."""
    import config  # the program's settings parser; imported here so `import local.runner` stays light

    path = REPO_ROOT / f"Pulumi.{stack}.yaml"
    raw = _stack_config(path) if path.is_file() else {}
    raw.setdefault("githubRepository", "example/placeholder")
    # Only presence matters for secrets (they are never read here): a stack that needs a token
    # must still parse without one in the embedded run.
    try:
        settings = config.parse_settings(raw, stack=stack, region="us-east-1",
                                         secrets={name: "unused" for name in config.SECRET_KEYS})
    except config.ConfigError as exc:
        raise ValueError(f"{path.name} does not parse ({exc}); the embedded run borrows its approval bars, "
                         "training settings and deployment stage, so fix the file (config.py names the key)") from None
    approval = ApprovalProfile(dict(settings.approval.thresholds), settings.approval.champion_metric,
                               settings.approval.champion_min_delta,
                               f"{path.name} via config.py" if path.is_file() else "config.py defaults")
    if thresholds is not None:
        approval = ApprovalProfile(dict(thresholds), approval.champion_metric, approval.champion_min_delta,
                                   "--thresholds")
    serverless = [s for s in settings.deployment_stages if s.serverless is not None]
    # The emulator plays serverless hosting only; a profile without a serverless stage lends its name.
    chosen = serverless[0] if serverless else settings.deployment_stages[0]
    stage = contracts.DeploymentStage(
        name=chosen.name, endpoint_name=f"{contracts.PROJECT}-{LOCAL_STACK}-{chosen.name}",
        serverless=chosen.serverless or contracts.Serverless(), data_capture=None,
    )
    return Profile(approval, stage, settings.model_build.training)


@contextlib.contextmanager
def lambda_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Give the handler its function environment for one invocation, then put the process's back."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class ApprovalOutcome:
    status: str
    reason: str
    event: Mapping[str, Any]
    handler_result: Mapping[str, Any]


def deliver_approval_event(emulator: Emulator, package_arn: str, group: str, profile: ApprovalProfile,
                           stage: str = "Approval") -> ApprovalOutcome:
    """EventBridge's part: build the event, match the rule's pattern, invoke the handler, read the decision."""
    from handlers import auto_approve

    sagemaker = emulator.client("sagemaker")
    package = sagemaker.describe_model_package(ModelPackageName=package_arn)
    event = package_state_change_event(package, emulator.region)
    pattern = contracts.auto_approval_pattern(group)
    if not contracts.matches_pattern(pattern, event):
        raise StageFailed(stage, f"the auto-approval rule's pattern {json.dumps(pattern)} does not match the event "
                                 f"for {package_arn}; EventBridge would not deliver it")
    clients = auto_approve.Clients(sagemaker=sagemaker, s3=emulator.client("s3"))
    with lambda_environment(profile.lambda_env(group)):
        result = auto_approve.handler(event, None, clients=clients)
    # The registry is the record of truth: read the decision from it, not from the handler's return value.
    decided = sagemaker.describe_model_package(ModelPackageName=package_arn)
    return ApprovalOutcome(str(decided.get("ModelApprovalStatus")), str(decided.get("ApprovalDescription", "")),
                           event, result)


# --- Serving --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    content_type: str
    rows: int
    probabilities: tuple[float, ...]
    labels: tuple[int, ...]


def sample_rows(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Feature rows from the training data's distribution (another seed), without the label.

    One row per contract type first, so a short sample shows customers the model rates differently.
    """
    from training.train import make_dataset

    frame = make_dataset(max(count, 200), seed).drop(columns=[contracts.TARGET_COLUMN])
    firsts = frame.drop_duplicates("contract_type").index.tolist()
    order = firsts + [i for i in frame.index if i not in firsts]
    records = frame.loc[order[:count]].to_dict(orient="records")
    return [{str(k): (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in records]


def _rows_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(row[c]) for c in header) for row in rows]
    return "\n".join(lines) + "\n"


def invoke_container(url: str, body: bytes, content_type: str, accept: str = "application/json",
                     timeout: float = 30.0) -> bytes:
    request = urllib.request.Request(  # noqa: S310 - loopback model server we started
        f"{url}/invocations", data=body, method="POST", headers={"Content-Type": content_type, "Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"POST /invocations ({content_type}) -> {exc.code}: "
                           f"{exc.read().decode(errors='replace')[:300]}") from None


def parse_predictions(body: bytes, rows: int, content_type: str) -> Prediction:
    """The container's JSON answer -> checked predictions: one per row, probabilities in [0, 1]."""
    predictions = json.loads(body)["predictions"]
    probabilities = tuple(float(p["churn_probability"]) for p in predictions)
    labels = tuple(int(p[contracts.TARGET_COLUMN]) for p in predictions)
    if len(probabilities) != rows:
        raise ValueError(f"sent {rows} rows as {content_type}, got {len(probabilities)} predictions")
    if not all(0.0 <= p <= 1.0 for p in probabilities):
        raise ValueError(f"probabilities outside [0, 1]: {probabilities}")
    return Prediction(content_type, rows, probabilities, labels)


def ping(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


# --- The run ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def deferred_interrupts() -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM while the block runs, so a second Ctrl-C cannot cut a cleanup short.

    Yields the list of signals that arrived meanwhile; the caller re-raises after cleaning up.
    Outside the main thread signal handlers cannot be changed, and the block runs unshielded.
    """
    arrived: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda number, _frame: arrived.append(number))
    try:
        yield arrived
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass
class DemoOptions:
    workdir: Path = DEFAULT_WORKDIR
    thresholds: Mapping[str, float] | None = None
    region: str = "us-east-1"
    emulator_url: str | None = None
    """Attach to this moto server instead of starting one (the test suite's)."""
    sample_count: int = 3
    data_dir: Path | None = None
    """The team's CSV files, uploaded to the stack's data prefix; None: the synthetic sample table."""


@dataclass
class StageTiming:
    name: str
    seconds: float
    ok: bool
    detail: str


@dataclass
class PipelineStepTiming:
    """One step of the model-build pipeline's execution, as ListPipelineExecutionSteps reports it."""

    name: str
    status: str
    seconds: float
    detail: str


@dataclass
class DemoResult:
    stages: list[StageTiming] = field(default_factory=list)
    pipeline_steps: list[PipelineStepTiming] = field(default_factory=list)
    pipeline_execution_arn: str = ""
    model_dir: Path | None = None
    """Where the build left the trained model (the Train job's /opt/ml/model, or the inline build's folder)."""
    evaluation_path: Path | None = None
    package_arn: str = ""
    approval: ApprovalOutcome | None = None
    endpoints: dict[str, str] = field(default_factory=dict)
    """endpoint name -> status in the emulator."""
    predictions: list[Prediction] = field(default_factory=list)
    model_server_url: str = ""
    emulator_url: str = ""

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def summary(self, outcome: str, exit_code: int) -> dict[str, Any]:
        """What the run did, as plain data: written to <workdir>/demo-result.json for tools (make bench)."""
        return {
            "outcome": outcome,
            "exit_code": exit_code,
            "stages": [{"name": s.name, "seconds": s.seconds, "ok": s.ok, "detail": s.detail} for s in self.stages],
            "pipeline_steps": [{"name": s.name, "status": s.status, "seconds": s.seconds, "detail": s.detail}
                               for s in self.pipeline_steps],
            "total_seconds": self.total_seconds,
            "package_arn": self.package_arn,
            "model_dir": str(self.model_dir) if self.model_dir else None,
            "evaluation_path": str(self.evaluation_path) if self.evaluation_path else None,
        }


def prepare_workdir(workdir: Path) -> Path:
    """Empty the work directory (a rerun starts clean); refuse paths that hold more than demo output."""
    workdir = workdir.resolve()
    if workdir in (REPO_ROOT, *REPO_ROOT.parents) or (workdir / ".git").exists():
        raise ValueError(f"refusing to use {workdir} as the demo work directory: it would be emptied; "
                         "pass a dedicated directory such as .demo")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return workdir


class DemoRun:
    """One embedded run. `run()` returns the result or raises StageFailed / ModelRejected / KeyboardInterrupt."""

    STAGE_COUNT = 4

    def __init__(self, options: DemoOptions, console: Console | None = None) -> None:
        self.options = options
        self.console = console or Console()
        self.result = DemoResult()
        self._interrupted_during_cleanup = False
        self.prepared_workdir: Path | None = None
        """The emptied work directory, once the run has prepared it (None: the run never got that far)."""

    @contextlib.contextmanager
    def _stage(self, number: int, name: str, title: str) -> Iterator[list[str]]:
        """Time a stage and print its closing line; the block appends its one-line outcome to `detail`."""
        self.console.print(f"[{number}/{self.STAGE_COUNT}] {name}: {title}")
        started = time.monotonic()
        detail: list[str] = []
        try:
            yield detail
        except BaseException as exc:
            seconds = time.monotonic() - started
            if isinstance(exc, StageFailed):
                rejected = isinstance(exc, ModelRejected | DataRejected)
                reason, verdict = exc.reason, "REJECTED" if rejected else "FAILED"
            elif isinstance(exc, KeyboardInterrupt):
                reason, verdict = "interrupted", "INTERRUPTED"
            else:
                reason, verdict = f"{type(exc).__name__}: {exc}", "FAILED"
            self.result.stages.append(StageTiming(name, seconds, False, reason))
            self.console.print(f"  {verdict} {name} after {seconds:.1f}s")
            raise
        seconds = time.monotonic() - started
        self.result.stages.append(StageTiming(name, seconds, True, "; ".join(detail)))
        self.console.print(f"  ok {name} {_fmt_seconds(seconds).strip()}  {'; '.join(detail)}")

    def run(self) -> DemoResult:
        options = self.options
        say = self.console.print
        workdir = prepare_workdir(options.workdir)
        self.prepared_workdir = workdir
        profile = load_profile(PROFILE_STACK, options.thresholds)
        with contextlib.ExitStack() as cleanup:
            if options.emulator_url:
                emulator = Emulator.attach(options.emulator_url, options.region)
            else:
                emulator = Emulator.start(options.region, log_path=workdir / "logs" / "emulator.log")
                cleanup.callback(self._stopped, "AWS emulator", emulator.stop)
            self.result.emulator_url = emulator.endpoint_url
            boot = emulator.bootstrap(stack=LOCAL_STACK)
            say(f"AWS emulator (moto) at {emulator.endpoint_url}: bucket {boot.bucket}, group {boot.group}, "
                f"role {boot.execution_role_arn.split('/')[-1]}")
            pipelines = self._bootstrap_model_build(emulator, boot, profile, workdir, cleanup)
            artifacts = workdir / "artifacts" / "BuildArtifact"
            self._build(emulator, boot, workdir, artifacts, profile.training, pipelines)
            self._approve(emulator, boot, profile.approval)
            hosting = self._start_hosting(emulator, cleanup)
            self._deploy(emulator, boot, workdir, artifacts, profile.stage, hosting.url)
            self._serve(hosting, profile.stage)
        if self._interrupted_during_cleanup:
            raise KeyboardInterrupt("interrupted while stopping")
        return self.result

    def _stopped(self, what: str, stop: Callable[[], None]) -> None:
        with deferred_interrupts() as arrived:
            stop()
        self.console.print(f"stopped {what}")
        self._interrupted_during_cleanup |= bool(arrived)

    def _codebuild_env(self, emulator: Emulator, source: Path, project_env: Mapping[str, str],
                       **extra: str) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        base = {**os.environ, "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "")]),
                "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        base.pop("PYTHONPATH", None)
        return emulator.env(
            base,
            CODEBUILD_SRC_DIR=str(source),
            CODEBUILD_BUILD_ID=f"local:{uuid.uuid4()}",
            CODEBUILD_RESOLVED_SOURCE_VERSION=git_head(),
            CODEBUILD_INITIATOR="local/demo",
            **project_env,
            **extra,
        )

    def _bootstrap_model_build(self, emulator: Emulator, boot: Bootstrap, profile: Profile, workdir: Path,
                               cleanup: contextlib.ExitStack) -> Any:
        """What `pulumi up` adds for the model build: the data prefix's files and (compute pipeline) the pipeline.

        Returns the Pipelines shim that runs the pipeline's executions, or None for compute `build`.
        """
        from local.emulator import create_model_build_pipeline, seed_training_data

        say = self.console.print
        files, source = training_files(self.options.data_dir)
        seed_training_data(emulator, boot, files)
        say(f"training data: {len(files)} file(s) from {source} in {boot.training_data_uri}")
        training = profile.training
        if training.compute != "pipeline":
            say(f"training.compute is {training.compute!r}: the build trains inline, no pipeline")
            return None
        from local.pipeline_executor import Sandbox
        from local.pipelines_shim import PipelinesShim

        sandbox = Sandbox(jobs_root=workdir / "jobs", job_env=emulator.env(base={}))
        sandbox.check()  # the image's Python runs the jobs: say how to build it before anything starts
        create_model_build_pipeline(emulator, boot, profile.approval.thresholds, training)
        gate = ", ".join(f"{metric} >= {bar:g}" for metric, bar in sorted(profile.approval.thresholds.items()))
        say(f"pipeline {boot.pipeline_name} created (CreatePipeline) from training.pipeline_definition: "
            f"QualityGate {gate}, {training.instance_type}")
        shim = PipelinesShim(emulator.endpoint_url, sagemaker=emulator.client("sagemaker"), s3=emulator.client("s3"),
                             sandbox=sandbox).start()
        cleanup.callback(self._stopped, "SageMaker Pipelines shim and its jobs", shim.stop)
        say(f"sagemaker shim at {shim.url} (runs pipeline executions on this machine, forwards the rest to moto)")
        return shim

    def _build(self, emulator: Emulator, boot: Bootstrap, workdir: Path, artifacts: Path,
               training: contracts.TrainingSettings, pipelines: Any) -> None:
        spec_path = REPO_ROOT / contracts.TRAIN_BUILDSPEC
        how = ("the model-build pipeline: " + " -> ".join(PIPELINE_STEPS) if pipelines is not None
               else "inline: prepare, train, evaluate, register")
        with self._stage(1, "Build", f"{contracts.TRAIN_BUILDSPEC} ({how})") as detail:
            spec = _load_or_fail(spec_path, "Build")
            source = snapshot_source(workdir / "source-build")
            values = {
                contracts.ENV_ARTIFACT_BUCKET: boot.bucket,
                contracts.ENV_MODEL_PACKAGE_GROUP_NAME: boot.group,
                contracts.ENV_INFERENCE_IMAGE_URI: contracts.inference_image_uri(emulator.region),
                contracts.ENV_MLOPS_PROJECT: boot.project,
                contracts.ENV_MLOPS_STACK: boot.stack,
                contracts.ENV_TRAINING_DATA_URI: boot.training_data_uri,
                contracts.ENV_MODEL_BUILD_COMPUTE: training.compute,
                contracts.ENV_MODEL_BUILD_PIPELINE: boot.pipeline_name,
            }
            # The program sets the pipeline's name only where there is a pipeline.
            project_env = {name: values[name] for name in contracts.TRAIN_BUILD_ENV
                           if pipelines is not None or name not in contracts.PIPELINE_ONLY_BUILD_ENV}
            local_pipeline: dict[str, str] = {}
            if pipelines is not None:
                from training.model_build import ENV_POLL_SECONDS

                # The build's boto3 reaches the Pipelines shim for `sagemaker`; its steps take seconds here, not
                # minutes, so the build polls at this pace instead of SageMaker's.
                local_pipeline = {**pipelines.environ(), ENV_POLL_SECONDS: str(BUILD_POLL_SECONDS)}
            env = self._codebuild_env(emulator, source, project_env, **local_pipeline)
            try:
                run_buildspec(spec, stage="Build", source_dir=source, env=env, console=self.console,
                              log_path=workdir / "logs" / "build.log")
            except StageFailed as failed:
                self._report_pipeline(pipelines)
                raise self._why_the_build_failed(failed, pipelines) from None
            self._report_pipeline(pipelines)
            if pipelines is None:
                from training import DEFAULT_MODEL_DIR, DEFAULT_OUTPUT_DIR

                self.result.model_dir = source / DEFAULT_MODEL_DIR
                self.result.evaluation_path = source / DEFAULT_OUTPUT_DIR / contracts.EVALUATION_FILE
            collect_artifacts(spec, source, artifacts, "Build")
            arn_file = artifacts / contracts.MODEL_PACKAGE_ARN_FILE
            if not arn_file.is_file():
                raise StageFailed("Build", f"the build produced no {contracts.MODEL_PACKAGE_ARN_FILE}")
            self.result.package_arn = arn_file.read_text().strip()
            package = emulator.client("sagemaker").describe_model_package(ModelPackageName=self.result.package_arn)
            status = package.get("ModelApprovalStatus")
            if status != contracts.STATUS_PENDING:
                raise StageFailed("Build", f"registered package is {status}, expected {contracts.STATUS_PENDING}")
            detail.append(f"registered {self.result.package_arn} ({status})")
            if self.result.model_dir is not None:
                # A fixed name for the trained model (`make serve MODEL=.demo/model`), whatever the execution id.
                link = workdir / MODEL_LINK
                link.unlink(missing_ok=True)
                link.symlink_to(os.path.relpath(self.result.model_dir, workdir))

    def _report_pipeline(self, pipelines: Any) -> None:
        """Each step of the build's pipeline execution with its time, and where a failed job's log is."""
        if pipelines is None or not pipelines.executions:
            return
        say = self.console.print
        execution = pipelines.executions[-1]
        self.result.pipeline_execution_arn = execution.arn
        records = execution.step_records()
        total = sum(r.seconds for r in records)
        say(f"  pipeline execution {execution.execution_id}: {execution.status}, steps {total:.1f}s "
            f"(jobs in {_relative(execution.folder)})")
        for record in records:
            detail = step_detail(record)
            if record.name == contracts.STEP_PREPARE and record.status == "Succeeded":
                report = execution.output_folder(record.name, contracts.DATA_REPORT_OUTPUT)
                detail = "; ".join(filter(None, [detail, data_summary(report)]))
            self.result.pipeline_steps.append(PipelineStepTiming(record.name, record.status, record.seconds, detail))
            say(f"    {record.name:<12} {record.status:<10} {_fmt_seconds(record.seconds)}  {detail}".rstrip())
            if record.status == "Failed":
                for log in record.log_paths:
                    say(f"      log: {_relative(log)}")
        from local.pipeline_executor import MODEL_DIR
        from training.pipeline_definition import EVALUATION_OUTPUT

        model_dir = execution.container_path(contracts.STEP_TRAIN, MODEL_DIR)
        evaluation = execution.output_folder(contracts.STEP_EVALUATE, EVALUATION_OUTPUT) / contracts.EVALUATION_FILE
        self.result.model_dir = model_dir if model_dir.is_dir() else None
        self.result.evaluation_path = evaluation if evaluation.is_file() else None

    def _why_the_build_failed(self, failed: StageFailed, pipelines: Any) -> StageFailed:
        """The build's exit code says why (training.model_build): the gate (3), the data (4), or anything else."""
        said = ""
        if pipelines is not None and pipelines.executions:
            execution = pipelines.executions[-1]
            failures = [r for r in execution.step_records() if r.status == "Failed"]
            if failures:
                # A processing job says why in its ExitMessage; the step's FailureReason is SageMaker's summary.
                said = execution.exit_message(failures[0]) or failures[0].failure_reason or ""
        said = " ".join(said.split())
        if failed.status == EXIT_REJECTED:
            return ModelRejected("Build", f"the model did not pass the {contracts.STEP_QUALITY_GATE}, nothing was "
                                          f"registered or deployed: {said or failed.reason}", failed.status)
        if failed.status == EXIT_DATA_REJECTED:
            return DataRejected("Build", f"the training data was rejected, nothing was trained: "
                                         f"{said or failed.reason}", failed.status)
        return failed

    def _approve(self, emulator: Emulator, boot: Bootstrap, approval: ApprovalProfile) -> None:
        say = self.console.print
        with self._stage(2, "Approval", "EventBridge event -> handlers/auto_approve.handler") as detail:
            say(f"  bars from {approval.source}: {contracts.ENV_APPROVAL_THRESHOLDS}="
                f"{json.dumps(dict(approval.thresholds), sort_keys=True)}, "
                f"{contracts.ENV_CHAMPION_METRIC}={approval.champion_metric or '(none)'}, "
                f"{contracts.ENV_CHAMPION_MIN_DELTA}={approval.champion_min_delta}")
            outcome = deliver_approval_event(emulator, self.result.package_arn, boot.group, approval)
            self.result.approval = outcome
            say(f"  event \"{contracts.EVENT_DETAIL_TYPE}\" ({outcome.event['detail']['ModelApprovalStatus']}) "
                f"matches the rule pattern of group {boot.group}: delivered")
            say(f"  decision: {outcome.status}")
            say(f"  reason: {outcome.reason}")
            if outcome.status == contracts.STATUS_REJECTED:
                raise ModelRejected("Approval", f"model rejected, nothing deployed: {outcome.reason}")
            if outcome.status != contracts.STATUS_APPROVED:
                raise StageFailed("Approval", f"the handler left the package {outcome.status} "
                                              f"(handler answered {json.dumps(outcome.handler_result)})")
            detail.append(outcome.status)

    def _start_hosting(self, emulator: Emulator, cleanup: contextlib.ExitStack) -> Any:
        from local.hosting import Hosting

        hosting = Hosting(sagemaker=emulator.client("sagemaker"), s3=emulator.client("s3")).start()
        cleanup.callback(self._stopped, "SageMaker hosting shim and its model servers", hosting.stop)
        self.console.print(f"sagemaker-runtime shim at {hosting.url} (forwards InvokeEndpoint to the model server)")
        return hosting

    def _deploy(self, emulator: Emulator, boot: Bootstrap, workdir: Path, artifacts: Path,
                stage: contracts.DeploymentStage, runtime_url: str) -> None:
        spec_path = REPO_ROOT / contracts.DEPLOY_BUILDSPEC
        with self._stage(3, "Deploy", f"{contracts.DEPLOY_BUILDSPEC} (endpoint {stage.endpoint_name})") as detail:
            spec = _load_or_fail(spec_path, "Deploy")
            source = snapshot_source(workdir / "source-deploy")
            values = {
                contracts.ENV_ARTIFACT_BUCKET: boot.bucket,
                contracts.ENV_MODEL_PACKAGE_GROUP_NAME: boot.group,
                contracts.ENV_SAGEMAKER_EXECUTION_ROLE_ARN: boot.execution_role_arn,
                contracts.ENV_DEPLOYMENT_STAGES: contracts.dump_deployment_stages([stage]),
                contracts.ENV_MLOPS_PROJECT: boot.project,
                contracts.ENV_MLOPS_STACK: boot.stack,
            }
            project_env = {name: values[name] for name in contracts.DEPLOY_BUILD_ENV}
            env = self._codebuild_env(emulator, source, project_env,
                                      CODEBUILD_SRC_DIR_BuildArtifact=str(artifacts),
                                      AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=runtime_url)
            run_buildspec(spec, stage="Deploy", source_dir=source, env=env, console=self.console,
                          log_path=workdir / "logs" / "deploy.log")
            endpoint = emulator.client("sagemaker").describe_endpoint(EndpointName=stage.endpoint_name)
            status = str(endpoint["EndpointStatus"])
            self.result.endpoints[stage.endpoint_name] = status
            if status != "InService":
                raise StageFailed("Deploy", f"endpoint {stage.endpoint_name} is {status}, not InService")
            detail.append(f"endpoint {stage.endpoint_name} {status}")

    def _serve(self, hosting: Any, stage: contracts.DeploymentStage) -> None:
        say = self.console.print
        with self._stage(4, "Serve", "the deployed artifact through the SageMaker container contract") as detail:
            target = hosting.resolve(stage.endpoint_name)
            # The server the smoke test already reached, or a new one from the artifact in the emulator's S3.
            server = hosting.server_for(target.model_data_url)
            self.result.model_server_url = server.url
            say(f"  model server (gunicorn) for {target.model_data_url} at {server.url}")
            say(f"  GET /ping -> {ping(server.url)}")
            rows = sample_rows(self.options.sample_count)
            requests = [
                ("text/csv", _rows_csv(rows).encode()),
                ("application/json", json.dumps(rows).encode()),
            ]
            for content_type, body in requests:
                try:
                    answer = invoke_container(server.url, body, content_type)
                    prediction = parse_predictions(answer, len(rows), content_type)
                except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                    raise StageFailed("Serve", f"{content_type} request: {exc}") from None
                self.result.predictions.append(prediction)
                say(f"  POST /invocations ({content_type}, {len(rows)} rows) -> 200")
                for row, p, label in zip(rows, prediction.probabilities, prediction.labels, strict=True):
                    say(f"    tenure {row['tenure_months']:>2} mo, {row['contract_type']:<14} "
                        f"{row['monthly_charges']:>6.2f}/mo -> churn probability {p:.3f} (churn={label})")
            detail.append(f"{sum(p.rows for p in self.result.predictions)} predictions "
                          f"({', '.join(p.content_type for p in self.result.predictions)})")


def _load_or_fail(path: Path, stage: str) -> Buildspec:
    try:
        return load_buildspec(path)
    except ValueError as exc:
        raise StageFailed(stage, str(exc)) from None


def print_summary(console: Console, result: DemoResult, outcome: str) -> None:
    console.print("")
    console.print("Summary")
    for timing in result.stages:
        console.print(f"  {timing.name:<9} {_fmt_seconds(timing.seconds)}  {'ok' if timing.ok else 'FAILED':<6} "
                      f"{timing.detail}")
    console.print(f"  {'total':<9} {_fmt_seconds(result.total_seconds)}  {outcome}")
