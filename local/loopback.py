"""What the shims (local.hosting, local.pipelines_shim) share: a threaded HTTP server on a free loopback port,
served from a daemon thread, the lifecycle around it, and the request handler's plumbing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


class LoopbackServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        # shutdown() waits for the loop's next poll: a short one lets close() return at once.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=name, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


class LoopbackHandler(BaseHTTPRequestHandler):
    """A shim's request handler: keep-alive HTTP/1.1 (botocore reuses connections), access lines at debug level."""

    protocol_version = "HTTP/1.1"
    logger: ClassVar[logging.Logger] = logging.getLogger("local.loopback")

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: bytes, content_type: str, extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        self.logger.debug("%s " + format, self.address_string(), *args)


class LoopbackShim:
    """An AWS endpoint played on loopback; a context manager. `stop()` closes the server first (no new request
    can start work), then `_release()` stops what the shim started; both are safe to call twice."""

    label: ClassVar[str]
    """What the shim is called in its log, its thread name and its errors, e.g. "hosting shim"."""
    logger: ClassVar[logging.Logger] = logging.getLogger("local.loopback")
    endpoint_variable: ClassVar[str]
    """The AWS_ENDPOINT_URL_<SERVICE> variable that sends boto3's calls of the service here."""

    def __init__(self) -> None:
        self._server: LoopbackServer | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """What the shim needs before its first request (clients, folders)."""

    def _release(self) -> None:
        """Stop whatever the shim started for its requests."""

    def start(self) -> Self:
        if self._server is None:
            self._prepare()
            self._server = LoopbackServer(self._handler(), self.label.replace(" ", "-"))
            self.logger.info("%s on %s", self.label, self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._release()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"the {self.label} is not running; call start() or use it as a context manager")
        return self._server.url

    def environ(self) -> dict[str, str]:
        """The variable that sends boto3's calls of this one service here."""
        return {self.endpoint_variable: self.url}
