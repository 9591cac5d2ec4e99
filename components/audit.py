"""AuditTrail: an optional CloudTrail trail per stack, delivering to its own hardened bucket.

Audit and accountability (DESIGN.md, GRC table): every API call on the stack's resources is
recorded with who made it. The log bucket is separate from the artifact bucket so that the roles
that write models cannot touch the evidence, and log file validation lets an auditor prove the
files were not altered after delivery.
"""

from __future__ import annotations

import json
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_aws as aws

from components.naming import partition_of
from components.storage import tls_only_policy


class AuditTrailArgs(TypedDict):
    trail_name: str
    """Trail name, known up front so the bucket policy can name the trail (no dependency cycle)."""
    account_id: pulumi.Input[str]
    region: pulumi.Input[str]
    force_destroy: pulumi.Input[bool]
    """Delete log objects with the bucket (dev stacks only; audit evidence is otherwise kept)."""
    retention_days: int
    """Days log files are kept before expiry."""
    artifact_bucket_arn: NotRequired[pulumi.Input[str]]
    """If given, object-level writes to the artifact bucket (models, metrics) are logged too."""


def trail_arn(region: str, account_id: str, trail_name: str) -> str:
    return f"arn:{partition_of(region)}:cloudtrail:{region}:{account_id}:trail/{trail_name}"


def trail_bucket_policy(bucket_arn: str, trail: str, account_id: str) -> str:
    """CloudTrail may read the ACL and write under AWSLogs/<account>/ for this trail only; no plain HTTP."""
    source = {"aws:SourceArn": trail}
    statements: list[dict[str, Any]] = [
        *tls_only_policy(bucket_arn)["Statement"],
        {
            "Sid": "CloudTrailAclCheck",
            "Effect": "Allow",
            "Principal": {"Service": "cloudtrail.amazonaws.com"},
            "Action": "s3:GetBucketAcl",
            "Resource": bucket_arn,
            "Condition": {"StringEquals": source},
        },
        {
            "Sid": "CloudTrailWrite",
            "Effect": "Allow",
            "Principal": {"Service": "cloudtrail.amazonaws.com"},
            "Action": "s3:PutObject",
            "Resource": f"{bucket_arn}/AWSLogs/{account_id}/*",
            "Condition": {"StringEquals": {**source, "s3:x-amz-acl": "bucket-owner-full-control"}},
        },
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def _event_selectors(
    artifact_bucket_arn: pulumi.Input[str] | None,
) -> list[aws.cloudtrail.TrailAdvancedEventSelectorArgs]:
    selectors = [
        aws.cloudtrail.TrailAdvancedEventSelectorArgs(
            name="Management events",
            field_selectors=[aws.cloudtrail.TrailAdvancedEventSelectorFieldSelectorArgs(
                field="eventCategory", equals=["Management"])],
        )
    ]
    if artifact_bucket_arn is not None:
        # Who wrote or replaced a model artifact or its metrics; reads are not logged (cost, noise).
        selectors.append(aws.cloudtrail.TrailAdvancedEventSelectorArgs(
            name="Artifact bucket writes",
            field_selectors=[
                aws.cloudtrail.TrailAdvancedEventSelectorFieldSelectorArgs(field="eventCategory", equals=["Data"]),
                aws.cloudtrail.TrailAdvancedEventSelectorFieldSelectorArgs(
                    field="resources.type", equals=["AWS::S3::Object"]),
                aws.cloudtrail.TrailAdvancedEventSelectorFieldSelectorArgs(field="readOnly", equals=["false"]),
                aws.cloudtrail.TrailAdvancedEventSelectorFieldSelectorArgs(
                    field="resources.ARN", starts_withs=[pulumi.Output.concat(artifact_bucket_arn, "/")]),
            ],
        ))
    return selectors


class AuditTrail(pulumi.ComponentResource):
    trail_arn: pulumi.Output[str]
    bucket: pulumi.Output[str]

    def __init__(self, name: str, args: AuditTrailArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sagemaker-mlops:audit:AuditTrail", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        bucket = aws.s3.Bucket(f"{name}-bucket", force_destroy=args["force_destroy"], opts=child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=bucket.id, opts=child,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="AES256"),
            )],
        )
        aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id, opts=child,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child,
        )
        # ACLs off: CloudTrail's bucket-owner-full-control writes are still accepted, and the
        # account owns every log object.
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket.id, opts=child,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle", bucket=bucket.id, opts=child,
            rules=[aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire-audit-logs", status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=args["retention_days"]),
                noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                    noncurrent_days=30),
            )],
        )
        arn = pulumi.Output.all(args["region"], args["account_id"]).apply(
            lambda ra: trail_arn(ra[0], ra[1], args["trail_name"]))
        policy = aws.s3.BucketPolicy(
            f"{name}-policy", bucket=bucket.id,
            policy=pulumi.Output.all(bucket.arn, arn, args["account_id"]).apply(
                lambda v: trail_bucket_policy(v[0], v[1], v[2])),
            # S3 rejects a bucket policy while the public-access block is being written.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )
        trail = aws.cloudtrail.Trail(
            f"{name}-trail",
            name=args["trail_name"],
            s3_bucket_name=bucket.id,
            enable_log_file_validation=True,
            include_global_service_events=True,
            # One region: the stack lives in one region, and an account-wide multi-region trail is
            # the landing zone's job; a second copy of every region's events here would be billed.
            is_multi_region_trail=False,
            advanced_event_selectors=_event_selectors(args.get("artifact_bucket_arn")),
            # CreateTrail checks the bucket policy: it must exist first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        self.trail_arn = trail.arn
        self.bucket = bucket.id
        self.register_outputs({"trail_arn": self.trail_arn, "bucket": self.bucket})
