"""The GitHub workflows: least privilege, pinned actions, and names that agree with the program.

The workflows themselves only run on GitHub; here they are read as data (YAML) and checked against
what the program creates (the mocked resource graph of the prod stack, which owns the repository
settings), what the trigger handler sends, and what the deploy CLI and buildspecs run. actionlint and
zizmor run in `make workflows-lint`, which `make test` depends on; the tests below check that wiring and
that the linters, invoked exactly that way, do reject a bad workflow.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from program_harness import ProgramGraph, prefetch, run_program
from pytest_httpserver import HTTPServer

import contracts

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = ("infra-preview.yml", "infra-deploy.yml", "model-build.yml", contracts.DEPLOY_WORKFLOW_FILE)

SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s*)?uses:\s*(\S+)\s*(#.*)?$")
CONTEXT_NAME = re.compile(r"\b(secrets|vars)\.([A-Za-z_][A-Za-z0-9_]*)")
CONFIGURE_AWS = "aws-actions/configure-aws-credentials@"


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the bare key `on` as True; give it back its name.
    if True in data:
        data["on"] = data.pop(True)
    return data


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict[str, Any]]:
    return {name: _load(name) for name in WORKFLOW_FILES}


def _jobs(workflows: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for wf_name, wf in workflows.items():
        for job_name, job in wf["jobs"].items():
            yield wf_name, job_name, job


def _assumes_role(job: dict[str, Any]) -> bool:
    return any(str(step.get("uses", "")).startswith(CONFIGURE_AWS) for step in job.get("steps", []))


def _step(job: dict[str, Any], predicate: Any) -> dict[str, Any]:
    matches = [s for s in job["steps"] if predicate(s)]
    assert len(matches) == 1, f"expected one matching step, found {len(matches)}: {matches}"
    return matches[0]


def _run_commands(job: dict[str, Any]) -> list[str]:
    return [s["run"] for s in job["steps"] if "run" in s]


# --- Files and triggers -------------------------------------------------------------------------
def test_workflow_directory_holds_exactly_the_four_workflows() -> None:
    assert sorted(p.name for p in WORKFLOWS.iterdir()) == sorted(WORKFLOW_FILES)


def test_no_workflow_runs_on_pull_request_target(workflows: dict[str, dict[str, Any]]) -> None:
    for name, wf in workflows.items():
        assert "pull_request_target" not in wf["on"], name
        assert "pull_request_target" not in (WORKFLOWS / name).read_text(), name


def test_triggers_are_pr_preview_main_deploy_training_push_and_dispatch(
    workflows: dict[str, dict[str, Any]],
) -> None:
    assert set(workflows["infra-preview.yml"]["on"]) == {"pull_request"}
    assert workflows["infra-deploy.yml"]["on"] == {"push": {"branches": ["main"]}}
    assert workflows["model-build.yml"]["on"] == {"push": {"branches": ["main"], "paths": ["training/**"]}}
    assert set(workflows[contracts.DEPLOY_WORKFLOW_FILE]["on"]) == {"workflow_dispatch"}


# --- Least privilege ----------------------------------------------------------------------------
def test_top_level_permissions_are_empty_and_every_job_declares_its_own(
    workflows: dict[str, dict[str, Any]],
) -> None:
    for name, wf in workflows.items():
        assert wf.get("permissions") == {}, f"{name}: top-level permissions must be {{}}"
    for wf_name, job_name, job in _jobs(workflows):
        assert isinstance(job.get("permissions"), dict), f"{wf_name}:{job_name} declares no permissions"


def test_id_token_write_is_granted_exactly_to_jobs_that_assume_a_role(
    workflows: dict[str, dict[str, Any]],
) -> None:
    for wf_name, job_name, job in _jobs(workflows):
        has_id_token = job["permissions"].get("id-token") == "write"
        assert has_id_token == _assumes_role(job), (
            f"{wf_name}:{job_name}: id-token write={has_id_token} but assumes a role={_assumes_role(job)}"
        )


def test_jobs_only_read_contents_except_the_preview_comment(workflows: dict[str, dict[str, Any]]) -> None:
    for wf_name, job_name, job in _jobs(workflows):
        perms = dict(job["permissions"])
        perms.pop("id-token", None)
        if (wf_name, job_name) == ("infra-preview.yml", "preview"):
            assert perms == {"contents": "read", "pull-requests": "write"}
        else:
            assert perms == {"contents": "read"}, f"{wf_name}:{job_name} asks for {perms}"


def test_each_workflow_assumes_only_its_own_role(workflows: dict[str, dict[str, Any]]) -> None:
    expected = {
        "infra-preview.yml": "AWS_PREVIEW_ROLE_ARN",
        "infra-deploy.yml": "AWS_INFRA_ROLE_ARN",
        "model-build.yml": "AWS_DEPLOY_ROLE_ARN",
        contracts.DEPLOY_WORKFLOW_FILE: "AWS_DEPLOY_ROLE_ARN",
    }
    for wf_name, job_name, job in _jobs(workflows):
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith(CONFIGURE_AWS):
                assert step["with"]["role-to-assume"] == f"${{{{ secrets.{expected[wf_name]} }}}}", (
                    f"{wf_name}:{job_name}"
                )
                # OIDC only: a stored key pair would defeat the trust policy's repository/environment scope.
                assert not {"aws-access-key-id", "aws-secret-access-key"} & set(step["with"]), wf_name


def test_every_uses_is_pinned_to_a_full_commit_sha_with_a_version_comment() -> None:
    for name in WORKFLOW_FILES:
        for line in (WORKFLOWS / name).read_text().splitlines():
            match = USES_LINE.match(line)
            if not match:
                continue
            ref, comment = match.groups()
            assert SHA_PIN.match(ref), f"{name}: {ref} is not pinned to a 40-hex commit SHA"
            assert comment and re.match(r"#\s*v\d+(\.\d+)*$", comment), f"{name}: {ref} lacks a '# vX.Y.Z' comment"


def test_checkout_never_persists_the_token(workflows: dict[str, dict[str, Any]]) -> None:
    checkouts = 0
    for wf_name, job_name, job in _jobs(workflows):
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                checkouts += 1
                assert step.get("with", {}).get("persist-credentials") is False, f"{wf_name}:{job_name}"
    assert checkouts >= len(WORKFLOW_FILES)


def test_every_workflow_has_a_concurrency_group(workflows: dict[str, dict[str, Any]]) -> None:
    for name, wf in workflows.items():
        assert wf.get("concurrency", {}).get("group"), name
    # A cancelled `pulumi up` or rollout leaves a stack or endpoint half-updated.
    for name in ("infra-deploy.yml", "model-build.yml", contracts.DEPLOY_WORKFLOW_FILE):
        assert workflows[name]["concurrency"]["cancel-in-progress"] is False, name


def test_no_script_reads_a_secret_or_interpolates_dispatch_inputs(workflows: dict[str, dict[str, Any]]) -> None:
    for wf_name, job_name, job in _jobs(workflows):
        for script in _run_commands(job):
            assert "secrets." not in script, f"{wf_name}:{job_name}: a run script reads a secret"
            assert "${{" not in script, (
                f"{wf_name}:{job_name}: expressions in run scripts invite template injection; pass them via env"
            )


def test_python_setup_caches_pip_keyed_on_the_requirements(workflows: dict[str, dict[str, Any]]) -> None:
    for wf_name, job_name, job in _jobs(workflows):
        setups = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/setup-python@")]
        assert len(setups) == 1, f"{wf_name}:{job_name} sets up Python {len(setups)} times"
        settings = setups[0]["with"]
        assert settings["cache"] == "pip", f"{wf_name}:{job_name}"
        assert settings["cache-dependency-path"] == "requirements*.txt", f"{wf_name}:{job_name}"


# --- Names agree with the program ---------------------------------------------------------------
# An existing bootstrap role (config infraRoleArn): the program stores it for infra-deploy only when set.
INFRA_ROLE_ARN = "arn:aws:iam::123456789012:role/infra-deploy"
SECRET_TYPE = "github:index/actionsSecret:ActionsSecret"
VARIABLE_TYPE = "github:index/actionsVariable:ActionsVariable"
LAMBDA_TYPE = "aws:lambda/function:Function"
ROLE_TYPE = "aws:iam/role:Role"


WITH_INFRA_ROLE: dict[str, object] = {"infraRoleArn": INFRA_ROLE_ARN}


def _github_settings(graph: ProgramGraph) -> dict[str, Any]:
    """Actions secrets (names) and variables (name -> value) the program registers."""
    return {
        "secrets": {r.inputs["secretName"] for r in graph.of_type(SECRET_TYPE)},
        "variables": {r.inputs["variableName"]: r.inputs["value"] for r in graph.of_type(VARIABLE_TYPE)},
    }


@pytest.fixture(scope="module")
def github_settings() -> dict[str, Any]:
    # The prod stack owns the repository settings (manageGithubSettings: true). Its plain run is
    # shared with other test modules through the harness cache; both runs go in parallel.
    prefetch([("prod", None), ("prod", WITH_INFRA_ROLE)])
    return _github_settings(run_program("prod", WITH_INFRA_ROLE))


def _names_read_by_workflows() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"secrets": set(), "vars": set()}
    for name in WORKFLOW_FILES:
        for kind, var in CONTEXT_NAME.findall((WORKFLOWS / name).read_text()):
            found[kind].add(var)
    return found


def test_workflows_read_only_secrets_and_variables_that_github_integration_creates(
    github_settings: dict[str, Any],
) -> None:
    read = _names_read_by_workflows()
    assert read["secrets"] and read["vars"], "the scan found no secrets.*/vars.* at all; the pattern is broken"
    missing_secrets = sorted(read["secrets"] - github_settings["secrets"])
    missing_vars = sorted(read["vars"] - set(github_settings["variables"]))
    assert not missing_secrets, f"workflows read secrets the prod stack does not create: {missing_secrets}"
    assert not missing_vars, f"workflows read variables the prod stack does not create: {missing_vars}"


def test_without_infra_role_config_only_the_infra_role_secret_is_missing_and_infra_deploy_says_so(
    github_settings: dict[str, Any], workflows: dict[str, dict[str, Any]]
) -> None:
    graph = run_program("prod")
    if graph.config.get(f"{contracts.PROJECT}:infraRoleArn"):
        graph = run_program("prod", {"infraRoleArn": None})
    created = _github_settings(graph)["secrets"]
    assert _names_read_by_workflows()["secrets"] - created == {"AWS_INFRA_ROLE_ARN"}
    job = workflows["infra-deploy.yml"]["jobs"]["dev"]
    check = _step(job, lambda s: "INFRA_ROLE_ARN" in s.get("env", {}))
    assert job["steps"].index(check) < next(
        i for i, s in enumerate(job["steps"]) if str(s.get("uses", "")).startswith(CONFIGURE_AWS)
    )
    result = _bash(check["run"], {"INFRA_ROLE_ARN": "", "PULUMI_ACCESS_TOKEN": "pul-test"})
    assert result.returncode == 1
    assert "set infraRoleArn in Pulumi.prod.yaml" in result.stdout
    assert _bash(check["run"], {"INFRA_ROLE_ARN": INFRA_ROLE_ARN, "PULUMI_ACCESS_TOKEN": "pul-test"}).returncode == 0


PULUMI_ACTION = "pulumi/actions@"


def _pulumi_jobs(workflows: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any], int]]:
    """Jobs that run the Pulumi action, with the index of that step."""
    for wf_name, job_name, job in _jobs(workflows):
        for index, step in enumerate(job["steps"]):
            if str(step.get("uses", "")).startswith(PULUMI_ACTION):
                yield wf_name, job_name, job, index


def test_pulumi_action_logs_in_with_the_token_secret_and_the_cli_of_the_pinned_sdk(
    workflows: dict[str, dict[str, Any]],
) -> None:
    pinned = re.search(r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert pinned, "requirements.txt pins no pulumi version"
    jobs = list(_pulumi_jobs(workflows))
    assert len(jobs) == 3  # preview (a dev/prod matrix), up dev, up prod
    for wf_name, job_name, job, index in jobs:
        step = job["steps"][index]
        # No cloud-url: the Pulumi Cloud backend, logged in to by PULUMI_ACCESS_TOKEN.
        assert "cloud-url" not in step["with"], f"{wf_name}:{job_name}"
        assert step["env"] == {"PULUMI_ACCESS_TOKEN": "${{ secrets.PULUMI_ACCESS_TOKEN }}"}, f"{wf_name}:{job_name}"
        assert step["with"]["pulumi-version"] == pinned.group(1), f"{wf_name}:{job_name}"


def test_pulumi_runs_after_make_install_creates_the_virtualenv_pulumi_yaml_names(
    workflows: dict[str, dict[str, Any]],
) -> None:
    runtime = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]
    virtualenv = runtime["options"]["virtualenv"]
    make_install = subprocess.run([shutil.which("make") or "make", "-n", "-B", "-C", str(ROOT), "install"],
                                  capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"-m venv {virtualenv}" in make_install and "requirements" in make_install
    for wf_name, job_name, job, index in _pulumi_jobs(workflows):
        installs = [i for i, s in enumerate(job["steps"]) if s.get("run") == "make install"]
        assert installs and installs[0] < index, f"{wf_name}:{job_name}: pulumi runs without {virtualenv}"


def test_a_missing_pulumi_token_stops_the_first_pulumi_job_of_each_workflow_with_the_config_key(
    workflows: dict[str, dict[str, Any]],
) -> None:
    pulumi_jobs = {(wf_name, job_name) for wf_name, job_name, _, _ in _pulumi_jobs(workflows)}
    checked = set()
    for wf_name, job_name, job, index in _pulumi_jobs(workflows):
        if (wf_name, job.get("needs")) in pulumi_jobs:
            continue  # runs only after a Pulumi job of its workflow, which checked
        checked.add((wf_name, job_name))
        check = _step(job, lambda s: "PULUMI_ACCESS_TOKEN" in s.get("env", {}) and "run" in s)
        assert job["steps"].index(check) < index, f"{wf_name}:{job_name}"
        present = {name: "set" for name in check["env"]}
        missing = _bash(check["run"], {**present, "PULUMI_ACCESS_TOKEN": ""})
        assert missing.returncode == 1, f"{wf_name}:{job_name}"
        assert "pulumi config set --secret pulumiAccessToken" in missing.stdout, f"{wf_name}:{job_name}"
        assert _bash(check["run"], present).returncode == 0, f"{wf_name}:{job_name}"
    assert checked == {("infra-preview.yml", "preview"), ("infra-deploy.yml", "dev")}


def test_model_deploy_jobs_are_the_prod_stack_deployment_stages_with_the_gate_on_production(
    github_settings: dict[str, Any], workflows: dict[str, dict[str, Any]]
) -> None:
    stages = contracts.parse_deployment_stages(github_settings["variables"][contracts.ENV_DEPLOYMENT_STAGES])
    jobs = workflows[contracts.DEPLOY_WORKFLOW_FILE]["jobs"]
    assert [s.name for s in stages] == list(jobs) == ["staging", "production"]
    for stage in stages:
        gated = jobs[stage.name].get("environment") == contracts.PRODUCTION_ENVIRONMENT
        assert gated == stage.requires_approval, stage.name


def test_model_build_sets_the_train_build_environment(workflows: dict[str, dict[str, Any]]) -> None:
    env = workflows["model-build.yml"]["jobs"]["build"]["env"]
    assert set(contracts.TRAIN_BUILD_ENV) <= set(env), sorted(set(contracts.TRAIN_BUILD_ENV) - set(env))
    assert env[contracts.ENV_MLOPS_PROJECT] == contracts.PROJECT


def test_model_deploy_sets_the_deploy_build_environment(workflows: dict[str, dict[str, Any]]) -> None:
    env = workflows[contracts.DEPLOY_WORKFLOW_FILE]["env"]
    assert set(contracts.DEPLOY_BUILD_ENV) <= set(env), sorted(set(contracts.DEPLOY_BUILD_ENV) - set(env))
    assert env[contracts.ENV_MLOPS_PROJECT] == contracts.PROJECT


def test_model_deploy_inputs_are_exactly_the_dispatch_inputs_as_required_strings(
    workflows: dict[str, dict[str, Any]],
) -> None:
    inputs = workflows[contracts.DEPLOY_WORKFLOW_FILE]["on"]["workflow_dispatch"]["inputs"]
    assert sorted(inputs) == sorted(contracts.DISPATCH_INPUTS)
    for name, spec in inputs.items():
        assert spec["required"] is True and spec["type"] == "string", name


# --- Model build: the CodeBuild buildspecs, run by GitHub -------------------------------------
def _buildspec(relative: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / relative).read_text())


def _command_lines(job: dict[str, Any]) -> list[str]:
    """Every shell command the job runs, one per line, in order."""
    lines = []
    for script in _run_commands(job):
        lines += [ln.strip() for ln in script.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return lines


def test_model_build_runs_the_train_buildspec_commands_in_order(workflows: dict[str, dict[str, Any]]) -> None:
    phases = _buildspec(contracts.TRAIN_BUILDSPEC)["phases"]
    expected = phases["install"]["commands"] + phases["build"]["commands"]
    assert _command_lines(workflows["model-build.yml"]["jobs"]["build"]) == expected
    assert phases["build"]["commands"] == ["python -m training.model_build --arn-file model_package_arn.txt"]


def test_model_build_command_is_accepted_by_the_build_module() -> None:
    from training import model_build

    (command,) = _buildspec(contracts.TRAIN_BUILDSPEC)["phases"]["build"]["commands"]
    args = model_build.parse_args(shlex.split(command)[3:])
    assert args.arn_file == Path(contracts.MODEL_PACKAGE_ARN_FILE)


@pytest.mark.parametrize(("workflow", "job", "buildspec"), [
    ("model-build.yml", "build", contracts.TRAIN_BUILDSPEC),
    (contracts.DEPLOY_WORKFLOW_FILE, "staging", contracts.DEPLOY_BUILDSPEC),
    (contracts.DEPLOY_WORKFLOW_FILE, "production", contracts.DEPLOY_BUILDSPEC),
])
def test_model_jobs_run_the_python_version_of_their_buildspec(
    workflows: dict[str, dict[str, Any]], workflow: str, job: str, buildspec: str
) -> None:
    job_spec = workflows[workflow]["jobs"][job]
    setup = _step(job_spec, lambda s: str(s.get("uses", "")).startswith("actions/setup-python@"))
    runtime = _buildspec(buildspec)["phases"]["install"]["runtime-versions"]["python"]
    assert setup["with"]["python-version"] == str(runtime)


def test_model_build_sets_what_the_train_buildspec_sets_beyond_the_program(
    workflows: dict[str, dict[str, Any]],
) -> None:
    # A variable set on one runner only would build differently there. The one exception is the wait:
    # the workflow's OIDC credentials end, CodeBuild's are renewed (see the test below).
    from training.model_build import ENV_TIMEOUT_MINUTES

    env = workflows["model-build.yml"]["jobs"]["build"]["env"]
    extra = {k: v for k, v in env.items() if k not in contracts.TRAIN_BUILD_ENV and k != ENV_TIMEOUT_MINUTES}
    assert extra == _buildspec(contracts.TRAIN_BUILDSPEC).get("env", {}).get("variables", {})


def test_model_build_reads_the_model_build_variables_by_their_names(workflows: dict[str, dict[str, Any]]) -> None:
    env = workflows["model-build.yml"]["jobs"]["build"]["env"]
    names = (contracts.ENV_TRAINING_DATA_URI, contracts.ENV_MODEL_BUILD_COMPUTE, contracts.ENV_MODEL_BUILD_PIPELINE)
    for name in names:
        assert env[name] == f"${{{{ vars.{name} }}}}", name


# configure-aws-credentials' session for an assumed OIDC role when role-duration-seconds is not given.
OIDC_SESSION_SECONDS = 3600


def test_model_build_stops_its_execution_before_the_job_or_its_credentials_end(
    workflows: dict[str, dict[str, Any]],
) -> None:
    from training.model_build import ENV_TIMEOUT_MINUTES

    job = workflows["model-build.yml"]["jobs"]["build"]
    credentials = _step(job, lambda s: str(s.get("uses", "")).startswith(CONFIGURE_AWS))["with"]
    session_seconds = int(credentials.get("role-duration-seconds", OIDC_SESSION_SECONDS))
    wait = float(job["env"][ENV_TIMEOUT_MINUTES])
    # Installing takes a minute or two and stopping an execution a few more: keep 10 minutes for both.
    assert wait + 10 <= job["timeout-minutes"] <= session_seconds / 60
    # The session cannot outlast what the role allows (AssumeRoleWithWebIdentity refuses a longer one).
    [role] = [r for r in run_program("prod").of_type(ROLE_TYPE) if r.inputs["name"].endswith("-github-deploy")]
    assert session_seconds <= role.inputs.get("maxSessionDuration", OIDC_SESSION_SECONDS)


def test_model_build_keeps_the_train_buildspec_artifacts(workflows: dict[str, dict[str, Any]]) -> None:
    job = workflows["model-build.yml"]["jobs"]["build"]
    upload = _step(job, lambda s: str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    uploaded = upload["with"]["path"].split()
    assert uploaded == _buildspec(contracts.TRAIN_BUILDSPEC)["artifacts"]["files"]
    assert contracts.MODEL_PACKAGE_ARN_FILE in uploaded
    assert upload["with"]["if-no-files-found"] == "error"


# --- Model deploy -------------------------------------------------------------------------------
def test_model_deploy_production_waits_for_staging_in_the_production_environment(
    workflows: dict[str, dict[str, Any]],
) -> None:
    jobs = workflows[contracts.DEPLOY_WORKFLOW_FILE]["jobs"]
    assert set(jobs) == {"staging", "production"}
    assert jobs["production"]["needs"] == "staging"
    assert jobs["production"]["environment"] == contracts.PRODUCTION_ENVIRONMENT
    assert "environment" not in jobs["staging"]


@pytest.mark.parametrize("stage", ["staging", "production"])
def test_model_deploy_stage_is_deployed_and_smoke_tested_by_the_deploy_cli(
    workflows: dict[str, dict[str, Any]], stage: str
) -> None:
    job = workflows[contracts.DEPLOY_WORKFLOW_FILE]["jobs"][stage]
    scripts = _run_commands(job)
    deploys = [s for s in scripts if s.startswith("python -m training.deploy")]
    assert deploys == [f'python -m training.deploy --model-package-arn "$MODEL_PACKAGE_ARN" --stage {stage}']
    for script in scripts:
        lines = [ln.strip() for ln in script.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        assert not all(ln.startswith("echo") for ln in lines), f"{stage}: an echo-only step stands in for a test"


@pytest.mark.parametrize("stage", ["staging", "production"])
def test_model_deploy_command_is_accepted_by_the_deploy_cli_and_selects_its_stage(
    workflows: dict[str, dict[str, Any]], github_settings: dict[str, Any], stage: str
) -> None:
    from training import deploy

    job = workflows[contracts.DEPLOY_WORKFLOW_FILE]["jobs"][stage]
    (command,) = [c for c in _command_lines(job) if c.startswith("python -m training.deploy")]
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/7"
    argv = [arn if word == "$MODEL_PACKAGE_ARN" else word for word in shlex.split(command)[3:]]
    args = deploy.parse_args(argv)
    assert args.model_package_arn == arn
    stages = contracts.parse_deployment_stages(github_settings["variables"][contracts.ENV_DEPLOYMENT_STAGES])
    assert [s.name for s in deploy.select_stages(stages, args.stage)] == [stage]


@pytest.mark.parametrize("stage", ["staging", "production"])
def test_model_deploy_installs_what_the_deploy_buildspec_installs(
    workflows: dict[str, dict[str, Any]], stage: str
) -> None:
    install = _buildspec(contracts.DEPLOY_BUILDSPEC)["phases"]["install"]["commands"]
    lines = _command_lines(workflows[contracts.DEPLOY_WORKFLOW_FILE]["jobs"][stage])
    assert lines[-len(install) - 1:-1] == install


def test_infra_deploy_updates_prod_after_dev_in_the_production_environment(
    workflows: dict[str, dict[str, Any]],
) -> None:
    jobs = workflows["infra-deploy.yml"]["jobs"]
    assert jobs["dev"]["needs"] == "test"
    assert jobs["prod"]["needs"] == "dev"
    assert jobs["prod"]["environment"] == contracts.PRODUCTION_ENVIRONMENT
    for stack in ("dev", "prod"):
        pulumi = _step(jobs[stack], lambda s: str(s.get("uses", "")).startswith("pulumi/actions@"))
        assert (pulumi["with"]["command"], pulumi["with"]["stack-name"]) == ("up", stack)


def test_infra_preview_runs_make_test_then_previews_both_stacks_on_the_pr(
    workflows: dict[str, dict[str, Any]],
) -> None:
    jobs = workflows["infra-preview.yml"]["jobs"]
    assert _run_commands(jobs["test"]) == ["make test"]
    preview = jobs["preview"]
    assert preview["needs"] == "test"
    assert preview["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    pulumi = _step(preview, lambda s: str(s.get("uses", "")).startswith("pulumi/actions@"))
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["stack-name"] == "${{ matrix.stack }}"
    assert pulumi["with"]["comment-on-pr"] is True


# --- The group check in model-deploy runs as bash would run it on the runner ---------------------
GROUP = "sagemaker-mlops-prod-churn"


def _bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # GitHub runs `bash --noprofile --norc -eo pipefail {0}` for run steps on Linux runners.
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True,
                          timeout=10, check=False)


def _group_check(
    workflows: dict[str, dict[str, Any]], arn: str, group: str, expected: str
) -> subprocess.CompletedProcess[str]:
    job = workflows[contracts.DEPLOY_WORKFLOW_FILE]["jobs"]["staging"]
    step = _step(job, lambda s: "model_package_group" in s.get("run", ""))
    assert step.get("shell") == "bash"
    env = {"MODEL_PACKAGE_ARN": arn, "MODEL_PACKAGE_GROUP": group, contracts.ENV_MODEL_PACKAGE_GROUP_NAME: expected}
    return _bash(step["run"], env)


def test_model_deploy_accepts_a_package_of_the_stack_group(workflows: dict[str, dict[str, Any]]) -> None:
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/3"
    result = _group_check(workflows, arn, GROUP, GROUP)
    assert result.returncode == 0, result.stdout + result.stderr


def test_model_deploy_rejects_a_dispatch_for_another_group(workflows: dict[str, dict[str, Any]]) -> None:
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/other-group/3"
    result = _group_check(workflows, arn, "other-group", GROUP)
    assert result.returncode == 1
    assert "model_package_group is not this stack's group" in result.stdout


def test_model_deploy_rejects_a_package_arn_outside_the_dispatched_group(
    workflows: dict[str, dict[str, Any]],
) -> None:
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/other-group/3"
    result = _group_check(workflows, arn, GROUP, GROUP)
    assert result.returncode == 1
    assert "model_package_arn is not a model package ARN of group" in result.stdout


def test_model_deploy_fails_when_the_group_variable_is_missing(workflows: dict[str, dict[str, Any]]) -> None:
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/3"
    result = _group_check(workflows, arn, GROUP, "")
    assert result.returncode == 1
    assert "vars.MODEL_PACKAGE_GROUP_NAME is not set" in result.stdout


def test_trigger_lambda_as_configured_dispatches_the_deploy_workflow_inputs_which_pass_its_group_check(
    aws: str, httpserver: HTTPServer, workflows: dict[str, dict[str, Any]], github_settings: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from handlers import github_trigger

    [function] = [f for f in run_program("prod").of_type(LAMBDA_TYPE) if f.inputs["name"].endswith("-github-trigger")]
    env = dict(function.inputs["environment"]["variables"])
    group = github_settings["variables"][contracts.ENV_MODEL_PACKAGE_GROUP_NAME]
    secrets = boto3.client("secretsmanager")
    env[contracts.ENV_GITHUB_TOKEN_SECRET_ID] = secrets.create_secret(
        Name="gh-token", SecretString='{"token": "ghp_test"}')["ARN"]
    env[contracts.ENV_GITHUB_API_URL] = httpserver.url_for("/").rstrip("/")
    # The exact variable set is test_program_stacks' concern; this test is about the request body.
    env.setdefault(contracts.ENV_MODEL_PACKAGE_GROUP_NAME, group)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    workflow = env[contracts.ENV_DEPLOY_WORKFLOW]
    assert workflow in workflows, f"the trigger dispatches {workflow}, which is not in .github/workflows"
    path = f"/repos/{env[contracts.ENV_DEPLOY_REPOSITORY]}/actions/workflows/{workflow}/dispatches"
    httpserver.expect_oneshot_request(path, method="POST").respond_with_data("", status=204)
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{group}/7"
    event = {
        "source": contracts.EVENT_SOURCE,
        "detail-type": contracts.EVENT_DETAIL_TYPE,
        "detail": {"ModelPackageArn": arn, "ModelPackageGroupName": group,
                   "ModelApprovalStatus": contracts.STATUS_APPROVED},
    }

    github_trigger.handler(event, None, secrets=secrets, sleep=lambda _: None)

    httpserver.check_assertions()
    (request, _response), = httpserver.log
    sent = json.loads(request.get_data())
    declared = workflows[workflow]["on"]["workflow_dispatch"]["inputs"]
    assert sorted(sent["inputs"]) == sorted(declared)
    assert sent["ref"] == env[contracts.ENV_DEPLOY_REF]
    # What the handler sends is what the staging job's group check accepts.
    check = _group_check(workflows, sent["inputs"]["model_package_arn"], sent["inputs"]["model_package_group"], group)
    assert check.returncode == 0, check.stdout + check.stderr


# --- Workflow lint: wired into `make test`, and able to fail -------------------------------------
def _make_dry_run(target: str) -> list[str]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed (.ci/run installs it on a fresh machine)")
    out = subprocess.run([make, "-n", "-C", str(ROOT), target], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return out.splitlines()


def _lint_commands() -> dict[str, list[str]]:
    commands = {}
    for line in _make_dry_run("workflows-lint"):
        argv = shlex.split(line)
        tool = Path(argv[0]).name
        if tool in ("actionlint", "zizmor"):
            commands[tool] = argv
    return commands


def test_make_test_runs_actionlint_and_zizmor_offline() -> None:
    commands = _lint_commands()
    assert set(commands) == {"actionlint", "zizmor"}
    assert "--offline" in commands["zizmor"], "zizmor must not need network or a GitHub token"
    assert commands["zizmor"][-1] == ".github/workflows"
    test_recipe = _make_dry_run("test")
    for argv in commands.values():
        assert shlex.join(argv) in test_recipe, f"`make test` does not run {argv[0]}"


BAD_WORKFLOW = """\
name: bad
on:
  pull_request_target:
permissions: write-all
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          ref: ${{ github.event.pull_request.head.sha }}
      - run: echo "${{ github.event.pull_request.title }}"
"""


def _bad_repo(tmp_path: Path) -> Path:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "bad.yml").write_text(BAD_WORKFLOW)
    (tmp_path / ".git").mkdir()  # actionlint finds workflows from the repository root
    return tmp_path


def test_zizmor_as_invoked_by_make_rejects_an_injectable_workflow(tmp_path: Path) -> None:
    argv = _lint_commands()["zizmor"]
    repo = _bad_repo(tmp_path)
    result = subprocess.run([str(ROOT / argv[0]), *argv[1:]], cwd=repo, capture_output=True, text=True,
                            timeout=60, check=False, env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode != 0
    assert "template-injection" in result.stdout
    assert "unpinned-uses" in result.stdout


def test_actionlint_as_invoked_by_make_rejects_a_broken_workflow(tmp_path: Path) -> None:
    argv = _lint_commands()["actionlint"]
    repo = _bad_repo(tmp_path)
    with (repo / ".github" / "workflows" / "bad.yml").open("a") as f:
        f.write("      - run: echo ${{ github.no_such_property }}\n")
    result = subprocess.run([str(ROOT / argv[0]), *argv[1:]], cwd=repo, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0
    assert "no_such_property" in result.stdout
