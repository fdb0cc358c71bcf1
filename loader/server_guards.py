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
- The open-file limit is raised to what the OS allows before daphne accepts anyone.

Both are patch points on daphne's own classes (``WebSocketProtocol.serverSend`` and
``HTTPFactory.buildProtocol``), checked at install: if a daphne release changes them, the
server starts without the guard and says so in the log. ``tests/test_crowds.py`` proves both
against a live daphne.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("loader.server_guards")
UNREAD_BYTES = int(os.environ.get("MACTUNER_WS_UNREAD_BYTES", str(64 * 1024)))
HEADER_TIMEOUT_S = float(os.environ.get("MACTUNER_HTTP_HEADER_TIMEOUT_S", "30"))
_installed = False


def unsent_bytes(transport: Any) -> int:
    """Bytes Twisted holds for ``transport`` that the kernel has not taken yet."""
    try:
        return len(transport.dataBuffer) - int(transport.offset) + int(transport._tempDataLen)
    except (AttributeError, TypeError):
        return 0


def _guard_websocket_output() -> None:
    from daphne.ws_protocol import WebSocketProtocol

    send = WebSocketProtocol.serverSend

    def serverSend(self: Any, content: Any, binary: bool = False) -> None:  # noqa: N802 - daphne's name
        transport = self.transport
        if transport is None:
            return
        send(self, content, binary)
        if unsent_bytes(transport) > UNREAD_BYTES:
            log.info(
                "websocket viewer %s does not read (%d bytes unsent): closed", self.client_addr, unsent_bytes(transport)
            )
            transport.abortConnection()

    WebSocketProtocol.serverSend = serverSend


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


def install() -> None:
    """Called when the ASGI module is imported under daphne, before its server is built."""
    global _installed
    if _installed:
        return
    _installed = True
    from .startup import raise_open_file_limit

    raise_open_file_limit()
    for guard in (_guard_websocket_output, _guard_header_time):
        try:
            guard()
        except Exception:
            log.exception("daphne changed: %s not installed", guard.__name__)
