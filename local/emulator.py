"""The AWS of the embedded run: moto's server on a free loopback port, and what the program would create.

The server runs in a child process, not a thread: moto keeps its state in module globals, so a server
thread would share state with any other moto in the same process (the test suite's, a previous run's).
A child process gives every run a fresh account and cannot outlive us: it serves until its stdin
closes, which happens when we stop it, exit, or die.

`python -m local.emulator` starts one, prints the variables that point a shell at it, and serves
until Ctrl-C, for poking at the emulator by hand with the AWS CLI or boto3.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import boto3

import contracts

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REGION = "us-east-1"
# moto's default account: ARNs the emulator hands out carry it.
EMULATOR_ACCOUNT = "123456789012"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
START_TIMEOUT_SECONDS = 60.0

_CHILD_SERVER = """
import json, os, sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(json.dumps({"endpoint_url": f"http://{host}:{port}"}), flush=True)
sys.stdin.read()  # returns at EOF: the parent stopped us or is gone
# The state lives only in this process and nothing is saved: exit at once rather than wait for the
# server loop's next poll and the interpreter's teardown of moto's modules.
os._exit(0)
"""


class EmulatorError(RuntimeError):
    """The emulator could not be started, reached or bootstrapped."""


def aws_env(endpoint_url: str, region: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a process that must talk to the emulator and nothing else.

    Every inherited AWS_* variable is dropped (a developer's profile, session token or endpoint
    override must not leak into the run), the shared config files are disabled so no profile can
    add an endpoint or credentials, and loopback is exempt from any HTTP proxy.
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith("AWS_")}
    env.update(DUMMY_CREDENTIALS)
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint_url,
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1", "localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


def stack_tags(project: str, stack: str) -> list[dict[str, str]]:
    """The tags the program puts on everything of a stack, in the API's Key/Value form."""
    return [{"Key": contracts.TAG_PROJECT, "Value": project}, {"Key": contracts.TAG_STACK, "Value": stack}]


@dataclass(frozen=True)
class Bootstrap:
    """What `pulumi up` would have created for a stack, as the runtime scripts see it."""

    bucket: str
    group: str
    execution_role_arn: str
    project: str
    stack: str

    @property
    def training_data_uri(self) -> str:
        """The stack's default `trainingData` prefix (the program seeds it with the sample table)."""
        return contracts.default_training_data_uri(self.bucket, self.stack)

    @property
    def pipeline_name(self) -> str:
        return contracts.model_build_pipeline_name(self.project, self.stack)

    @property
    def tags(self) -> list[dict[str, str]]:
        return stack_tags(self.project, self.stack)


@dataclass
class Emulator:
    """A running (or attached) moto server. Use `Emulator.start()` or `Emulator.attach(url)`."""

    endpoint_url: str
    region: str = DEFAULT_REGION
    _process: subprocess.Popen[str] | None = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def start(cls, region: str = DEFAULT_REGION, log_path: Path | None = None) -> Emulator:
        """Start a fresh moto server in a child process on a free loopback port."""
        log: IO[str] | int = subprocess.DEVNULL
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = log_path.open("w")
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_SERVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=aws_env("http://127.0.0.1:0", region),
                # Its own session: a Ctrl-C in the terminal reaches only us, and we stop it in order.
                start_new_session=True,
            )
        finally:
            if not isinstance(log, int):
                log.close()  # the child holds its own descriptor
        emulator = cls(endpoint_url="", region=region, _process=process)
        try:
            emulator.endpoint_url = _read_endpoint_url(process, START_TIMEOUT_SECONDS, log_path)
            emulator.wait_ready()
        except BaseException:
            emulator.stop()
            raise
        return emulator

    @classmethod
    def attach(cls, endpoint_url: str, region: str = DEFAULT_REGION) -> Emulator:
        """Use a moto server someone else runs (the test suite's); `stop()` leaves it running."""
        emulator = cls(endpoint_url=endpoint_url.rstrip("/"), region=region)
        emulator.wait_ready()
        return emulator

    @property
    def owned(self) -> bool:
        return self._process is not None

    def wait_ready(self, timeout: float = 10.0) -> None:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=timeout) as answer:  # noqa: S310 - loopback
                answer.read()
        except OSError as exc:
            raise EmulatorError(f"the AWS emulator at {self.endpoint_url} does not answer: {exc}") from exc

    def env(self, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
        """Environment for a child process pointed at this emulator, plus `extra`."""
        env = aws_env(self.endpoint_url, self.region, base)
        env.update(extra)
        return env

    def client(self, service: str) -> Any:
        """A boto3 client for this emulator that ignores the caller's AWS environment (one per service)."""
        if service not in self._clients:
            self._clients[service] = self._new_client(service)
        return self._clients[service]

    def _new_client(self, service: str) -> Any:
        return boto3.Session(
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=self.region,
        ).client(service, endpoint_url=self.endpoint_url)

    def stop(self) -> None:
        """Stop the server if we started it. Safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def bootstrap(self, project: str = contracts.PROJECT, stack: str = "local") -> Bootstrap:
        """Create the stack's bucket, model package group and SageMaker execution role, tagged."""
        tag_list = stack_tags(project, stack)
        bucket = f"{project}-{stack}-artifacts-{EMULATOR_ACCOUNT}"
        group = f"{project}-{stack}"
        role_name = f"{project}-{stack}-sagemaker-execution"

        s3 = self.client("s3")
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": self.region})
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tag_list})

        sagemaker = self.client("sagemaker")
        sagemaker.create_model_package_group(
            ModelPackageGroupName=group,
            ModelPackageGroupDescription=f"Models of {project} stack {stack} (embedded run)",
            Tags=tag_list,
        )

        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sagemaker.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        role = self.client("iam").create_role(
            RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust), Tags=tag_list
        )
        return Bootstrap(
            bucket=bucket,
            group=group,
            execution_role_arn=role["Role"]["Arn"],
            project=project,
            stack=stack,
        )


def create_model_build_pipeline(emulator: Emulator, boot: Bootstrap, thresholds: Mapping[str, float],
                                training: contracts.TrainingSettings) -> None:
    """CreatePipeline with the program's own definition (training.pipeline_definition) for this stack."""
    from training.pipeline_definition import PipelineTarget, definition_json

    target = PipelineTarget(
        project=boot.project, stack=boot.stack, region=emulator.region, pipeline_name=boot.pipeline_name,
        group=boot.group, bucket=boot.bucket, role_arn=boot.execution_role_arn,
        image_uri=contracts.inference_image_uri(emulator.region), training_data_uri=boot.training_data_uri,
        thresholds=dict(thresholds), training=training,
    )
    emulator.client("sagemaker").create_pipeline(
        PipelineName=boot.pipeline_name, PipelineDefinition=definition_json(target), RoleArn=boot.execution_role_arn,
        PipelineDescription=f"model build of {boot.project} stack {boot.stack} (embedded run)", Tags=boot.tags,
    )


def seed_training_data(emulator: Emulator, boot: Bootstrap, files: Mapping[str, bytes]) -> None:
    """Put files (relative name -> bytes) under the stack's data prefix, as a team or `sampleData` would."""
    bucket, _, prefix = boot.training_data_uri.removeprefix("s3://").partition("/")
    s3 = emulator.client("s3")
    for name, body in sorted(files.items()):
        s3.put_object(Bucket=bucket, Key=f"{prefix}{name}", Body=body)


def _read_endpoint_url(process: subprocess.Popen[str], timeout: float, log_path: Path | None) -> str:
    """The child's first stdout line, without blocking forever if it dies or hangs on import."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise EmulatorError(f"the AWS emulator did not start within {timeout:.0f}s{_see_log(log_path)}") from None
    if not line:
        raise EmulatorError(
            f"the AWS emulator exited at start (code {process.poll()}){_see_log(log_path)}; "
            "is moto[server] installed in this venv? (make install)"
        )
    return str(json.loads(line)["endpoint_url"])


def _see_log(log_path: Path | None) -> str:
    return f"; see {log_path}" if log_path is not None else ""


def _signal_group(process: subprocess.Popen[Any], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--bootstrap", action="store_true", help="also create the bucket, group and role")
    args = parser.parse_args(argv)
    with Emulator.start(region=args.region) as emulator:
        print(f"export AWS_ENDPOINT_URL={emulator.endpoint_url} AWS_DEFAULT_REGION={emulator.region} "
              "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing")
        if args.bootstrap:
            print(json.dumps(emulator.bootstrap().__dict__, indent=2))
        print("serving; Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
