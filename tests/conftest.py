"""Shared fixtures: moto's server on a loopback port plays AWS for every runtime test."""

from __future__ import annotations

import ast
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from local.pipeline_executor import IMAGE_BIN

REGION = "us-east-1"

# The embedded run's jobs run under the scikit-learn image's Python; without it they cannot, so skip.
needs_image = pytest.mark.skipif(not (IMAGE_BIN / "python3").exists(),
                                 reason=".venv-image is not built (make install builds it); the jobs run in it")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One moto server for the session; tests get a clean state through the `aws` fixture."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point boto3 at the emulator with dummy credentials, and reset its state afterwards."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    boto3.DEFAULT_SESSION = None
    try:
        yield moto_server
    finally:
        reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")  # noqa: S310 - loopback
        urllib.request.urlopen(reset, timeout=10).close()  # noqa: S310 - loopback emulator


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model_dir, output_dir) of one default training run, shared by the session: train once."""
    from training.train import train  # imported here so suites that never train skip scikit-learn

    root = tmp_path_factory.mktemp("trained")
    result = train(None, root / "model", root / "output")
    return result.model_path.parent, result.evaluation_path.parent


def parse_source(source: str, **kwargs: object) -> ast.Module:
    """ast.parse, retried on CPython 3.11.7's spurious "AST constructor recursion depth mismatch".

    That SystemError comes from AST state shared between threads (fixed in 3.11.8): it strikes when a
    background thread of the test process (an emulator or server thread formatting a traceback, which
    3.11 does with ast) builds an AST at the same moment. The source itself is fine, so a retry is right.
    """
    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            return ast.parse(source, **kwargs)  # type: ignore[arg-type]
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == attempts:
                raise
    raise AssertionError("unreachable")
