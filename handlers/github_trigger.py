"""GitHub trigger: an Approved model package dispatches the deploy workflow (orchestrator github-actions).

EventBridge delivers "SageMaker Model Package State Change" events for our group with status Approved;
this handler POSTs a workflow_dispatch for DEPLOY_WORKFLOW on DEPLOY_REF with the package as inputs.
Failures raise, so the rule's retries and dead-letter queue see them (the sample this replaces logged
the HTTP error and returned success, and the deploy silently never happened).

Shipped at the root of the Lambda archive with contracts.py beside it, hence `import contracts`. It does
not import auto_approve.py: each handler is packaged on its own.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3

import contracts

LOGGER = logging.getLogger(__name__)
LOGGER.setLevel(logging.INFO)

USER_AGENT = f"{contracts.PROJECT}-github-trigger"
GITHUB_API_VERSION = "2022-11-28"
REQUEST_TIMEOUT_SECONDS = 8.0

MODEL_PACKAGE_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]{9,16}:[0-9]{12}:model-package/[A-Za-z0-9](?:-*[A-Za-z0-9]){0,62}/[0-9]+$"
)
REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
WORKFLOW = re.compile(r"^[A-Za-z0-9_.-]+$")  # a file name under .github/workflows or a numeric workflow id


class ConfigError(ValueError):
    """The function's environment is wrong; fix the stack config."""


class MalformedEventError(ValueError):
    pass


class TokenError(ValueError):
    """The Secrets Manager value holds no usable token. Messages never include the value."""


class DispatchError(RuntimeError):
    """GitHub did not accept the dispatch. Messages name the likely cause and never include the token."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --- Configuration --------------------------------------------------------------------------
@dataclass(frozen=True)
class TriggerConfig:
    group_name: str
    repository: str
    workflow: str
    ref: str
    token_secret_id: str
    api_url: str

    @property
    def dispatch_url(self) -> str:
        workflow = urllib.parse.quote(self.workflow, safe="")
        return f"{self.api_url}/repos/{self.repository}/actions/workflows/{workflow}/dispatches"


def load_config(environ: Mapping[str, str]) -> TriggerConfig:
    """Read and validate contracts.GITHUB_TRIGGER_ENV; ConfigError names the variable and the fix."""

    def required(name: str, hint: str) -> str:
        value = environ.get(name, "").strip()
        if not value:
            raise ConfigError(f"{name} is not set; {hint}")
        return value

    group = required(contracts.ENV_MODEL_PACKAGE_GROUP_NAME, "the program sets it to the stack's group")
    repository = required(contracts.ENV_DEPLOY_REPOSITORY, "expected owner/repo")
    if not REPOSITORY.match(repository):
        raise ConfigError(f"{contracts.ENV_DEPLOY_REPOSITORY} must look like owner/repo, got {repository!r}")
    workflow = required(
        contracts.ENV_DEPLOY_WORKFLOW, f"expected a workflow file name such as {contracts.DEPLOY_WORKFLOW_FILE!r}"
    )
    if not WORKFLOW.match(workflow):
        raise ConfigError(
            f"{contracts.ENV_DEPLOY_WORKFLOW} must be a workflow file name (e.g. {contracts.DEPLOY_WORKFLOW_FILE!r}, "
            f"no directory) or a workflow id, got {workflow!r}"
        )
    ref = required(contracts.ENV_DEPLOY_REF, "expected a branch or tag, e.g. main")
    secret_id = required(contracts.ENV_GITHUB_TOKEN_SECRET_ID, "expected the Secrets Manager id of the GitHub token")
    api_url = (environ.get(contracts.ENV_GITHUB_API_URL, "").strip() or contracts.DEFAULT_GITHUB_API_URL).rstrip("/")
    if urllib.parse.urlsplit(api_url).scheme not in ("https", "http") or not urllib.parse.urlsplit(api_url).netloc:
        raise ConfigError(
            f"{contracts.ENV_GITHUB_API_URL} must be an http(s) URL such as {contracts.DEFAULT_GITHUB_API_URL!r}, "
            f"got {api_url!r}"
        )
    return TriggerConfig(group, repository, workflow, ref, secret_id, api_url)


# --- Event ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackageStateChange:
    model_package_arn: str
    group_name: str
    approval_status: str


def parse_event(event: Any) -> PackageStateChange:
    """Typed view of the EventBridge event; MalformedEventError names the field at fault."""
    if not isinstance(event, dict):
        raise MalformedEventError(f"event must be a JSON object, got {type(event).__name__}")
    if event.get("source") != contracts.EVENT_SOURCE or event.get("detail-type") != contracts.EVENT_DETAIL_TYPE:
        raise MalformedEventError(
            f"expected source {contracts.EVENT_SOURCE!r} and detail-type {contracts.EVENT_DETAIL_TYPE!r}, "
            f"got source={event.get('source')!r} detail-type={event.get('detail-type')!r}"
        )
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise MalformedEventError("event.detail must be an object")
    fields = {}
    for key in ("ModelPackageArn", "ModelPackageGroupName", "ModelApprovalStatus"):
        value = detail.get(key)
        if not isinstance(value, str) or not value:
            raise MalformedEventError(f"detail.{key} must be a non-empty string")
        fields[key] = value
    if not MODEL_PACKAGE_ARN.match(fields["ModelPackageArn"]):
        raise MalformedEventError(
            "detail.ModelPackageArn is not a versioned model package ARN (arn:aws:sagemaker:<region>:<account>:"
            f"model-package/<group>/<version>): {fields['ModelPackageArn'][:200]!r}"
        )
    return PackageStateChange(fields["ModelPackageArn"], fields["ModelPackageGroupName"], fields["ModelApprovalStatus"])


# --- Token ----------------------------------------------------------------------------------
_secrets_client: Any = None


def default_secrets_client() -> Any:
    global _secrets_client
    if _secrets_client is None:
        _secrets_client = boto3.client("secretsmanager")
    return _secrets_client


def read_token(secrets: Any, secret_id: str) -> str:
    """The token from `{"token": "..."}` or a bare string. Errors describe the shape, never the value."""
    value = secrets.get_secret_value(SecretId=secret_id).get("SecretString")
    if not isinstance(value, str) or not value.strip():
        raise TokenError(
            f'secret {secret_id} has no SecretString; store the token as text or as JSON {{"token": "..."}}'
        )
    token: Any = value.strip()
    try:
        parsed = json.loads(token)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        token = parsed.get("token")
        if not isinstance(token, str) or not token.strip():
            raise TokenError(f"secret {secret_id} is a JSON object without a non-empty string 'token' key")
        token = token.strip()
    # A newline or space would corrupt the Authorization header (or inject another one).
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise TokenError(f"the token in secret {secret_id} contains whitespace or control characters")
    return token


# --- Dispatch -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    # Worst case 5 attempts x REQUEST_TIMEOUT_SECONDS + 15 s of waiting stays inside the function's 60 s timeout.
    total_wait: float = 15.0


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


def post_json(url: str, payload: Mapping[str, Any], headers: Mapping[str, str]) -> Response:
    """One POST; HTTP error statuses come back as a Response, connection failures raise URLError/OSError."""
    request = urllib.request.Request(  # noqa: S310 - scheme checked in load_config (http/https only)
        url, data=json.dumps(payload).encode(), headers={**headers, "Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as reply:  # noqa: S310 - as above
            return Response(reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Response(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait (Retry-After as seconds or HTTP date, or x-ratelimit-reset)."""
    value = headers.get("retry-after")
    if value is not None:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    if headers.get("x-ratelimit-remaining") == "0" and (headers.get("x-ratelimit-reset") or "").isdigit():
        return max(0.0, float(headers["x-ratelimit-reset"]) - (time.time() if now is None else now))
    return None


def _is_rate_limited(response: Response) -> bool:
    # GitHub answers a rate limit with 429, or with 403 plus Retry-After / x-ratelimit-remaining: 0.
    if response.status == 429:
        return True
    return response.status == 403 and (
        "retry-after" in response.headers or response.headers.get("x-ratelimit-remaining") == "0"
    )


def _github_message(response: Response, token: str) -> str:
    try:
        message = str(json.loads(response.body).get("message", ""))
    except (ValueError, AttributeError):
        message = response.body[:300].decode("utf-8", "replace")
    return redact(message[:300], token)


def redact(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def _client_error(response: Response, config: TriggerConfig, token: str) -> DispatchError:
    github_says = _github_message(response, token)
    causes = {
        401: f"the token is missing, expired or revoked; store a valid one in secret {config.token_secret_id}",
        403: f"the token lacks permission to dispatch workflows on {config.repository}: a fine-grained token needs "
        "'Actions: read and write', a classic token the 'repo' and 'workflow' scopes "
        "(or an organisation policy blocks the token)",
        404: f"repository {config.repository} or workflow {config.workflow} not found, or the token cannot see "
        "the repository (GitHub answers 404 for private repositories a token cannot read); check "
        f"{contracts.ENV_DEPLOY_REPOSITORY} and {contracts.ENV_DEPLOY_WORKFLOW}",
        422: f"GitHub rejected the dispatch: ref {config.ref!r} must exist and the workflow on that ref must have a "
        f"workflow_dispatch trigger accepting exactly the inputs {', '.join(contracts.DISPATCH_INPUTS)}",
    }
    cause = causes.get(response.status, "GitHub rejected the request")
    return DispatchError(
        f"workflow dispatch to {config.dispatch_url} failed with HTTP {response.status}: {cause} "
        f"(GitHub says: {github_says!r})",
        response.status,
    )


def dispatch(
    change: PackageStateChange,
    config: TriggerConfig,
    token: str,
    *,
    post: Callable[[str, Mapping[str, Any], Mapping[str, str]], Response] = post_json,
    sleep: Callable[[float], None] = time.sleep,
    policy: RetryPolicy = RetryPolicy(),
) -> int:
    """POST the workflow_dispatch; retry 5xx/429/rate limits and connection errors, raise on anything else."""
    values = {"model_package_arn": change.model_package_arn, "model_package_group": change.group_name}
    payload = {"ref": config.ref, "inputs": {name: values[name] for name in contracts.DISPATCH_INPUTS}}
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": GITHUB_API_VERSION,
        "User-Agent": USER_AGENT,
    }
    waited = 0.0
    for attempt in range(1, policy.attempts + 1):
        try:
            response: Response | None = post(config.dispatch_url, payload, headers)
            problem = ""
        except OSError as exc:  # URLError, timeouts, refused connections
            response = None
            problem = redact(f"connection failed: {exc}", token)
        if response is not None:
            if 200 <= response.status < 300:
                return response.status
            if not (response.status >= 500 or _is_rate_limited(response)):
                raise _client_error(response, config, token)
            problem = f"HTTP {response.status} ({_github_message(response, token)!r})"
        asked = retry_after_seconds(response.headers) if response is not None else None
        delay = asked if asked is not None else min(policy.base_delay * 2 ** (attempt - 1), policy.max_delay)
        if attempt == policy.attempts or waited + delay > policy.total_wait:
            raise DispatchError(
                f"workflow dispatch to {config.dispatch_url} failed after {attempt} attempt(s) and {waited:.0f}s "
                f"of waiting: {problem}; the event will be retried (then sent to the dead-letter queue)",
                response.status if response is not None else None,
            )
        log_json(
            action="retry",
            attempt=attempt,
            delay_seconds=delay,
            problem=problem,
            model_package_arn=change.model_package_arn,
        )
        sleep(delay)
        waited += delay
    raise AssertionError("unreachable")  # the loop returns or raises


def log_json(**fields: Any) -> None:
    LOGGER.info(json.dumps(fields, sort_keys=True, default=str))


def handle(
    event: Any,
    config: TriggerConfig,
    secrets: Any,
    *,
    sleep: Callable[[float], None] = time.sleep,
    post: Callable[[str, Mapping[str, Any], Mapping[str, str]], Response] = post_json,
) -> dict[str, Any]:
    change = parse_event(event)
    arn = change.model_package_arn
    # The rule already filters on group and status; re-checking keeps stray or replayed events harmless.
    if change.group_name != config.group_name or change.approval_status != contracts.STATUS_APPROVED:
        reason = f"group {change.group_name!r} status {change.approval_status!r} is not an Approved package of ours"
        log_json(action="ignored", model_package_arn=arn, reason=reason)
        return {"action": "ignored", "model_package_arn": arn}
    token = read_token(secrets, config.token_secret_id)
    status = dispatch(change, config, token, post=post, sleep=sleep)
    log_json(
        action="dispatched",
        model_package_arn=arn,
        repository=config.repository,
        workflow=config.workflow,
        ref=config.ref,
        status=status,
    )
    return {"action": "dispatched", "model_package_arn": arn, "status": status}


def handler(
    event: Any, context: Any, *, secrets: Any = None, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """Lambda entry point."""
    return handle(event, load_config(os.environ), secrets or default_secrets_client(), sleep=sleep)
