"""A real `python run.py` subprocess whose JSON log lines tests read as they arrive."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any


class Engine:
    """A running `python run.py` whose JSON log lines the test reads as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._new = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode()
            self.raw.append(text)
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(text))
            async with self._new:
                self._new.notify_all()

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60
    ) -> dict[str, Any]:
        """Return the first log line matching `pred`, waiting for it (bounded)."""

        async def scan() -> dict[str, Any]:
            async with self._new:
                while True:
                    for line in self.lines:
                        if pred(line):
                            return line
                    if self._reader.done():
                        raise AssertionError(f"engine exited before: {what}\n{self.tail()}")
                    await self._new.wait()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for: {what}\n{self.tail()}") from None

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def exit_code(self, timeout: float) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        return code

    def tail(self) -> str:
        return "".join(self.raw[-25:])


def is_event(name: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda line: (
        line.get("event") == name and all(line.get(k) == v for k, v in fields.items())
    )
