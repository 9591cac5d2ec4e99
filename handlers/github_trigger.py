"""GitHub trigger: an Approved model package dispatches the deploy workflow (orchestrator github-actions).

EventBridge delivers "SageMaker Model Package State Change" events for our group with status Approved;
this handler POSTs a workflow_dispatch for DEPLOY_WORKFLOW on DEPLOY_REF with the package as inputs.
It acts only on what its rule delivers (contracts.github_trigger_pattern, matched as EventBridge does)
and on what the registry says now: the package must exist, be in this stack's group and be Approved
when the handler asks (DescribeModelPackage); otherwise it logs why and dispatches nothing.
Failures raise, so the rule's retries and dead-letter queue see them (the sample this replaces logged
the HTTP error and returned success, and the deploy silently never happened). Every request and wait
fits the invocation's remaining time less a margin, so a hanging GitHub ends in a DispatchError that
Lambda records, never in a timeout mid-retry.

Shipped at the root of the Lambda archive with contracts.py beside it, hence `import contracts`. It does
not import auto_approve.py: each handler is packaged on its own.
"""

from __future__ import annotations

import email.utils
import http.client
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
from botocore.config import Config
from botocore.exceptions import ClientError

import contracts

LOGGER = logging.getLogger(__name__)
LOGGER.setLevel(logging.INFO)

USER_AGENT = f"{contracts.PROJECT}-github-trigger"
GITHUB_API_VERSION = "2022-11-28"
REQUEST_TIMEOUT_SECONDS = 8.0
# The budget is the invocation's remaining time less this margin (at most a quarter of it), so the error
# is raised and logged while Lambda still runs the function.
BUDGET_MARGIN_SECONDS = 5.0
# Outside Lambda (no context): the program's function timeout (components.github, 60 s) less the margin.
DEFAULT_BUDGET_SECONDS = 55.0
# A request is not started with less time left than this: it could not get an answer.
MIN_REQUEST_SECONDS = 0.5
# The AWS calls (DescribeModelPackage, GetSecretValue) fail fast too, so the budget stays for GitHub:
# worst case 2 attempts x (3 + 5) s each.
AWS_CONFIG = Config(connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 2})

REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
WORKFLOW = re.compile(r"^[A-Za-z0-9_.-]+$")  # a file name under .github/workflows or a numeric workflow id


class ConfigError(ValueError):
    """The function's environment is wrong; fix the stack config."""


# An Approved event this handler cannot read; the event reading (contracts.read_state_change) raises it.
MalformedEventError = contracts.MalformedEventError


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


# --- Registry -------------------------------------------------------------------------------
def registry_objection(sagemaker: Any, change: contracts.PackageStateChange, config: TriggerConfig) -> str | None:
    """Why the registry does not back this dispatch now, or None when the package is ours and Approved.

    The event is a notice, not the record: by the time it arrives the package may have been rejected,
    and an ARN of another group may travel under our group's name. AWS errors other than "not found"
    raise, so the retries and the dead-letter queue see them.
    """
    arn = change.model_package_arn
    if not contracts.package_arn_in_group(arn, config.group_name):
        # Our role may read only our group's packages: in AWS, describing this one would be AccessDenied.
        return f"the ARN names a package of another group, not {config.group_name!r}"
    try:
        package = sagemaker.describe_model_package(ModelPackageName=arn)
    except ClientError as exc:
        if contracts.is_not_found(exc):
            return "the package does not exist in the registry"
        raise
    group = package.get("ModelPackageGroupName")
    if group != config.group_name:  # the event's group is ours: the rule's pattern matched it exactly
        return f"the registry has the package in group {group!r}, not this stack's group {config.group_name!r}"
    status = package.get("ModelApprovalStatus")
    if status != contracts.STATUS_APPROVED:
        return f"the package is {status!r} in the registry now, not {contracts.STATUS_APPROVED!r}"
    return None


# --- Clients --------------------------------------------------------------------------------
_secrets_client: Any = None
_sagemaker_client: Any = None


def default_secrets_client() -> Any:
    global _secrets_client
    if _secrets_client is None:
        _secrets_client = boto3.client("secretsmanager", config=AWS_CONFIG)
    return _secrets_client


def default_sagemaker_client() -> Any:
    global _sagemaker_client
    if _sagemaker_client is None:
        _sagemaker_client = boto3.client("sagemaker", config=AWS_CONFIG)
    return _sagemaker_client


# --- Token ----------------------------------------------------------------------------------


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


class Budget:
    """The time this invocation may spend before it must have answered or raised, on a monotonic clock.

    str() names it for error messages, e.g. "the time budget of 55.0s".
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic, origin: str = "") -> None:
        self._clock = clock
        self._deadline = clock() + seconds
        self._name = f"the time budget of {seconds:.1f}s{origin}"

    @classmethod
    def from_context(cls, context: Any, clock: Callable[[], float] = time.monotonic) -> Budget:
        """The Lambda context's remaining time less the margin; DEFAULT_BUDGET_SECONDS without a context."""
        remaining_ms: Any = getattr(context, "get_remaining_time_in_millis", None)
        if remaining_ms is None:
            return cls(DEFAULT_BUDGET_SECONDS, clock)
        remaining = max(0.0, float(remaining_ms()) / 1000.0)
        margin = min(BUDGET_MARGIN_SECONDS, remaining / 4)
        return cls(remaining - margin, clock, f" (the invocation's remaining time less a {margin:.1f}s margin)")

    def remaining(self) -> float:
        return max(0.0, self._deadline - self._clock())

    def __str__(self) -> str:
        return self._name


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


Post = Callable[[str, Mapping[str, Any], Mapping[str, str], float], Response]


def post_json(url: str, payload: Mapping[str, Any], headers: Mapping[str, str], timeout: float) -> Response:
    """One POST; HTTP error statuses come back as a Response, connection failures raise OSError/HTTPException.

    `timeout` bounds the connect and each socket read, so a server that never answers costs at most that.
    """
    request = urllib.request.Request(  # noqa: S310 - scheme checked in load_config (http/https only)
        url, data=json.dumps(payload).encode(), headers={**headers, "Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 - as above
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
    change: contracts.PackageStateChange,
    config: TriggerConfig,
    token: str,
    *,
    budget: Budget,
    post: Post = post_json,
    sleep: Callable[[float], None] = time.sleep,
    policy: RetryPolicy = RetryPolicy(),
) -> int:
    """POST the workflow_dispatch; retry 5xx/429/rate limits and connection errors, raise on anything else.

    Each wait and request's timeout fit what is left of `budget`: before every attempt, the wait it needs
    (none for the first) plus the shortest useful request must fit, or DispatchError says so at once instead
    of waiting for Lambda to kill the invocation.
    """
    values = {"model_package_arn": change.model_package_arn, "model_package_group": change.group_name}
    payload = {"ref": config.ref, "inputs": {name: values[name] for name in contracts.DISPATCH_INPUTS}}
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": GITHUB_API_VERSION,
        "User-Agent": USER_AGENT,
    }
    waited = delay = 0.0
    problem = "no request made"
    status: int | None = None

    def give_up(attempts: int, stop: str) -> DispatchError:
        return DispatchError(
            f"workflow dispatch to {config.dispatch_url} failed after {attempts} attempt(s) and {waited:.0f}s of "
            f"waiting, {stop}: {problem}; the event will be retried (then sent to the dead-letter queue)",
            status,
        )

    for attempt in range(1, policy.attempts + 1):
        if budget.remaining() < delay + MIN_REQUEST_SECONDS:
            raise give_up(attempt - 1, f"{budget} leaves no room to wait {delay:.0f}s" if delay
                          else f"{budget} is spent")
        if delay:
            log_json(action="retry", attempt=attempt - 1, delay_seconds=delay, problem=problem,
                     model_package_arn=change.model_package_arn)
            sleep(delay)
            waited += delay
        try:
            response: Response | None = post(config.dispatch_url, payload, headers,
                                             min(REQUEST_TIMEOUT_SECONDS, budget.remaining()))
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, refused or dropped connections
            response = None
            problem = redact(f"connection failed: {exc or type(exc).__name__}", token)
        if response is not None:
            if 200 <= response.status < 300:
                return response.status
            if not (response.status >= 500 or _is_rate_limited(response)):
                raise _client_error(response, config, token)
            problem = f"HTTP {response.status} ({_github_message(response, token)!r})"
        status = response.status if response is not None else None
        asked = retry_after_seconds(response.headers) if response is not None else None
        delay = asked if asked is not None else min(policy.base_delay * 2 ** (attempt - 1), policy.max_delay)
    raise give_up(policy.attempts, "no attempts left")


def log_json(**fields: Any) -> None:
    LOGGER.info(json.dumps(fields, sort_keys=True, default=str))


def handle(
    event: Any,
    config: TriggerConfig,
    secrets: Any,
    sagemaker: Any,
    *,
    budget: Budget,
    sleep: Callable[[float], None] = time.sleep,
    post: Post = post_json,
) -> dict[str, Any]:
    parsed = contracts.read_state_change(event, contracts.github_trigger_pattern(config.group_name))
    if isinstance(parsed, str):
        reason = f"not an event the GitHub-trigger rule delivers: {parsed}"
        log_json(action="ignored", model_package_arn=contracts.arn_for_log(event), reason=reason)
        return {"action": "ignored", "reason": reason}
    arn = parsed.model_package_arn
    objection = registry_objection(sagemaker, parsed, config)
    if objection is not None:
        log_json(action="ignored", model_package_arn=arn, reason=objection)
        return {"action": "ignored", "model_package_arn": arn, "reason": objection}
    token = read_token(secrets, config.token_secret_id)
    status = dispatch(parsed, config, token, post=post, sleep=sleep, budget=budget)
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
    event: Any,
    context: Any,
    *,
    secrets: Any = None,
    sagemaker: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Lambda entry point; the budget starts from context.get_remaining_time_in_millis()."""
    budget = Budget.from_context(context, clock)
    return handle(event, load_config(os.environ), secrets or default_secrets_client(),
                  sagemaker or default_sagemaker_client(), budget=budget, sleep=sleep)
