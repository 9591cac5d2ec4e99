"""SageMaker's model-container contract (GET /ping, POST /invocations), served by gunicorn.

The SageMaker scikit-learn container (image 1.4-2, sagemaker-containers 2.8.6.post2) runs the artifact's
own ``code/inference.py`` (``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn``) in gunicorn's gevent
workers behind nginx; this module does the same on loopback, so the embedded run, the deploy smoke test
and ``make serve`` exercise the exact code a real endpoint runs, handed its arguments the way the
container hands them:

- Content-Type: the raw header (``ContentType`` first, as the toolkit reads it), ``application/json``
  when there is none; the body as str (UTF-8, undecodable bytes replaced) only for exactly ``text/csv``
  or ``application/json``, bytes otherwise. A chunked body is read whole (nginx does that in the image).
- Accept: the raw header; ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` (default ``application/json``) when
  it is missing or exactly ``*/*``. The answer's type is what ``output_fn`` returns, with
  ``; charset=utf-8`` added to ``text/*`` types as Flask adds it in the image.
- Gevent workers (as the image's), so a slow or half-sent request does not hold up ``/ping`` or others.

Where it differs, on purpose and documented: the image answers every exception with 500 (an HTML page;
the message goes to the endpoint's log), this server answers an inference script's client errors with
their ``.status`` (400, 406, 415) and message; an ``output_fn`` answer that is not a (body, content_type)
pair, which the image hands to Flask as it is, is a 500 here; a model that cannot load is 500 on both
routes here, as there (the image loads it on the first request).

    python -m local.model_server --model PATH(dir or model.tar.gz) --port 8080 [--workers 2]

Python API: ``start_model_server(path) -> ModelServer`` (a context manager) starts gunicorn in a
subprocess on a free loopback port and returns once ``/ping`` answers 200.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.util import import_app

import contracts

LOG = logging.getLogger("local.model_server")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The model directory a gunicorn worker loads (set by the CLI before workers fork).
ENV_MODEL_DIR = "MODEL_SERVER_MODEL_DIR"
# The model server as gunicorn loads it in each worker; start_wsgi_app() serves other apps named this way.
MODEL_APP = "local.model_server:create_app()"
# The container answers with this type when the request's Accept is absent or */*
# (SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT in the SageMaker inference toolkit).
ENV_DEFAULT_ACCEPT = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
DEFAULT_ACCEPT = "application/json"
# The toolkit reads a request without Content-Type as JSON, and hands input_fn text (not bytes) only
# for exactly these two types.
DEFAULT_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPES = ("application/json", "text/csv")
# SageMaker caps a real-time request payload at 6 MB; the same bound keeps a bad client from
# making a worker read an unbounded body.
MAX_BODY_BYTES = 6 * 1024 * 1024
# /ping is answered by whichever gunicorn worker accepts it, so one loaded worker makes the server look
# ready while another still loads: an invocation that lands on a loading worker waits this long for it
# (below gunicorn's 60 s worker timeout) instead of failing.
LOAD_WAIT_SECONDS = 30.0

StartResponse = Callable[..., Any]


class ModelServerError(RuntimeError):
    """The model server could not be started or did not become healthy."""


@dataclass(frozen=True)
class InferenceHandlers:
    """The four functions of a SageMaker inference script."""

    model_fn: Callable[[str], Any]
    input_fn: Callable[[str | bytes, str], Any]
    predict_fn: Callable[[Any, Any], Any]
    output_fn: Callable[[Any, str], Any]
    source: str


def _load_script(path: Path) -> ModuleType:
    # The container puts code/ on sys.path so the script can import its own helpers.
    code_dir = str(path.parent)
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    spec = importlib.util.spec_from_file_location(f"_model_inference_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise ModelServerError(f"cannot import inference script {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_handlers(model_dir: Path) -> InferenceHandlers:
    """The artifact's own code/inference.py when it has one (as the container does), else training.inference."""
    script = model_dir / "code" / contracts.INFERENCE_SCRIPT
    if script.is_file():
        module = _load_script(script)
        source = str(script)
    else:
        module = importlib.import_module("training.inference")
        source = "training.inference"
    missing = [name for name in ("model_fn", "input_fn", "predict_fn", "output_fn") if not hasattr(module, name)]
    if missing:
        raise ModelServerError(f"inference script {source} lacks {', '.join(missing)}; SageMaker needs all four")
    return InferenceHandlers(module.model_fn, module.input_fn, module.predict_fn, module.output_fn, source)


def unpack_model(archive: Path, destination: Path) -> Path:
    """Unpack a model.tar.gz the way SageMaker does into /opt/ml/model; refuses paths outside it."""
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(destination, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ModelServerError(f"cannot unpack model archive {archive}: {exc}") from None
    return destination


def request_content_type(environ: MutableMapping[str, Any]) -> str:
    """The Content-Type input_fn gets: the raw header (the toolkit reads ``ContentType`` first) or JSON."""
    return environ.get("HTTP_CONTENTTYPE") or environ.get("CONTENT_TYPE") or DEFAULT_CONTENT_TYPE


def request_accept(environ: MutableMapping[str, Any]) -> str:
    """The Accept output_fn gets: the raw header, or the default answer type when it is missing or */*."""
    accept = environ.get("HTTP_ACCEPT")
    if not accept or accept == "*/*":
        return os.environ.get(ENV_DEFAULT_ACCEPT, DEFAULT_ACCEPT)
    return accept


def request_data(body: bytes, content_type: str) -> str | bytes:
    """The body as input_fn gets it: text for exactly text/csv or application/json, else bytes."""
    return body.decode("utf-8", errors="replace") if content_type in TEXT_CONTENT_TYPES else body


def response_type(mimetype: str) -> str:
    """The Content-Type of an answer whose type output_fn named: werkzeug (Flask's) adds the charset to text/*."""
    return f"{mimetype}; charset=utf-8" if mimetype.startswith("text/") else mimetype


def _error_status(exc: BaseException) -> int | None:
    # training/inference.py marks client errors with `.status` (415 unsupported type, 400 bad body).
    status = getattr(exc, "status", None)
    if isinstance(status, int) and 400 <= status < 500:
        return status
    return None


class ModelApp:
    """WSGI app for one model directory; the model loads in a background thread so /ping can say 503."""

    def __init__(self, model_dir: Path, *, background: bool = True) -> None:
        self.model_dir = model_dir
        self._handlers: InferenceHandlers | None = None
        self._model: Any = None
        self._error: str | None = None
        self._ready = threading.Event()
        if background:
            threading.Thread(target=self._load, name="model-loader", daemon=True).start()
        else:
            self._load()

    def _load(self) -> None:
        try:
            handlers = load_handlers(self.model_dir)
            self._model = handlers.model_fn(str(self.model_dir))
            self._handlers = handlers
            LOG.info("model loaded from %s with %s", self.model_dir, handlers.source)
        except Exception as exc:
            LOG.error("model failed to load from %s:\n%s", self.model_dir, traceback.format_exc())
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()

    @property
    def loaded(self) -> bool:
        return self._handlers is not None

    def __call__(self, environ: MutableMapping[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                return _respond(start_response, 405, "use GET /ping")
            return self._ping(start_response)
        if path == "/invocations":
            if method != "POST":
                return _respond(start_response, 405, "use POST /invocations")
            return self._invoke(environ, start_response)
        return _respond(start_response, 404, f"no route {path}; the container answers GET /ping and POST /invocations")

    def _ping(self, start_response: StartResponse) -> Iterable[bytes]:
        if self._error is not None:
            # 500 (not 503) tells a waiting caller that loading failed for good, so it stops waiting;
            # /invocations answers the same, as the image does (both routes load the model there).
            return _respond(start_response, 500, f"model failed to load: {self._error}")
        if not self.loaded:
            return _respond(start_response, 503, "model is loading")
        return _respond(start_response, 200, "", "application/json")  # the toolkit's empty 200, typed as Flask types it

    def _invoke(self, environ: MutableMapping[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not self._ready.is_set():
            self._ready.wait(LOAD_WAIT_SECONDS)
        handlers = self._handlers
        if handlers is None:
            if self._error is not None:
                return _respond(start_response, 500, f"model failed to load: {self._error}")
            return _respond(start_response, 503, "model is loading; retry after /ping is 200")
        body = _read_body(environ)
        if isinstance(body, tuple):
            return _respond(start_response, *body)
        content_type = request_content_type(environ)
        accept = request_accept(environ)
        try:
            data = handlers.input_fn(request_data(body, content_type), content_type)
            prediction = handlers.predict_fn(data, self._model)
            result = handlers.output_fn(prediction, accept)
        except Exception as exc:
            status = _error_status(exc)
            if status is not None:
                LOG.info("client error %d: %s", status, exc)
                return _respond(start_response, status, str(exc))
            LOG.error("inference failed:\n%s", traceback.format_exc())
            return _respond(start_response, 500, f"inference failed: {type(exc).__name__}: {exc}")
        if not isinstance(result, tuple) or len(result) != 2:
            # The toolkit hands any other answer to Flask as it is; this server takes only the pair.
            return _respond(start_response, 500, f"output_fn returned {type(result).__name__}; this server "
                                                 "answers only what it returns as (body, content_type)")
        body, mimetype = result
        payload = body.encode() if isinstance(body, str) else bytes(body)
        return _respond(start_response, 200, payload, response_type(str(mimetype)))


def _read_body(environ: MutableMapping[str, Any]) -> bytes | tuple[int, str]:
    """The request body, or (status, reason) when it cannot be read; a chunked body is read whole."""
    stream = environ["wsgi.input"]
    length_header = environ.get("CONTENT_LENGTH")
    if length_header:
        try:
            length = int(length_header)
        except ValueError:
            return 400, f"invalid Content-Length header {length_header!r}"
        if length > MAX_BODY_BYTES:
            return 413, f"request body of {length} bytes exceeds SageMaker's {MAX_BODY_BYTES}-byte limit"
        return stream.read(length) if length > 0 else b""
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return b""
    body = stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return 413, f"chunked request body exceeds SageMaker's {MAX_BODY_BYTES}-byte limit"
    return body


def _respond(start_response: StartResponse, status: int, body: bytes | str,
             content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
    payload = body.encode() if isinstance(body, str) else body
    reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
               413: "Payload Too Large", 415: "Unsupported Media Type", 500: "Internal Server Error",
               503: "Service Unavailable"}
    start_response(f"{status} {reasons.get(status, 'Error')}",
                   [("Content-Type", content_type), ("Content-Length", str(len(payload)))])
    return [payload]


def create_app() -> ModelApp:
    """gunicorn's app factory: each worker loads the model named by MODEL_SERVER_MODEL_DIR."""
    model_dir = os.environ.get(ENV_MODEL_DIR)
    if not model_dir:
        raise ModelServerError(f"{ENV_MODEL_DIR} is not set; run `python -m local.model_server --model PATH`")
    return ModelApp(Path(model_dir))


class _Gunicorn(BaseApplication):
    """gunicorn's documented custom-application hook, so the CLI needs no config file."""

    def __init__(self, options: dict[str, Any], app: str) -> None:
        self._options = options
        self._app = app
        super().__init__()

    def load_config(self) -> None:
        assert self.cfg is not None
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return import_app(self._app)  # "module:name" or "module:factory()", as gunicorn's command line takes it


def gunicorn_settings(*, bind: str, workers: int) -> dict[str, Any]:
    """The image's gunicorn settings (sagemaker-containers' server.start): gevent workers, 1000 connections
    each, the 60 s model-server timeout."""
    return {"bind": [bind], "workers": workers, "worker_class": "gevent", "worker_connections": 1000,
            "timeout": 60, "graceful_timeout": 5, "loglevel": "warning", "accesslog": None}


def serve(app: str, *, bind: str, workers: int = 1) -> None:
    """Run the WSGI app `app` ("module:factory()") under gunicorn in the foreground until it is stopped."""
    _Gunicorn(gunicorn_settings(bind=bind, workers=workers), app).run()


EXAMPLE_MODEL = ".demo/source-build/build/model"


def resolve_model(model: Path, workdir: Path) -> Path:
    """A model directory as is, or a model.tar.gz unpacked into workdir; ValueError says what was wrong."""
    if model.is_dir():
        return model
    if not model.exists():
        raise ValueError(f"--model {model}: no such file or directory; pass a model directory or a model.tar.gz, "
                         f"e.g. make serve MODEL={EXAMPLE_MODEL} after make demo")
    if model.is_file() and model.name.endswith((".tar.gz", ".tgz")):
        return unpack_model(model, workdir)
    raise ValueError(f"--model {model}: expected a model directory or a model.tar.gz file")


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so a port in use is reported before anything says "serving"."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        # As gunicorn does: a restarted server can take its port back while old connections linger.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise ModelServerError(f"port {port} on {host} is in use (another server?); stop it, or pick another "
                                   f"port: --port {port + 1} (make serve PORT={port + 1})") from None
        raise ModelServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return listener


# --- Managing a server from Python ----------------------------------------------------------------
@dataclass
class ModelServer:
    """A running gunicorn model server on loopback; stop() (or leaving the with-block) ends it."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _workdir: tempfile.TemporaryDirectory[str] = field(repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._workdir.cleanup()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ping(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET {url}/ping: (status, body), or (0, the error) when nothing answered in time."""
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=timeout) as response:  # noqa: S310 - loopback URL we built
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def start_model_server(model: Path, *, workers: int = 1, timeout: float = 60.0, wait: bool = True) -> ModelServer:
    """Start gunicorn on a free loopback port for a model dir or model.tar.gz; return once /ping is 200.

    The listening socket is bound here and handed to gunicorn (``fd://``), so there is no window in
    which another process could take the port. ``wait=False`` returns as soon as the process runs.
    """
    workdir = tempfile.TemporaryDirectory(prefix="model-server-")
    try:
        model_dir = resolve_model(model, Path(workdir.name) / "model")
    except Exception:
        workdir.cleanup()
        raise
    return _start_app(MODEL_APP, {ENV_MODEL_DIR: str(model_dir)}, workdir, workers=workers, timeout=timeout,
                      wait=wait)


def start_wsgi_app(app: str, *, environ: dict[str, str], workers: int = 1, timeout: float = 60.0) -> ModelServer:
    """Any WSGI app ("module:factory()") under gunicorn with the model server's settings, on a free loopback
    port; returns once its /ping answers 200. `make bench` runs its baselines this way."""
    return _start_app(app, environ, tempfile.TemporaryDirectory(prefix="wsgi-app-"), workers=workers,
                      timeout=timeout, wait=True)


def _start_app(app: str, environ: dict[str, str], workdir: tempfile.TemporaryDirectory[str], *, workers: int,
               timeout: float, wait: bool) -> ModelServer:
    # This module's command line serves `app` with gunicorn_settings(), whichever app it is.
    return launch(lambda fd: [sys.executable, "-m", "local.model_server", "--app", app, "--fd", str(fd),
                              "--workers", str(workers)],
                  workdir, project_env(environ), timeout=timeout, wait=wait)


def project_env(environ: dict[str, str]) -> dict[str, str]:
    """This process's environment with `environ` added and the project on PYTHONPATH, for a server of ours."""
    return {**os.environ, **environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}


def launch(command: Callable[[int], list[str]], workdir: tempfile.TemporaryDirectory[str], env: dict[str, str],
           *, cwd: Path = PROJECT_ROOT, timeout: float = 60.0, wait: bool = True) -> ModelServer:
    """Run `command(fd)`, a server that serves on the inherited listening socket `fd`, with exactly `env`.

    The socket is bound here on a free loopback port; the output goes to a log in `workdir`, which stop()
    removes. Returns once /ping answers 200 (see wait_until_healthy), or at once when `wait` is False.
    """
    log_path = Path(workdir.name) / "gunicorn.log"
    listener = listen("127.0.0.1", 0)
    port = listener.getsockname()[1]
    with listener, open(log_path, "wb") as log:
        process = subprocess.Popen(command(listener.fileno()), pass_fds=(listener.fileno(),), stdout=log,
                                   stderr=subprocess.STDOUT, env=env, cwd=cwd)
    server = ModelServer(f"http://127.0.0.1:{port}", process, log_path, workdir)
    if wait:
        try:
            wait_until_healthy(server, timeout=timeout)
        except BaseException:
            server.stop()
            raise
    return server


def wait_until_healthy(server: ModelServer, timeout: float = 60.0) -> None:
    """Poll /ping until 200; raise at once if the process dies or the model fails to load."""
    deadline = time.monotonic() + timeout
    status, text = 0, ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ModelServerError(
                f"model server exited with code {server.process.returncode}:\n{server.log_tail()}"
            )
        status, text = ping(server.url)
        if status == 200:
            return
        if status == 500:
            raise ModelServerError(f"model server at {server.url}: {text}\n{server.log_tail()}")
        time.sleep(0.05)
    raise ModelServerError(
        f"model server at {server.url} not healthy after {timeout:.0f}s (last /ping: {status} {text})\n"
        f"{server.log_tail()}"
    )


def _model_path(text: str) -> Path:
    # Path("") is ".", which would serve the working directory: `make serve` without MODEL= passes "".
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; pass a model directory or a model.tar.gz, "
                                         "e.g. make serve MODEL=.demo/source-build/build/model")
    return Path(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.model_server",
                                     description="Serve a model through the SageMaker container contract.")
    parser.add_argument("--model", type=_model_path, help="model directory or model.tar.gz (required)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback only)")
    parser.add_argument("--workers", type=int, default=1)
    # Internal, for start_model_server() and start_wsgi_app(): serve the WSGI app named by --app on a
    # listening socket inherited from the parent, which set up its environment.
    parser.add_argument("--app", default=MODEL_APP, help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.fd is not None:
        serve(args.app, bind=f"fd://{args.fd}", workers=args.workers)
        return 0
    if args.model is None:
        parser.error("the following arguments are required: --model")
    with tempfile.TemporaryDirectory(prefix="model-server-") as workdir:
        try:
            model_dir = resolve_model(args.model, Path(workdir) / "model")
            listener = listen(args.host, args.port)
        except (ValueError, ModelServerError) as exc:
            print(f"model_server: error: {exc}", file=sys.stderr)
            return 2
        os.environ[ENV_MODEL_DIR] = str(model_dir)  # before gunicorn forks the workers that read it
        print(f"serving {args.model} on http://{args.host}:{args.port} (GET /ping, POST /invocations)", flush=True)
        # gunicorn owns the socket from here and closes it when it stops; closing it again here would fail.
        serve(MODEL_APP, bind=f"fd://{listener.detach()}", workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
