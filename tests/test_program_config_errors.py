"""Bad stack config stops the real program before it registers anything, naming the key and the fix."""

from __future__ import annotations

import pytest
from program_harness import TEST_SECRETS, run_program_expect_error

GOOD_STAGE = {"name": "staging", "serverless": {"memorySizeMb": 2048, "maxConcurrency": 5}}

CASES = [
    # (id, stack, overrides, fragments the message must contain)
    ("unknown-orchestrator", "dev", {"orchestrator": "jenkins"},
     ["sagemaker-mlops:orchestrator", "'jenkins'", "codepipeline, github-actions"]),
    ("unknown-approval-mode", "dev", {"approvalMode": "yolo"},
     ["sagemaker-mlops:approvalMode", "'yolo'", "auto, manual"]),
    ("threshold-above-one", "dev", {"approvalThresholds": {"auc": 1.5}},
     ["sagemaker-mlops:approvalThresholds", "outside [0, 1]", "pulumi config set --path approvalThresholds.auc"]),
    ("threshold-negative", "dev", {"approvalThresholds": {"accuracy": -0.1}},
     ["sagemaker-mlops:approvalThresholds", "outside [0, 1]"]),
    ("unknown-metric", "dev", {"approvalThresholds": {"rmse": 0.5}},
     ["sagemaker-mlops:approvalThresholds", "'rmse'", "accuracy"]),
    ("empty-reviewers-with-production-gate", "prod", {"productionReviewers": []},
     ["sagemaker-mlops:productionReviewers", "requires approval", "productionReviewers[0]"]),
    ("malformed-repository", "dev", {"githubRepository": "https://github.com/your-org/churn-model"},
     ["sagemaker-mlops:githubRepository", "owner/name", "your-org/churn-model"]),
    ("instance-type-not-ml", "dev", {"deploymentStages": [{"name": "prod", "instances": {"instanceType": "m5.large"}}]},
     ["sagemaker-mlops:deploymentStages", "'m5.large'", "ml.*"]),
    ("stage-without-hosting", "dev", {"deploymentStages": [{"name": "staging"}]},
     ["sagemaker-mlops:deploymentStages", "exactly one of 'serverless' or 'instances'"]),
    ("stage-unknown-key", "dev", {"deploymentStages": [{**GOOD_STAGE, "gpu": True}]},
     ["sagemaker-mlops:deploymentStages", "unknown keys ['gpu']"]),
    ("autoscaling-on-serverless", "dev",
     {"deploymentStages": [{**GOOD_STAGE, "autoscaling": {"minCapacity": 1, "maxCapacity": 2}}]},
     ["sagemaker-mlops:deploymentStages", "need 'instances'"]),
    ("endpoint-outside-stack-prefix", "dev", {"deploymentStages": [{**GOOD_STAGE, "endpointName": "shared-endpoint"}]},
     ["sagemaker-mlops:deploymentStages", "starting with 'sagemaker-mlops-dev-'"]),
    ("missing-token-for-github-actions", "dev", {"orchestrator": "github-actions", "githubToken": None},
     ["sagemaker-mlops:githubToken", "pulumi config set --secret githubToken"]),
    ("log-retention-not-allowed", "dev", {"logRetentionDays": 42},
     ["sagemaker-mlops:logRetentionDays", "42", "30"]),
    ("boolean-typo", "dev", {"forceDestroy": "yes"}, ["sagemaker-mlops:forceDestroy", "true or false"]),
    ("unsupported-region", "dev", {"aws:region": "mars-north-1"}, ["aws:region", "mars-north-1", "us-east-1"]),
    ("canary-above-half-the-fleet", "prod",
     {"deploymentStages": [GOOD_STAGE, {"name": "production", "instances": {"instanceType": "ml.m5.large"},
                                        "rollout": {"canaryPercent": 75}, "requiresApproval": True}]},
     ["sagemaker-mlops:deploymentStages", "canaryPercent must be 1..50"]),
    ("bad-oidc-provider-arn", "dev", {"githubOidcProviderArn": "arn:aws:iam::123:oidc-provider/x"},
     ["sagemaker-mlops:githubOidcProviderArn", "oidc-provider/token.actions.githubusercontent.com"]),
    # --- the model build ---
    ("training-data-not-s3", "dev", {"trainingData": "https://team-data.s3.amazonaws.com/churn/", "sampleData": False},
     ["sagemaker-mlops:trainingData", "is not an s3:// URI", "pulumi config set trainingData s3://"]),
    ("training-data-without-trailing-slash", "dev", {"trainingData": "s3://team-data/churn", "sampleData": False},
     ["sagemaker-mlops:trainingData", "does not end with '/'", "s3://team-data/churn/"]),
    ("training-data-bad-bucket", "dev", {"trainingData": "s3://Team_Data/churn/", "sampleData": False},
     ["sagemaker-mlops:trainingData", "valid bucket name", "s3://<bucket>/<prefix>/"]),
    ("training-data-wildcard", "dev", {"trainingData": "s3://team-data/churn-*/", "sampleData": False},
     ["sagemaker-mlops:trainingData", "wildcard", "literal folder"]),
    # The build would refuse it at every run: the package's TrainingData metadata takes no parentheses.
    ("training-data-not-recordable-on-the-package", "dev",
     {"trainingData": "s3://team-data/churn (2024)/", "sampleData": False},
     ["sagemaker-mlops:trainingData", "'s3://team-data/churn (2024)/'", "cannot be recorded on the model package",
      "move the files to a prefix named with those"]),
    ("sample-data-with-own-training-data", "dev", {"trainingData": "s3://team-data/churn/"},
     ["sagemaker-mlops:sampleData", "s3://team-data/churn/", "pulumi config set sampleData false"]),
    ("sample-data-typo", "dev", {"sampleData": "yes"}, ["sagemaker-mlops:sampleData", "true or false"]),
    ("training-not-an-object", "dev", {"training": ["pipeline"]},
     ["sagemaker-mlops:training", "must be an object", "--path training.instanceType"]),
    ("training-unknown-key", "dev", {"training": {"instanceCount": 2}},
     ["sagemaker-mlops:training", "unknown keys ['instanceCount']", "processingInstanceCount"]),
    ("training-unknown-compute", "dev", {"training": {"compute": "lambda"}},
     ["sagemaker-mlops:training.compute", "'lambda'", "pipeline, build"]),
    ("training-instance-type-not-ml", "dev", {"training": {"instanceType": "m5.xlarge"}},
     ["sagemaker-mlops:training.instanceType", "'m5.xlarge'", "ml.*"]),
    ("training-instance-type-typo", "dev", {"training": {"instanceType": "ml.m5.xlarg"}},
     ["sagemaker-mlops:training.instanceType", "'ml.m5.xlarg'", "both training and processing jobs accept"]),
    ("training-no-processing-instance", "dev", {"training": {"processingInstanceCount": 0}},
     ["sagemaker-mlops:training.processingInstanceCount", "1..100", "--path training.processingInstanceCount 1"]),
    ("training-volume-not-a-number", "dev", {"training": {"volumeSizeGb": "30GB"}},
     ["sagemaker-mlops:training.volumeSizeGb", "'30GB'", "1..16384"]),
    ("spot-without-wait-limit", "dev", {"training": {"spot": True}},
     ["sagemaker-mlops:training.maxWaitSeconds", "spot is true", "--path training.maxWaitSeconds 7200"]),
    ("spot-wait-below-runtime", "dev", {"training": {"spot": True, "maxRuntimeSeconds": 3600, "maxWaitSeconds": 600}},
     ["sagemaker-mlops:training.maxWaitSeconds", "600 is less than maxRuntimeSeconds (3600)", "at least 3600"]),
    ("wait-limit-without-spot", "dev", {"training": {"maxWaitSeconds": 7200}},
     ["sagemaker-mlops:training.maxWaitSeconds", "spot is false", "training.spot true"]),
    ("runtime-longer-than-a-codebuild-build", "dev", {"training": {"maxRuntimeSeconds": 43200}},
     ["sagemaker-mlops:training.maxRuntimeSeconds", "CodeBuild build (36 h)", "lower"]),
    ("spot-wait-longer-than-a-codebuild-build", "dev",
     {"training": {"spot": True, "maxRuntimeSeconds": 3600, "maxWaitSeconds": 777600}},
     ["sagemaker-mlops:training.maxWaitSeconds", "CodeBuild build (36 h)", "training.maxWaitSeconds with spot"]),
]


@pytest.mark.parametrize(("stack", "overrides", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_fails_with_its_key_and_fix_and_registers_nothing(
        stack: str, overrides: dict[str, object], fragments: list[str]) -> None:
    failure = run_program_expect_error(stack, overrides)
    assert failure.error_type == "ConfigError", failure.message
    for fragment in fragments:
        assert fragment in failure.message, f"{fragment!r} not in {failure.message!r}"
    assert failure.resources == (), f"registered before failing: {failure.resources}"


def test_config_errors_never_contain_the_github_token() -> None:
    failure = run_program_expect_error("prod", {"productionReviewers": []})
    assert TEST_SECRETS["githubToken"] not in failure.message
