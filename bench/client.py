"""A load client for the benchmark: as many HTTP/1.1 requests as the server takes,
``concurrency`` at a time, each timed. Asyncio on raw sockets, so that the client
costs little of the machine it shares with the server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class Timed:
    sent: float  # time.time() when the request left
    done: float
    status: int
    body: bytes


async def _one(host: str, port: int, request: bytes) -> Timed:
    sent = time.time()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    done = time.time()
    writer.close()
    return Timed(sent, done, status, body)


async def _run(host: str, port: int, requests: list[bytes], concurrency: int) -> list[Timed]:
    results: list[Timed | None] = [None] * len(requests)
    queue = iter(range(len(requests)))

    async def lane() -> None:
        for i in queue:
            results[i] = await _one(host, port, requests[i])

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return [r for r in results if r is not None]


def run(host: str, port: int, requests: list[bytes], concurrency: int = 16) -> list[Timed]:
    return asyncio.run(_run(host, port, requests, concurrency))


def post(path: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
