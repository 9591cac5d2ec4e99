"""The SageMaker container contract on loopback: real gunicorn, the real trained artifact, real HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import pandas as pd
import pytest

import contracts
from local.model_server import ModelServer, ModelServerError, start_model_server, wait_until_healthy
from training.deploy import SAMPLE_ROWS, sample_csv
from training.register import INFERENCE_SOURCE, build_model_archive


def _post(url: str, body: bytes, content_type: str, accept: str | None = None) -> tuple[int, str, bytes]:
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    request = urllib.request.Request(f"{url}/invocations", data=body, headers=headers,  # noqa: S310 - loopback
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def _ping(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:  # noqa: S310 - loopback
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def model_archive(trained_model_dir: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model.tar.gz registration uploads (model.joblib + code/inference.py)."""
    return build_model_archive(trained_model_dir[0], tmp_path_factory.mktemp("archive"))


@pytest.fixture(scope="module")
def server(model_archive: Path) -> Iterator[ModelServer]:
    with start_model_server(model_archive) as running:
        yield running


def test_csv_invocation_returns_the_models_own_probabilities(server: ModelServer,
                                                             trained_model_dir: tuple[Path, Path]) -> None:
    status, content_type, body = _post(server.url, sample_csv().encode(), "text/csv", "application/json")

    assert status == 200, body
    assert content_type == "application/json"
    served = [p["churn_probability"] for p in json.loads(body)["predictions"]]
    model = joblib.load(trained_model_dir[0] / contracts.MODEL_FILE)
    expected = model.predict_proba(pd.DataFrame(list(SAMPLE_ROWS)))[:, 1]
    assert served == pytest.approx(list(expected), abs=1e-6)


def test_json_request_honours_accept_text_csv(server: ModelServer) -> None:
    body = json.dumps({"instances": list(SAMPLE_ROWS[:2])}).encode()

    status, content_type, answer = _post(server.url, body, "application/json", "text/csv")

    assert status == 200, answer
    assert content_type == "text/csv"
    lines = answer.decode().strip().splitlines()
    assert len(lines) == 2
    assert all(0.0 <= float(line.split(",")[0]) <= 1.0 and line.split(",")[1] in ("0", "1") for line in lines)


def test_unsupported_content_type_is_415(server: ModelServer) -> None:
    status, _, body = _post(server.url, b"<rows/>", "application/xml")

    assert status == 415
    assert b"application/xml" in body and b"text/csv" in body


def test_malformed_json_is_400_with_a_message(server: ModelServer) -> None:
    status, _, body = _post(server.url, b'{"instances": [', "application/json")

    assert status == 400
    assert b"malformed JSON" in body


def test_empty_body_is_400_naming_the_accepted_types(server: ModelServer) -> None:
    status, _, body = _post(server.url, b"", "text/csv")

    assert status == 400
    assert b"empty request body" in body


def test_ping_is_503_while_loading_and_200_once_the_model_is_loaded_and_an_early_invocation_waits(
        trained_model_dir: tuple[Path, Path], tmp_path: Path) -> None:
    # The artifact's own code/inference.py is what the container runs: this one holds model_fn
    # until the test creates a release file, so the loading window can be observed.
    model_dir = tmp_path / "model"
    (model_dir / "code").mkdir(parents=True)
    shutil.copy(trained_model_dir[0] / contracts.MODEL_FILE, model_dir / contracts.MODEL_FILE)
    gated = INFERENCE_SOURCE.read_text() + (
        "\n\n_real_model_fn = model_fn\n\n"
        "def model_fn(model_dir):\n"
        "    import pathlib, time\n"
        "    while not (pathlib.Path(model_dir) / 'release').exists():\n"
        "        time.sleep(0.02)\n"
        "    return _real_model_fn(model_dir)\n"
    )
    (model_dir / "code" / contracts.INFERENCE_SCRIPT).write_text(gated)

    with start_model_server(model_dir, wait=False) as server:
        status = 0
        for _ in range(200):  # until gunicorn answers at all
            status = _ping(server.url)
            if status:
                break
        assert status == 503
        # An invocation that reaches a worker still loading waits for the model instead of failing
        # (with several workers, /ping may have been answered by another, loaded one).
        with ThreadPoolExecutor(max_workers=1) as pool:
            early = pool.submit(_post, server.url, sample_csv().encode(), "text/csv")
            time.sleep(0.3)
            assert not early.done()
            (model_dir / "release").touch()
            assert early.result(timeout=30)[0] == 200

        wait_until_healthy(server, timeout=30)
        assert _ping(server.url) == 200


def test_a_model_that_cannot_load_fails_start_with_the_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()

    with pytest.raises(ModelServerError, match=r"model\.joblib not found"):
        start_model_server(empty, timeout=30)


def test_stop_ends_the_gunicorn_process(tmp_path: Path) -> None:
    # A stdlib-only script keeps this start fast; stop() is what is under test.
    model_dir = tmp_path / "model"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / contracts.INFERENCE_SCRIPT).write_text(
        "def model_fn(d): return None\ndef input_fn(b, t): return b\n"
        "def predict_fn(x, m): return x\ndef output_fn(p, a): return p\n"
    )
    server = start_model_server(model_dir)
    server.stop()

    assert server.process.poll() is not None
    assert not Path(server.log_path).exists()


def test_cli_rejects_a_model_path_that_is_neither_dir_nor_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "model.joblib"
    bogus.write_bytes(b"not an archive")

    done = subprocess.run([sys.executable, "-m", "local.model_server", "--model", str(bogus), "--port", "0"],
                          capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 2
    assert "expected a model directory or a model.tar.gz" in done.stderr


def test_cli_rejects_an_empty_model_path_instead_of_serving_the_working_directory(
        capsys: pytest.CaptureFixture[str]) -> None:
    from local import model_server

    # `make serve` without MODEL= passes --model "", which Path() would read as ".".
    with pytest.raises(SystemExit) as exited:
        model_server.main(["--model", "", "--port", "0"])

    assert exited.value.code == 2
    assert "make serve MODEL=" in capsys.readouterr().err
