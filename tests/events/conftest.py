"""Live events: short heartbeats, a short linger after the final event, quick counts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from service.config import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "events_heartbeat_s": 0.2,
            "events_final_linger_s": 0.3,
            "events_coalesce_s": 0.05,
        }
    )


@dataclass
class Message:
    """One SSE message as a client parses it; `comment` for a `: ping`."""

    event: str | None = None
    id: str | None = None
    data: str = ""
    comment: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Parser:
    pending: Message = field(default_factory=Message)
    buffer: str = ""

    def feed(self, chunk: str) -> list[Message]:
        """Complete messages in what has arrived so far (per the SSE spec's fields)."""
        self.buffer += chunk
        out: list[Message] = []
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            if line == "":
                if self.pending.event or self.pending.data:
                    out.append(self.pending)
                self.pending = Message()
            elif line.startswith(":"):
                out.append(Message(comment=line[1:].strip()))
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    self.pending.event = value
                elif name == "id":
                    self.pending.id = value
                elif name == "data":
                    self.pending.data += value
        return out


async def messages(chunks: AsyncIterator[bytes] | AsyncIterator[str]) -> AsyncIterator[Message]:
    parser = Parser()
    async for chunk in chunks:
        text = chunk.decode() if isinstance(chunk, bytes) else chunk
        for message in parser.feed(text):
            yield message
