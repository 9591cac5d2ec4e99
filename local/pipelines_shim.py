"""A loopback stand-in for SageMaker Pipelines' execution API, in front of the emulator's `sagemaker` endpoint.

moto stores a pipeline (CreatePipeline, DescribePipeline) but its StartPipelineExecution runs nothing and
reports the execution Succeeded at once. This server answers the execution calls itself and forwards every
other `sagemaker` call to moto unchanged, so code that drives a pipeline (training.model_build) runs as it
would against SageMaker, with `AWS_ENDPOINT_URL_SAGEMAKER` pointing here:

- StartPipelineExecution reads the pipeline's definition from moto (DescribePipeline), checks it and the
  parameters as the service does (ValidationException naming the step or parameter), and runs it with
  local.pipeline_executor in a background thread. A ClientRequestToken seen before returns the same execution.
- DescribePipelineExecution, ListPipelineExecutionSteps, StopPipelineExecution, ListPipelineExecutions,
  DescribePipelineDefinitionForExecution and ListPipelineParametersForExecution answer for those executions.
- DescribeProcessingJob / DescribeTrainingJob answer for the jobs the executions ran (moto never saw them).

    with PipelinesShim(moto_url, sagemaker=..., s3=..., sandbox=...) as shim:
        env.update(shim.environ())      # AWS_ENDPOINT_URL_SAGEMAKER for the build's boto3

Everything it starts (the HTTP thread, executions and their job processes) it stops in ``stop()``.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from local.loopback import LoopbackHandler, LoopbackShim
from local.pipeline_executor import (
    TERMINAL,
    PipelineExecution,
    Sandbox,
    StepCache,
    parse_definition,
)

LOG = logging.getLogger("local.pipelines_shim")

ENV_SAGEMAKER_ENDPOINT = "AWS_ENDPOINT_URL_SAGEMAKER"
TARGET_PREFIX = "SageMaker."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
FORWARD_TIMEOUT_SECONDS = 60
STOP_JOIN_SECONDS = 30


class ApiError(Exception):
    """An error in the shape botocore parses from the JSON protocol: `__type` and `message`, HTTP 400."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    def body(self) -> bytes:
        return json.dumps({"__type": self.code, "message": str(self)}).encode()


def _wire(value: Any) -> Any:
    """Timestamps as the JSON protocol carries them (epoch seconds)."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, Mapping):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


def _pipeline_name(name_or_arn: str) -> str:
    return name_or_arn.split(":pipeline/", 1)[1].split("/", 1)[0] if ":pipeline/" in name_or_arn else name_or_arn


class PipelinesShim(LoopbackShim):
    """The sagemaker endpoint of the embedded run: Pipelines executions here, everything else at moto."""

    label = "Pipelines shim"
    endpoint_variable = ENV_SAGEMAKER_ENDPOINT
    logger = LOG

    def __init__(self, moto_url: str, *, sagemaker: Any, s3: Any, sandbox: Sandbox) -> None:
        super().__init__()
        self.moto_url = moto_url.rstrip("/")
        self._sagemaker = sagemaker
        self._s3 = s3
        self._sandbox = sandbox
        self._cache = StepCache()
        self._lock = threading.Lock()
        self._executions: dict[str, PipelineExecution] = {}
        self._tokens: dict[str, str] = {}
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------------------------
    def _handler(self) -> type[LoopbackHandler]:
        return _handler_for(self)

    def _release(self) -> None:
        """Every running execution, and its job."""
        with self._lock:
            executions, threads = list(self._executions.values()), list(self._threads)
        for execution in executions:
            execution.stop()
        for thread in threads:
            thread.join(timeout=STOP_JOIN_SECONDS)

    @property
    def executions(self) -> list[PipelineExecution]:
        """Every execution started here, oldest first."""
        with self._lock:
            return sorted(self._executions.values(), key=lambda e: e.created)

    # --- the API ---------------------------------------------------------------------------------------------
    def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any] | None:
        """Answer one operation, or None to forward it to moto."""
        handler = getattr(self, f"_op_{operation}", None)
        if handler is None:
            return None
        return handler(request)

    def _execution(self, request: Mapping[str, Any]) -> PipelineExecution:
        arn = str(request.get("PipelineExecutionArn", ""))
        with self._lock:
            execution = self._executions.get(arn)
        if execution is None:
            raise ApiError("ResourceNotFound", f"Pipeline execution with ARN {arn} does not exist.")
        return execution

    # Named after the API operations they answer.
    def _op_StartPipelineExecution(self, request: Mapping[str, Any]) -> dict[str, Any]:
        name = _pipeline_name(str(request.get("PipelineName", "")))
        token = request.get("ClientRequestToken")
        with self._lock:
            if token and token in self._tokens:
                return {"PipelineExecutionArn": self._tokens[token]}
        try:
            pipeline = self._sagemaker.describe_pipeline(PipelineName=name)
        except ClientError:
            raise ApiError("ResourceNotFound", f"Pipeline with name {name} does not exist.") from None
        text = pipeline["PipelineDefinition"]
        given = {str(p["Name"]): p["Value"] for p in request.get("PipelineParameters") or []}
        try:
            execution = PipelineExecution(
                parse_definition(text), pipeline_arn=pipeline["PipelineArn"], parameters=given,
                sagemaker=self._sagemaker, s3=self._s3, sandbox=self._sandbox, cache=self._cache,
                display_name=request.get("PipelineExecutionDisplayName"), definition_text=text)
        except ValueError as exc:  # DefinitionError is one too
            raise ApiError("ValidationException", f"pipeline {name}: {exc}") from None
        thread = threading.Thread(target=execution.run, name=f"execution-{execution.execution_id}", daemon=True)
        with self._lock:
            self._executions[execution.arn] = execution
            if token:
                self._tokens[token] = execution.arn
            self._threads.append(thread)
        thread.start()
        return {"PipelineExecutionArn": execution.arn}

    def _op_DescribePipelineExecution(self, request: Mapping[str, Any]) -> dict[str, Any]:
        execution = self._execution(request)
        state = execution.snapshot()
        answer = {
            "PipelineArn": execution.pipeline_arn,
            "PipelineExecutionArn": execution.arn,
            "PipelineExecutionDisplayName": execution.display_name,
            "PipelineExecutionStatus": state["status"],
            "CreationTime": execution.created,
            "LastModifiedTime": state["last_modified"],
        }
        if state["failure_reason"]:
            answer["FailureReason"] = state["failure_reason"]
        return answer

    def _op_ListPipelineExecutionSteps(self, request: Mapping[str, Any]) -> dict[str, Any]:
        steps = self._execution(request).snapshot()["steps"]
        if request.get("SortOrder", "Descending") == "Descending":
            steps.reverse()
        start = int(request.get("NextToken") or 0)
        size = int(request.get("MaxResults") or 100)
        answer: dict[str, Any] = {"PipelineExecutionSteps": steps[start:start + size]}
        if start + size < len(steps):
            answer["NextToken"] = str(start + size)
        return answer

    def _op_StopPipelineExecution(self, request: Mapping[str, Any]) -> dict[str, Any]:
        execution = self._execution(request)
        status = execution.snapshot()["status"]
        if status in TERMINAL and status != "Stopped":
            raise ApiError("ValidationException", f"Pipeline execution {execution.arn} is {status} and cannot be "
                                                  "stopped.")
        execution.stop()
        return {"PipelineExecutionArn": execution.arn}

    def _op_ListPipelineExecutions(self, request: Mapping[str, Any]) -> dict[str, Any]:
        name = _pipeline_name(str(request.get("PipelineName", "")))
        mine = [e for e in self.executions if e.pipeline_name == name]
        if request.get("SortOrder", "Descending") == "Descending":
            mine.reverse()
        summaries = []
        for execution in mine:
            state = execution.snapshot()
            summary = {"PipelineExecutionArn": execution.arn, "StartTime": execution.created,
                       "PipelineExecutionStatus": state["status"],
                       "PipelineExecutionDisplayName": execution.display_name}
            if state["failure_reason"]:
                summary["PipelineExecutionFailureReason"] = state["failure_reason"]
            summaries.append(summary)
        return {"PipelineExecutionSummaries": summaries}

    def _op_DescribePipelineDefinitionForExecution(self, request: Mapping[str, Any]) -> dict[str, Any]:
        execution = self._execution(request)
        return {"PipelineDefinition": execution.definition_text, "CreationTime": execution.created}

    def _op_ListPipelineParametersForExecution(self, request: Mapping[str, Any]) -> dict[str, Any]:
        execution = self._execution(request)
        return {"PipelineParameters": [{"Name": k, "Value": v} for k, v in execution.given_parameters.items()]}

    def _job(self, kind: str, name: str) -> dict[str, Any] | None:
        for execution in self.executions:
            job = execution.jobs.get(name.lower())
            if job is not None and job.kind == kind:
                return dict(job.description)
        return None

    def _op_DescribeProcessingJob(self, request: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._job("ProcessingJob", str(request.get("ProcessingJobName", "")))

    def _op_DescribeTrainingJob(self, request: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._job("TrainingJob", str(request.get("TrainingJobName", "")))

    # --- forwarding -------------------------------------------------------------------------------------------
    def forward(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str],
                                                                                                  bytes]:
        request = urllib.request.Request(  # noqa: S310 - the emulator's loopback URL
            f"{self.moto_url}{path}", data=body if method != "GET" else None, method=method,
            headers={k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")})
        try:
            with urllib.request.urlopen(request, timeout=FORWARD_TIMEOUT_SECONDS) as response:  # noqa: S310
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()


def _handler_for(shim: PipelinesShim) -> type[LoopbackHandler]:
    class Handler(LoopbackHandler):
        logger = LOG

        def _handle(self) -> None:
            body = self._body()
            target = self.headers.get("X-Amz-Target", "")
            if target.startswith(TARGET_PREFIX):
                try:
                    request = json.loads(body or b"{}")
                    answer = shim.call(target[len(TARGET_PREFIX):], request)
                except ApiError as exc:
                    self._send(exc.status, exc.body(), JSON_CONTENT_TYPE)
                    return
                except Exception as exc:
                    LOG.exception("%s failed", target)
                    error = ApiError("InternalFailure", f"{type(exc).__name__}: {exc}", 500)
                    self._send(error.status, error.body(), JSON_CONTENT_TYPE)
                    return
                if answer is not None:
                    self._send(200, json.dumps(_wire(answer)).encode(), JSON_CONTENT_TYPE)
                    return
            status, headers, payload = shim.forward(self.command, self.path, dict(self.headers.items()), body)
            self._send(status, payload, headers.get("Content-Type", JSON_CONTENT_TYPE),
                       {k: v for k, v in headers.items() if k.lower().startswith("x-amz")})

        do_POST = _handle
        do_GET = _handle

    return Handler
