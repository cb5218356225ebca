"""A real webhook receiver for tests: a Starlette app served by uvicorn on loopback in a thread.

It verifies every request's signature with the ``standardwebhooks`` package and records what it
accepted. It can refuse the first N requests (HTTP 500) or hold requests open until released (to kill
the sender mid-delivery).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import standardwebhooks
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server_support import free_port


@dataclass(frozen=True)
class Received:
    msg_id: str
    attempt: int
    type: str
    data: dict[str, Any]


@dataclass
class Receiver:
    secret: str = ""
    fail_first: int = 0
    hold: bool = False
    requests: int = 0
    accepted: list[Received] = field(default_factory=list)
    bad_signatures: int = 0
    held: int = 0
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.requests += 1
            failing = self.requests <= self.fail_first
            holding = self.hold
            if holding:
                self.held += 1
        if holding:
            await asyncio.to_thread(self._release.wait)
        if failing:
            return Response("down for maintenance", status_code=500)
        try:
            standardwebhooks.Webhook(self.secret).verify(body, dict(request.headers))
        except standardwebhooks.WebhookVerificationError:
            with self._lock:
                self.bad_signatures += 1
            return Response("bad signature", status_code=400)
        message = json.loads(body)
        received = Received(
            request.headers["webhook-id"],
            int(request.headers["webhook-attempt"]),
            message["type"],
            message["data"],
        )
        with self._lock:
            self.accepted.append(received)
        return Response("ok")

    def release(self) -> None:
        with self._lock:
            self.hold = False
        self._release.set()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.accepted)

    def unique(self) -> dict[str, Received]:
        """The accepted messages after de-duplication on ``webhook-id`` (the first of each)."""
        seen: dict[str, Received] = {}
        for received in self.snapshot():
            seen.setdefault(received.msg_id, received)
        return seen

    def wait_for(self, done: Callable[[Receiver], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not done(self):
            assert time.monotonic() < deadline, (
                f"timed out: {len(self.unique())} unique, {self.requests} requests"
            )
            time.sleep(0.05)


@contextmanager
def running_receiver(**options: Any) -> Iterator[Receiver]:
    receiver = Receiver(**options)
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the receiver did not start"
        time.sleep(0.02)
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        receiver.release()
        server.should_exit = True
        thread.join(timeout=10)
