"""A loopback stand-in for SageMaker hosting: answers sagemaker-runtime InvokeEndpoint for the emulator.

moto's own ``invoke_endpoint`` returns a canned answer, never a prediction. This server answers the
real API instead (``POST /endpoints/{EndpointName}/invocations``, botocore's rest-json shapes) for
endpoints that exist InService in the emulator: it follows endpoint -> endpoint config -> model ->
model package -> ``ModelDataUrl``, downloads and unpacks that ``model.tar.gz`` from the emulator's S3
and forwards the request to a gunicorn model server for that artifact (one per artifact, started on
first use), as SageMaker hosting does with its containers.

    with Hosting() as hosting:                       # boto3 clients from the environment (moto)
        os.environ.update(hosting.environ())         # AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME
        boto3.client("sagemaker-runtime").invoke_endpoint(...)

Everything it starts (the HTTP thread, model servers, temp dirs) it stops in ``stop()``.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from local.loopback import LoopbackHandler, LoopbackShim
from local.model_server import ModelServer, start_model_server

LOG = logging.getLogger("local.hosting")

ENV_RUNTIME_ENDPOINT = "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"
# Header names from botocore's sagemaker-runtime model (InvokeEndpointOutput).
HEADER_VARIANT = "x-Amzn-Invoked-Production-Variant"
HEADER_ERROR_TYPE = "x-amzn-ErrorType"
INVOKE_TIMEOUT_SECONDS = 60  # SageMaker gives a container 60 s to answer


class HostingError(Exception):
    """An InvokeEndpoint failure in the shape botocore parses: error code, HTTP status, message."""

    def __init__(self, code: str, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.extra = extra

    def body(self) -> bytes:
        return json.dumps({"message": str(self), **self.extra}).encode()


@dataclass(frozen=True)
class Target:
    """Where an endpoint's traffic goes: the variant name and the artifact it serves."""

    endpoint_name: str
    variant_name: str
    model_data_url: str


@dataclass(frozen=True)
class Invocation:
    body: bytes
    content_type: str
    variant_name: str


class Hosting(LoopbackShim):
    """The sagemaker-runtime shim; a context manager. Clients default to boto3's (i.e. the emulator's)."""

    label = "hosting shim"
    endpoint_variable = ENV_RUNTIME_ENDPOINT
    logger = LOG

    def __init__(self, *, sagemaker: Any = None, s3: Any = None, workers: int = 1) -> None:
        super().__init__()
        self._sagemaker = sagemaker
        self._s3 = s3
        self._workers = workers
        self._servers: dict[str, ModelServer] = {}
        self._lock = threading.Lock()
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._downloads = itertools.count()

    # --- lifecycle -------------------------------------------------------------------------------
    def _handler(self) -> type[LoopbackHandler]:
        return _handler_for(self)

    def _prepare(self) -> None:
        self._sagemaker = self._sagemaker or boto3.client("sagemaker")
        self._s3 = self._s3 or boto3.client("s3")
        self._workdir = tempfile.TemporaryDirectory(prefix="hosting-")

    def _release(self) -> None:
        """Every model server it started, and their unpacked artifacts."""
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    @property
    def model_servers(self) -> dict[str, ModelServer]:
        """Running model servers by artifact URL (a copy)."""
        with self._lock:
            return dict(self._servers)

    # --- InvokeEndpoint ----------------------------------------------------------------------------
    def resolve(self, endpoint_name: str) -> Target:
        """Follow the emulator's records from endpoint to model artifact, as SageMaker hosting does."""
        sm = self._sagemaker
        try:
            endpoint = sm.describe_endpoint(EndpointName=endpoint_name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("ValidationException", "ValidationError"):
                raise HostingError("ValidationError", 400, f"Endpoint {endpoint_name} not found.") from None
            raise
        status = endpoint.get("EndpointStatus")
        if status != "InService":
            raise HostingError("ValidationError", 400,
                               f"Endpoint {endpoint_name} is not in service (status {status}); wait for InService.")
        config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        variants = config.get("ProductionVariants") or []
        if not variants:
            raise HostingError("ValidationError", 400, f"Endpoint {endpoint_name} has no production variants.")
        # One variant per endpoint here; with several, SageMaker splits by weight - the heaviest stands in.
        variant = max(variants, key=lambda v: float(v.get("InitialVariantWeight", 1.0)))
        model = sm.describe_model(ModelName=variant["ModelName"])
        container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
        url = container.get("ModelDataUrl")
        package_name = container.get("ModelPackageName")
        if not url and package_name:
            package = sm.describe_model_package(ModelPackageName=package_name)
            containers = package.get("InferenceSpecification", {}).get("Containers") or [{}]
            url = containers[0].get("ModelDataUrl")
        if not url:
            raise HostingError("InternalFailure", 500,
                               f"model {variant['ModelName']} of endpoint {endpoint_name} names no ModelDataUrl")
        return Target(endpoint_name, variant["VariantName"], url)

    def server_for(self, model_data_url: str) -> ModelServer:
        """The model server for an artifact, started (download, unpack, gunicorn) on first use."""
        with self._lock:
            server = self._servers.get(model_data_url)
            if server is not None and server.process.poll() is None:
                return server
            if server is not None:
                LOG.warning("model server for %s exited; starting a new one", model_data_url)
                server.stop()
            archive = self._download(model_data_url)
            try:
                server = start_model_server(archive, workers=self._workers)
            except Exception as exc:
                raise HostingError("InternalFailure", 500,
                                   f"model container for {model_data_url} failed: {exc}") from None
            self._servers[model_data_url] = server
            return server

    def _download(self, url: str) -> Path:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
            raise HostingError("InternalFailure", 500, f"ModelDataUrl {url!r} is not an s3://bucket/key URL")
        assert self._workdir is not None
        target = Path(self._workdir.name) / f"artifact-{next(self._downloads)}" / "model.tar.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._s3.download_file(parsed.netloc, parsed.path.lstrip("/"), str(target))
        except ClientError as exc:
            raise HostingError("InternalFailure", 500, f"cannot download model artifact {url}: {exc}") from None
        return target

    def invoke(self, endpoint_name: str, body: bytes, content_type: str | None, accept: str | None) -> Invocation:
        target = self.resolve(endpoint_name)
        server = self.server_for(target.model_data_url)
        headers = {"Content-Type": content_type or "application/octet-stream"}
        if accept:
            headers["Accept"] = accept
        request = urllib.request.Request(  # noqa: S310 - the loopback URL of our own model server
            f"{server.url}/invocations", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=INVOKE_TIMEOUT_SECONDS) as response:  # noqa: S310 - loopback
                return Invocation(response.read(), response.headers.get("Content-Type", ""), target.variant_name)
        except urllib.error.HTTPError as exc:
            # SageMaker wraps a container's 4xx/5xx as ModelError (424) carrying the original answer.
            message = exc.read().decode(errors="replace")
            kind = "client" if exc.code < 500 else "server"
            raise HostingError(
                "ModelError", 424,
                f'Received {kind} error ({exc.code}) from primary with message "{message}".',
                OriginalStatusCode=exc.code, OriginalMessage=message,
            ) from None
        except OSError as exc:
            raise HostingError("ModelError", 424, f"model container did not answer: {exc}") from None


def _handler_for(hosting: Hosting) -> type[LoopbackHandler]:
    class Handler(LoopbackHandler):
        logger = LOG

        def do_POST(self) -> None:
            body = self._body()
            parts = urllib.parse.urlparse(self.path).path.split("/")
            try:
                if len(parts) != 4 or parts[1] != "endpoints" or parts[3] != "invocations":
                    raise HostingError("ValidationError", 400,
                                       f"unsupported path {self.path}; this shim answers only InvokeEndpoint")
                name = urllib.parse.unquote(parts[2])
                result = hosting.invoke(name, body, self.headers.get("Content-Type"), self.headers.get("Accept"))
            except HostingError as exc:
                self._send(exc.status, exc.body(), "application/json", {HEADER_ERROR_TYPE: exc.code})
                return
            except Exception as exc:
                LOG.exception("InvokeEndpoint failed")
                error = HostingError("InternalFailure", 500, f"{type(exc).__name__}: {exc}")
                self._send(error.status, error.body(), "application/json", {HEADER_ERROR_TYPE: error.code})
                return
            self._send(200, result.body, result.content_type, {HEADER_VARIANT: result.variant_name})

    return Handler
