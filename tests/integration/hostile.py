"""A loopback HTTP/1.1 server that misbehaves on purpose, byte by byte: for answers no emulator route gives.

Each request is answered by `reply(request)`, a `Reply` that says what to send and how: at once, dripped one byte at
a time (headers too, or only the body), or a huge or endless body streamed until the client gives up.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FILLER = b" " * 65536  # whitespace: inside a JSON document that never closes


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    body: bytes | Mapping[str, Any] | list[Any] = b"{}"
    headers: Mapping[str, str] = field(default_factory=dict)
    # "all": every byte of the answer (status line and headers too) one at a time; "body": headers at once.
    drip: Literal["all", "body"] | None = None
    drip_interval: float = 0.5
    # A body of this many bytes declared in Content-Length, streamed (filler after `body`) until sent or refused.
    declared_length: int | None = None
    # A chunked body of this many bytes (None: endless), filler after `body`, until sent or refused.
    chunked: bool = False
    chunked_total: int | None = None

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


class HostileServer:
    """One canned misbehaviour per request, on a free loopback port; ended by `close()`."""

    def __init__(self, reply: Callable[[Request], Reply] | Reply | None = None) -> None:
        canned = reply if isinstance(reply, Reply) else Reply()
        self.reply: Callable[[Request], Reply] = reply if callable(reply) else (lambda request: canned)
        self.requests: list[Request] = []
        self.sent_bytes = 0  # body bytes written, over all requests
        self.open_connections = 0  # accepted and not yet closed by the client (or the server)
        self._count = threading.Lock()
        self._closed = threading.Event()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one connection: requests until the client closes it ----------------------------------------------------
    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(30)
        reader = sock.makefile("rb")
        with self._count:
            self.open_connections += 1
        try:
            while not self._closed.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                if not self._answer(sock, self.reply(request)):
                    return
        except OSError:
            return  # the client went away: that is the point of most replies here
        finally:
            reader.close()
            with self._count:
                self.open_connections -= 1

    def _answer(self, sock: socket.socket, reply: Reply) -> bool:
        """Send one answer; False when the connection is done with."""
        body = reply.payload()
        headers = {"Content-Type": "application/json", **reply.headers}
        if reply.chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(reply.declared_length if reply.declared_length is not None else len(body))
        head = f"HTTP/1.1 {reply.status} Whatever\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        if reply.drip == "all":
            return self._drip(sock, head.encode() + body, reply.drip_interval)
        sock.sendall(head.encode())
        if reply.drip == "body":
            return self._drip(sock, body, reply.drip_interval)
        if reply.chunked:
            for piece in _stream(body, reply.chunked_total, self._closed):
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.sent_bytes += len(piece)
            sock.sendall(b"0\r\n\r\n")
            return True
        if reply.declared_length is not None:
            for piece in _stream(body, reply.declared_length, self._closed):
                sock.sendall(piece)
                self.sent_bytes += len(piece)
            return True
        sock.sendall(body)
        self.sent_bytes += len(body)
        return True

    def _drip(self, sock: socket.socket, data: bytes, interval: float) -> bool:
        for i in range(len(data)):
            if self._closed.wait(interval):
                return False
            sock.sendall(data[i:i + 1])
        return True


def _stream(first: bytes, total: int | None, closed: threading.Event) -> Iterator[bytes]:
    """`first`, then filler, `total` bytes in all (None: until the server closes or the client leaves)."""
    sent = 0
    piece = first
    while not closed.is_set() and (total is None or sent < total):
        if total is not None:
            piece = piece[: total - sent]
        yield piece
        sent += len(piece)
        piece = FILLER


def _read_request(reader: Any) -> Request | None:
    line = reader.readline(65537)
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (header := reader.readline(65537)) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", 0) or 0))
    return Request(method, path, headers, body)


def wait_until(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """`condition()` once it is truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.02)
    return value
