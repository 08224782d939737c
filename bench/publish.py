"""Publishes per second: our client vs the official ``qstash`` SDK, side by side.

A minimal QStash-shaped server (asyncio, in its own process so it does not share the GIL
with the clients) listens on 127.0.0.1 and answers ``/v2/publish`` with a message id and
``/v2/batch`` with one id per entry. Both clients publish the same JSON payloads with the
same options; each batch is built from its 100 payloads inside the timing, with each
client's natural API. The machine is shared, so the two run in alternating short chunks
and the reported ratio is the median of the per-pair ratios (ours / SDK; >= 1.0 means we
are at least as fast) with their min–max; the rates shown are each client's median chunk
rate. ``--smoke``: two chunks of two publishes and one batch (CI: the same code path).

    .venv/bin/python bench/publish.py [--chunks 40] [--chunk-size 25] [--batches 4] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qstash import QStash as OfficialQStash  # noqa: E402

from app.qstash.client import QStash, json_message  # noqa: E402
from bench._stats import spread  # noqa: E402

TOKEN = "bench-token"
DEST = "https://jobs.example.com/api/jobs/send-email"
PAYLOAD = {"to": "someone@example.com", "template": "welcome", "data": {"name": "Ada"}}
OPTIONS: dict[str, Any] = {"retries": 3, "delay": "10s", "callback": "https://cb.example/ok"}
ANSWER = b'{"messageId":"msg_bench"}'


def _response(body: bytes) -> bytes:
    head = f"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


class QStashShaped(asyncio.Protocol):
    """Parse pipelined HTTP/1.1 requests just enough to answer them."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            marker = head.find(b"content-length:")
            length = int(head[marker + 15 :].split(b"\r\n", 1)[0]) if marker >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            if head.split(b" ", 2)[1] == b"/v2/batch":
                count = body.count(b'"destination"')
                self.transport.write(_response(b"[" + b",".join([ANSWER] * count) + b"]"))
            else:
                self.transport.write(_response(ANSWER))


def serve(sock: socket.socket) -> None:
    """Serve on an already listening socket until killed."""

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(QStashShaped, sock=sock)
        await server.serve_forever()

    asyncio.run(main())


def _seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def compare(name: str, ours: Callable[[], object], sdk: Callable[[], object], messages: int,
            chunks: int) -> float:  # fmt: skip
    """Alternate ``chunks`` runs of each; print median rates and return the median ratio."""
    for _ in range(3):  # warm up: connections, imports, caches
        ours(), sdk()
    pairs = []
    for n in range(chunks):
        first, second = (ours, sdk) if n % 2 == 0 else (sdk, ours)  # no order advantage
        a, b = _seconds(first), _seconds(second)
        pairs.append((a, b) if n % 2 == 0 else (b, a))
    ratios = [theirs / mine for mine, theirs in pairs]
    mine_rate = messages / statistics.median(mine for mine, _ in pairs)
    sdk_rate = messages / statistics.median(theirs for _, theirs in pairs)
    print(f"{name:<16} ours {mine_rate:>8.0f} msg/s   official SDK {sdk_rate:>8.0f} msg/s"
          f"   ours/SDK {spread(ratios)}")  # fmt: skip
    return statistics.median(ratios)


def main() -> int:
    """Start the server, compare both clients, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=40, help="alternating runs per client")
    parser.add_argument("--chunk-size", type=int, default=25, help="single publishes per run")
    parser.add_argument("--batches", type=int, default=4, help="batches of 100 per run")
    parser.add_argument("--smoke", action="store_true", help="two tiny chunks (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.chunks, args.chunk_size, args.batches = 2, 2, 1

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = multiprocessing.get_context("fork").Process(target=serve, args=(sock,), daemon=True)
    server.start()
    sock.close()
    ours = QStash(TOKEN, base_url=url)
    sdk = OfficialQStash(TOKEN, base_url=url)
    size, batches = args.chunk_size, args.batches
    payloads = [dict(PAYLOAD, n=n) for n in range(100)]
    try:
        single = compare(
            "single publish",
            lambda: [ours.publish_json(DEST, PAYLOAD, **OPTIONS) for _ in range(size)],
            lambda: [sdk.message.publish_json(url=DEST, body=PAYLOAD, **OPTIONS)
                     for _ in range(size)],
            size, args.chunks,
        )  # fmt: skip
        batch = compare(
            "batches of 100",
            lambda: [ours.batch([json_message(DEST, p, **OPTIONS) for p in payloads])
                     for _ in range(batches)],
            lambda: [sdk.message.batch_json([{"url": DEST, "body": p, **OPTIONS}
                                             for p in payloads]) for _ in range(batches)],
            batches * 100, args.chunks,
        )  # fmt: skip
    finally:
        server.kill()
        ours.close()
        sdk.http._client.close()
    print(f"target >= 1.00x: single {single:.2f}x, batch {batch:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
