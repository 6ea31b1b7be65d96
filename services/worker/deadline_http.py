"""One HTTP request that ends within a deadline, whatever the other side sends.

A client's read timeout bounds each read, not the exchange: a receiver that sends a
byte every few seconds (its status line, its headers, its body) holds the caller for
hours within any read timeout, and a webhook's sender is a worker thread. httpcore
(httpx's own transport) takes a network backend: this one gives every connect, read,
write and TLS handshake the time left until the request's deadline, or less, and
raises httpcore's own timeout once none is left.
"""

from __future__ import annotations

import ssl
import time
import typing
from collections.abc import Iterable

import httpcore

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, left_of(self._deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, left_of(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bound = left_of(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, bound), self._deadline
        )

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's synchronous backend, every operation bounded by one deadline
    (``time.monotonic()`` seconds)."""

    def __init__(self, deadline: float) -> None:
        self._backend = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        bound = left_of(self._deadline, timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, bound, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        bound = left_of(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._backend.connect_unix_socket(path, bound, socket_options), self._deadline
        )

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def left_of(deadline: float, timeout: float | None, late: type[Exception]) -> float:
    """The time an operation may take: ``timeout`` or what is left until ``deadline``,
    whichever is less; raises ``late`` once the deadline has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise late("the request's deadline passed")
    return left if timeout is None else min(timeout, left)
