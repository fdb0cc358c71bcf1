"""The host's wire: length-prefixed JSON frames over a stream socket.

JSON, not pickle: the web process must never unpickle what a (possibly broken) host sends.
Every frame is bounded (``MAX_FRAME``): a host that sends garbage or a giant frame fails that
job and is killed; it can never make the web process allocate without limit.
"""

from __future__ import annotations

import json
import math
import socket
import struct
from typing import Any

MAX_FRAME = 4 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something that is not a frame of ours (the detail says what)."""


class Closed(Exception):
    """The peer closed its end (it exited or was killed)."""


def _finite(value: Any) -> Any:
    """NaN/inf are not JSON: a checkpoint's odd float becomes null instead of breaking the frame."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def encode(message: dict[str, Any]) -> bytes:
    try:
        body = json.dumps(message, ensure_ascii=False, allow_nan=False, default=str).encode()
    except ValueError:
        body = json.dumps(_finite(message), ensure_ascii=False, allow_nan=False, default=str).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes is over the {MAX_FRAME} limit")
    return _HEADER.pack(len(body)) + body


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


def _read_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise Closed()
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket) -> dict[str, Any]:
    """One message; raises Closed at the peer's end, ProtocolError for anything not ours."""
    return receive_sized(sock)[0]


def receive_sized(sock: socket.socket) -> tuple[dict[str, Any], int]:
    """One message and its frame's size in bytes."""
    (size,) = _HEADER.unpack(_read_exact(sock, _HEADER.size))
    if size > MAX_FRAME:
        raise ProtocolError(f"frame header says {size} bytes (limit {MAX_FRAME})")
    body = _read_exact(sock, size)
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {body[:200]!r}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("t", message.get("op")), str):
        raise ProtocolError(f"frame is not a message: {body[:200]!r}")
    return message, size
