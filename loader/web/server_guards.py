"""Limits daphne has no setting for: what a websocket viewer may leave unread, and how long a
connection may take to send its request headers.

- **Unread websocket output.** Twisted buffers whatever the kernel will not take, without
  limit: a viewer that never reads grows the server's memory with every snapshot. After each
  frame daphne sends, the socket's unsent bytes (Twisted's own buffer, not the kernel's) are
  checked; past ``MACTUNER_WS_UNREAD_BYTES`` (default 64 KiB ≈ 30 snapshots) the connection is
  aborted at once. A reading browser never has more than a frame or two waiting; one that comes
  back from sleep reconnects and gets the state first.
- **Slow or never-finished request headers.** Twisted closes an HTTP connection only after its
  idle timeout (60 s today, 12 hours in older releases), and a client that trickles a byte now
  and then is never idle. Every connection must complete its request headers within
  ``MACTUNER_HTTP_HEADER_TIMEOUT_S`` (default 30 s) of connecting or of its previous request
  ending; the idle timeout is lowered to the same. A request being answered and an upgraded
  websocket are not timed (Twisted pauses its idle timer for both; this check skips them).
  ``daphne --http-timeout`` does not cover this: it times the application's answer, which only
  starts once the headers are in.
- **An announced oversized body.** A ``Content-Length`` over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is
  answered 413 from the headers (Twisted reads a whole body before daphne calls the app).
- The open-file limit is raised to what the OS allows before daphne accepts anyone.
- **Broadcast.** A websocket scope carries its daphne connection (a weak reference under
  ``scope["extensions"]["mactuner.websocket"]``), so the relay frames a snapshot once
  (autobahn's ``PreparedMessage``) and writes those bytes to each socket, instead of passing
  each copy through Channels' session wrapper, daphne and autobahn's framing.

These are patch points on daphne's own classes (``WebSocketProtocol.serverSend``,
``HTTPFactory.buildProtocol``, ``Server.create_application``), checked at install: if a daphne release changes them, the
server starts without the guard and says so in the log. ``tests/test_crowds.py`` proves both
against a live daphne.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import weakref
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("loader.server_guards")
UNREAD_BYTES = int(os.environ.get("MACTUNER_WS_UNREAD_BYTES", str(64 * 1024)))
HEADER_TIMEOUT_S = float(os.environ.get("MACTUNER_HTTP_HEADER_TIMEOUT_S", "30"))
SNDBUF_BYTES = int(os.environ.get("MACTUNER_WS_SNDBUF_BYTES", str(32 * 1024)))
EXTENSION = "mactuner.websocket"
_installed = False


def unsent_bytes(transport: Any) -> int:
    """Bytes Twisted holds for ``transport`` that the kernel has not taken yet."""
    try:
        return len(transport.dataBuffer) - int(transport.offset) + int(transport._tempDataLen)
    except (AttributeError, TypeError):
        return 0


def _drop_if_not_reading(protocol: Any) -> bool:
    transport = protocol.transport
    unsent = unsent_bytes(transport)
    if unsent <= UNREAD_BYTES:
        return False
    log.info("websocket viewer %s does not read (%d bytes unsent): closed", protocol.client_addr, unsent)
    transport.abortConnection()
    return True


def _guard_websocket_output() -> None:
    from daphne.ws_protocol import WebSocketProtocol

    send = WebSocketProtocol.serverSend

    def serverSend(self: Any, content: Any, binary: bool = False) -> None:  # noqa: N802 - daphne's name
        if self.transport is None:
            return
        send(self, content, binary)
        _drop_if_not_reading(self)

    WebSocketProtocol.serverSend = serverSend


def _expose_websocket() -> None:
    from daphne.server import Server

    create = Server.create_application

    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") == "websocket":
            scope["extensions"] = {**(scope.get("extensions") or {}), EXTENSION: weakref.ref(protocol)}
            _limit_kernel_buffer(protocol)
        return create(self, protocol, scope)

    Server.create_application = create_application


def _limit_kernel_buffer(protocol: Any) -> None:
    """Keep the kernel from absorbing a non-reader's output: its buffer would grow to megabytes
    (Linux autotunes it) while Twisted's stays empty and the unread bound never trips."""
    sock = getattr(protocol.transport, "socket", None)
    if sock is not None and SNDBUF_BYTES > 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
        except OSError as exc:
            log.debug("SO_SNDBUF not set: %r", exc)


def websocket_of(scope: Mapping[str, Any]) -> Any:
    """The daphne connection behind a websocket scope, or None (another server, the tests' communicator)."""
    ref = (scope.get("extensions") or {}).get(EXTENSION)
    return ref() if ref is not None else None


def prepare(text: str) -> Any:
    """One text frame for many sockets (server frames are not masked)."""
    from autobahn.websocket.protocol import PreparedMessage

    return PreparedMessage(text.encode(), False, False, True)


def send_prepared(protocol: Any, prepared: Any) -> bool:
    """Write a prepared frame to an open websocket; False if it is closed or was just dropped.

    When Twisted holds nothing for the socket the frame goes to the kernel at once (one
    ``send``); Twisted's own path would buffer it, register the socket for writing, write it on
    the next loop turn and unregister it: several times the work, per viewer per snapshot.
    What the kernel does not take is handed to Twisted, in order, and counts as unread.
    """
    transport = protocol.transport
    if protocol.state != protocol.STATE_OPEN or transport is None or transport.disconnecting:
        return False
    data = prepared.payloadHybi
    sock = getattr(transport, "socket", None)
    if (
        sock is not None
        and protocol._perMessageCompress is None
        and not protocol.send_queue
        and not unsent_bytes(transport)
    ):
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:  # reset or broken: Twisted sees it on its next read and closes
            return False
        if sent == len(data):
            return True
        data = data[sent:]
    elif protocol._perMessageCompress is not None:
        protocol.sendPreparedMessage(prepared)
        return not _drop_if_not_reading(protocol)
    transport.write(data)
    return not _drop_if_not_reading(protocol)


def _guard_header_time() -> None:
    from daphne.http_protocol import HTTPFactory
    from twisted.internet import reactor

    build = HTTPFactory.buildProtocol

    def buildProtocol(self: Any, addr: Any) -> Any:  # noqa: N802 - Twisted's name
        wrapper = build(self, addr)
        if wrapper is not None:
            try:
                wrapper.timeOut = HEADER_TIMEOUT_S  # passed on to the HTTP/1.1 channel it wraps
                _watch_headers(wrapper, getattr(wrapper, "_channel", wrapper), reactor)
            except Exception:  # never refuse a connection over the guard itself
                log.exception("header timeout not set for %s", addr)
        return wrapper

    HTTPFactory.buildProtocol = buildProtocol


def _watch_headers(wrapper: Any, channel: Any, reactor: Any) -> None:
    """Count completed request heads; close the connection if none completes in time.

    ``wrapper`` is what the TCP transport talks to (Twisted's HTTP/1.1-or-2 chooser), ``channel``
    the HTTP/1.1 channel inside it; daphne's websocket upgrade replaces ``wrapper`` as the
    transport's protocol.
    """
    channel.mactuner_heads = 0
    received = channel.allHeadersReceived

    def all_headers_received() -> None:
        channel.mactuner_heads += 1
        received()

    channel.allHeadersReceived = all_headers_received

    def check(seen: int) -> None:
        transport = getattr(channel, "transport", None)
        if transport is None or not getattr(transport, "connected", False):
            return  # closed
        if getattr(transport, "protocol", wrapper) is not wrapper:
            return  # upgraded to a websocket: its own timeouts apply
        if getattr(channel, "_handlingRequest", False) or channel.mactuner_heads != seen:
            reactor.callLater(HEADER_TIMEOUT_S, check, channel.mactuner_heads)
            return
        log.info("HTTP client %s sent no complete request in %.0f s: closed", transport.getPeer(), HEADER_TIMEOUT_S)
        transport.abortConnection()

    reactor.callLater(HEADER_TIMEOUT_S, check, 0)


def _refuse_oversized_bodies() -> None:
    """A request whose ``Content-Length`` is over Django's limit is answered 413 from its headers.

    Twisted reads the whole body before daphne calls the application, so a client announcing
    100 GB and sending two bytes would hold its request until the timeouts, and Django's own 413
    would come only after a body that never arrives. ``Request.gotLength`` is Twisted's hook for
    the announced length, called once the headers are in.
    """
    from daphne.http_protocol import WebRequest
    from django.conf import settings
    from django.utils import translation

    from loader.jobs.i18n import here
    from loader.pipeline.i18n import gettext_noop

    got_length = WebRequest.gotLength

    def gotLength(self: Any, length: int | None) -> None:  # noqa: N802 - Twisted's name
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if length is not None and limit and length > limit:
            accept = (self.requestHeaders.getRawHeaders(b"accept-language") or [b""])[0]
            with translation.override("en" if accept.strip().lower().startswith(b"en") else "ko"):
                body = json.dumps(
                    {"error": here(gettext_noop("요청 본문이 너무 큽니다."))}, ensure_ascii=False
                ).encode()
            self.channel.transport.write(
                b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            self.channel.transport.loseConnection()
            log.info("refused a %d-byte body from its Content-Length (limit %d)", length, limit)
        got_length(self, length)

    WebRequest.gotLength = gotLength


def install() -> None:
    """Called when the ASGI module is imported under daphne, before its server is built."""
    global _installed
    if _installed:
        return
    _installed = True
    from loader.web.console import route_access_log, write_in_background
    from loader.web.startup import raise_open_file_limit

    raise_open_file_limit()
    guards = (
        write_in_background,
        _guard_websocket_output,
        _guard_header_time,
        _expose_websocket,
        _refuse_oversized_bodies,
        route_access_log,
    )
    for guard in guards:
        try:
            guard()
        except Exception:
            log.exception("daphne changed: %s not installed", guard.__name__)
