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


def test_unknown_region_names_the_fix():
    with pytest.raises(KeyError, match="SKLEARN_IMAGE_ACCOUNTS"):
        contracts.inference_image_uri("xx-nowhere-1")
