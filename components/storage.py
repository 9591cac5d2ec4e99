"""ArtifactStore: the bucket for model artifacts, metrics, pipeline artifacts and data capture."""

from __future__ import annotations

import json
from typing import Any, TypedDict

import pulumi
import pulumi_aws as aws

COMPONENT_TOKEN = "sagemaker-mlops:storage:ArtifactStore"  # noqa: S105 - a Pulumi type token, not a secret


class ArtifactStoreArgs(TypedDict):
    force_destroy: bool
    """Delete objects with the bucket (dev stacks only); otherwise destroy fails on a non-empty bucket."""
    noncurrent_version_days: int
    """Days a replaced object version is kept before it expires."""


def tls_only_policy(bucket_arn: str) -> dict[str, Any]:
    """Deny every request that does not use TLS, for every principal (the design's storage control)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


class ArtifactStore(pulumi.ComponentResource):
    bucket: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ArtifactStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TOKEN, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(f"{name}-bucket", force_destroy=args["force_destroy"], opts=child)
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration={"status": "Enabled"},
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"},
                    # S3 Bucket Keys cut KMS requests (and cost) for the many small pipeline artifacts.
                    "bucket_key_enabled": True}],
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[
                {
                    "id": "expire-old-versions",
                    "status": "Enabled",
                    "filter": {},
                    "noncurrent_version_expiration": {"noncurrent_days": args["noncurrent_version_days"]},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
                }
            ],
            # Noncurrent-version rules act on a versioned bucket: versioning first, as the provider advises.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(tls_only_policy(arn))),
            # S3 rejects a bucket policy while the public-access block is being applied.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )
        self.bucket = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucket": self.bucket, "bucket_arn": self.bucket_arn})
