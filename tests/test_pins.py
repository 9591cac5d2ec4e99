"""The model is trained with the library versions of the image that serves it, and that image exists."""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from conftest import parse_source

import contracts

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"

# Registry accounts of the scikit-learn images, as published in aws/sagemaker-python-sdk
# src/sagemaker/image_uri_config/sklearn.json (commit ef7c5a006a09ad382183070ba8bf068d070c122d; the
# same account serves every scikit-learn version of a region, 0.20.0 through 1.4-2).
SDK_SKLEARN_ACCOUNTS = {
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
    "eu-west-1": "141502667606",
    "eu-west-2": "764974769150",
    "eu-central-1": "492215442770",
    "ap-southeast-2": "783357654285",
}


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s#;]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


@pytest.mark.parametrize("package", ["scikit-learn", "numpy"])
def test_requirements_pin_the_inference_image_version(package: str) -> None:
    assert _pins().get(package) == contracts.SKLEARN_IMAGE[package], (
        f"requirements.txt must pin {package}=={contracts.SKLEARN_IMAGE[package]} "
        f"(what image {contracts.SKLEARN_IMAGE['framework_version']} carries), or models will not unpickle there"
    )


@pytest.mark.parametrize("package", ["scikit-learn", "numpy"])
def test_installed_version_is_the_pinned_one(package: str) -> None:
    # The venv trains the model the tests serve: it must be the version the image unpickles with.
    assert version(package) == contracts.SKLEARN_IMAGE[package]


def test_image_framework_version_is_the_pinned_scikit_learn_release() -> None:
    # Image "1.4-2" is scikit-learn 1.4.x, container build 2.
    major_minor, _build = contracts.SKLEARN_IMAGE["framework_version"].split("-")
    assert contracts.SKLEARN_IMAGE["scikit-learn"].startswith(f"{major_minor}.")


def test_image_tag_is_the_framework_version_on_cpu_python3() -> None:
    assert contracts.SKLEARN_IMAGE["tag"] == f"{contracts.SKLEARN_IMAGE['framework_version']}-cpu-py3"


def test_image_accounts_match_the_sagemaker_sdk_registry_table() -> None:
    assert contracts.SKLEARN_IMAGE_ACCOUNTS == SDK_SKLEARN_ACCOUNTS


def test_image_uri_has_the_ecr_layout_sagemaker_pulls() -> None:
    assert contracts.inference_image_uri("eu-west-1") == (
        "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:1.4-2-cpu-py3"
    )


def test_inference_code_parses_on_the_image_python() -> None:
    # The image runs Python 3.10; syntax from a newer Python would fail there at model load.
    major, minor = (int(p) for p in contracts.SKLEARN_IMAGE["python"].split("."))
    source = (ROOT / "training" / contracts.INFERENCE_SCRIPT).read_text()
    parse_source(source, feature_version=(major, minor))


@pytest.mark.parametrize("buildspec", [contracts.TRAIN_BUILDSPEC, contracts.DEPLOY_BUILDSPEC])
def test_buildspecs_take_every_pin_from_requirements_txt(buildspec: str) -> None:
    spec = yaml.safe_load((ROOT / buildspec).read_text())
    install = spec["phases"]["install"]["commands"]
    assert not any(re.search(r"[A-Za-z]==\d", command) for command in install), "pins belong in requirements.txt"
    selector = next(c for c in install if c.startswith("grep ") and "requirements.txt" in c)
    # Run the buildspec's own selection against requirements.txt: every package it names is pinned there.
    command = selector.split(" > ", 1)[0]
    selected = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    # grep -E '^(a|b)==' or '^a==': the names between ^ and ==.
    wanted = re.search(r"\^\(?([\w|-]+)\)?==", command)
    assert wanted, f"{buildspec}: select packages as grep -E '^(a|b)==' requirements.txt"
    names = wanted.group(1).split("|")
    assert sorted(line.split("==")[0] for line in selected.splitlines()) == sorted(names)


def test_train_buildspec_installs_what_training_imports() -> None:
    install = " ".join(yaml.safe_load((ROOT / contracts.TRAIN_BUILDSPEC).read_text())["phases"]["install"]["commands"])
    for package in ("scikit-learn", "numpy", "pandas", "joblib", "boto3"):
        assert package in install


# Python runtimes of aws/codebuild/standard:7.0 (aws/aws-codebuild-docker-images ubuntu/standard/7.0/
# runtimes.yml); a version the image lacks fails the build's install phase before anything runs.
CODEBUILD_STANDARD_7_PYTHON = ("3.11", "3.12")


@pytest.mark.parametrize("buildspec", [contracts.TRAIN_BUILDSPEC, contracts.DEPLOY_BUILDSPEC])
def test_buildspecs_ask_for_a_python_runtime_the_codebuild_image_has(buildspec: str) -> None:
    spec = yaml.safe_load((ROOT / buildspec).read_text())
    assert str(spec["version"]) == "0.2"
    # YAML reads `python: 3.11` as a float; CodeBuild reads the same text, so compare the text form.
    assert str(spec["phases"]["install"]["runtime-versions"]["python"]) in CODEBUILD_STANDARD_7_PYTHON
