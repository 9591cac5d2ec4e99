import pytest

import contracts


def test_deployment_stages_round_trip_through_json():
    text = (
        '[{"name": "staging", "endpoint_name": "e-staging", "serverless": {"memory_size_mb": 3072}},'
        ' {"name": "production", "endpoint_name": "e-prod", "instances": {"instance_type": "ml.m5.large"},'
        ' "autoscaling": {"max_capacity": 4}, "rollout": {"alarm_names": ["e-prod-5xx"]}, "requires_approval": true}]'
    )
    stages = contracts.parse_deployment_stages(text)
    assert [s.name for s in stages] == ["staging", "production"]
    assert stages[0].serverless == contracts.Serverless(memory_size_mb=3072, max_concurrency=5)
    assert stages[1].rollout == contracts.Rollout(alarm_names=("e-prod-5xx",))
    assert contracts.parse_deployment_stages(contracts.dump_deployment_stages(stages)) == stages


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "non-empty JSON list"),
        ('[{"name": "s"}]', "endpoint_name must be a non-empty string"),
        ('[{"name": "s", "endpoint_name": "e"}]', "exactly one of 'serverless' or 'instances'"),
        ('[{"name": "s", "endpoint_name": "e", "serverless": {}, "rollout": {}}]', "need 'instances'"),
        # SageMaker refuses DataCaptureConfig on a serverless variant: fail at config time, not mid-deploy.
        ('[{"name": "s", "endpoint_name": "e", "serverless": {}, "data_capture": {}}]', "cannot capture"),
        ('[{"name": "s", "endpoint_name": "e", "serverless": {"memory": 1}}]', "serverless"),
        ('[{"name": "s", "endpoint_name": "e", "serverless": {}, "colour": 1}]', "unknown keys"),
    ],
)
def test_bad_deployment_stages_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        contracts.parse_deployment_stages(text)


def test_event_patterns_match_only_their_status_and_group():
    event = {
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Model Package State Change",
        "detail": {"ModelPackageGroupName": "g", "ModelApprovalStatus": "PendingManualApproval"},
    }
    assert contracts.matches_pattern(contracts.auto_approval_pattern("g"), event)
    assert not contracts.matches_pattern(contracts.github_trigger_pattern("g"), event)
    assert not contracts.matches_pattern(contracts.auto_approval_pattern("other"), event)


def _event(**detail):
    return {"source": "aws.sagemaker", "detail-type": "SageMaker Model Package State Change",
            "detail": {"ModelPackageGroupName": "g", "ModelApprovalStatus": "PendingManualApproval", **detail}}


@pytest.mark.parametrize(
    ("status", "delivered"),
    [
        ("PendingManualApproval", True),
        (["Approved", "PendingManualApproval"], True),  # EventBridge: an array matches when one element does
        (["Approved"], False),
        ("pendingmanualapproval", False),  # case-sensitive
        ("PendingManualApproval ", False),  # nothing is trimmed
        ("PendingManualApproval\n", False),
        ({"PendingManualApproval": 1}, False),
        ([["PendingManualApproval"]], False),  # an array inside an array is no value
        (None, False),
    ],
)
def test_patterns_match_values_as_eventbridge_does(status, delivered):
    event = _event(ModelApprovalStatus=status)
    assert contracts.matches_pattern(contracts.auto_approval_pattern("g"), event) is delivered


def test_pattern_values_match_only_the_same_json_type():
    # In EventBridge "1" is not 1 and true is not 1 (in Python True == 1).
    assert contracts.matches_pattern({"n": [1]}, {"n": 1})
    assert not contracts.matches_pattern({"n": [1]}, {"n": "1"})
    assert not contracts.matches_pattern({"n": [1]}, {"n": True})
    assert not contracts.matches_pattern({"n": ["1"]}, {"n": 1})


def test_pattern_mismatch_names_the_first_field_that_differs():
    pattern = contracts.auto_approval_pattern("g")
    assert contracts.pattern_mismatch(pattern, _event()) is None
    assert contracts.pattern_mismatch(pattern, {**_event(), "detail": "x"}) == "detail is not an object"
    assert contracts.pattern_mismatch(pattern, {k: v for k, v in _event().items() if k != "source"}) == (
        "source is missing")
    assert contracts.pattern_mismatch(pattern, _event(ModelPackageGroupName="G")) == (
        "detail.ModelPackageGroupName is 'G', the rule matches only ['g']")


def test_package_arn_names_its_group_case_insensitively_as_sagemaker_writes_it():
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn-models/3"
    assert contracts.package_arn_in_group(arn, "Churn-Models")
    assert not contracts.package_arn_in_group(arn, "churn")
    assert not contracts.package_arn_in_group(arn.replace("/3", ""), "churn-models")
    assert not contracts.package_arn_in_group(arn.replace("model-package/", "model-package-group/"), "churn-models")


def test_unknown_region_names_the_fix():
    with pytest.raises(KeyError, match="SKLEARN_IMAGE_ACCOUNTS"):
        contracts.inference_image_uri("xx-nowhere-1")
