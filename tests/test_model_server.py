"""The SageMaker container contract on loopback: real gunicorn, the real trained artifact, real HTTP.

What the image answers for each kind of request is pinned by tests/test_serving_contract.py (the same
table against the image's own toolkit); these tests cover the server itself: how it hands requests to the
script, its workers, loading, limits and command line.
"""

from __future__ import annotations

import json
import shutil
import socket
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
from werkzeug.test import Client

import contracts
from local.model_server import (
    ModelApp,
    ModelServer,
    ModelServerError,
    ping,
    start_model_server,
    wait_until_healthy,
)
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
    assert content_type == "text/csv; charset=utf-8"  # werkzeug adds the charset to text/* in the image
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


def test_empty_body_is_400_saying_so(server: ModelServer) -> None:
    status, _, body = _post(server.url, b"", "text/csv")

    assert status == 400
    assert b"request body is empty" in body


def _raw_request(url: str, head: bytes, body: bytes = b"", timeout: float = 30) -> bytes:
    """Send bytes as they are (headers, body, chunking) and return the raw answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(head + body)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_a_chunked_body_is_read_whole_as_nginx_hands_it_to_the_image(server: ModelServer) -> None:
    body = sample_csv().encode()
    chunks = b"".join(f"{len(body[i:i + 50]):x}\r\n".encode() + body[i:i + 50] + b"\r\n"
                      for i in range(0, len(body), 50)) + b"0\r\n\r\n"
    head = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n")

    answer = _raw_request(server.url, head, chunks)

    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert len(json.loads(answer.split(b"\r\n\r\n", 1)[1])["predictions"]) == len(SAMPLE_ROWS)


def test_a_body_over_sagemakers_6_mb_limit_is_413_before_it_is_read(server: ModelServer) -> None:
    head = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 7000000\r\n"
            b"Connection: close\r\n\r\n")

    answer = _raw_request(server.url, head)

    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]


def test_a_half_sent_request_does_not_stall_ping_or_other_clients(model_archive: Path) -> None:
    # One worker, as `make serve` runs: a sync worker would sit in the stalled read; gevent's does not.
    with start_model_server(model_archive, workers=1) as single:
        host, port = single.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as stalled:
            stalled.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                            b"Content-Length: 1000\r\n\r\ntenure_months,")

            assert ping(single.url, timeout=10)[0] == 200
            status, _, body = _post(single.url, sample_csv().encode(), "text/csv")
            assert status == 200, body


# --- How the script is called: as the image's toolkit calls it ----------------------------------------------
ECHO_SCRIPT = """
def model_fn(model_dir):
    return None

def input_fn(input_data, content_type):
    return {"data": type(input_data).__name__, "content_type": content_type}

def predict_fn(data, model):
    return data

def output_fn(prediction, accept):
    import json
    return json.dumps({**prediction, "accept": accept}), "application/json"
"""


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """A stdlib-only script that answers with what the server handed it."""
    model_dir = tmp_path_factory.mktemp("echo-model")
    (model_dir / "code").mkdir()
    (model_dir / "code" / contracts.INFERENCE_SCRIPT).write_text(ECHO_SCRIPT)
    with start_model_server(model_dir) as running:
        yield running


def _handed(url: str, headers: dict[str, str]) -> dict[str, str]:
    request = urllib.request.Request(f"{url}/invocations", data=b"1,2", method="POST")  # noqa: S310 - loopback
    request.headers = {}  # urllib would add Content-Type: application/x-www-form-urlencoded
    for key, value in headers.items():
        request.add_unredirected_header(key, value)
    if "Content-Type" not in headers:
        request.add_unredirected_header("Content-Type", "")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def test_a_request_without_content_type_reaches_input_fn_as_json_text(echo_server: ModelServer) -> None:
    assert _handed(echo_server.url, {}) == {"data": "str", "content_type": "application/json",
                                             "accept": "application/json"}


def test_input_fn_gets_text_only_for_exactly_text_csv_or_application_json(echo_server: ModelServer) -> None:
    assert _handed(echo_server.url, {"Content-Type": "text/csv"})["data"] == "str"
    assert _handed(echo_server.url, {"Content-Type": "text/csv; charset=utf-8"}) == {
        "data": "bytes", "content_type": "text/csv; charset=utf-8", "accept": "application/json"}
    assert _handed(echo_server.url, {"Content-Type": "application/x-npy"})["data"] == "bytes"


def test_output_fn_gets_the_accept_header_as_sent_and_the_default_for_none_or_any(echo_server: ModelServer) -> None:
    listed = "application/json, text/csv;q=0.5"

    assert _handed(echo_server.url, {"Content-Type": "text/csv", "Accept": listed})["accept"] == listed
    assert _handed(echo_server.url, {"Content-Type": "text/csv", "Accept": "*/*"})["accept"] == "application/json"


def test_the_default_answer_type_is_sagemaker_default_invocations_accept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / contracts.INFERENCE_SCRIPT).write_text(ECHO_SCRIPT)
    monkeypatch.setenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/csv")

    with start_model_server(tmp_path) as server:
        assert _handed(server.url, {"Content-Type": "text/csv"})["accept"] == "text/csv"


def test_an_output_fn_answer_that_is_not_a_body_and_type_pair_is_a_500_saying_so(tmp_path: Path) -> None:
    # The image would hand such an answer to Flask as it is; this server refuses it (its docstring says so).
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / contracts.INFERENCE_SCRIPT).write_text(
        ECHO_SCRIPT.replace('return json.dumps({**prediction, "accept": accept}), "application/json"',
                            'return json.dumps({**prediction, "accept": accept})'))
    app = ModelApp(tmp_path, background=False)  # the WSGI app each gunicorn worker runs, called in-process

    answer = Client(app).post("/invocations", data=b"1,2", content_type="text/csv")

    assert answer.status_code == 500
    assert "output_fn returned str" in answer.get_data(as_text=True)


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
            status = ping(server.url)[0]
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
        assert ping(server.url, timeout=10)[0] == 200


def test_a_model_that_cannot_load_fails_start_with_the_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()

    with pytest.raises(ModelServerError, match=r"model\.joblib not found"):
        start_model_server(empty, timeout=30)


def test_ping_and_invocations_both_answer_500_when_the_model_cannot_load(tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()

    with start_model_server(empty, wait=False) as server:
        answered = 0
        for _ in range(600):  # until gunicorn answers and the load has failed
            answered = ping(server.url)[0]
            if answered not in (0, 503):
                break
            time.sleep(0.05)
        status, _, body = _post(server.url, sample_csv().encode(), "text/csv")

    assert (answered, status) == (500, 500)
    assert b"model.joblib not found" in body


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


def test_cli_names_a_model_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"

    done = subprocess.run([sys.executable, "-m", "local.model_server", "--model", str(missing), "--port", "0"],
                          capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 2
    assert f"--model {missing}: no such file or directory" in done.stderr
    assert "serving" not in done.stdout


def test_cli_reports_a_port_in_use_before_saying_it_serves(trained_model_dir: tuple[Path, Path]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]

        done = subprocess.run([sys.executable, "-m", "local.model_server", "--model", str(trained_model_dir[0]),
                               "--port", str(port)], capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr
    assert f"make serve PORT={port + 1}" in done.stderr
    assert "serving" not in done.stdout


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
