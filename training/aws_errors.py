"""What a failed AWS call means for the person running the build, in one line: the call, the resource, what
AWS said and the likely fix.

training.register and training.model_build end every AWS failure with this line; training.teardown asks
is_not_found whether a resource it deletes is already gone. botocore only, so the build box needs nothing more.
"""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

# AWS error codes by their likely fix.
EXPIRED_CREDENTIAL_ERRORS = frozenset({"ExpiredToken", "ExpiredTokenException"})
CREDENTIAL_ERRORS = EXPIRED_CREDENTIAL_ERRORS | {
    "InvalidAccessKeyId", "InvalidClientTokenId", "InvalidToken", "MissingAuthenticationToken",
    "SignatureDoesNotMatch", "UnrecognizedClientException",
}
PERMISSION_ERRORS = frozenset({"AccessDenied", "AccessDeniedException", "AllAccessDisabled", "UnauthorizedOperation"})
THROTTLING_ERRORS = frozenset({"SlowDown", "Throttling", "ThrottlingException", "TooManyRequestsException"})
# Codes that say the named resource does not exist. SageMaker often says it with a ValidationException
# instead, whose message names the missing resource (see is_not_found).
NOT_FOUND_ERRORS = frozenset({"ResourceNotFound", "ObjectNotFoundException", "NoSuchBucket", "NoSuchKey", "NotFound"})
_NOT_FOUND_WORDS = ("could not find", "does not exist", "not found")


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError, "" for anything else."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_not_found(exc: ClientError) -> bool:
    """Whether AWS answered that the resource does not exist (or no longer does)."""
    code = error_code(exc)
    if code in NOT_FOUND_ERRORS:
        return True
    message = str(exc.response.get("Error", {}).get("Message", "")).lower()
    return code == "ValidationException" and any(words in message for words in _NOT_FOUND_WORDS)


def _said(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '') or exc}"
    return f"{type(exc).__name__}: {exc}"


def fix(call: str, resource: str, exc: BaseException, hint: str = "") -> str:
    """The likely fix: configuration, credentials, permissions and throttling first, else `hint`."""
    if isinstance(exc, NoRegionError):
        # boto3 reads AWS_DEFAULT_REGION (or the profile's region); AWS_REGION alone is not enough for it.
        return ("no AWS region is configured: export AWS_DEFAULT_REGION=<the stack's region> "
                "(or set region in your AWS profile)")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return ("no usable AWS credentials: sign in (e.g. `aws sso login`, or export AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) as an identity of the stack's account")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return "AWS could not be reached: check the network, the region (AWS_DEFAULT_REGION) and any AWS_ENDPOINT_URL"
    code = error_code(exc)
    if code in CREDENTIAL_ERRORS:
        return "the AWS credentials are invalid or expired: sign in again (e.g. `aws sso login`) or rerun the build"
    if code in PERMISSION_ERRORS:
        where = f" on {resource}" if resource else ""
        return (f"permissions: the identity running this needs {call}{where} (in a stack the train CodeBuild role and "
                "the GitHub deploy role have it: run `pulumi up` so they match this code; by hand, use a role with "
                "the same grants)")
    if code in THROTTLING_ERRORS:
        return "AWS throttled the request: run it again in a minute"
    return hint or ("see AWS's message above" if code else "see the message above")


def failure_line(call: str, resource: str, exc: BaseException, hint: str = "") -> str:
    """`<call> on <resource> failed (<code>: <message>); <fix>` as one line. `call` names the API call (as its
    IAM action where the caller knows the service); `resource` may be "" when the caller does not know it."""
    where = f" on {resource}" if resource else ""
    return one_line(f"{call}{where} failed ({_said(exc)}); {fix(call, resource, exc, hint)}")
