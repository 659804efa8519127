"""A real HTTP proxy that sits in front of a real OpenAI-compatible server and breaks some requests on
purpose: 429 with Retry-After, 500, slow replies, truncated bodies, malformed JSON. Tests use it to
provoke the failures a paid API produces, with everything else answered by the real teacher."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

PASS, RATE_LIMITED, SERVER_ERROR, SLOW, TRUNCATED, MALFORMED = "pass", "429", "500", "slow", "truncated", "malformed"
UNAUTHORIZED = "401"
ECHO_KEY = "500-echoing-the-key"  # a broken server that prints the caller's key in several spellings


@dataclass
class Seen:
    at: float
    path: str
    body: bytes
    fault: str


@dataclass
class FaultProxy:
    upstream: str  # e.g. http://127.0.0.1:1234 (no /v1)
    # decides the fault for each request from its number (0-based) and body
    choose: Callable[[int, bytes], str] = lambda number, body: PASS
    retry_after_s: float = 1.0
    slow_s: float = 10.0
    delay_s: float = 0.0  # added to every request (stretches a run so a test can kill it midway)
    seen: list[Seen] = field(default_factory=list)

    def start(self) -> str:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._client = httpx.AsyncClient(timeout=600)
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            async with self._server:
                await self._server.serve_forever()

        def run() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(serve())
            async def drain() -> None:
                await asyncio.gather(*asyncio.all_tasks(self._loop) - {asyncio.current_task()},
                                     return_exceptions=True)
                await self._client.aclose()

            self._loop.run_until_complete(drain())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        def cancel_everything() -> None:
            self._server.close()
            for running in asyncio.all_tasks(self._loop):
                running.cancel()

        self._loop.call_soon_threadsafe(cancel_everything)
        self._thread.join(10)

    def faults(self) -> list[str]:
        return [s.fault for s in self.seen]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
            length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0"))
            body = await reader.readexactly(length) if length else b""
            fault = self.choose(len(self.seen), body) if path.endswith("/chat/completions") else PASS
            self.seen.append(Seen(time.monotonic(), path, body, fault))
            await asyncio.sleep(self.delay_s)
            await self._respond(writer, method, path, headers, body, fault)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, method: str, path: str, headers: dict[str, str],
                       body: bytes, fault: str) -> None:
        if fault == RATE_LIMITED:
            return self._send(writer, 429, b'{"error": {"message": "rate limited by the fault proxy"}}',
                              {"Retry-After": f"{self.retry_after_s:g}"})
        if fault == UNAUTHORIZED:  # worded like OpenAI's, which echoes a masked key
            body = b'{"error": {"message": "Incorrect API key provided: sk-proj-abc1****wxyz"}}'
            return self._send(writer, 401, body)
        if fault == ECHO_KEY:
            key = next((v for k, v in headers.items() if k.lower() == "authorization"), "").removeprefix("Bearer ")
            bare = key.split("-")[-1]
            message = f"upstream rejected {key}; token {bare}; KEY={key.upper()}; hint ...{key[5:17]}..."
            return self._send(writer, 500, json.dumps({"error": {"message": message}}).encode())
        if fault == SERVER_ERROR:
            return self._send(writer, 500, b'{"error": {"message": "injected server error"}}')
        if fault == MALFORMED:
            return self._send(writer, 200, b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "mess')
        if fault == SLOW:
            await asyncio.sleep(self.slow_s)
        forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")}
        reply = await self._client.request(method, f"{self.upstream}{path}", content=body, headers=forwarded)
        if fault == TRUNCATED:  # promise the whole body, send half, hang up
            writer.write(self._head(reply.status_code, len(reply.content)) + reply.content[: len(reply.content) // 2])
            await writer.drain()
            return None
        self._send(writer, reply.status_code, reply.content)
        return None

    @staticmethod
    def _head(status: int, length: int, extra: dict[str, str] | None = None) -> bytes:
        lines = [f"HTTP/1.1 {status} X", "Content-Type: application/json", f"Content-Length: {length}",
                 "Connection: close", *(f"{k}: {v}" for k, v in (extra or {}).items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _send(self, writer: asyncio.StreamWriter, status: int, content: bytes,
              extra: dict[str, str] | None = None) -> None:
        writer.write(self._head(status, len(content), extra) + content)


def scheduled(faults: list[str], always_failing_marker: bytes | None = None) -> Callable[[int, bytes], str]:
    """Faults handed out in order to the first requests; a body with the marker always gets a 500."""
    queue = list(faults)

    def choose(number: int, body: bytes) -> str:
        if always_failing_marker and always_failing_marker in body:
            return SERVER_ERROR
        return queue.pop(0) if queue else PASS

    return choose
