"""The embedded run (`make demo`): the stage runner end to end against moto's server, with real HTTP.

The end-to-end tests drive local.demo.run exactly as `make demo` does, attached to the suite's moto
server (the `aws` fixture) so they can read the emulator afterwards, or with an emulator of their own.
The Build stage runs the stack's model-build pipeline through the Pipelines shim: its jobs run for real
under `.venv-image`.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import joblib
import pandas as pd
import pytest
from conftest import needs_image

import contracts
from local import demo
from local.emulator import EMULATOR_ACCOUNT, Bootstrap, Emulator
from local.runner import (
    EXIT_DATA_REJECTED,
    EXIT_REJECTED,
    LOCAL_STACK,
    PIPELINE_STEPS,
    RESULT_FILE,
    Console,
    DemoOptions,
    StageFailed,
    load_buildspec,
    load_profile,
    package_state_change_event,
    prepare_workdir,
    run_buildspec,
    sample_rows,
)
from training.sample_data import make_dataset

REPO_ROOT = Path(__file__).resolve().parent.parent
BUCKET = f"{contracts.PROJECT}-{LOCAL_STACK}-artifacts-{EMULATOR_ACCOUNT}"
GROUP = f"{contracts.PROJECT}-{LOCAL_STACK}"


def _answers(url: str) -> bool:
    """Whether anything listens at url (any HTTP status counts as an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _run(options: DemoOptions) -> tuple[int, demo.DemoResult | None, str]:
    out = io.StringIO()
    code, result = demo.run(options, Console(out, interactive=False))
    return code, result, out.getvalue()


# --- End to end -------------------------------------------------------------------------------------
@pytest.mark.slow
@needs_image
def test_demo_deploys_an_in_service_endpoint_serves_valid_predictions_then_stops_its_servers(
    aws: str, tmp_path: Path
) -> None:
    code, result, output = _run(DemoOptions(workdir=tmp_path / "demo", emulator_url=aws))

    assert code == 0, output
    assert result is not None
    # The package came out of the pipeline's steps, each reported with its time.
    assert [(s.name, s.status) for s in result.pipeline_steps] == [(name, "Succeeded") for name in PIPELINE_STEPS]
    for step in result.pipeline_steps:
        assert re.search(rf"^    {step.name} +Succeeded +\d+\.\ds", output, re.MULTILINE), step.name
    package = boto3.client("sagemaker").describe_model_package(ModelPackageName=result.package_arn)
    assert package["MetadataProperties"]["GeneratedBy"] == result.pipeline_execution_arn
    endpoints = boto3.client("sagemaker").list_endpoints()["Endpoints"]
    assert [(e["EndpointName"], e["EndpointStatus"]) for e in endpoints] == [
        (load_profile().stage.endpoint_name, "InService")
    ], output
    # The deploy buildspec's smoke test reached the model through the hosting shim (moto's canned
    # invoke_endpoint answer has no predictions and would have failed the Deploy stage).
    assert "smoke test ok, 5 rows" in output
    assert {p.content_type for p in result.predictions} == {"text/csv", "application/json"}
    # Valid predictions are the trained model's own: predict_proba of the rows the demo sent.
    assert result.model_dir is not None
    assert (tmp_path / "demo" / "model").resolve() == result.model_dir.resolve()  # `make serve MODEL=.demo/model`
    model = joblib.load(result.model_dir / contracts.MODEL_FILE)
    for prediction in result.predictions:
        rows = sample_rows(prediction.rows)
        expected = model.predict_proba(pd.DataFrame(rows))[:, 1]
        assert prediction.probabilities == pytest.approx(list(expected), abs=1e-6), prediction.content_type
        assert prediction.labels == tuple(int(p >= 0.5) for p in expected), prediction.content_type
    assert result.model_server_url and not _answers(f"{result.model_server_url}/ping")
    # The summary as data, for make bench: the same stages and steps the console showed.
    recorded = json.loads((tmp_path / "demo" / RESULT_FILE).read_text())
    assert (recorded["outcome"], recorded["exit_code"]) == ("ok", 0)
    assert [s["name"] for s in recorded["stages"]] == ["Build", "Approval", "Deploy", "Serve"]
    assert [s["name"] for s in recorded["pipeline_steps"]] == list(PIPELINE_STEPS)
    assert Path(recorded["model_dir"]).resolve() == result.model_dir.resolve()


@pytest.mark.slow
@needs_image
def test_model_below_the_quality_gate_registers_and_deploys_nothing_and_exits_3_with_the_bar(
        aws: str, tmp_path: Path) -> None:
    code, result, output = _run(
        DemoOptions(workdir=tmp_path / "demo", emulator_url=aws, thresholds={"auc": 0.999})
    )

    assert code == EXIT_REJECTED == 3, output
    assert result is not None
    sagemaker = boto3.client("sagemaker")
    assert sagemaker.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"] == []
    assert sagemaker.list_endpoints()["Endpoints"] == []
    steps = [(s.name, s.status) for s in result.pipeline_steps]
    assert steps[-2:] == [("QualityGate", "Succeeded"), ("Fail", "Failed")]
    assert re.search(r"did not pass the QualityGate, nothing was registered or deployed: .*auc 0\.\d+ \(bar 0\.999\)",
                     output), output
    assert [s.name for s in result.stages] == ["Build"]
    recorded = json.loads((tmp_path / "demo" / RESULT_FILE).read_text())
    assert (recorded["outcome"], recorded["exit_code"]) == ("stopped at Build", 3)


def _champion_in_the_group(monkeypatch: pytest.MonkeyPatch, auc: float) -> None:
    """The stack's group already holds an approved model with this AUC, as it does after a first release."""
    bootstrap = Emulator.bootstrap

    def bootstrap_with_a_champion(self: Emulator, *args: Any, **kwargs: Any) -> Bootstrap:
        boot = bootstrap(self, *args, **kwargs)
        metrics = {"binary_classification_metrics": {name: {"value": auc, "standard_deviation": 0.0}
                                                     for name in ("accuracy", "auc")}}
        key = f"champion/{contracts.EVALUATION_FILE}"
        self.client("s3").put_object(Bucket=boot.bucket, Key=key, Body=json.dumps(metrics).encode())
        self.client("sagemaker").create_model_package(
            ModelPackageGroupName=boot.group, ModelApprovalStatus=contracts.STATUS_APPROVED,
            InferenceSpecification={
                "Containers": [{"Image": contracts.inference_image_uri(self.region),
                                "ModelDataUrl": f"s3://{boot.bucket}/champion/{contracts.MODEL_ARCHIVE}"}],
                "SupportedContentTypes": list(contracts.CONTENT_TYPES),
                "SupportedResponseMIMETypes": list(contracts.CONTENT_TYPES)},
            ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                          "S3Uri": f"s3://{boot.bucket}/{key}"}}})
        return boot

    monkeypatch.setattr(Emulator, "bootstrap", bootstrap_with_a_champion)


@pytest.mark.slow
@needs_image
def test_model_that_does_not_beat_the_approved_champion_is_rejected_deploys_nothing_and_exits_3(
        aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pipeline's QualityGate checks the bars only; beating the champion is the approval's own check.
    _champion_in_the_group(monkeypatch, auc=1.0)

    code, result, output = _run(DemoOptions(workdir=tmp_path / "demo", emulator_url=aws))

    assert code == EXIT_REJECTED == 3, output
    assert result is not None
    assert [(s.name, s.ok) for s in result.stages] == [("Build", True), ("Approval", False)]
    assert re.search(r"model rejected, nothing deployed: .*"
                     r"champion \S+ auc 1\.0000: new 0\.\d+, gain -0\.\d+ < 0\.0000 FAIL", output), output
    sagemaker = boto3.client("sagemaker")
    package = sagemaker.describe_model_package(ModelPackageName=result.package_arn)
    assert package["ModelApprovalStatus"] == contracts.STATUS_REJECTED
    assert sagemaker.list_endpoints()["Endpoints"] == []
    recorded = json.loads((tmp_path / "demo" / RESULT_FILE).read_text())
    assert (recorded["outcome"], recorded["exit_code"]) == ("stopped at Approval", 3)


def _team_table(rows: int) -> pd.DataFrame:
    """The churn table as a team exports it: an id column, its own column order, rows in another order."""
    frame = make_dataset(rows, seed=5)
    frame["customer_id"] = [f"C{i:05d}" for i in range(rows)]
    columns = ["customer_id", contracts.TARGET_COLUMN, *reversed(contracts.feature_names())]
    return frame.reindex(columns=columns).sample(frac=1.0, random_state=3)


@pytest.mark.slow
@needs_image
def test_team_shaped_csv_files_in_a_data_folder_end_in_predictions(aws: str, tmp_path: Path) -> None:
    data = tmp_path / "team-data"
    (data / "2024").mkdir(parents=True)
    table = _team_table(3000)
    table.iloc[:1500].to_csv(data / "2024" / "h1.csv", index=False)
    table.iloc[1500:].to_csv(data / "h2.csv", index=False)

    code, result, output = _run(DemoOptions(workdir=tmp_path / "demo", emulator_url=aws, data_dir=data,
                                            thresholds={"auc": 0.8}))

    assert code == 0, output
    assert result is not None and len(result.predictions) == 2
    assert "training data: 2 file(s) from" in output
    uploaded = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="local/training-data/")
    assert sorted(o["Key"] for o in uploaded["Contents"]) == ["local/training-data/2024/h1.csv",
                                                              "local/training-data/h2.csv"]
    # Every row was read, and the id column is listed as ignored, not learnt from.
    execution_id = result.pipeline_execution_arn.rsplit("/", 1)[1]
    report_key = f"local/pipeline-runs/{execution_id}/Prepare/report/data_report.json"
    report = json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key=report_key)["Body"].read())
    assert (report["rows"], report["ignored_columns"]) == (3000, ["customer_id"])
    assert "3000 rows from 2 file(s)" in output and "ignored columns: customer_id" in output


@pytest.mark.slow
@needs_image
def test_a_rejected_data_folder_trains_nothing_and_exits_4_naming_file_and_column(aws: str, tmp_path: Path) -> None:
    data = tmp_path / "team-data"
    data.mkdir()
    table = _team_table(600)
    table["monthly_charges"] = table["monthly_charges"].astype(object)
    table.iloc[7, table.columns.get_loc("monthly_charges")] = "n/a"
    table.to_csv(data / "export.csv", index=False)

    code, result, output = _run(DemoOptions(workdir=tmp_path / "demo", emulator_url=aws, data_dir=data))

    assert code == EXIT_DATA_REJECTED == 4, output
    assert result is not None
    assert [(s.name, s.status) for s in result.pipeline_steps] == [("Prepare", "Failed")]
    assert re.search(r"the training data was rejected, nothing was trained: data rejected:.*export\.csv.*"
                     r"monthly_charges", output), output
    sagemaker = boto3.client("sagemaker")
    assert sagemaker.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"] == []


def _processes_working_in(directory: Path) -> list[str]:
    """Command lines of live processes whose working directory is inside `directory` (Linux /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(proc / "cwd").resolve().is_relative_to(directory):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile, or not ours to inspect
            continue
    return found


@pytest.mark.slow
@needs_image
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="reads /proc to find leftover processes")
def test_ctrl_c_during_the_build_stops_the_build_command_the_pipelines_jobs_and_the_emulator(tmp_path: Path) -> None:
    workdir = (tmp_path / "demo").resolve()
    demo_process = subprocess.Popen(
        [sys.executable, "-m", "local.demo", "--plain", "--workdir", str(workdir)], cwd=REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert demo_process.stdout is not None
    lines: list[str] = []
    for line in demo_process.stdout:  # until the pipeline's first job runs
        lines.append(line)
        if re.search(r"\] Prepare +Executing", line):
            break
    emulator_url = re.search(r"AWS emulator \(moto\) at (\S+):", "".join(lines))
    assert emulator_url, "".join(lines)

    demo_process.send_signal(signal.SIGINT)
    rest, _ = demo_process.communicate(timeout=60)
    output = "".join(lines) + rest

    assert demo_process.returncode == 130, output
    assert "INTERRUPTED Build" in output and "stopped AWS emulator" in output
    assert "stopped SageMaker Pipelines shim and its jobs" in output
    assert not _answers(f"{emulator_url.group(1)}/moto-api")
    assert _processes_working_in(workdir) == []


def test_emulator_runs_in_a_child_process_that_stop_ends() -> None:
    emulator = Emulator.start()
    url = emulator.endpoint_url
    assert _answers(f"{url}/moto-api")
    process = emulator._process
    emulator.stop()

    assert process is not None and process.poll() is not None
    assert not _answers(f"{url}/moto-api")


# --- The approval event -------------------------------------------------------------------------------
def _pending_package(group: str) -> dict:
    sagemaker = boto3.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    arn = sagemaker.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus=contracts.STATUS_PENDING,
        InferenceSpecification={
            "Containers": [{"Image": contracts.inference_image_uri("us-east-1"),
                            "ModelDataUrl": "s3://bucket/model.tar.gz"}],
            "SupportedContentTypes": list(contracts.CONTENT_TYPES),
            "SupportedResponseMIMETypes": list(contracts.CONTENT_TYPES),
        },
    )["ModelPackageArn"]
    return sagemaker.describe_model_package(ModelPackageName=arn)


def test_runner_approval_event_matches_the_programs_auto_approval_pattern(aws: str) -> None:
    event = package_state_change_event(_pending_package("churn-dev"), "us-east-1")

    assert contracts.matches_pattern(contracts.auto_approval_pattern("churn-dev"), event)
    assert event["resources"] == [event["detail"]["ModelPackageArn"]]
    json.dumps(event)  # what EventBridge delivers is JSON: no datetimes left in it


def test_runner_approval_event_is_not_matched_by_another_groups_pattern(aws: str) -> None:
    event = package_state_change_event(_pending_package("churn-dev"), "us-east-1")

    assert not contracts.matches_pattern(contracts.auto_approval_pattern("churn-prod"), event)


# --- The CodeBuild stand-in ---------------------------------------------------------------------------
def _buildspec(tmp_path: Path, phases: str) -> Path:
    path = tmp_path / "buildspec.yml"
    path.write_text("version: 0.2\nphases:\n" + phases)
    return path


def test_buildspec_commands_share_one_shell_session_like_codebuild(tmp_path: Path) -> None:
    spec = load_buildspec(_buildspec(tmp_path, (
        "  pre_build:\n    commands:\n      - export GREETING=hello\n      - mkdir sub && cd sub\n"
        "  build:\n    commands:\n      - echo \"$GREETING from $(basename \"$PWD\")\" > out.txt\n"
    )))

    run_buildspec(spec, stage="Build", source_dir=tmp_path, env={"PATH": "/usr/bin:/bin"},
                  console=Console(io.StringIO(), interactive=False), log_path=tmp_path / "logs" / "b.log")

    assert (tmp_path / "sub" / "out.txt").read_text() == "hello from sub\n"


def test_failing_buildspec_command_fails_the_stage_and_skips_the_next_phase(tmp_path: Path) -> None:
    spec = load_buildspec(_buildspec(tmp_path, (
        "  pre_build:\n    commands:\n      - exit 7\n"
        "  build:\n    commands:\n      - touch built\n"
    )))

    with pytest.raises(StageFailed, match=r"`exit 7` exited with 7 in phase pre_build"):
        run_buildspec(spec, stage="Build", source_dir=tmp_path, env={"PATH": "/usr/bin:/bin"},
                      console=Console(io.StringIO(), interactive=False), log_path=tmp_path / "logs" / "b.log")
    assert not (tmp_path / "built").exists()


def test_install_phase_is_skipped_and_the_runner_says_why(tmp_path: Path) -> None:
    spec = load_buildspec(_buildspec(tmp_path, (
        "  install:\n    commands:\n      - touch installed\n"
        "  build:\n    commands:\n      - touch built\n"
    )))
    out = io.StringIO()

    run_buildspec(spec, stage="Build", source_dir=tmp_path, env={"PATH": "/usr/bin:/bin"},
                  console=Console(out, interactive=False), log_path=tmp_path / "logs" / "b.log")

    assert (tmp_path / "built").exists() and not (tmp_path / "installed").exists()
    assert "install phase skipped (1 commands): the venv running this already has" in out.getvalue()


def test_project_buildspecs_parse_with_commands_to_run() -> None:
    for relative in (contracts.TRAIN_BUILDSPEC, contracts.DEPLOY_BUILDSPEC):
        spec = load_buildspec(REPO_ROOT / relative)
        assert any(spec.phases[p].commands for p in ("pre_build", "build", "post_build") if p in spec.phases), relative


def test_buildspec_with_secrets_manager_env_is_refused_with_the_key(tmp_path: Path) -> None:
    path = tmp_path / "buildspec.yml"
    path.write_text("version: 0.2\nenv:\n  secrets-manager:\n    TOKEN: arn\nphases:\n  build:\n    commands: [true]\n")

    with pytest.raises(ValueError, match=r"env keys \['secrets-manager'\] are not supported"):
        load_buildspec(path)


def test_work_directory_that_would_empty_the_repository_is_refused() -> None:
    with pytest.raises(ValueError, match=r"refusing to use .* as the demo work directory"):
        prepare_workdir(REPO_ROOT)


def test_thresholds_flag_rejects_values_outside_the_unit_interval() -> None:
    with pytest.raises(SystemExit):
        demo.parse_args(["--thresholds", '{"auc": 1.5}'])


def test_data_flag_refuses_an_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        demo.parse_args(["--data", str(tmp_path)])

    assert f"{tmp_path} is empty; put the team's CSV files in it" in capsys.readouterr().err
