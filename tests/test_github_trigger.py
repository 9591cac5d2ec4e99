"""The GitHub trigger against a real local HTTP server (pytest-httpserver) and moto's Secrets Manager."""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from pytest_httpserver import HTTPServer
from werkzeug import Response

import contracts
from handlers import github_trigger
from handlers.github_trigger import ConfigError, DispatchError, MalformedEventError, TokenError

GROUP = "churn-test"
REPOSITORY = "acme/churn-model"
WORKFLOW = contracts.DEPLOY_WORKFLOW_FILE
REF = "main"
SECRET_ID = "sagemaker-mlops/github-token"
TOKEN = "ghp_TopSecretToken0123456789abcdefABCDEF"
OTHER_GROUP = "other-team"
# moto numbers versions from 1 per group, as SageMaker does; the `approved` fixture registers this one.
ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn-test/1"
DISPATCH_PATH = f"/repos/{REPOSITORY}/actions/workflows/{WORKFLOW}/dispatches"
EVENTS = Path(__file__).parent / "events"


@functools.cache
def _session() -> boto3.Session:
    # Loading service models is most of a client's cost; one session (created inside the first test, under
    # the `aws` fixture's emulator settings, which never change) keeps the module fast.
    return boto3.Session()


def aws_client(name: str) -> Any:
    return _session().client(name)


def approved_event(group: Any = GROUP, status: Any = contracts.STATUS_APPROVED, arn: Any = ARN) -> dict[str, Any]:
    event = json.loads((EVENTS / "model_package_state_change.json").read_text())
    event["detail"].update(ModelPackageArn=arn, ModelPackageGroupName=group, ModelApprovalStatus=status)
    return event


@pytest.fixture
def secrets(aws: str) -> Any:
    return aws_client("secretsmanager")


@pytest.fixture
def sagemaker(aws: str) -> Any:
    return aws_client("sagemaker")


def add_package(sagemaker: Any, group: str = GROUP, status: str = contracts.STATUS_APPROVED) -> str:
    """A model package in moto's registry, as the build registers it and a person or the gate decides it."""
    groups = sagemaker.list_model_package_groups()["ModelPackageGroupSummaryList"]
    if group not in {g["ModelPackageGroupName"] for g in groups}:
        sagemaker.create_model_package_group(ModelPackageGroupName=group)
    return sagemaker.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [{"Image": contracts.inference_image_uri("us-east-1"),
                            "ModelDataUrl": f"s3://artifacts/{group}/{contracts.MODEL_ARCHIVE}"}],
            "SupportedContentTypes": list(contracts.CONTENT_TYPES),
            "SupportedResponseMIMETypes": list(contracts.CONTENT_TYPES),
        },
    )["ModelPackageArn"]


@pytest.fixture
def approved(sagemaker: Any) -> str:
    arn = add_package(sagemaker)
    assert arn == ARN
    return arn


@pytest.fixture
def token_secret(secrets: Any) -> str:
    secrets.create_secret(Name=SECRET_ID, SecretString=json.dumps({"token": TOKEN}))
    return SECRET_ID


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, httpserver: HTTPServer) -> None:
    monkeypatch.setenv(contracts.ENV_MODEL_PACKAGE_GROUP_NAME, GROUP)
    monkeypatch.setenv(contracts.ENV_DEPLOY_REPOSITORY, REPOSITORY)
    monkeypatch.setenv(contracts.ENV_DEPLOY_WORKFLOW, WORKFLOW)
    monkeypatch.setenv(contracts.ENV_DEPLOY_REF, REF)
    monkeypatch.setenv(contracts.ENV_GITHUB_TOKEN_SECRET_ID, SECRET_ID)
    monkeypatch.setenv(contracts.ENV_GITHUB_API_URL, httpserver.url_for("/").rstrip("/"))


class Sleeps(list):
    """The injected sleep: records each requested delay instead of waiting, and moves `now` on by it.

    `now` is the real monotonic clock plus the delays not slept, so the handler's time budget counts the
    waits as if they had happened and the real time of real requests as it passes.
    """

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    def now(self) -> float:
        return time.monotonic() + sum(self)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


class LambdaContext:
    """The part of Lambda's context object the trigger reads: the invocation's remaining time."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._deadline = clock() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))


def trigger(event: Any, secrets: Any, sleeps: Sleeps, context: Any = None, sagemaker: Any = None) -> dict[str, Any]:
    return github_trigger.handler(event, context, secrets=secrets, sagemaker=sagemaker or aws_client("sagemaker"),
                                  sleep=sleeps, clock=sleeps.now)


def dispatch_body() -> dict[str, Any]:
    return {"ref": REF, "inputs": {"model_package_arn": ARN, "model_package_group": GROUP}}


# --- The request ----------------------------------------------------------------------------
def test_approved_event_posts_workflow_dispatch_with_exact_path_headers_and_body(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
):
    httpserver.expect_oneshot_request(DISPATCH_PATH, method="POST", json=dispatch_body()).respond_with_data(
        "", status=204
    )

    result = trigger(approved_event(), secrets, sleeps)

    httpserver.check_assertions()
    request = httpserver.log[0][0]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert request.headers["User-Agent"] == github_trigger.USER_AGENT
    assert request.headers["Content-Type"] == "application/json"
    assert result == {"action": "dispatched", "model_package_arn": ARN, "status": 204}
    assert sleeps == []


def test_dispatch_inputs_are_exactly_the_deploy_workflows_inputs(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
):
    httpserver.expect_oneshot_request(DISPATCH_PATH, method="POST").respond_with_data("", status=204)

    trigger(approved_event(), secrets, sleeps)

    assert tuple(json.loads(httpserver.log[0][0].data)["inputs"]) == contracts.DISPATCH_INPUTS


@pytest.mark.parametrize(
    "secret_string",
    [
        pytest.param(json.dumps({"token": TOKEN, "note": "rotated monthly"}), id="json-object"),
        pytest.param(TOKEN + "\n", id="bare-token"),
    ],
)
def test_token_is_read_from_either_secret_format(
    env: None, approved: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer, secret_string: str
):
    secrets.create_secret(Name=SECRET_ID, SecretString=secret_string)
    httpserver.expect_oneshot_request(DISPATCH_PATH, method="POST").respond_with_data("", status=204)

    trigger(approved_event(), secrets, sleeps)

    assert httpserver.log[0][0].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"SecretString": json.dumps({"pat": TOKEN})}, "without a non-empty string 'token' key", id="no-key"
        ),
        pytest.param({"SecretString": json.dumps({"token": ""})}, "without a non-empty string 'token' key", id="empty"),
        pytest.param({"SecretString": "ghp_a b\nX-Evil: 1"}, "whitespace or control characters", id="header-breaking"),
        pytest.param({"SecretBinary": TOKEN.encode()}, "has no SecretString", id="binary-secret"),
    ],
)
def test_unusable_secret_raises_without_showing_its_value(
    env: None, approved: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer, kwargs: dict[str, Any], message: str
):
    secrets.create_secret(Name=SECRET_ID, **kwargs)

    with pytest.raises(TokenError, match=message) as raised:
        trigger(approved_event(), secrets, sleeps)

    assert TOKEN not in str(raised.value) and "ghp_a" not in str(raised.value)
    assert httpserver.log == []


# --- Retries --------------------------------------------------------------------------------
def test_server_errors_are_retried_with_exponential_backoff(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
):
    httpserver.expect_ordered_request(DISPATCH_PATH, method="POST").respond_with_data("busy", status=502)
    httpserver.expect_ordered_request(DISPATCH_PATH, method="POST").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request(DISPATCH_PATH, method="POST").respond_with_data("", status=204)

    result = trigger(approved_event(), secrets, sleeps)

    assert result["status"] == 204
    assert sleeps == [1.0, 2.0]
    assert len(httpserver.log) == 3


def test_rate_limit_waits_as_long_as_retry_after_says(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
):
    httpserver.expect_ordered_request(DISPATCH_PATH, method="POST").respond_with_json(
        {"message": "slow down"}, status=429, headers={"Retry-After": "7"}
    )
    httpserver.expect_ordered_request(DISPATCH_PATH, method="POST").respond_with_json(
        {"message": "secondary rate limit"}, status=403, headers={"Retry-After": "3"}
    )
    httpserver.expect_ordered_request(DISPATCH_PATH, method="POST").respond_with_data("", status=204)

    trigger(approved_event(), secrets, sleeps)

    assert sleeps == [7.0, 3.0]


def test_persistent_server_errors_raise_after_the_last_attempt(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
):
    httpserver.expect_request(DISPATCH_PATH, method="POST").respond_with_json({"message": "Server Error"}, status=500)

    with pytest.raises(DispatchError, match=r"failed after 5 attempt\(s\).*HTTP 500") as raised:
        trigger(approved_event(), secrets, sleeps)

    assert raised.value.status == 500
    assert sleeps == [1.0, 2.0, 4.0, 8.0]
    assert len(httpserver.log) == 5


def test_retry_after_beyond_the_time_budget_raises_instead_of_waiting(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
):
    httpserver.expect_request(DISPATCH_PATH, method="POST").respond_with_json(
        {"message": "rate limited"}, status=429, headers={"Retry-After": "3600"}
    )

    with pytest.raises(DispatchError, match=r"time budget of 55\.0s leaves no room to wait 3600s.*HTTP 429"):
        trigger(approved_event(), secrets, sleeps)

    assert sleeps == []
    assert len(httpserver.log) == 1


def test_unreachable_github_is_retried_then_raises(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(contracts.ENV_GITHUB_API_URL, f"http://127.0.0.1:{port}")

    with pytest.raises(DispatchError, match="connection failed"):
        trigger(approved_event(), secrets, sleeps)

    assert sleeps == [1.0, 2.0, 4.0, 8.0]


# --- Client errors raise at once ------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "cause"),
    [
        pytest.param(401, "expired or revoked", id="401-bad-token"),
        pytest.param(403, "'Actions: read and write'", id="403-missing-permission"),
        pytest.param(404, f"workflow {WORKFLOW} not found", id="404-wrong-repo-or-workflow"),
        pytest.param(422, "workflow_dispatch trigger", id="422-ref-or-inputs"),
    ],
)
def test_client_errors_raise_at_once_with_the_likely_cause(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer, status: int,
    cause: str,
):
    httpserver.expect_request(DISPATCH_PATH, method="POST").respond_with_json({"message": "nope"}, status=status)

    with pytest.raises(DispatchError, match=f"HTTP {status}") as raised:
        trigger(approved_event(), secrets, sleeps)

    assert cause in str(raised.value)
    assert "GitHub says: 'nope'" in str(raised.value)
    assert (len(httpserver.log), sleeps) == (1, [])


# --- The token stays secret -----------------------------------------------------------------
def test_token_appears_in_neither_logs_nor_error_messages(
    env: None,
    approved: str,
    token_secret: str,
    secrets: Any,
    sleeps: Sleeps,
    httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture,
):
    # INFO is the function's log level; botocore's own DEBUG output (response bodies) is never enabled.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger=github_trigger.LOGGER.name)

    def echo_authorization(request: Any) -> Response:
        # A hostile or buggy server that reflects the credentials back.
        reflected = json.dumps({"message": f"bad credentials {request.headers['Authorization']}"})
        return Response(reflected, status=502 if len(httpserver.log) < 2 else 401, content_type="application/json")

    httpserver.expect_request(DISPATCH_PATH, method="POST").respond_with_handler(echo_authorization)

    with pytest.raises(DispatchError) as raised:
        trigger(approved_event(), secrets, sleeps)

    assert raised.value.status == 401
    assert any("retry" in record.getMessage() for record in caplog.records)  # the retry was logged
    assert TOKEN not in caplog.text
    assert TOKEN not in str(raised.value)
    assert "***" in str(raised.value)


# --- Events it does not act on --------------------------------------------------------------
@pytest.mark.parametrize(
    ("event", "field"),
    [
        pytest.param(approved_event(status=contracts.STATUS_REJECTED), "detail.ModelApprovalStatus", id="rejected"),
        pytest.param(approved_event(status=contracts.STATUS_PENDING), "detail.ModelApprovalStatus", id="pending"),
        pytest.param(approved_event(status="approved"), "detail.ModelApprovalStatus", id="status-lowercase"),
        pytest.param(approved_event(status="Approved "), "detail.ModelApprovalStatus", id="status-trailing-space"),
        pytest.param(
            approved_event(group=OTHER_GROUP, arn=ARN.replace(f"/{GROUP}/", f"/{OTHER_GROUP}/")),
            "detail.ModelPackageGroupName",
            id="other-group",
        ),
        pytest.param(approved_event(group="Churn-Test"), "detail.ModelPackageGroupName", id="group-other-case"),
        pytest.param({**approved_event(), "source": "aws.codepipeline"}, "source", id="wrong-source"),
        pytest.param({**approved_event(), "detail": None}, "detail", id="no-detail"),
    ],
)
def test_events_the_rule_would_not_deliver_are_ignored_with_a_log_line(
    env: None,
    approved: str,
    token_secret: str,
    secrets: Any,
    sleeps: Sleeps,
    httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture,
    event: dict[str, Any],
    field: str,
):
    caplog.set_level(logging.INFO, logger=github_trigger.LOGGER.name)

    result = trigger(event, secrets, sleeps)

    assert result["action"] == "ignored"
    assert httpserver.log == []
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == github_trigger.LOGGER.name]
    assert [line["action"] for line in logged] == ["ignored"]
    assert f"{field} is " in logged[0]["reason"]


@pytest.mark.parametrize(
    ("registry_status", "reason"),
    [
        pytest.param(contracts.STATUS_REJECTED, "is 'Rejected' in the registry now", id="rejected-by-now"),
        pytest.param(contracts.STATUS_PENDING, "is 'PendingManualApproval' in the registry now", id="pending"),
    ],
)
def test_approved_event_for_a_package_not_approved_now_dispatches_nothing(
    env: None, token_secret: str, secrets: Any, sagemaker: Any, sleeps: Sleeps, httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture, registry_status: str, reason: str,
):
    # The event said Approved; a person (or the gate) has changed the package since.
    caplog.set_level(logging.INFO, logger=github_trigger.LOGGER.name)
    arn = add_package(sagemaker, status=registry_status)

    result = trigger(approved_event(arn=arn), secrets, sleeps)

    assert (result["action"], httpserver.log) == ("ignored", [])
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == github_trigger.LOGGER.name]
    assert (line["action"], line["model_package_arn"]) == ("ignored", arn)
    assert reason in line["reason"]


def test_approved_event_for_an_unknown_package_dispatches_nothing(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.INFO, logger=github_trigger.LOGGER.name)
    unknown = ARN.replace("/churn-test/1", "/churn-test/99")

    result = trigger(approved_event(arn=unknown), secrets, sleeps)

    assert (result["action"], httpserver.log) == ("ignored", [])
    assert "does not exist" in result["reason"]


def test_approved_event_for_a_foreign_package_under_our_group_name_dispatches_nothing(
    env: None, token_secret: str, secrets: Any, sagemaker: Any, sleeps: Sleeps, httpserver: HTTPServer,
):
    # Approved in another group; the event claims our group. The registry, not the event, decides.
    foreign = add_package(sagemaker, group=OTHER_GROUP)

    result = trigger(approved_event(group=GROUP, arn=foreign), secrets, sleeps)

    assert (result["action"], httpserver.log) == ("ignored", [])
    assert "another group" in result["reason"]
    assert sagemaker.describe_model_package(ModelPackageName=foreign)["ModelApprovalStatus"] == "Approved"


def test_registry_errors_raise_and_dispatch_nothing(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer,
):
    # Throttling or a missing permission is not an answer about the package: raise, so retries and the DLQ see it.
    denied = aws_client("sagemaker")
    with Stubber(denied) as stub:
        stub.add_client_error("describe_model_package", "AccessDeniedException", http_status_code=400)
        with pytest.raises(ClientError, match="AccessDeniedException"):
            trigger(approved_event(), secrets, sleeps, sagemaker=denied)

    assert httpserver.log == []


@pytest.mark.parametrize(
    ("event", "message"),
    [
        pytest.param("Approved", "must be a JSON object", id="not-an-object"),
        pytest.param(
            {**approved_event(), "detail": {"ModelPackageGroupName": GROUP, "ModelApprovalStatus": "Approved"}},
            "ModelPackageArn",
            id="no-arn",
        ),
        pytest.param(approved_event(arn="arn:aws:s3:::bucket/key"), "not a versioned model package ARN", id="bad-arn"),
        pytest.param(approved_event(arn=ARN + "\n"), r"not a versioned model package ARN.*/1\\n'", id="arn-newline"),
        pytest.param(approved_event(arn=" " + ARN), "not a versioned model package ARN", id="arn-leading-space"),
        # EventBridge delivers these (an array matches when it holds the wanted value); a dispatch needs one.
        pytest.param(approved_event(status=["Approved"]), "ModelApprovalStatus must be one string", id="status-list"),
        pytest.param(approved_event(group=[GROUP, OTHER_GROUP]), "ModelPackageGroupName must be one string",
                     id="group-list"),
    ],
)
def test_malformed_events_raise_and_dispatch_nothing(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer, event: Any,
    message: str,
):
    with pytest.raises(MalformedEventError, match=message):
        trigger(event, secrets, sleeps)

    assert httpserver.log == []


# --- The time budget ------------------------------------------------------------------------
def test_hanging_github_ends_in_a_clear_error_inside_the_invocations_remaining_time(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
):
    release = threading.Event()

    def hang(request: Any) -> Response:
        release.wait(timeout=60)  # a GitHub that accepts the request and never answers (until the test ends)
        return Response("", status=204)

    # Its own threaded server: a blocked handler must not hold up the shared fixture's later tests.
    hanging = HTTPServer(threaded=True)
    hanging.expect_request(DISPATCH_PATH, method="POST").respond_with_handler(hang)
    hanging.start()
    monkeypatch.setenv(contracts.ENV_GITHUB_API_URL, hanging.url_for("/").rstrip("/"))
    context = LambdaContext(4.0, sleeps.now)  # a small fake budget; the real function has 60 s
    try:
        # The figures depend on how long the test took to reach the handler; the message names the budget.
        with pytest.raises(DispatchError, match=r"time budget of \S+s .*less a \S+s margin.*timed out") as raised:
            trigger(approved_event(), secrets, sleeps, context=context)
        left_ms = context.get_remaining_time_in_millis()
    finally:
        release.set()
        hanging.stop()

    # Lambda would still be running the function: the error reaches the log and the retries / DLQ.
    assert left_ms > 0, "the handler overran the invocation's remaining time"
    assert raised.value.status is None
    assert len(hanging.log) >= 1


def test_retries_stop_when_the_next_wait_would_overrun_the_budget(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
):
    httpserver.expect_request(DISPATCH_PATH, method="POST").respond_with_json({"message": "busy"}, status=503)
    # 12 s less a 3 s margin leaves 9 s: waits of 1, 2 and 4 s fit, the next 8 s wait does not.
    context = LambdaContext(12.0, sleeps.now)

    with pytest.raises(DispatchError, match=r"failed after 4 attempt\(s\).*leaves no room to wait 8s.*HTTP 503"):
        trigger(approved_event(), secrets, sleeps, context=context)

    assert sleeps == [1.0, 2.0, 4.0]
    assert len(httpserver.log) == 4


def test_no_time_left_makes_no_request(
    env: None, approved: str, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
):
    with pytest.raises(DispatchError, match=r"after 0 attempt\(s\).*time budget of [0-9.]+s .* is spent"):
        trigger(approved_event(), secrets, sleeps, context=LambdaContext(0.4, sleeps.now))

    assert httpserver.log == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        pytest.param(contracts.ENV_DEPLOY_REPOSITORY, "churn-model", "owner/repo", id="repository-without-owner"),
        pytest.param(contracts.ENV_DEPLOY_WORKFLOW, ".github/workflows/x.yml", "no directory", id="workflow-path"),
        pytest.param(contracts.ENV_DEPLOY_REF, "", "is not set", id="ref-unset"),
        pytest.param(contracts.ENV_MODEL_PACKAGE_GROUP_NAME, "", "is not set", id="group-unset"),
        pytest.param(contracts.ENV_GITHUB_API_URL, "ftp://github.example", r"http\(s\) URL", id="api-url-not-http"),
    ],
)
def test_bad_configuration_raises_naming_the_variable(
    env: None,
    token_secret: str,
    secrets: Any,
    sleeps: Sleeps,
    httpserver: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    message: str,
):
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError, match=message) as raised:
        trigger(approved_event(), secrets, sleeps)

    assert name in str(raised.value)
    assert httpserver.log == []


def test_api_url_defaults_to_github_com(monkeypatch: pytest.MonkeyPatch, env: None):
    monkeypatch.delenv(contracts.ENV_GITHUB_API_URL)

    config = github_trigger.load_config(os.environ)

    assert config.dispatch_url == f"https://api.github.com{DISPATCH_PATH}"


def test_handler_without_injected_clients_reads_registry_and_secret_through_its_own(
    env: None, approved: str, token_secret: str, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(github_trigger, "_secrets_client", None)
    monkeypatch.setattr(github_trigger, "_sagemaker_client", None)
    httpserver.expect_oneshot_request(DISPATCH_PATH, method="POST").respond_with_data("", status=204)

    result = github_trigger.handler(approved_event(), None)

    assert result["action"] == "dispatched"
    assert httpserver.log[0][0].headers["Authorization"] == f"Bearer {TOKEN}"
