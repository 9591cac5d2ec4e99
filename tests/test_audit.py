"""AuditTrail (components/audit.py): CloudTrail may write only this trail's logs, under AWSLogs/<account>/."""

from __future__ import annotations

import json
from typing import Any

import pytest
from program_harness import ACCOUNT_ID, ProgramGraph, run_program

from components.audit import trail_arn, trail_bucket_policy
from policy import rules

BUCKET_ARN = "arn:aws:s3:::audit-bucket"
TRAIL = "arn:aws:cloudtrail:us-east-1:123456789012:trail/sagemaker-mlops-prod-audit"


def _statements(policy: str) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in json.loads(policy)["Statement"]}


@pytest.fixture(scope="module")
def prod() -> ProgramGraph:
    return run_program("prod")


def test_cloudtrail_may_read_the_acl_for_this_trail_only() -> None:
    # The statement of AWS's documented trail bucket policy, with the aws:SourceArn guard against
    # another account's trail delivering into (and billing) this bucket.
    assert _statements(trail_bucket_policy(BUCKET_ARN, TRAIL, "123456789012"))["CloudTrailAclCheck"] == {
        "Sid": "CloudTrailAclCheck", "Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"},
        "Action": "s3:GetBucketAcl", "Resource": BUCKET_ARN, "Condition": {"StringEquals": {"aws:SourceArn": TRAIL}}}


def test_cloudtrail_may_write_only_under_awslogs_of_the_account_with_owner_control() -> None:
    assert _statements(trail_bucket_policy(BUCKET_ARN, TRAIL, "123456789012"))["CloudTrailWrite"] == {
        "Sid": "CloudTrailWrite", "Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"},
        "Action": "s3:PutObject", "Resource": f"{BUCKET_ARN}/AWSLogs/123456789012/*",
        "Condition": {"StringEquals": {"aws:SourceArn": TRAIL, "s3:x-amz-acl": "bucket-owner-full-control"}}}


def test_trail_bucket_denies_plain_http() -> None:
    policy = trail_bucket_policy(BUCKET_ARN, TRAIL, "123456789012")
    bucket = rules.Resource(rules.BUCKET_POLICY_TYPE, "p", "urn:p", {"policy": policy})
    assert rules._tls_only(bucket)


@pytest.mark.parametrize(("region", "partition"), [("us-east-1", "aws"), ("cn-north-1", "aws-cn"),
                                                   ("us-gov-west-1", "aws-us-gov")])
def test_trail_arn_carries_the_regions_partition(region: str, partition: str) -> None:
    assert trail_arn(region, "123456789012", "t") == f"arn:{partition}:cloudtrail:{region}:123456789012:trail/t"


def test_bucket_policy_names_the_trail_the_stack_creates(prod: ProgramGraph) -> None:
    # The trail's name is fixed up front so the policy can name it: the two must agree, or CloudTrail
    # is refused delivery (CreateTrail fails with InsufficientS3BucketPolicyException).
    trail = prod.one(rules.TRAIL_TYPE)
    policy = prod.one(rules.BUCKET_POLICY_TYPE, "audit-policy")
    expected = trail_arn(prod.config["aws:region"], ACCOUNT_ID, trail.inputs["name"])
    statements = _statements(policy.inputs["policy"])
    assert statements["CloudTrailAclCheck"]["Condition"]["StringEquals"]["aws:SourceArn"] == expected
    assert statements["CloudTrailWrite"]["Resource"].endswith(f"/AWSLogs/{ACCOUNT_ID}/*")


def test_trail_is_created_after_its_bucket_policy(prod: ProgramGraph) -> None:
    # CreateTrail checks the bucket policy at once.
    assert prod.one(rules.BUCKET_POLICY_TYPE, "audit-policy").urn in prod.one(rules.TRAIL_TYPE).dependencies


def test_trail_logs_writes_to_the_artifact_bucket_objects(prod: ProgramGraph) -> None:
    selectors = {s["name"]: {f["field"]: f for f in s["fieldSelectors"]}
                 for s in prod.one(rules.TRAIL_TYPE).inputs["advancedEventSelectors"]}
    writes = selectors["Artifact bucket writes"]
    assert writes["readOnly"]["equals"] == ["false"]
    assert writes["resources.type"]["equals"] == ["AWS::S3::Object"]
    [prefix] = writes["resources.ARN"]["startsWiths"]
    assert prefix.startswith("arn:aws:s3:::artifacts-bucket") and prefix.endswith("/")
    assert selectors["Management events"]["eventCategory"]["equals"] == ["Management"]
