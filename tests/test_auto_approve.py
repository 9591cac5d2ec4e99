"""The auto-approval handler against moto: decisions, replays, malformed events, the CodePipeline job path."""

from __future__ import annotations

import copy
import functools
import io
import json
import logging
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import contracts
from handlers import auto_approve
from handlers.auto_approve import Clients, ConfigError, MalformedEventError

GROUP = "churn-test"
OTHER_GROUP = "other-team"
BUCKET = "artifacts"
PIPELINE_BUCKET = "pipeline-artifacts"
EVENTS = Path(__file__).parent / "events"


@functools.cache
def _session() -> boto3.Session:
    # Loading service models is most of a client's cost; one session (created inside the first test, under
    # the `aws` fixture's emulator settings, which never change) keeps the module fast.
    return boto3.Session()


def aws_client(name: str) -> Any:
    return _session().client(name)


THRESHOLDS = {"accuracy": 0.8, "auc": 0.85}
GOOD = {"accuracy": 0.9, "auc": 0.92}


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def state_change(arn: str, group: str = GROUP, status: str = contracts.STATUS_PENDING) -> dict[str, Any]:
    event = load_event("model_package_state_change.json")
    event["resources"] = [arn]
    event["detail"].update(ModelPackageArn=arn, ModelPackageGroupName=group, ModelApprovalStatus=status)
    return event


def evaluation(metrics: dict[str, float]) -> bytes:
    """SageMaker model-quality statistics, as training/evaluate writes them."""
    section: dict[str, Any] = {name: {"value": value, "standard_deviation": 0.01} for name, value in metrics.items()}
    section["confusion_matrix"] = {"0": {"0": 50, "1": 3}, "1": {"0": 4, "1": 43}}
    section["receiver_operating_characteristic_curve"] = {"false_positive_rates": [0, 1], "true_positive_rates": [0, 1]}
    return json.dumps({"binary_classification_metrics": section}).encode()


class Registry:
    """Model packages and their metrics, created directly with boto3 in moto."""

    def __init__(self) -> None:
        self.sagemaker = aws_client("sagemaker")
        self.s3 = aws_client("s3")
        self.s3.create_bucket(Bucket=BUCKET)
        self.groups: set[str] = set()
        self.count = 0

    def add(
        self,
        metrics: dict[str, float] | None = None,
        *,
        body: bytes | None = None,
        metrics_uri: str | None = None,
        status: str = contracts.STATUS_PENDING,
        group: str = GROUP,
        description: str | None = None,
    ) -> str:
        if group not in self.groups:
            self.sagemaker.create_model_package_group(ModelPackageGroupName=group)
            self.groups.add(group)
        self.count += 1
        kwargs: dict[str, Any] = {}
        if metrics is not None or body is not None or metrics_uri is not None:
            key = f"models/{self.count}/{contracts.EVALUATION_FILE}"
            if metrics is not None or body is not None:
                self.s3.put_object(Bucket=BUCKET, Key=key, Body=body if body is not None else evaluation(metrics or {}))
            uri = metrics_uri or f"s3://{BUCKET}/{key}"
            kwargs["ModelMetrics"] = {"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": uri}}}
        arn = self.sagemaker.create_model_package(
            ModelPackageGroupName=group,
            ModelApprovalStatus=status,
            InferenceSpecification={
                "Containers": [
                    {
                        "Image": contracts.inference_image_uri("us-east-1"),
                        "ModelDataUrl": f"s3://{BUCKET}/models/{self.count}/{contracts.MODEL_ARCHIVE}",
                    }
                ],
                "SupportedContentTypes": list(contracts.CONTENT_TYPES),
                "SupportedResponseMIMETypes": ["text/csv"],
            },
            **kwargs,
        )["ModelPackageArn"]
        if description is not None:  # CreateModelPackage takes no description: record it as a person would
            self.sagemaker.update_model_package(
                ModelPackageArn=arn, ModelApprovalStatus=status, ApprovalDescription=description
            )
        return arn

    def package(self, arn: str) -> dict[str, Any]:
        return self.sagemaker.describe_model_package(ModelPackageName=arn)

    def status(self, arn: str) -> str:
        return self.package(arn)["ModelApprovalStatus"]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contracts.ENV_MODEL_PACKAGE_GROUP_NAME, GROUP)
    monkeypatch.setenv(contracts.ENV_APPROVAL_THRESHOLDS, json.dumps(THRESHOLDS))
    monkeypatch.setenv(contracts.ENV_CHAMPION_METRIC, "auc")
    monkeypatch.setenv(contracts.ENV_CHAMPION_MIN_DELTA, "0.01")


@pytest.fixture
def registry(aws: str, env: None) -> Registry:
    return Registry()


@pytest.fixture
def clients(aws: str) -> Clients:
    return Clients(sagemaker=aws_client("sagemaker"), s3=aws_client("s3"), codepipeline=aws_client("codepipeline"))


def run(event: Any, clients: Clients) -> dict[str, Any]:
    return auto_approve.handler(event, None, clients=clients)


# --- Decisions ------------------------------------------------------------------------------
def test_package_meeting_every_bar_is_approved_with_each_metric_in_the_reason(registry: Registry, clients: Clients):
    arn = registry.add(GOOD)

    result = run(state_change(arn), clients)

    package = registry.package(arn)
    assert (result["action"], package["ModelApprovalStatus"]) == ("decided", contracts.STATUS_APPROVED)
    assert "accuracy 0.9000 >= 0.8000 ok" in package["ApprovalDescription"]
    assert "auc 0.9200 >= 0.8500 ok" in package["ApprovalDescription"]
    assert "no approved champion yet" in package["ApprovalDescription"]


def test_package_below_one_bar_is_rejected_naming_that_metric(registry: Registry, clients: Clients):
    arn = registry.add({"accuracy": 0.79, "auc": 0.95})

    run(state_change(arn), clients)

    package = registry.package(arn)
    assert package["ModelApprovalStatus"] == contracts.STATUS_REJECTED
    assert "accuracy 0.7900 < 0.8000 FAIL" in package["ApprovalDescription"]


@pytest.mark.parametrize(
    ("champion_auc", "new_auc", "expected"),
    [
        pytest.param(0.90, 0.92, contracts.STATUS_APPROVED, id="beats-champion-by-more-than-delta"),
        # 0.94 - 0.93 is 0.0099999... in floats: a gain of exactly the delta must still pass.
        pytest.param(0.93, 0.94, contracts.STATUS_APPROVED, id="beats-champion-by-exactly-delta"),
        pytest.param(0.90, 0.905, contracts.STATUS_REJECTED, id="better-but-by-less-than-delta"),
        pytest.param(0.90, 0.90, contracts.STATUS_REJECTED, id="tie-with-a-positive-delta"),
        pytest.param(0.95, 0.93, contracts.STATUS_REJECTED, id="worse-than-champion"),
    ],
)
def test_package_must_beat_the_champion_by_the_minimum_delta(
    registry: Registry, clients: Clients, champion_auc: float, new_auc: float, expected: str
):
    champion = registry.add({"accuracy": 0.9, "auc": champion_auc}, status=contracts.STATUS_APPROVED)
    arn = registry.add({"accuracy": 0.9, "auc": new_auc})

    run(state_change(arn), clients)

    package = registry.package(arn)
    assert package["ModelApprovalStatus"] == expected
    assert f"champion {champion} auc {champion_auc:.4f}" in package["ApprovalDescription"]


def test_with_zero_delta_a_tie_with_the_champion_is_approved(registry: Registry, clients: Clients, monkeypatch):
    # Delta 0 means "no worse than the champion": a rebuild that changes only the inference code
    # (same data, same metrics) must stay deployable.
    monkeypatch.setenv(contracts.ENV_CHAMPION_MIN_DELTA, "0")
    registry.add({"accuracy": 0.9, "auc": 0.91}, status=contracts.STATUS_APPROVED)
    tie = registry.add({"accuracy": 0.9, "auc": 0.91})
    worse = registry.add({"accuracy": 0.9, "auc": 0.9099})

    run(state_change(tie), clients)
    run(state_change(worse), clients)

    assert registry.status(tie) == contracts.STATUS_APPROVED
    assert "gain +0.0000 >= 0.0000 ok" in registry.package(tie)["ApprovalDescription"]
    assert registry.status(worse) == contracts.STATUS_REJECTED


def test_champion_is_the_newest_approved_package(registry: Registry, clients: Clients):
    registry.add({"accuracy": 0.9, "auc": 0.99}, status=contracts.STATUS_APPROVED)  # older, and better
    newest = registry.add({"accuracy": 0.9, "auc": 0.88}, status=contracts.STATUS_APPROVED)
    registry.add({"accuracy": 0.9, "auc": 0.97}, status=contracts.STATUS_REJECTED)  # not a champion
    arn = registry.add({"accuracy": 0.9, "auc": 0.9})

    run(state_change(arn), clients)

    package = registry.package(arn)
    assert package["ModelApprovalStatus"] == contracts.STATUS_APPROVED
    assert f"champion {newest} auc 0.8800" in package["ApprovalDescription"]


def test_champion_without_readable_metrics_blocks_auto_approval(registry: Registry, clients: Clients):
    registry.add(body=b"not json", status=contracts.STATUS_APPROVED)
    arn = registry.add(GOOD)

    run(state_change(arn), clients)

    package = registry.package(arn)
    assert package["ModelApprovalStatus"] == contracts.STATUS_REJECTED
    assert "cannot compare auc" in package["ApprovalDescription"]


def test_package_without_metrics_is_rejected(registry: Registry, clients: Clients):
    arn = registry.add()

    run(state_change(arn), clients)

    package = registry.package(arn)
    assert package["ModelApprovalStatus"] == contracts.STATUS_REJECTED
    assert "no ModelMetrics.ModelQuality.Statistics.S3Uri" in package["ApprovalDescription"]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        pytest.param({"metrics_uri": f"s3://{BUCKET}/nowhere/evaluation.json"}, "does not exist", id="object-missing"),
        pytest.param({"metrics_uri": "https://example.com/evaluation.json"}, "not an s3://", id="not-an-s3-uri"),
        pytest.param({"body": b"{not json"}, "not valid JSON", id="not-json"),
        pytest.param({"body": b'{"regression_metrics": {}}'}, "no 'binary_classification_metrics'", id="wrong-format"),
        pytest.param({"metrics": {"accuracy": 0.99}}, "auc absent from metrics", id="metric-absent"),
    ],
)
def test_package_with_unusable_metrics_is_rejected_with_the_reason(
    registry: Registry, clients: Clients, kwargs: dict[str, Any], reason: str
):
    arn = registry.add(**kwargs)

    run(state_change(arn), clients)

    package = registry.package(arn)
    assert package["ModelApprovalStatus"] == contracts.STATUS_REJECTED
    assert reason in package["ApprovalDescription"]


def test_approval_description_fits_the_registry_limit(registry: Registry, clients: Clients, monkeypatch):
    many = {f"metric_{i:03d}_with_a_long_name": 0.5 for i in range(60)}
    monkeypatch.setenv(contracts.ENV_APPROVAL_THRESHOLDS, json.dumps(many))
    arn = registry.add(GOOD)

    run(state_change(arn), clients)

    package = registry.package(arn)
    assert package["ModelApprovalStatus"] == contracts.STATUS_REJECTED
    assert len(package["ApprovalDescription"]) == auto_approve.MAX_APPROVAL_DESCRIPTION


# --- Leaving things alone -------------------------------------------------------------------
def test_event_of_another_group_changes_nothing(registry: Registry, clients: Clients):
    arn = registry.add(GOOD, group=OTHER_GROUP)

    result = run(state_change(arn, group=OTHER_GROUP), clients)

    assert result["action"] == "ignored"
    assert registry.status(arn) == contracts.STATUS_PENDING


def test_event_naming_our_group_for_a_foreign_package_changes_nothing(registry: Registry, clients: Clients):
    arn = registry.add(GOOD, group=OTHER_GROUP)

    result = run(state_change(arn, group=GROUP), clients)

    assert result["action"] == "ignored"
    assert registry.status(arn) == contracts.STATUS_PENDING


@pytest.mark.parametrize("status", [contracts.STATUS_APPROVED, contracts.STATUS_REJECTED])
def test_replayed_event_leaves_a_decided_package_as_it_is(registry: Registry, clients: Clients, status: str):
    # A person decided (or the other caller did) between the event and this run.
    arn = registry.add(
        {"accuracy": 0.1, "auc": 0.1} if status == contracts.STATUS_APPROVED else GOOD,
        status=status,
        description="decided by jane",
    )

    result = run(state_change(arn), clients)

    package = registry.package(arn)
    assert result["action"] == "ignored"
    assert (package["ModelApprovalStatus"], package["ApprovalDescription"]) == (status, "decided by jane")


# --- Events the rule would not deliver: logged, never decided -------------------------------
ARN_1 = "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn-test/1"


def _malformed(mutate) -> Any:
    event = state_change(ARN_1)
    return mutate(event)


def _set(path: list[str], value: Any):
    def mutate(event: dict[str, Any]) -> dict[str, Any]:
        target = event
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return event

    return mutate


def _drop(path: list[str]):
    def mutate(event: dict[str, Any]) -> dict[str, Any]:
        target = event
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return event

    return mutate


SOURCE, DETAIL_TYPE = ["source"], ["detail-type"]
GROUP_FIELD, STATUS = ["detail", "ModelPackageGroupName"], ["detail", "ModelApprovalStatus"]


def _variants(path: list[str], right: str, wrong: str) -> list[Any]:
    """The ways one field of the rule's pattern can differ from what the rule delivers."""
    name = "-".join(path).removeprefix("detail-")
    field = ".".join(path)
    cases = [case for case in (right.upper(), right.lower()) if case != right]
    return [
        pytest.param(_set(path, wrong), field, id=f"{name}-wrong-value"),
        *(pytest.param(_set(path, case), field, id=f"{name}-case-{case}") for case in cases),
        pytest.param(_set(path, f" {right}"), field, id=f"{name}-leading-space"),
        pytest.param(_set(path, f"{right} "), field, id=f"{name}-trailing-space"),
        pytest.param(_set(path, f"{right}\n"), field, id=f"{name}-trailing-newline"),
        pytest.param(_set(path, right[:-1]), field, id=f"{name}-truncated"),
        pytest.param(_set(path, [wrong]), field, id=f"{name}-list-without-it"),
        pytest.param(_set(path, [right.upper(), f"{right} "]), field, id=f"{name}-list-of-near-misses"),
        pytest.param(_set(path, {"value": right}), field, id=f"{name}-object"),
        pytest.param(_set(path, None), field, id=f"{name}-null"),
        pytest.param(_set(path, 1), field, id=f"{name}-number"),
        pytest.param(_set(path, True), field, id=f"{name}-boolean"),
        pytest.param(_set(path, ""), field, id=f"{name}-empty"),
        pytest.param(_drop(path), field, id=f"{name}-missing"),
    ]


NOT_DELIVERED = [
    *_variants(SOURCE, contracts.EVENT_SOURCE, "aws.s3"),
    *_variants(DETAIL_TYPE, contracts.EVENT_DETAIL_TYPE, "SageMaker Model State Change"),
    *_variants(GROUP_FIELD, GROUP, OTHER_GROUP),
    *_variants(STATUS, contracts.STATUS_PENDING, contracts.STATUS_APPROVED),
    pytest.param(_set(STATUS, contracts.STATUS_REJECTED), "detail.ModelApprovalStatus", id="status-rejected"),
    pytest.param(_drop(["detail"]), "detail", id="detail-missing"),
    pytest.param(_set(["detail"], "x"), "detail", id="detail-a-string"),
    pytest.param(lambda e: {**e, "detail": [e["detail"]]}, "detail", id="detail-a-list-of-objects"),
]


@pytest.mark.parametrize(("mutate", "field"), NOT_DELIVERED)
def test_event_the_rule_would_not_deliver_decides_nothing_and_logs_why(
    registry: Registry, clients: Clients, caplog: pytest.LogCaptureFixture, mutate, field: str
):
    caplog.set_level(logging.INFO, logger=auto_approve.LOGGER.name)
    arn = registry.add(GOOD)  # metrics that would be approved at once
    event = _malformed(mutate)
    assert not contracts.matches_pattern(contracts.auto_approval_pattern(GROUP), event)

    result = run(event, clients)

    assert result["action"] == "ignored"
    assert registry.status(arn) == contracts.STATUS_PENDING
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == auto_approve.LOGGER.name]
    assert line["action"] == "ignored"
    assert f"{field} is " in line["reason"]


# --- Events the rule delivers but nobody can read: raise, decide nothing ---------------------
MALFORMED = [
    pytest.param(lambda e: [e], "must be a JSON object", id="not-an-object"),
    pytest.param(_drop(["detail", "ModelPackageArn"]), "ModelPackageArn", id="no-arn"),
    pytest.param(_set(["detail", "ModelPackageArn"], 7), "ModelPackageArn", id="arn-not-string"),
    pytest.param(_set(["detail", "ModelPackageArn"], ARN_1 + "\n"), r"versioned model package ARN.*/1\\n'",
                 id="arn-trailing-newline"),
    pytest.param(_set(["detail", "ModelPackageArn"], f" {ARN_1}"), "not a versioned model package ARN",
                 id="arn-leading-space"),
    pytest.param(_set(["detail", "ModelPackageArn"], ARN_1.upper()), "not a versioned model package ARN",
                 id="arn-upper-case"),
    pytest.param(_set(["detail", "ModelPackageArn"], [ARN_1]), "not a versioned model package ARN", id="arn-list"),
    pytest.param(
        _set(["detail", "ModelPackageArn"], "arn:aws:sagemaker:us-east-1:123456789012:endpoint/churn"),
        "not a versioned model package ARN",
        id="arn-of-an-endpoint",
    ),
    pytest.param(
        _set(["detail", "ModelPackageArn"], "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn-test"),
        "not a versioned model package ARN",
        id="unversioned-package-arn",
    ),
    # EventBridge delivers an event whose field is an array holding the wanted value; a decision needs one.
    pytest.param(_set(STATUS, [contracts.STATUS_PENDING]), "ModelApprovalStatus must be one string",
                 id="status-a-list-holding-it"),
    pytest.param(_set(GROUP_FIELD, [OTHER_GROUP, GROUP]), "ModelPackageGroupName must be one string",
                 id="group-a-list-holding-it"),
    pytest.param(_set(SOURCE, [contracts.EVENT_SOURCE]), "source must be one string", id="source-a-list-holding-it"),
    pytest.param(lambda e: {"CodePipeline.job": "job"}, "CodePipeline.job", id="job-not-object"),
    pytest.param(lambda e: {"CodePipeline.job": {"data": {}}}, "CodePipeline.job.id", id="job-without-id"),
]


@pytest.mark.parametrize(("mutate", "message"), MALFORMED)
def test_malformed_event_raises_and_approves_nothing(registry: Registry, clients: Clients, mutate, message: str):
    arn = registry.add(GOOD)
    assert arn == ARN_1  # the package the malformed events point at

    with pytest.raises(MalformedEventError, match=message):
        run(_malformed(mutate), clients)

    assert registry.status(arn) == contracts.STATUS_PENDING


# --- Property: only what the rule delivers can change a package ------------------------------
MISSING = object()


def _eventbridge_delivers(event: Any) -> bool:
    """The auto-approval rule's pattern, evaluated as AWS documents EventBridge matching.

    Written apart from contracts.matches_pattern on purpose: every field present; a string equal to the
    pattern's value (exact: case, whitespace, JSON type); or an array of which one element is.
    """

    def value_matches(value: Any, wanted: str) -> bool:
        if isinstance(value, list):
            return any(isinstance(item, str) and item == wanted for item in value)
        return isinstance(value, str) and value == wanted

    if not isinstance(event, dict) or not isinstance(event.get("detail", MISSING), dict):
        return False
    detail = event["detail"]
    return (value_matches(event.get("source", MISSING), contracts.EVENT_SOURCE)
            and value_matches(event.get("detail-type", MISSING), contracts.EVENT_DETAIL_TYPE)
            and value_matches(detail.get("ModelPackageGroupName", MISSING), GROUP)
            and value_matches(detail.get("ModelApprovalStatus", MISSING), contracts.STATUS_PENDING))


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, width=16),
                         st.text(max_size=12))


def _near_misses(right: str, others: list[str]) -> st.SearchStrategy[Any]:
    """The right value, values close to it, other real values and other JSON types."""
    spellings = st.sampled_from([
        right, right.upper(), right.lower(), right.swapcase(), f" {right}", f"{right} ", f"{right}\n",
        f"\t{right}", right[:-1], f"{right}x", right.replace("-", "_"), *others,
    ])
    single = st.one_of(spellings, JSON_SCALARS)
    return st.one_of(single, st.lists(single, max_size=3), st.dictionaries(st.text(max_size=4), single, max_size=2))


# Per field: keep it (most often, so the rule still matches some events), drop it, or replace it.
def _field(right: str, others: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(right), st.just(right), st.just(MISSING), _near_misses(right, others))


@st.composite
def mutated_events(draw: st.DrawFn, arn: str) -> dict[str, Any]:
    event = state_change(arn)
    replacements = {
        ("source",): draw(_field(contracts.EVENT_SOURCE, ["aws.s3", "aws.events"])),
        ("detail-type",): draw(_field(contracts.EVENT_DETAIL_TYPE, ["SageMaker Model State Change"])),
        ("detail", "ModelPackageGroupName"): draw(_field(GROUP, [OTHER_GROUP, ""])),
        ("detail", "ModelApprovalStatus"): draw(_field(contracts.STATUS_PENDING, [
            contracts.STATUS_APPROVED, contracts.STATUS_REJECTED, "PendingApproval"])),
        ("detail", "ModelPackageArn"): draw(st.one_of(st.just(arn), st.just(arn), _near_misses(arn, [
            arn.replace(f"/{GROUP}/", f"/{OTHER_GROUP}/")]))),
    }
    for path, value in replacements.items():
        target = event
        for key in path[:-1]:
            target = target[key]
        if value is MISSING:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    event["detail"].update(draw(st.dictionaries(st.sampled_from(["Extra", "ModelPackageVersion"]), JSON_SCALARS,
                                                max_size=1)))
    whole_detail = draw(st.one_of(st.just(event["detail"]), st.just(event["detail"]), st.just(event["detail"]),
                                  JSON_SCALARS, st.just([event["detail"]]), st.just(MISSING)))
    if whole_detail is MISSING:
        del event["detail"]
    else:
        event["detail"] = whole_detail
    return event


def test_no_event_the_rule_would_not_deliver_ever_changes_a_package(registry: Registry, clients: Clients):
    pattern = contracts.auto_approval_pattern(GROUP)
    state = {"arn": registry.add(GOOD), "decided": 0, "ignored": 0}

    # derandomize in CI: the same examples every run there; other runs explore new ones.
    @settings(max_examples=200, deadline=None, database=None, derandomize=bool(os.environ.get("CI")),
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def property_holds(data: st.DataObject) -> None:
        arn = state["arn"]
        event = data.draw(mutated_events(arn))
        delivered = _eventbridge_delivers(event)
        assert contracts.matches_pattern(pattern, event) == delivered  # contracts matches as EventBridge does
        try:
            result = run(event, clients)
        except MalformedEventError:
            result = {"action": "malformed"}
        status = registry.status(arn)
        if not delivered:
            assert (result["action"], status) == ("ignored", contracts.STATUS_PENDING), event
            state["ignored"] += 1
        elif status != contracts.STATUS_PENDING:
            state["decided"] += 1
            state["arn"] = registry.add(GOOD)  # the next examples need a pending package again

    property_holds()

    # Both sides of the property were exercised: some events were delivered and decided, some ignored.
    assert state["decided"] > 0 and state["ignored"] > 0, state


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        pytest.param(contracts.ENV_APPROVAL_THRESHOLDS, "accuracy>0.8", "not valid JSON", id="thresholds-not-json"),
        pytest.param(contracts.ENV_APPROVAL_THRESHOLDS, "[0.8]", "non-empty JSON object", id="thresholds-a-list"),
        pytest.param(contracts.ENV_APPROVAL_THRESHOLDS, "{}", "non-empty JSON object", id="thresholds-empty"),
        pytest.param(contracts.ENV_APPROVAL_THRESHOLDS, '{"auc": 1.5}', "between 0 and 1", id="threshold-above-1"),
        pytest.param(contracts.ENV_APPROVAL_THRESHOLDS, '{"auc": -0.1}', "between 0 and 1", id="threshold-negative"),
        pytest.param(contracts.ENV_APPROVAL_THRESHOLDS, '{"auc": "0.9"}', "between 0 and 1", id="threshold-a-string"),
        pytest.param(contracts.ENV_CHAMPION_MIN_DELTA, "a little", "between 0 and 1", id="delta-not-a-number"),
        pytest.param(contracts.ENV_CHAMPION_MIN_DELTA, "nan", "between 0 and 1", id="delta-nan"),
        pytest.param(contracts.ENV_CHAMPION_MIN_DELTA, "2", "between 0 and 1", id="delta-above-1"),
        pytest.param(contracts.ENV_MODEL_PACKAGE_GROUP_NAME, "", "is not set", id="group-unset"),
    ],
)
def test_bad_configuration_raises_naming_the_variable_and_decides_nothing(
    registry: Registry, clients: Clients, monkeypatch, name: str, value: str, message: str
):
    arn = registry.add(GOOD)
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError, match=message) as raised:
        run(state_change(arn), clients)

    assert name in str(raised.value)
    assert registry.status(arn) == contracts.STATUS_PENDING


# --- AWS failures raise ---------------------------------------------------------------------
def test_throttled_registry_call_raises_and_leaves_the_package_pending(registry: Registry, clients: Clients):
    arn = registry.add(GOOD)
    throttled = aws_client("sagemaker")
    with Stubber(throttled) as stub:
        stub.add_client_error("describe_model_package", "ThrottlingException", http_status_code=400)
        with pytest.raises(ClientError, match="ThrottlingException"):
            run(state_change(arn), Clients(sagemaker=throttled, s3=clients.s3))

    assert registry.status(arn) == contracts.STATUS_PENDING


def test_access_denied_on_metrics_raises_instead_of_rejecting(registry: Registry, clients: Clients):
    # Our role's missing permission is not the model's fault: keep it pending and let the DLQ alert.
    arn = registry.add(GOOD)
    denied = aws_client("s3")
    with Stubber(denied) as stub:
        stub.add_client_error("get_object", "AccessDenied", http_status_code=403)
        with pytest.raises(ClientError, match="AccessDenied"):
            run(state_change(arn), Clients(sagemaker=clients.sagemaker, s3=denied))

    assert registry.status(arn) == contracts.STATUS_PENDING


# --- CodePipeline job path ------------------------------------------------------------------
JOB_ID = "11111111-abcd-1111-abcd-111111abcdef"


def put_artifact(key: str, files: dict[str, str]) -> None:
    s3 = aws_client("s3")
    if PIPELINE_BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=PIPELINE_BUCKET)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    s3.put_object(Bucket=PIPELINE_BUCKET, Key=key, Body=buffer.getvalue())


def job_event(key: str = "sagemaker-mlops/BuildArtif/abc123") -> dict[str, Any]:
    event = load_event("codepipeline_job.json")
    event["CodePipeline.job"]["data"]["inputArtifacts"][0]["location"]["s3Location"] = {
        "bucketName": PIPELINE_BUCKET,
        "objectKey": key,
    }
    return event


CREDENTIALS = load_event("codepipeline_job.json")["CodePipeline.job"]["data"]["artifactCredentials"]


class JobResults:
    """A codepipeline client whose job-result calls (which moto lacks) go to botocore's Stubber."""

    def __init__(self) -> None:
        self.client = aws_client("codepipeline")
        self.stub = Stubber(self.client)
        self.sent: list[dict[str, Any]] = []
        self.client.meta.events.register("provide-client-params.codepipeline.*", self._record)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.sent.append(copy.deepcopy(params))

    def expect_success(self) -> None:
        self.stub.add_response("put_job_success_result", {}, {"jobId": JOB_ID, "executionDetails": ANY})

    def expect_failure(self, failure_type: str) -> None:
        self.stub.add_response(
            "put_job_failure_result", {}, {"jobId": JOB_ID, "failureDetails": {"type": failure_type, "message": ANY}}
        )

    def expect_job_already_finished(self, operation: str) -> None:
        self.stub.add_client_error(operation, "InvalidJobStateException", "job is not in a state to accept a result")

    @property
    def message(self) -> str:
        return self.sent[-1]["failureDetails"]["message"]


@pytest.fixture
def job_results(aws: str) -> Iterator[JobResults]:
    results = JobResults()
    with results.stub:
        yield results
        results.stub.assert_no_pending_responses()


@pytest.fixture
def job_clients(clients: Clients, job_results: JobResults) -> Clients:
    return Clients(sagemaker=clients.sagemaker, s3=clients.s3, codepipeline=job_results.client)


def test_pipeline_job_decides_a_pending_package_and_reports_success(
    registry: Registry, job_clients: Clients, job_results: JobResults
):
    arn = registry.add(GOOD)
    put_artifact("sagemaker-mlops/BuildArtif/abc123", {contracts.MODEL_PACKAGE_ARN_FILE: arn + "\n"})
    job_results.expect_success()

    result = run(job_event(), job_clients)

    assert result["action"] == "job_succeeded"
    assert registry.status(arn) == contracts.STATUS_APPROVED
    assert arn in job_results.sent[-1]["executionDetails"]["summary"]


def test_pipeline_job_for_a_package_it_rejects_reports_failure_with_the_reason(
    registry: Registry, job_clients: Clients, job_results: JobResults
):
    arn = registry.add({"accuracy": 0.5, "auc": 0.9})
    put_artifact("sagemaker-mlops/BuildArtif/abc123", {contracts.MODEL_PACKAGE_ARN_FILE: arn})
    job_results.expect_failure("JobFailed")

    result = run(job_event(), job_clients)

    assert result["action"] == "job_failed"
    assert registry.status(arn) == contracts.STATUS_REJECTED
    assert "accuracy 0.5000 < 0.8000 FAIL" in job_results.message


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(contracts.STATUS_APPROVED, "success"), (contracts.STATUS_REJECTED, "failure")],
)
def test_pipeline_job_for_an_already_decided_package_reports_that_decision_unchanged(
    registry: Registry, job_clients: Clients, job_results: JobResults, status: str, outcome: str
):
    # Metrics that would have decided the other way: the recorded decision wins.
    metrics = {"accuracy": 0.1, "auc": 0.1} if status == contracts.STATUS_APPROVED else GOOD
    arn = registry.add(metrics, status=status, description="decided by jane")
    put_artifact("sagemaker-mlops/BuildArtif/abc123", {contracts.MODEL_PACKAGE_ARN_FILE: arn})
    if outcome == "success":
        job_results.expect_success()
    else:
        job_results.expect_failure("JobFailed")

    run(job_event(), job_clients)

    package = registry.package(arn)
    assert (package["ModelApprovalStatus"], package["ApprovalDescription"]) == (status, "decided by jane")


@pytest.mark.parametrize(
    ("metrics", "operation"),
    [(GOOD, "put_job_success_result"), ({"accuracy": 0.5, "auc": 0.9}, "put_job_failure_result")],
)
def test_replayed_job_that_already_has_its_result_ends_quietly(
    registry: Registry, job_clients: Clients, job_results: JobResults, metrics: dict[str, float], operation: str
):
    # Lambda retries an async invocation that timed out after reporting; the job is finished by then.
    arn = registry.add(metrics)
    put_artifact("sagemaker-mlops/BuildArtif/abc123", {contracts.MODEL_PACKAGE_ARN_FILE: arn})
    job_results.expect_job_already_finished(operation)

    result = run(job_event(), job_clients)

    assert result["action"] == "job_already_finished"
    assert registry.status(arn) != contracts.STATUS_PENDING  # the decision stands on the package


def test_other_job_result_errors_raise(registry: Registry, job_clients: Clients, job_results: JobResults):
    arn = registry.add(GOOD)
    put_artifact("sagemaker-mlops/BuildArtif/abc123", {contracts.MODEL_PACKAGE_ARN_FILE: arn})
    job_results.stub.add_client_error("put_job_success_result", "JobNotFoundException")

    with pytest.raises(ClientError, match="JobNotFoundException"):
        run(job_event(), job_clients)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param({"other.txt": "x"}, "no input artifact contains model_package_arn.txt", id="arn-file-missing"),
        pytest.param(
            {contracts.MODEL_PACKAGE_ARN_FILE: "arn:aws:s3:::bucket"}, "not a versioned model package ARN", id="bad-arn"
        ),
        pytest.param(
            {contracts.MODEL_PACKAGE_ARN_FILE: "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn-test/99"},
            "does not exist",
            id="unknown-package",
        ),
    ],
)
def test_pipeline_job_with_a_bad_artifact_fails_the_job_and_changes_nothing(
    registry: Registry, job_clients: Clients, job_results: JobResults, files: dict[str, str], message: str
):
    arn = registry.add(GOOD)
    put_artifact("sagemaker-mlops/BuildArtif/abc123", files)
    job_results.expect_failure("ConfigurationError")

    run(job_event(), job_clients)

    assert message in job_results.message
    assert registry.status(arn) == contracts.STATUS_PENDING


def test_pipeline_job_for_a_package_of_another_group_fails_the_job(
    registry: Registry, job_clients: Clients, job_results: JobResults
):
    arn = registry.add(GOOD, group=OTHER_GROUP)
    put_artifact("sagemaker-mlops/BuildArtif/abc123", {contracts.MODEL_PACKAGE_ARN_FILE: arn})
    job_results.expect_failure("ConfigurationError")

    run(job_event(), job_clients)

    assert f"not this stack's group '{GROUP}'" in job_results.message
    assert registry.status(arn) == contracts.STATUS_PENDING


def test_malformed_job_with_a_readable_id_fails_the_job_instead_of_raising(
    registry: Registry, job_clients: Clients, job_results: JobResults
):
    event = job_event()
    del event["CodePipeline.job"]["data"]["artifactCredentials"]["sessionToken"]
    job_results.expect_failure("ConfigurationError")

    result = run(event, job_clients)

    assert result["action"] == "job_failed"
    assert "artifactCredentials.sessionToken must be a non-empty string" in job_results.message


def test_pipeline_job_reads_the_artifact_with_the_job_credentials(
    registry: Registry, job_clients: Clients, job_results: JobResults
):
    arn = registry.add(GOOD)
    put_artifact("sagemaker-mlops/BuildArtif/abc123", {contracts.MODEL_PACKAGE_ARN_FILE: arn})
    job_results.expect_success()
    used: list[tuple[str, str, str]] = []

    def artifact_s3(credentials: auto_approve.ArtifactCredentials) -> Any:
        used.append((credentials.access_key_id, credentials.secret_access_key, credentials.session_token))
        client = auto_approve.artifact_s3_client(credentials)
        signed_with = client._request_signer._credentials  # the real client the handler would use
        assert (signed_with.access_key, signed_with.token) == (credentials.access_key_id, credentials.session_token)
        return client

    run(job_event(), Clients(job_clients.sagemaker, job_clients.s3, job_clients.codepipeline, artifact_s3))

    assert used == [(CREDENTIALS["accessKeyId"], CREDENTIALS["secretAccessKey"], CREDENTIALS["sessionToken"])]


def test_job_credentials_never_reach_the_logs_or_the_job_result(
    registry: Registry, job_clients: Clients, job_results: JobResults, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    approved = registry.add(GOOD)
    put_artifact("approved", {contracts.MODEL_PACKAGE_ARN_FILE: approved})
    job_results.expect_success()
    job_results.expect_failure("ConfigurationError")
    job_results.expect_failure("ConfigurationError")
    malformed = job_event("approved")
    malformed["CodePipeline.job"]["data"]["artifactCredentials"]["sessionToken"] = 42

    run(job_event("approved"), job_clients)
    run(job_event("missing-artifact"), job_clients)
    run(malformed, job_clients)

    assert any("decided" in record.getMessage() for record in caplog.records)  # the decision was logged
    sent = json.dumps(job_results.sent)
    for secret in CREDENTIALS.values():
        assert secret not in caplog.text
        assert secret not in sent
    assert CREDENTIALS["secretAccessKey"] not in repr(auto_approve.parse_event(job_event(), GROUP))


def test_decision_is_logged_as_one_json_line_with_the_package_and_reason(
    registry: Registry, clients: Clients, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger=auto_approve.LOGGER.name)
    arn = registry.add({"accuracy": 0.5, "auc": 0.9})

    run(state_change(arn), clients)

    decisions = [json.loads(r.getMessage()) for r in caplog.records if r.name == auto_approve.LOGGER.name]
    assert [(d["action"], d["model_package_arn"], d["decision"]) for d in decisions] == [
        ("decided", arn, contracts.STATUS_REJECTED)
    ]
    assert "accuracy 0.5000 < 0.8000 FAIL" in decisions[0]["reason"]


def test_handler_without_injected_clients_creates_them_once_per_container(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(auto_approve, "_clients", None)
    first, second = registry.add(GOOD), registry.add({"accuracy": 0.9, "auc": 0.95})  # second beats the first

    auto_approve.handler(state_change(first), None)
    created = auto_approve._clients
    auto_approve.handler(state_change(second), None)

    assert created is not None and auto_approve._clients is created
    assert [registry.status(first), registry.status(second)] == [contracts.STATUS_APPROVED] * 2
