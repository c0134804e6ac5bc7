"""Serving an ASGI app with uvicorn: on a socket bound up front (a port in use is a clear error, not a log line in
a child) and, for tests, benchmarks or embedding, in a thread of this process."""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from backend.errors import Conflict, LfopsError, TimedOut


def bind_socket(host: str, port: int, field: str = "port") -> socket.socket:
    """A listening TCP socket on host:port (0 = any free port); Conflict naming the port when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # SO_REUSEADDR lets a restarted server take its port back from TIME_WAIT, never from a live listener.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise Conflict(f"{field}: {host}:{port} is already in use", field=field) from None
        raise LfopsError(f"{field}: cannot listen on {host}:{port} ({exc.strerror})", field=field) from None
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for servers that bind their own socket: they may still lose a race)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ThreadedServer:
    """uvicorn serving `app` in a daemon thread, on a socket bound before the thread starts."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> None:
        import uvicorn

        self.sock = bind_socket(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        options = {"log_level": "warning", "access_log": False, "lifespan": "on", **uvicorn_options}
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name=f"uvicorn-{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise LfopsError(f"server on {self.url} ended while starting")
            if time.monotonic() > deadline:
                raise TimedOut(f"server on {self.url} did not start within {timeout:g} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(app: Any, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Iterator[ThreadedServer]:
    server = ThreadedServer(app, host, port, **options).start()
    try:
        yield server
    finally:
        server.stop()
