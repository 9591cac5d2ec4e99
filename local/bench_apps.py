"""The floors `make bench` puts beside the model server: gunicorn apps with its settings that do less.

- echo: reads the request body and sends it back -- what HTTP on loopback costs for that body.
- predict-only: reads the body and calls predict_proba on a frame built before the first request (the
  rows of the body's size, from BENCH_FRAMES_FILE), answering the raw float64 probabilities -- serving
  this model with no parsing and no formatting.

Started by local.bench through local.model_server.start_wsgi_app ("local.bench_apps:echo_app()").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

ENV_MODEL_FILE = "BENCH_MODEL_FILE"
ENV_FRAMES_FILE = "BENCH_FRAMES_FILE"

StartResponse = Callable[..., Any]
Handler = Callable[[bytes], bytes]


def _app(handle: Handler) -> Callable[[MutableMapping[str, Any], StartResponse], Iterable[bytes]]:
    def app(environ: MutableMapping[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/ping":
            answer = b""
        else:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            answer = handle(environ["wsgi.input"].read(length) if length else b"")
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(answer)))])
        return [answer]

    return app


def echo_app() -> Callable[[MutableMapping[str, Any], StartResponse], Iterable[bytes]]:
    return _app(lambda body: body)


def predict_only_app() -> Callable[[MutableMapping[str, Any], StartResponse], Iterable[bytes]]:
    import joblib

    model = joblib.load(os.environ[ENV_MODEL_FILE])
    frames = joblib.load(os.environ[ENV_FRAMES_FILE])  # {rows: DataFrame}

    def handle(body: bytes) -> bytes:
        rows = body.count(b"\n") - 1  # the bench's bodies: a header line and one line per row
        return model.predict_proba(frames[rows])[:, 1].tobytes()

    return _app(handle)
