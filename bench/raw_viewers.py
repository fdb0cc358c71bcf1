"""Websocket viewers that time each frame by when the kernel received it, not when the bench read it.

Why: the event-latency bench runs every viewer in one process on the 2-core machine that also
runs the server. A client's own receive time includes the time that process spends on the
other clients' frames before reaching this one (500 frames per snapshot through the
``websockets`` library's Python framing and UTF-8 decoding) and the time it waits for a core
the server holds. A browser has one socket and its own machine: what it sees is when the bytes
reach it. On loopback the kernel stamps a segment (``SO_TIMESTAMPNS``) when the server's
``send()`` queues it, so the stamp measures the server alone. Each viewer also records the
time its frame was read in user space; the difference is the bench's own delay, printed too.

Frames are read one at a time (the header, then exactly the payload), so a stamp belongs to
the frame's last segment even when several frames wait in the buffer. One thread serves every
socket with a selector; payloads are kept raw and decoded after the run.
"""

from __future__ import annotations

import base64
import os
import selectors
import socket
import struct
import threading
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not export it
CMSG_SPACE = socket.CMSG_SPACE(16)  # struct timespec
Frame = tuple[float, float, bytes]  # (kernel receive time, user-space read time, payload)


class RawViewer:
    """One websocket viewer: handshake (blocking), then frames read by ``RawCrowd``'s thread."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws/loader/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)  # byte by byte: nothing of the first frame is consumed here
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        self.sock.setblocking(False)
        self.frames: list[Frame] = []
        self.closed = False
        self._buf = bytearray()
        self._need = 2  # bytes still to read for the current step
        self._step = "head"
        self._opcode = 0
        self._stamp = 0.0

    def pump(self) -> None:
        """Read what is there, frame step by frame step, until the socket would block."""
        while not self.closed:
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(self._need, CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("qq", value[:16])
                    self._stamp = sec + nsec / 1e9
            self._buf += data
            self._need -= len(data)
            if self._need == 0:
                self._advance()

    def _advance(self) -> None:
        buf = self._buf
        if self._step == "head":
            self._opcode, size = buf[0] & 0x0F, buf[1] & 0x7F
            if size >= 126:
                self._buf = bytearray()
                self._step, self._need = "size", 2 if size == 126 else 8
                return
            self._start_payload(size)
        elif self._step == "size":
            self._start_payload(int.from_bytes(buf, "big"))
        else:
            self._finish(bytes(buf))

    def _start_payload(self, size: int) -> None:
        self._buf = bytearray()
        self._step, self._need = "payload", size
        if size == 0:
            self._finish(b"")

    def _finish(self, payload: bytes) -> None:
        if self._opcode == 0x1:
            self.frames.append((self._stamp, time.time(), payload))
        elif self._opcode == 0x9:  # ping: answer with a masked pong (an all-zero mask is valid)
            self.sock.send(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        elif self._opcode == 0x8:
            self.closed = True
        self._buf = bytearray()
        self._step, self._need = "head", 2


class RawCrowd:
    """``n`` raw viewers, all read by one background thread."""

    def __init__(self, port: int, n: int) -> None:
        self.viewers: list[RawViewer] = []
        for i in range(n):
            self.viewers.append(RawViewer(port))
            if i % 40 == 39:
                time.sleep(0.05)  # daphne's listen backlog is 50
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        for viewer in self.viewers:
            self._selector.register(viewer.sock, selectors.EVENT_READ, viewer)
        self._thread = threading.Thread(target=self._run, name="raw-viewers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _events in self._selector.select(0.2):
                viewer: RawViewer = key.data
                viewer.pump()
                if viewer.closed:
                    self._selector.unregister(viewer.sock)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for viewer in self.viewers:
            viewer.sock.close()
        self._selector.close()
