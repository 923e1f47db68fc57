"""A provider whose answers a test writes in advance, and a way to run one job's attempt
now, exactly as the dispatcher would after a grant."""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from service.dispatch.queue import Grant
from service.jobs import runner
from service.models import Batch, Job
from service.providers.base import (
    Capabilities,
    GeneratedImage,
    GenerationRequest,
    ProviderPermanentError,
    RemoteJob,
)
from service.providers.registry import ModelSpec
from service.ratelimit import now_ms
from service.state import State


@dataclass
class ScriptedProvider:
    """Synchronous: raises the scripted errors in turn, then paints a real image."""

    name: str = "scripted"
    kind: str = "scripted"
    capabilities: Capabilities = field(default_factory=lambda: Capabilities(asynchronous=False))
    errors: list[Exception] = field(default_factory=list)
    calls: int = 0

    async def submit(self, request: GenerationRequest) -> GeneratedImage:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        buffer = io.BytesIO()
        Image.new("RGB", (request.width, request.height), "teal").save(buffer, "PNG")
        return GeneratedImage(buffer.getvalue(), "png", request.width, request.height)

    async def poll(self, remote_id: str) -> RemoteJob:
        raise ProviderPermanentError("unsupported", "synchronous")

    async def fetch_result(self, remote: RemoteJob, request: GenerationRequest) -> GeneratedImage:
        raise ProviderPermanentError("unsupported", "synchronous")

    async def parse_callback(self, headers: Mapping[str, str], body: bytes) -> RemoteJob:
        raise ProviderPermanentError("unsupported", "synchronous")

    def parse_remote(self, payload: Mapping[str, Any]) -> RemoteJob:
        raise ProviderPermanentError("unsupported", "synchronous")

    async def cancel(self, remote_id: str) -> None:
        raise ProviderPermanentError("unsupported", "synchronous")

    async def aclose(self) -> None:
        return None


def install(state: State, provider: ScriptedProvider, *, max_attempts: int = 3) -> None:
    state.registry.providers[provider.name] = provider  # type: ignore[assignment]
    state.registry.models["test/scripted"] = ModelSpec(
        "test/scripted", provider.name, "x", max_attempts=max_attempts
    )


async def run_attempt(state: State, job_id: uuid.UUID) -> None:
    """One attempt of the job now, as if the dispatcher had just granted it."""
    async with state.sessionmaker() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        batch = await session.get(Batch, job.batch_id)
        assert batch is not None
        spec = state.registry.model(job.model)
        account = spec.provider if spec is not None else "local"
    grant = Grant(str(job_id), str(job.batch_id), batch.priority, account, now_ms())
    await runner.run_granted(state, grant)
