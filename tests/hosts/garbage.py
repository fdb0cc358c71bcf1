"""A host that says hello, then answers a load with bytes that are not a frame of ours."""

import socket
import sys
import time

from loader.host import protocol

sock = socket.socket(fileno=int(sys.argv[1]))
protocol.send(sock, {"t": "hello", "pid": 0})
protocol.send(sock, {"t": "ready", "rss": 0})
protocol.receive(sock)  # the load
sock.sendall(b"\x00\x00\x00\x05{oops")
time.sleep(60)
