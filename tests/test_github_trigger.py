"""The GitHub trigger against a real local HTTP server (pytest-httpserver) and moto's Secrets Manager."""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import boto3
import pytest
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
ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn-test/3"
DISPATCH_PATH = f"/repos/{REPOSITORY}/actions/workflows/{WORKFLOW}/dispatches"
EVENTS = Path(__file__).parent / "events"


@functools.cache
def _session() -> boto3.Session:
    # Loading service models is most of a client's cost; one session (created inside the first test, under
    # the `aws` fixture's emulator settings, which never change) keeps the module fast.
    return boto3.Session()


def aws_client(name: str) -> Any:
    return _session().client(name)


def approved_event(group: str = GROUP, status: str = contracts.STATUS_APPROVED, arn: str = ARN) -> dict[str, Any]:
    event = json.loads((EVENTS / "model_package_state_change.json").read_text())
    event["detail"].update(ModelPackageArn=arn, ModelPackageGroupName=group, ModelApprovalStatus=status)
    return event


@pytest.fixture
def secrets(aws: str) -> Any:
    return aws_client("secretsmanager")


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
    """The injected sleep: records each requested delay instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def trigger(event: Any, secrets: Any, sleeps: Sleeps) -> dict[str, Any]:
    return github_trigger.handler(event, None, secrets=secrets, sleep=sleeps)


def dispatch_body() -> dict[str, Any]:
    return {"ref": REF, "inputs": {"model_package_arn": ARN, "model_package_group": GROUP}}


# --- The request ----------------------------------------------------------------------------
def test_approved_event_posts_workflow_dispatch_with_exact_path_headers_and_body(
    env: None, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
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
    env: None, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
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
    env: None, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer, secret_string: str
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
    env: None, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer, kwargs: dict[str, Any], message: str
):
    secrets.create_secret(Name=SECRET_ID, **kwargs)

    with pytest.raises(TokenError, match=message) as raised:
        trigger(approved_event(), secrets, sleeps)

    assert TOKEN not in str(raised.value) and "ghp_a" not in str(raised.value)
    assert httpserver.log == []


# --- Retries --------------------------------------------------------------------------------
def test_server_errors_are_retried_with_exponential_backoff(
    env: None, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
):
    httpserver.expect_ordered_request(DISPATCH_PATH, method="POST").respond_with_data("busy", status=502)
    httpserver.expect_ordered_request(DISPATCH_PATH, method="POST").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request(DISPATCH_PATH, method="POST").respond_with_data("", status=204)

    result = trigger(approved_event(), secrets, sleeps)

    assert result["status"] == 204
    assert sleeps == [1.0, 2.0]
    assert len(httpserver.log) == 3


def test_rate_limit_waits_as_long_as_retry_after_says(
    env: None, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
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
    env: None, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
):
    httpserver.expect_request(DISPATCH_PATH, method="POST").respond_with_json({"message": "Server Error"}, status=500)

    with pytest.raises(DispatchError, match=r"failed after 5 attempt\(s\).*HTTP 500") as raised:
        trigger(approved_event(), secrets, sleeps)

    assert raised.value.status == 500
    assert sleeps == [1.0, 2.0, 4.0, 8.0]
    assert len(httpserver.log) == 5


def test_retry_after_beyond_the_time_budget_raises_instead_of_waiting(
    env: None, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer
):
    httpserver.expect_request(DISPATCH_PATH, method="POST").respond_with_json(
        {"message": "rate limited"}, status=429, headers={"Retry-After": "3600"}
    )

    with pytest.raises(DispatchError, match="HTTP 429"):
        trigger(approved_event(), secrets, sleeps)

    assert sleeps == []
    assert len(httpserver.log) == 1


def test_unreachable_github_is_retried_then_raises(
    env: None, token_secret: str, secrets: Any, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
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
    env: None, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer, status: int, cause: str
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
    "event",
    [
        pytest.param(approved_event(status=contracts.STATUS_REJECTED), id="rejected"),
        pytest.param(approved_event(status=contracts.STATUS_PENDING), id="pending"),
        pytest.param(
            approved_event(
                group="other-team", arn="arn:aws:sagemaker:us-east-1:123456789012:model-package/other-team/1"
            ),
            id="other-group",
        ),
    ],
)
def test_events_that_are_not_our_approvals_are_ignored_with_a_log_line(
    env: None,
    token_secret: str,
    secrets: Any,
    sleeps: Sleeps,
    httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture,
    event: dict[str, Any],
):
    caplog.set_level(logging.INFO, logger=github_trigger.LOGGER.name)

    result = trigger(event, secrets, sleeps)

    assert result["action"] == "ignored"
    assert httpserver.log == []
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == github_trigger.LOGGER.name]
    assert [line["action"] for line in logged] == ["ignored"]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        pytest.param("Approved", "must be a JSON object", id="not-an-object"),
        pytest.param({**approved_event(), "source": "aws.codepipeline"}, "source", id="wrong-source"),
        pytest.param({**approved_event(), "detail": None}, "detail must be an object", id="no-detail"),
        pytest.param(
            {**approved_event(), "detail": {"ModelPackageGroupName": GROUP, "ModelApprovalStatus": "Approved"}},
            "ModelPackageArn",
            id="no-arn",
        ),
        pytest.param(approved_event(arn="arn:aws:s3:::bucket/key"), "not a versioned model package ARN", id="bad-arn"),
    ],
)
def test_malformed_events_raise_and_dispatch_nothing(
    env: None, token_secret: str, secrets: Any, sleeps: Sleeps, httpserver: HTTPServer, event: Any, message: str
):
    with pytest.raises(MalformedEventError, match=message):
        trigger(event, secrets, sleeps)

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


def test_handler_without_injected_client_reads_the_secret_through_its_own_client(
    env: None, token_secret: str, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(github_trigger, "_secrets_client", None)
    httpserver.expect_oneshot_request(DISPATCH_PATH, method="POST").respond_with_data("", status=204)

    result = github_trigger.handler(approved_event(), None)

    assert result["action"] == "dispatched"
    assert httpserver.log[0][0].headers["Authorization"] == f"Bearer {TOKEN}"
