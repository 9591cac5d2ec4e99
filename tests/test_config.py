"""config.py: the stack settings, their defaults, the profiles and the documentation agree."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest
import yaml
from program_harness import ROOT, engine_value, project_config_schema, stack_config

import config
import contracts


def _raw(stack: str, overrides: dict[str, Any] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(non-secret raw values, secrets) as load_settings would hand them to parse_settings."""
    full, secret_keys = stack_config(stack, overrides)
    prefix = f"{contracts.PROJECT}:"
    raw = {k.removeprefix(prefix): v for k, v in full.items() if k.startswith(prefix) and k not in secret_keys}
    secrets = {k.removeprefix(prefix): full[k] for k in secret_keys}
    return raw, secrets


def _settings(stack: str, overrides: dict[str, Any] | None = None) -> config.Settings:
    raw, secrets = _raw(stack, overrides)
    return config.parse_settings(raw, stack=stack, region="us-east-1", secrets=secrets)


def test_every_non_secret_key_is_declared_in_pulumi_yaml_and_no_other() -> None:
    declared = set(project_config_schema())
    assert declared == set(config.KNOWN_KEYS) - set(config.SECRET_KEYS)


def test_pulumi_yaml_declares_a_type_or_default_and_a_description_for_every_key() -> None:
    for key, declared in project_config_schema().items():
        assert declared.get("description"), key
        assert "type" in declared or "default" in declared, key
        if key not in config.REQUIRED_KEYS:
            assert "default" in declared, f"{key}: without a default the CLI requires it in every stack"


def test_pulumi_yaml_defaults_mean_what_config_py_defaults_mean() -> None:
    # The engine injects Pulumi.yaml defaults; config.py falls back to its own: both must agree.
    from_engine = {k: v for k, v in _raw("dev")[0].items() if k in config.REQUIRED_KEYS}
    schema_defaults = {k: engine_value(d["default"]) for k, d in project_config_schema().items() if "default" in d}
    via_yaml = config.parse_settings({**from_engine, **schema_defaults}, stack="dev", region="us-east-1")
    via_code = config.parse_settings(from_engine, stack="dev", region="us-east-1")
    assert via_yaml == via_code


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_files_use_only_declared_keys_and_hold_no_secrets(stack: str) -> None:
    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    declared = set(project_config_schema())
    for key in data:
        namespace, _, name = key.partition(":")
        if namespace == contracts.PROJECT:
            assert name in declared, key
            assert name not in config.SECRET_KEYS, f"{key} must only be set with --secret"
        else:
            assert key == "aws:region", key


def test_dev_profile_is_codepipeline_auto_one_serverless_endpoint_disposable() -> None:
    settings = _settings("dev")
    assert (settings.orchestrator, settings.approval.mode) == ("codepipeline", "auto")
    [stage] = settings.deployment_stages
    assert stage.serverless is not None and stage.instances is None
    assert settings.force_destroy is True
    assert settings.github.manage_settings is False


def test_prod_profile_is_actions_manual_staging_then_gated_canary_production_retained() -> None:
    settings = _settings("prod")
    assert (settings.orchestrator, settings.approval.mode) == ("github-actions", "manual")
    staging, production = settings.deployment_stages
    assert staging.serverless is not None and not staging.requires_approval
    assert production.instances is not None and production.instances.instance_type.startswith("ml.")
    assert production.autoscaling is not None and production.rollout is not None
    assert production.data_capture is not None and production.requires_approval
    assert settings.force_destroy is False
    assert settings.github.manage_settings is True and settings.github.production_reviewers


def test_camel_case_stage_keys_map_onto_the_contract() -> None:
    stages = [{"name": "live", "instances": {"instanceType": "ml.c5.xlarge", "initialInstanceCount": 3},
               "rollout": {"canaryPercent": 20, "waitSeconds": 60}, "requiresApproval": True}]
    [stage] = _settings("dev", {"deploymentStages": stages}).deployment_stages
    assert stage == contracts.DeploymentStage(
        name="live", endpoint_name="sagemaker-mlops-dev-live",
        instances=contracts.Instances(instance_type="ml.c5.xlarge", initial_instance_count=3),
        rollout=contracts.Rollout(canary_percent=20, wait_seconds=60), requires_approval=True)


def test_capture_destinations_and_rollback_alarms_reach_deployment_stages() -> None:
    stages = _settings("prod").deployment_stages
    with_alarms = config.with_rollback_alarms(stages, {"production": ("a-5xx", "a-latency")})
    dumped = contracts.dump_deployment_stages(config.with_capture_destinations(with_alarms, "bucket-1"))
    production = contracts.parse_deployment_stages(dumped)[1]
    assert production.rollout is not None and production.rollout.alarm_names == ("a-5xx", "a-latency")
    assert production.data_capture is not None
    assert production.data_capture.destination_s3_uri == "s3://bucket-1/data-capture/sagemaker-mlops-prod-production"


def test_repository_splits_into_owner_and_name() -> None:
    github = _settings("dev", {"githubRepository": "acme-ml/churn.model"}).github
    assert (github.owner, github.name) == ("acme-ml", "churn.model")


def test_token_is_required_only_where_a_stack_uses_github() -> None:
    assert _settings("dev", {"githubToken": None}).github.token is None
    with pytest.raises(config.ConfigError, match="githubToken"):
        _settings("prod", {"githubToken": None})


def test_secret_values_are_kept_out_of_the_settings_repr() -> None:
    settings = _settings("prod")
    assert settings.github.token is not None
    assert str(settings.github.token) not in repr(settings)


def _readme_config_rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- section:config -->", 1)[1].split("<!-- /section:config -->", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        match = re.match(r"^\| `(\w+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_readme_config_table_lists_every_key_with_its_pulumi_yaml_default() -> None:
    rows = _readme_config_rows()
    assert set(rows) == set(config.KNOWN_KEYS)
    for key, declared in project_config_schema().items():
        default_cell = rows[key][1]
        if "default" not in declared:
            assert default_cell == "(required)", key
            continue
        value = declared["default"]
        shown = json.loads(default_cell.strip("`")) if isinstance(value, dict | list) else default_cell.strip("`")
        if isinstance(value, bool):
            value = str(value).lower()
        expected = value if isinstance(value, dict | list) else ('""' if value == "" else str(value))
        assert shown == expected, key
    for key in config.SECRET_KEYS:
        assert rows[key][0] == "secret string", key


# --- The model build --------------------------------------------------------------------------
def test_training_defaults_are_the_contract_defaults() -> None:
    # Pulumi.yaml's `training` default, config.py's and contracts.TrainingSettings() describe one build.
    assert _settings("dev").model_build.training == contracts.TrainingSettings()
    assert project_config_schema()["training"]["default"] == config.DEFAULTS["training"]


def test_training_keys_left_out_keep_their_defaults() -> None:
    # A stack file's object replaces the default object as a whole; config.py fills in the rest.
    training = _settings("dev", {"training": {"instanceType": "ml.c5.2xlarge"}}).model_build.training
    assert training == contracts.TrainingSettings(instance_type="ml.c5.2xlarge")


def test_camel_case_training_keys_map_onto_the_contract() -> None:
    # Every field, each away from its default: a key config.py accepts but does not read fails here.
    given = {"compute": "build", "instanceType": "ml.m5.2xlarge", "processingInstanceCount": 3,
             "volumeSizeGb": 50, "maxRuntimeSeconds": 1800, "spot": True, "maxWaitSeconds": 3600}
    assert {re.sub(r"([A-Z])", r"_\1", key).lower() for key in given} == \
        {f.name for f in dataclasses.fields(contracts.TrainingSettings)}
    assert _settings("dev", {"training": given}).model_build.training == contracts.TrainingSettings(
        compute="build", instance_type="ml.m5.2xlarge", processing_instance_count=3, volume_size_gb=50,
        max_runtime_seconds=1800, spot=True, max_wait_seconds=3600)


def test_snake_case_training_keys_are_refused_not_ignored() -> None:
    with pytest.raises(config.ConfigError, match=r"unknown keys \['instance_type'\].*instanceType"):
        _settings("dev", {"training": {"instance_type": "ml.c5.2xlarge"}})


def test_default_training_data_is_the_stacks_prefix_of_the_artifact_bucket() -> None:
    settings = _settings("dev")
    assert settings.model_build.custom_training_data_uri is None
    assert settings.model_build.sample_data is True
    assert settings.training_data_uri("bucket-1") == "s3://bucket-1/dev/training-data/"


def test_own_training_data_replaces_the_default_prefix() -> None:
    settings = _settings("prod", {"trainingData": "s3://team-data/churn/2026/", "sampleData": False})
    assert settings.training_data_uri("bucket-1") == "s3://team-data/churn/2026/"
    assert settings.model_build.sample_data is False


def test_inline_build_keeps_the_inline_timeout() -> None:
    assert _settings("dev", {"training": {"compute": "build"}}).train_build_timeout_minutes == \
        config.INLINE_BUILD_TIMEOUT_MINUTES

