"""A provider whose answers a test writes in advance, and a way to run one job's attempt
now, exactly as the dispatcher would after a grant."""

from __future__ import annotations

import io
import uuid

from PIL import Image

from service.dispatch.queue import Grant
from service.jobs import runner
from service.models import Batch, Job
from service.providers.base import GenerationRequest, Output, SyncProvider
from service.providers.registry import ModelSpec
from service.ratelimit import now_ms
from service.state import State


class ScriptedProvider(SyncProvider):
    """Synchronous: raises the scripted errors in turn, then paints a real image."""

    kind = "scripted"

    def __init__(self, name: str = "scripted", errors: list[Exception] | None = None) -> None:
        self.name = name
        self.errors = errors if errors is not None else []
        self.calls = 0

    async def generate(self, request: GenerationRequest) -> Output:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        buffer = io.BytesIO()
        Image.new("RGB", (request.width, request.height), "teal").save(buffer, "PNG")
        return Output(buffer.getvalue(), "png", request.width, request.height)


def install(state: State, provider: ScriptedProvider, *, max_attempts: int = 3) -> None:
    state.registry.providers[provider.name] = provider
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
