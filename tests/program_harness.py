"""Run the REAL __main__.py under Pulumi's mock engine and return its resource graph as plain data.

Each run happens in a fresh Python process (this file is also the child's entry point), so Pulumi's
process-wide runtime settings never leak between runs. Config reaches the program the way the
engine passes it: Pulumi.yaml defaults, then Pulumi.<stack>.yaml, then test secrets, then the
test's overrides, as strings (objects/lists as JSON) in the project namespace, secret keys marked.

    graph = run_program("dev")                                  # cached per (stack, overrides)
    graph = run_program("prod", {"approvalMode": "auto"})       # override a key (None removes it)
    failure = run_program_expect_error("dev", {"orchestrator": "jenkins"})

The graph holds every registered resource (type token, name, URN, inputs resolved to plain JSON,
parent URN, dependency URNs, provider URN, which input paths were secret), the stack outputs
(resolved, with which were secret), the engine log messages (to fail on "is deprecated") and the
invokes the program made.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "sagemaker-mlops"
ACCOUNT_ID = "123456789012"
# Injected as secret config in every run unless an override removes them (value None).
TEST_SECRETS = {"githubToken": "ghp_testtoken0000000000000000000000000000", "pulumiAccessToken": "pul-test-0000"}
RUN_TIMEOUT_SECONDS = 180


# --- Plain-data graph ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    parent: str | None
    dependencies: tuple[str, ...]
    provider: str | None
    custom: bool
    secret_paths: tuple[str, ...] = ()

    def __repr__(self) -> str:  # short, so assertion messages stay readable
        return f"<{self.type} {self.name}>"


@dataclass(frozen=True)
class ProgramGraph:
    stack: str
    config: dict[str, str]
    resources: tuple[Resource, ...]
    outputs: dict[str, Any]
    secret_outputs: frozenset[str]
    logs: tuple[dict[str, str], ...]
    invokes: tuple[dict[str, Any], ...]

    def of_type(self, type_token: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str | None = None) -> Resource:
        found = [r for r in self.of_type(type_token) if name is None or r.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected exactly one {type_token}{' ' + name if name else ''}, found {found}")
        return found[0]

    def by_urn(self, urn: str) -> Resource:
        for resource in self.resources:
            if resource.urn == urn:
                return resource
        raise KeyError(urn)

    def by_name(self, name: str) -> Resource:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one resource named {name}, found {found}")
        return found[0]

    def children_of(self, urn: str) -> list[Resource]:
        return [r for r in self.resources if r.parent == urn]

    def custom_resources(self) -> list[Resource]:
        return [r for r in self.resources if r.custom and not r.type.startswith("pulumi:providers:")]

    def providers(self) -> list[Resource]:
        return [r for r in self.resources if r.type.startswith("pulumi:providers:")]


@dataclass(frozen=True)
class ProgramFailure:
    error_type: str
    message: str
    resources: tuple[Resource, ...]
    logs: tuple[dict[str, str], ...] = field(default=())


# --- Config, as the engine passes it -------------------------------------------------------------
def engine_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _full_key(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def project_config_schema() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]


def stack_config(stack: str, overrides: Mapping[str, Any] | None = None,
                 secrets: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """(PULUMI_CONFIG map, secret keys) for a stack file plus defaults, secrets and overrides."""
    import yaml

    config: dict[str, str] = {}
    for key, declared in project_config_schema().items():
        if isinstance(declared, dict) and "default" in declared:
            config[_full_key(key)] = engine_value(declared["default"])
    stack_file = ROOT / f"Pulumi.{stack}.yaml"
    data = yaml.safe_load(stack_file.read_text()) or {}
    for key, value in (data.get("config") or {}).items():
        config[_full_key(key)] = engine_value(value)
    secret_keys: list[str] = []
    for key, value in (TEST_SECRETS if secrets is None else secrets).items():
        config[_full_key(key)] = value
        secret_keys.append(_full_key(key))
    for key, value in (overrides or {}).items():
        full = _full_key(key)
        if value is None:
            config.pop(full, None)
            if full in secret_keys:
                secret_keys.remove(full)
        else:
            config[full] = engine_value(value)
    return config, secret_keys


# --- Running ---------------------------------------------------------------------------------------
def _run_child(stack: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    config, secret_keys = stack_config(stack, overrides)
    request = {"stack": stack, "config": config, "secret_keys": secret_keys}
    if hasattr(os, "fork") and not os.environ.get("PROGRAM_HARNESS_NO_FORK"):
        return _run_forked(request)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        input=json.dumps(request), capture_output=True, text=True, cwd=ROOT, env=_child_env(),
        timeout=RUN_TIMEOUT_SECONDS, check=False,
    )
    marker = "\n@@GRAPH@@\n"
    if marker not in proc.stdout:
        raise RuntimeError(f"program runner crashed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.split(marker, 1)[1])


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "AWS_"))}


class _Runner:
    """A process that has imported pulumi_aws & co. once and forks a fresh child per program run.

    Importing the providers' typed modules is most of a run's cost; a forked child inherits them
    but nothing else (each run still gets a new Pulumi runtime in a new process).
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--server"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            cwd=ROOT, env=_child_env(),
        )

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        import tempfile

        assert self.proc.stdin is not None and self.proc.stdout is not None
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "graph.json"
            self.proc.stdin.write(json.dumps({**request, "out": str(out)}) + "\n")
            self.proc.stdin.flush()
            if self.proc.stdout.readline().strip() != "done" or not out.is_file():
                raise RuntimeError("program runner crashed; rerun with PROGRAM_HARNESS_NO_FORK=1 to see its stderr")
            return json.loads(out.read_text())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


_MAX_RUNNERS = 2
_idle: list[_Runner] = []
_all_runners: list[_Runner] = []
_runners_lock = threading.Condition()


def _run_forked(request: dict[str, Any]) -> dict[str, Any]:
    with _runners_lock:
        while not _idle and len(_all_runners) >= _MAX_RUNNERS:
            _runners_lock.wait()
        if _idle:
            runner = _idle.pop()
        else:
            runner = _Runner()
            _all_runners.append(runner)
    try:
        return runner.run(request)
    finally:
        with _runners_lock:
            _idle.append(runner)
            _runners_lock.notify()


@atexit.register
def _close_runners() -> None:
    for runner in _all_runners:
        runner.close()


def _resources(raw: Iterable[dict[str, Any]]) -> tuple[Resource, ...]:
    return tuple(Resource(
        type=r["type"], name=r["name"], urn=r["urn"], inputs=r["inputs"], parent=r["parent"] or None,
        dependencies=tuple(r["dependencies"]), provider=r["provider"] or None, custom=r["custom"],
        secret_paths=tuple(r["secret_paths"]),
    ) for r in raw)


def _key(overrides: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(overrides or {}), sort_keys=True)


@functools.lru_cache(maxsize=64)
def _cached(stack: str, overrides_json: str) -> dict[str, Any]:
    return _run_child(stack, json.loads(overrides_json))


def run_program(stack: str, overrides: dict[str, object] | None = None) -> ProgramGraph:
    """Run __main__.py for a stack (plus overrides) under mocks; fail if the program raised."""
    result = _cached(stack, _key(overrides))
    if result["error"] is not None:
        error = result["error"]
        raise AssertionError(f"program failed for stack {stack} {overrides or ''}: "
                             f"{error['type']}: {error['message']}\n{error.get('traceback', '')}")
    config, _ = stack_config(stack, overrides)
    return ProgramGraph(
        stack=stack, config=config, resources=_resources(result["resources"]), outputs=result["outputs"],
        secret_outputs=frozenset(result["secret_outputs"]), logs=tuple(result["logs"]),
        invokes=tuple(result["invokes"]),
    )


def run_program_expect_error(stack: str, overrides: dict[str, object] | None = None) -> ProgramFailure:
    """Run __main__.py expecting it to fail; returns the error and whatever was registered before it."""
    result = _cached(stack, _key(overrides))
    if result["error"] is None:
        raise AssertionError(f"program succeeded for stack {stack} {overrides or ''} but was expected to fail")
    return ProgramFailure(error_type=result["error"]["type"], message=result["error"]["message"],
                          resources=_resources(result["resources"]), logs=tuple(result["logs"]))


def prefetch(runs: Iterable[tuple[str, dict[str, object] | None]], workers: int = 2) -> None:
    """Warm the cache for several runs in parallel (each is a separate process)."""
    from concurrent.futures import ThreadPoolExecutor

    pending = [(stack, _key(overrides)) for stack, overrides in runs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda args: _cached(*args), pending))


# --- The child process: mocks, a recording monitor, and the program ---------------------------------
# Provider modules the program uses: imported once by the runner, inherited by each forked run.
_PRELOAD = ("pulumi_aws.s3", "pulumi_aws.iam", "pulumi_aws.sqs", "pulumi_aws.lambda_", "pulumi_aws.cloudwatch",
            "pulumi_aws.sagemaker", "pulumi_aws.codebuild", "pulumi_aws.codepipeline", "pulumi_aws.codeconnections",
            "pulumi_aws.sns", "pulumi_aws.secretsmanager", "pulumi_aws.cloudtrail", "pulumi_github",
            "pulumi.dynamic", "pulumi.runtime.mocks", "google.protobuf.json_format", "yaml")


def _serve() -> None:  # pragma: no cover - runs in the runner process
    import importlib

    for name in _PRELOAD:
        module = importlib.import_module(name)
        # Provider packages load their classes lazily on attribute access: touch them all now.
        if name.startswith(("pulumi_aws.", "pulumi_github")):
            for attribute in getattr(module, "__all__", None) or dir(module):
                if attribute[:1].isupper() or attribute.startswith("get_"):
                    getattr(module, attribute, None)
    aws = importlib.import_module("pulumi_aws")
    for attribute in ("Provider", "get_caller_identity_output", "get_region_output", "get_partition_output"):
        getattr(aws, attribute)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.dup2(2, 1)  # the program's prints must not mix with the protocol on stdout
                result = _execute(request)
                Path(request["out"]).write_text(json.dumps(result, default=str))
                code = 0
            finally:
                os._exit(code)
        os.waitpid(pid, 0)
        sys.stdout.write("done\n")
        sys.stdout.flush()


def _child() -> None:  # pragma: no cover - runs in the subprocess
    request = json.loads(sys.stdin.read())
    result = _execute(request)
    sys.stdout.write("\n@@GRAPH@@\n" + json.dumps(result, default=str))
    sys.stdout.flush()


def _execute(request: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - runs in the subprocess
    import logging
    import runpy

    import pulumi
    from google.protobuf import json_format
    from pulumi.runtime import config as runtime_config
    from pulumi.runtime import mocks as pulumi_mocks
    from pulumi.runtime import rpc
    from pulumi.runtime.settings import get_root_resource
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    stack = request["stack"]
    config: dict[str, str] = request["config"]
    region = config.get("aws:region", "us-east-1")
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    os.environ["PULUMI_CONFIG"] = json.dumps(config)
    os.environ["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(request["secret_keys"])
    runtime_config.set_all_config(config, request["secret_keys"])

    resources: list[dict[str, Any]] = []
    invokes: list[dict[str, Any]] = []
    logs: list[dict[str, str]] = []

    def plain(value: Any, path: str, secret_paths: list[str]) -> Any:
        if isinstance(value, dict):
            sig = value.get(rpc._special_sig_key)
            if sig == rpc._special_secret_sig:
                secret_paths.append(path)
                return plain(value.get("value"), path, secret_paths)
            if sig == rpc._special_resource_sig:
                return value.get("urn")
            if sig == rpc._special_asset_sig:
                return {"__asset__": {k: v for k, v in value.items() if k != rpc._special_sig_key}}
            if sig == rpc._special_archive_sig:
                assets = value.get("assets")
                if isinstance(assets, dict):
                    return {"__archive__": {k: plain(v, f"{path}.{k}", secret_paths) for k, v in assets.items()}}
                return {"__archive__": {k: v for k, v in value.items() if k != rpc._special_sig_key}}
            if sig == rpc._special_output_value_sig:
                if value.get("secret"):
                    secret_paths.append(path)
                return plain(value.get("value"), path, secret_paths)
            return {k: plain(v, f"{path}.{k}" if path else k, secret_paths) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v, f"{path}[{i}]", secret_paths) for i, v in enumerate(value)]
        if value == rpc.UNKNOWN:
            return "<unknown>"
        return value

    def provider_urn(ref: str) -> str:
        return ref.split("::" + ref.rsplit("::", 1)[-1])[0] if ref else ""

    class Mocks(pulumi_mocks.Mocks):
        def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
            return f"{args.name}-id", _outputs(args.typ, args.name, dict(args.inputs), region)

        def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
            invokes.append({"token": args.token, "args": plain(dict(args.args), "", [])})
            if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
                return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/test",
                        "userId": "AIDTEST", "id": ACCOUNT_ID}, []
            if args.token == "aws:index/getRegion:getRegion":
                return {"region": region, "name": region, "id": region, "endpoint": f"ec2.{region}.amazonaws.com",
                        "description": region}, []
            if args.token == "aws:index/getPartition:getPartition":
                return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws",
                        "reverseDnsPrefix": "com.amazonaws"}, []
            if args.token == "github:index/getUser:getUser":
                login = str(args.args.get("username", "user"))
                return {"id": str(10_000 + sum(map(ord, login))), "login": login, "nodeId": f"U_{login}",
                        "name": login}, []
            return {}, []

    class RecordingMonitor(pulumi_mocks.MockMonitor):
        def RegisterResource(self, request: Any) -> Any:
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                secret_paths: list[str] = []
                inputs = plain(json_format.MessageToDict(request.object), "", secret_paths)
                resources.append({
                    "type": request.type, "name": request.name, "urn": response.urn,
                    "inputs": inputs, "parent": request.parent, "dependencies": list(request.dependencies),
                    "provider": provider_urn(request.provider), "custom": bool(request.custom),
                    "secret_paths": secret_paths,
                })
            return response

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logs.append({"severity": record.levelname, "message": record.getMessage()})

    logger = logging.getLogger("pulumi-engine-mock")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(Collect())
    mocks = Mocks()
    pulumi_mocks.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, logger=logger,
                           monitor=RecordingMonitor(mocks))

    error: dict[str, str] | None = None
    outputs: dict[str, Any] = {}
    secret_outputs: list[str] = []
    try:
        def program() -> None:
            runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

        _sync_await(run_pulumi_func(program))
        root = get_root_resource()
        exported: dict[str, Any] = dict(getattr(root, "outputs", {}))

        async def resolve() -> None:
            for name, value in exported.items():
                output = pulumi.Output.from_input(value)
                outputs[name] = plain(await output.future(), "", [])
                if await output.is_secret():
                    secret_outputs.append(name)

        _sync_await(resolve())
    except BaseException as exc:
        import traceback

        error = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
    return {"error": error, "resources": resources, "outputs": outputs, "secret_outputs": secret_outputs,
            "logs": logs, "invokes": invokes}


def _outputs(type_token: str, name: str, inputs: dict[str, Any], region: str) -> dict[str, Any]:
    """Plausible provider outputs: the inputs plus the ARNs/names/URLs the program reads."""
    state = dict(inputs)
    service = type_token.split(":")[1].split("/")[0] if ":" in type_token else "unknown"
    kind = type_token.rsplit(":", 1)[-1]
    acct = ACCOUNT_ID
    physical = state.get("name") or f"{name}-a1b2c3d"

    def arn(resource: str, *, with_region: bool = True, with_account: bool = True) -> str:
        return (f"arn:aws:{service}:{region if with_region else ''}:{acct if with_account else ''}:{resource}")

    if type_token == "aws:s3/bucket:Bucket":
        bucket = state.get("bucket") or f"{name}-a1b2c3d"
        state.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}", id=bucket,
                     bucketRegionalDomainName=f"{bucket}.s3.{region}.amazonaws.com")
        return state
    if type_token == "aws:iam/role:Role":
        state.setdefault("name", physical)
        state.update(arn=f"arn:aws:iam::{acct}:role/{state['name']}", uniqueId=f"AROA{name.upper()[:12]}")
    elif type_token == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
        host = str(state.get("url", "https://token.actions.githubusercontent.com")).removeprefix("https://")
        state["arn"] = f"arn:aws:iam::{acct}:oidc-provider/{host}"
    elif type_token == "aws:sqs/queue:Queue":
        state.setdefault("name", physical)
        state.update(arn=arn(state["name"]), url=f"https://sqs.{region}.amazonaws.com/{acct}/{state['name']}")
    elif type_token == "aws:lambda/function:Function":
        state.setdefault("name", physical)
        fn_arn = arn(f"function:{state['name']}")
        state.update(arn=fn_arn, qualifiedArn=f"{fn_arn}:$LATEST",
                     invokeArn=f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{fn_arn}/invocations")
    elif type_token == "aws:cloudwatch/eventRule:EventRule":
        state.setdefault("name", physical)
        state["arn"] = f"arn:aws:events:{region}:{acct}:rule/{state['name']}"
    elif type_token == "aws:cloudwatch/logGroup:LogGroup":
        state.setdefault("name", physical)
        state["arn"] = f"arn:aws:logs:{region}:{acct}:log-group:{state['name']}"
    elif type_token == "aws:sagemaker/modelPackageGroup:ModelPackageGroup":
        state["arn"] = arn(f"model-package-group/{str(state.get('modelPackageGroupName', name)).lower()}")
    elif type_token == "aws:secretsmanager/secret:Secret":
        state.setdefault("name", physical)
        state["arn"] = arn(f"secret:{state['name']}-AbCdEf")
    elif type_token == "aws:codeconnections/connection:Connection":
        state.update(arn=arn("connection/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"), connectionStatus="PENDING")
    elif type_token == "aws:sns/topic:Topic":
        state.setdefault("name", physical)
        state["arn"] = arn(state["name"])
    elif type_token == "aws:codebuild/project:Project":
        state.setdefault("name", physical)
        state["arn"] = arn(f"project/{state['name']}")
    elif type_token == "aws:codepipeline/pipeline:Pipeline":
        state.setdefault("name", physical)
        state["arn"] = arn(state["name"])
    elif type_token == "aws:cloudtrail/trail:Trail":
        state.setdefault("name", physical)
        state["arn"] = arn(f"trail/{state['name']}")
    elif type_token == "aws:cloudwatch/metricAlarm:MetricAlarm":
        state.setdefault("name", physical)
        state["arn"] = f"arn:aws:cloudwatch:{region}:{acct}:alarm:{state['name']}"
    elif type_token.startswith("aws:") and "arn" not in state:
        state["arn"] = arn(f"{kind.lower()}/{physical}")
    return state


if __name__ == "__main__":
    if "--server" in sys.argv[1:]:
        _serve()
    else:
        _child()
