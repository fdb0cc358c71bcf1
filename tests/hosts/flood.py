"""A host that answers a load with a flood of progress frames, then a typed failure."""

import socket
import sys

from loader.host import protocol

sock = socket.socket(fileno=int(sys.argv[1]))
protocol.send(sock, {"t": "hello", "pid": 0})
protocol.send(sock, {"t": "ready", "rss": 0})
job = protocol.receive(sock)["id"]
detail = {"shard": 1, "shards": 1, "bytes_done": 0, "bytes_total": 1, "bytes_per_s": 0.0, "eta_s": None}
for i in range(200_000):
    event = {
        "stage": "weights",
        "percent": 40 + 45 * i / 200_000,
        "message": "m" * 200,
        "detail": detail,
        "timings": {},
    }
    protocol.send(sock, {"t": "event", "id": job, "event": event})
error = {
    "code": "shard_corrupt",
    "template": "샤드 파일이 손상되었습니다: {name}",
    "params": {"name": "x"},
    "detail": "flood",
}
protocol.send(sock, {"t": "failed", "id": job, "error": error})
sock.recv(1)
