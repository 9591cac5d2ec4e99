"""One table of requests against the scikit-learn image's own serving stack and against the local model server.

The image side is the real toolkit, run here: sagemaker-containers 2.8.6.post2 with the image 1.4-2's pins in
`.venv-image` (Python 3.10, built by local/image_env.py), its Transformer around code/inference.py from a
model.tar.gz that training/register.py built, its Flask Worker under gunicorn with gevent workers, as the
image's command line starts it (tests/image_serving.py is the glue; the image's own serving module is not on
PyPI). nginx, which the image puts in front, is left out: it only proxies /ping and /invocations and buffers
bodies (a chunked body reaches gunicorn whole, with a Content-Length), so it does not change an answer.

For every row of CASES: both servers succeed or both refuse; on success the answers are the same bytes with
the same Content-Type; on a bad request the image answers 500 (it has no other status for a script's
exception) and its log carries the message the local server answers with its 4xx. The README's contract
table is this table, rendered.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from local import image_env
from local.model_server import ModelServer, ModelServerError, launch, start_model_server
from training.deploy import SAMPLE_ROWS, sample_csv
from training.register import build_model_archive

ROOT = Path(__file__).resolve().parent.parent
NAMES = list(SAMPLE_ROWS[0])
CSV_ROWS = sample_csv()
CSV_NO_HEADER = CSV_ROWS.split("\n", 1)[1]
JSON_ROWS = json.dumps(list(SAMPLE_ROWS))
ONE_ROW = dict(SAMPLE_ROWS[0])


def _csv_row(**changes: object) -> str:
    """The header and one row, with some fields changed."""
    row = {**ONE_ROW, **changes}
    return ",".join(NAMES) + "\n" + ",".join(str(row[n]) for n in NAMES) + "\n"


def _json_row(**changes: object) -> str:
    return json.dumps([{**ONE_ROW, **changes}])


def _many_rows(count: int) -> str:
    lines = [",".join(NAMES)]
    for i in range(count):
        row = SAMPLE_ROWS[i % len(SAMPLE_ROWS)]
        lines.append(",".join(str(row[n]) for n in NAMES[:-1]) + f",{i % 2}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    """A request, what the endpoint (the image) answers and what the local server answers."""

    name: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    local: int = 200
    message: str = ""
    """For a refused request: a fragment of the message (the local answer, the image's log)."""
    chunked: bool = False
    answer: str = "application/json"
    """For an answered request: the answer's Content-Type."""

    @property
    def image(self) -> int:
        return 200 if self.local == 200 else 500


CSV_JSON = {"Content-Type": "text/csv", "Accept": "application/json"}
CSV_ANSWER = "text/csv; charset=utf-8"  # werkzeug adds the charset to text/* answers in the image
CASES: tuple[Case, ...] = (
    # --- answered -----------------------------------------------------------------------------------
    Case("CSV with a header row, `Accept: application/json`", CSV_ROWS.encode(), CSV_JSON),
    Case("CSV without a header row, `Accept: text/csv`", CSV_NO_HEADER.encode(),
         {"Content-Type": "text/csv", "Accept": "text/csv"}, answer=CSV_ANSWER),
    Case("`Content-Type: text/csv; charset=utf-8` (input_fn gets bytes)", CSV_ROWS.encode(),
         {"Content-Type": "text/csv; charset=utf-8"}),
    Case("CSV after a UTF-8 byte-order mark", b"\xef\xbb\xbf" + CSV_ROWS.encode(), {"Content-Type": "text/csv"}),
    Case("Latin-1 CSV, `charset=latin-1` (an unknown category is ignored)",
         _csv_row(payment_method="chèque").encode("latin-1"), {"Content-Type": "text/csv; charset=latin-1"}),
    Case("CSV with CRLF line ends and a blank line",
         CSV_ROWS.replace("\n", "\r\n").replace("\r\n", "\r\n\r\n", 1).encode(), {"Content-Type": "text/csv"}),
    Case("CSV with empty fields and `nan` (imputed)",
         _csv_row(monthly_charges="", payment_method="nan", support_calls="NaN").encode(),
         {"Content-Type": "text/csv"}),
    Case("JSON with null and NaN (imputed)", _json_row(monthly_charges=None, senior_citizen=float("nan")).encode(),
         {"Content-Type": "application/json"}),
    Case("JSON list of objects, no Accept", JSON_ROWS.encode(), {"Content-Type": "application/json"}),
    Case('JSON `{"instances": [[...]]}`, `Accept: text/csv`',
         json.dumps({"instances": [[r[n] for n in NAMES] for r in SAMPLE_ROWS]}).encode(),
         {"Content-Type": "application/json", "Accept": "text/csv"}, answer=CSV_ANSWER),
    Case("JSON without Content-Type (read as JSON)", JSON_ROWS.encode()),
    Case("`ContentType` header (the AWS spelling the toolkit reads first)", CSV_ROWS.encode(),
         {"ContentType": "text/csv", "Content-Type": "application/json"}),
    Case("`Accept: application/json, text/csv;q=0.5`", CSV_ROWS.encode(),
         {"Content-Type": "text/csv", "Accept": "application/json, text/csv;q=0.5"}),
    Case("`Accept: text/csv;q=0.5, application/json`", CSV_ROWS.encode(),
         {"Content-Type": "text/csv", "Accept": "text/csv;q=0.5, application/json"}),
    Case("`Accept: text/*`", CSV_ROWS.encode(), {"Content-Type": "text/csv", "Accept": "text/*"}, answer=CSV_ANSWER),
    Case("`Accept: */*`", CSV_ROWS.encode(), {"Content-Type": "text/csv", "Accept": "*/*"}),
    Case("`Accept: application/json;q=0, */*`", CSV_ROWS.encode(),
         {"Content-Type": "text/csv", "Accept": "application/json;q=0, */*"}, answer=CSV_ANSWER),
    Case("chunked CSV body", CSV_ROWS.encode(), {"Content-Type": "text/csv"}, chunked=True),
    Case("2,000 CSV rows with a label column (pandas' C reader)", _many_rows(2000).encode(),
         {"Content-Type": "text/csv", "Accept": "text/csv"}, answer=CSV_ANSWER),
    # --- refused --------------------------------------------------------------------------------------
    Case("CSV body without Content-Type", CSV_ROWS.encode(), {}, 400, "looks like CSV rows"),
    Case("JSON body sent as `text/csv`", JSON_ROWS.encode(), {"Content-Type": "text/csv"}, 400, "looks like JSON"),
    Case("`Content-Type: application/xml`", b"<rows/>", {"Content-Type": "application/xml"}, 415,
         "'application/xml' is not supported"),
    Case("unknown charset", CSV_ROWS.encode(), {"Content-Type": "text/csv; charset=x-martian"}, 415,
         "charset 'x-martian'"),
    Case("`Accept: application/xml`", CSV_ROWS.encode(), {"Content-Type": "text/csv", "Accept": "application/xml"},
         406, "names no type this model answers with"),
    Case("`Accept: text/csv;q=0, application/json;q=0`", CSV_ROWS.encode(),
         {"Content-Type": "text/csv", "Accept": "text/csv;q=0, application/json;q=0"}, 406, "names no type"),
    Case("`Accept: text/csv;q=high`", CSV_ROWS.encode(), {"Content-Type": "text/csv", "Accept": "text/csv;q=high"},
         406, "q='high' is not a number"),
    Case("empty body", b"", {"Content-Type": "text/csv"}, 400, "request body is empty"),
    Case("bytes that are not UTF-8, `text/csv`", _csv_row(payment_method="chèque").encode("latin-1"),
         {"Content-Type": "text/csv"}, 400, "not valid UTF-8"),
    Case("bytes that are not UTF-8, `charset=utf-8`", _csv_row(payment_method="chèque").encode("latin-1"),
         {"Content-Type": "text/csv; charset=utf-8"}, 400, "not valid utf-8 text"),
    Case("malformed JSON", b'[{"tenure_months": 3,', {"Content-Type": "application/json"}, 400, "malformed JSON"),
    Case("JSON nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, {"Content-Type": "application/json"}, 400,
         "nested too deeply"),
    Case('JSON object without "instances"', b'{"rows": []}', {"Content-Type": "application/json"}, 400,
         '"instances"'),
    Case("JSON row without a feature", json.dumps([{n: v for n, v in ONE_ROW.items() if n != "tenure_months"}])
         .encode(), {"Content-Type": "application/json"}, 400, "JSON row 1 is missing features ['tenure_months']"),
    Case("CSV row of empty fields", (CSV_ROWS + ",,,,,,,,,\n").encode(), {"Content-Type": "text/csv"}, 400,
         "CSV line 7 has no feature values"),
    Case("CSV row with 3 fields", b"12,70.5,840\n", {"Content-Type": "text/csv"}, 400, "CSV line 1 has 3 fields"),
    Case("CSV header without a feature", CSV_ROWS.replace("support_calls", "calls").encode(),
         {"Content-Type": "text/csv"}, 400, "lacks features ['support_calls']"),
    Case("NUL byte in CSV", _csv_row(contract_type="one\0year").encode(), {"Content-Type": "text/csv"}, 400,
         "malformed CSV on line 2"),
    Case("text in a numeric CSV field", _csv_row(monthly_charges="a lot").encode(), {"Content-Type": "text/csv"},
         400, "'monthly_charges' on CSV line 2 is 'a lot', not a number"),
    Case("`inf` in CSV", _csv_row(total_charges="inf").encode(), {"Content-Type": "text/csv"}, 400,
         "'total_charges' on CSV line 2 is 'inf', which is not a finite number"),
    Case("`1e999` in CSV (beyond a 64-bit float)", _csv_row(total_charges="1e999").encode(),
         {"Content-Type": "text/csv"}, 400, "is '1e999', which is not a finite number"),
    Case("JSON `Infinity`", _json_row(total_charges=float("inf")).encode(), {"Content-Type": "application/json"},
         400, "'total_charges' in JSON row 1 is Infinity, which is not a finite number"),
    Case("JSON integer of 400 digits", _json_row(total_charges=10**400).encode(),
         {"Content-Type": "application/json"}, 400, "which is not a finite number"),
    Case("JSON boolean as a number", _json_row(paperless_billing=True).encode(), {"Content-Type": "application/json"},
         400, "'paperless_billing' in JSON row 1 is true, a boolean"),
    Case("JSON object as a number", _json_row(support_calls={"count": 2}).encode(),
         {"Content-Type": "application/json"}, 400, "'support_calls' in JSON row 1 is an object, not a number"),
    Case("JSON list as a category", _json_row(contract_type=["one-year"]).encode(),
         {"Content-Type": "application/json"}, 400, "'contract_type' in JSON row 1 is a list"),
)


def _send(url: str, case: Case) -> tuple[int, str, bytes]:
    """The request exactly as the case states it (http.client adds no Content-Type or Accept of its own)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        connection.putrequest("POST", "/invocations", skip_accept_encoding=True)
        for key, value in case.headers.items():
            connection.putheader(key, value)
        if case.chunked:
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            for start in range(0, len(case.body), 100):
                piece = case.body[start:start + 100]
                connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            connection.send(b"0\r\n\r\n")
        else:
            connection.putheader("Content-Length", str(len(case.body)))
            connection.endheaders(case.body)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


# --- The two servers --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.tar.gz exactly as registration uploads it (model.joblib + code/inference.py), from a model that
    `python -m training.train` wrote in a process of its own, as the pipeline runs it.

    Not the session's in-process model: once any test has imported dill (Pulumi's dynamic providers do)
    before joblib, joblib pickles builtin types such as `slice` through dill, and the image has no dill.
    """
    root = tmp_path_factory.mktemp("contract-model")
    env = {**os.environ, "SM_MODEL_DIR": str(root / "model"), "SM_OUTPUT_DATA_DIR": str(root / "output")}
    env.pop("SM_CHANNEL_TRAIN", None)
    subprocess.run([sys.executable, "-m", "training.train", "--bootstrap-rounds", "2"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)
    return build_model_archive(root / "model", tmp_path_factory.mktemp("contract-archive"))


@pytest.fixture(scope="module")
def image_server(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    if not image_env.is_current():
        pytest.skip(f"the image environment .venv-image is not built (make image-env builds it): {image_env.note()}")
    if "NOT the image's Python" in image_env.note():
        warnings.warn(f"serving contract checked on {image_env.note()}", stacklevel=1)
    base = tmp_path_factory.mktemp("opt-ml")  # SAGEMAKER_BASE_DIR: what /opt/ml is in the container
    with tarfile.open(archive) as tar:
        tar.extractall(base / "model", filter="data")  # as SageMaker unpacks ModelDataUrl
    code = base / "model" / "code"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SAGEMAKER_", "SM_", "PYTHON"))}
    env.update({"SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_PROGRAM": "inference.py",
                "SAGEMAKER_SUBMIT_DIRECTORY": str(code)})

    # The image's command (sagemaker-containers' server.start), bound to our socket instead of nginx's. It runs
    # in the /opt/ml stand-in, not the project: gunicorn puts its working directory on the path, and the
    # script must find only what the archive and the image hold.
    def command(fd: int) -> list[str]:
        return [str(image_env.venv_python()), "-m", "gunicorn", "--timeout", "60", "-k", "gevent",
                "--pythonpath", f"{code},{Path(__file__).parent}", "-b", f"fd://{fd}",
                "--worker-connections", "1000", "-w", "1", "--log-level", "info", "image_serving:main"]

    try:
        # The image loads the model on the first request: the first /ping waits for it.
        server = launch(command, tempfile.TemporaryDirectory(prefix="image-server-"), env, cwd=base, timeout=120)
    except ModelServerError as exc:
        pytest.fail(f"the image's server did not come up ({image_env.note()}): {exc}")
    with server:
        yield server


def _log(server: ModelServer) -> str:
    return server.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def local_server(archive: Path) -> Iterator[ModelServer]:
    with start_model_server(archive) as running:
        yield running


# --- The table --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_local_server_answers_as_the_contract_table_says(local_server: ModelServer, case: Case) -> None:
    status, content_type, body = _send(local_server.url, case)

    assert status == case.local, body
    if case.local == 200:
        assert content_type == case.answer
    else:
        assert case.message in body.decode(), body


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_image_and_local_server_agree(image_server: ModelServer, local_server: ModelServer, case: Case) -> None:
    log_before = len(_log(image_server))

    image_status, image_type, image_body = _send(image_server.url, case)
    local_status, local_type, local_body = _send(local_server.url, case)

    context = f"{case.name} ({image_env.note()})"
    assert (image_status, local_status) == (case.image, case.local), f"{context}: {image_body[:300]!r}"
    if case.local == 200:
        assert image_type == case.answer, context
        assert (image_type, image_body) == (local_type, local_body), context
        return
    message = local_body.decode()
    # The image writes the traceback when the request fails; the log is flushed per record.
    deadline = time.monotonic() + 10
    while message not in _log(image_server)[log_before:] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert message in _log(image_server)[log_before:], f"{context}: the image's log lacks {message!r}"


# --- The README -------------------------------------------------------------------------------------------
def contract_table() -> str:
    lines = ["| request | endpoint (scikit-learn image 1.4-2) | local model server |", "|---|---|---|"]
    for case in CASES:
        if case.local == 200:
            lines.append(f"| {case.name} | 200, `{case.answer}` | the same answer, byte for byte |")
        else:
            lines.append(f"| {case.name} | 500, the message in the log | {case.local} \"…{case.message}…\" |")
    return "\n".join(lines)


def test_readme_contract_table_is_the_case_table() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("<!-- contract-table -->"):readme.index("<!-- /contract-table -->")]

    assert contract_table() in section, "README's contract table is out of date; it should read:\n" + contract_table()
