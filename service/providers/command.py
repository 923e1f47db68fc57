"""Command (kind `command`): a CLI on the worker's machine, such as
`anycap image generate --prompt {prompt} -o {output}`.

Never a shell. The argv template is the operator's; a request's text only ever fills a
placeholder inside one argv element, so a prompt cannot become another argument or an
option of its own (a prompt `-o /etc/passwd` stays the value that follows `--prompt`).
Operators should therefore write the option before its placeholder (`--prompt`,
`{prompt}`), or in one element (`--prompt={prompt}`), never a bare positional.

Each run gets its own temporary directory (its cwd, TMPDIR and `{output}`'s home),
removed afterwards; a minimal environment plus the variables the account names; a new
process group, killed whole (SIGTERM, then SIGKILL) on timeout or cancellation, so a
child the CLI started does not outlive it. Stdout and stderr are read to a cap and the
rest discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.config import get_settings
from service.kit.jsonpath import JsonPathNotFound, parse
from service.kit.ssrf import guarded_client
from service.providers.base import (
    Capabilities,
    GenerationRequest,
    InputRole,
    Output,
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
    SyncProvider,
)
from service.providers.command_config import INPUT_PLACEHOLDERS, CommandConfig, ErrorClass
from service.providers.http import IMAGE_BODY_LIMIT, ProviderHTTP, hint_from_message
from service.providers.images import checked_image
from service.providers.kinds import Kind, ProviderDeps

STDOUT_LIMIT = 1024 * 1024
STDERR_LIMIT = 64 * 1024
# How long a timed-out command's process group has between SIGTERM and SIGKILL.
KILL_GRACE_S = 2.0
_BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL")
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_CONTENT_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_MESSAGE_CHARS = 500


def build_argv(template: list[str], values: dict[str, str]) -> list[str]:
    """One argv element per template element, whatever the values hold: a value fills
    its placeholder inside that element and nothing else (str.format_map does not
    re-read what it inserts)."""
    return [element.format_map(values) for element in template]


def placeholder_values(
    request: GenerationRequest, output: Path, inputs: Mapping[str, Path] | None = None
) -> dict[str, str]:
    """`inputs`: the files holding the job's input images, by placeholder (empty when
    the job has none)."""
    values = {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt or "",
        "seed": str(request.seed),
        "width": str(request.width),
        "height": str(request.height),
        "ref": request.model_ref,
        "format": request.format,
        "output": str(output),
    }
    values |= {name: str((inputs or {}).get(name, "")) for name in INPUT_PLACEHOLDERS}
    for name, value in values.items():
        if "\0" in value:  # exec refuses it; say which field rather than crash
            raise ProviderPermanentError("invalid_input", f"{name} holds a NUL character")
    return values


def write_inputs(request: GenerationRequest, workdir: Path) -> dict[str, Path]:
    """Each input image the job has, in a file of the run's directory."""
    files: dict[str, Path] = {}
    for name, role in INPUT_PLACEHOLDERS.items():
        image = request.input(role)
        if image is not None:
            extension = _CONTENT_EXTENSIONS.get(image.content_type, "bin")
            files[name] = workdir / f"{name}.{extension}"
            files[name].write_bytes(image.data)
    return files


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: bytes
    stderr: bytes

    def stderr_text(self) -> str:
        text = " ".join(self.stderr.decode("utf-8", "replace").split())
        return text[-_MESSAGE_CHARS:] if text else "no stderr"


async def _read_capped(stream: asyncio.StreamReader | None, limit: int) -> bytes:
    """The first `limit` bytes; the rest is read and dropped so the command never blocks
    on a full pipe."""
    kept = bytearray()
    if stream is None:
        return b""
    while chunk := await stream.read(64 * 1024):
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the whole group, then SIGKILL to whatever is left of it (children
    included, even once the leader is gone)."""
    _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_GRACE_S):
            await process.wait()
    _signal_group(process.pid, signal.SIGKILL)
    await process.wait()


async def run_command(
    argv: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float
) -> Finished:
    """Run without a shell in a new session (its own process group); on timeout or
    cancellation the group is killed before this returns."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr, _ = await asyncio.gather(
                _read_capped(process.stdout, STDOUT_LIMIT),
                _read_capped(process.stderr, STDERR_LIMIT),
                process.wait(),
            )
    except BaseException:
        await asyncio.shield(_kill_group(process))
        raise
    # Whatever the command left running in its group (a daemonised child) goes too.
    _signal_group(process.pid, signal.SIGKILL)
    return Finished(process.returncode or 0, stdout, stderr)


class CommandProvider(SyncProvider):
    kind = "command"
    capabilities = Capabilities(inputs=frozenset({"reference", "mask"}))

    def __init__(self, name: str, config: CommandConfig, deps: ProviderDeps) -> None:
        self.name = name
        self.config = config
        self._deps = deps
        self._downloads: ProviderHTTP | None = None
        self._owned: list[httpx.AsyncClient] = []

    def model_inputs(self, inject: Mapping[str, str]) -> frozenset[InputRole]:
        """Only the input images the argv has a placeholder for."""
        return self.config.input_roles()

    async def generate(self, request: GenerationRequest) -> Output:
        if request.media != "image":
            raise ProviderPermanentError(
                "unsupported_media", f"{self.name}: a command account makes images only"
            )
        workdir = Path(tempfile.mkdtemp(prefix="darkroom-command-"))
        try:
            output = workdir / f"output.{_EXTENSIONS.get(request.format, request.format)}"
            inputs = await asyncio.to_thread(write_inputs, request, workdir)
            values = placeholder_values(request, output, inputs)
            argv = build_argv(self.config.argv, values)
            finished = await self._run(argv, workdir)
            if finished.returncode != 0:
                raise self._classify(finished)
            data = await self._output_bytes(finished, workdir, output)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        return await checked_image(data, request.format, provider=self.name)

    async def _run(self, argv: list[str], workdir: Path) -> Finished:
        env = {key: os.environ[key] for key in _BASE_ENV if key in os.environ}
        env |= {key: os.environ[key] for key in self.config.env if key in os.environ}
        env["TMPDIR"] = str(workdir)
        try:
            return await run_command(argv, cwd=workdir, env=env, timeout_s=self.config.timeout_s)
        except TimeoutError as exc:
            raise ProviderRetryableError(
                "timeout", f"{self.name}: {argv[0]} ran past {self.config.timeout_s:g}s; killed"
            ) from exc
        except OSError as exc:  # not found, not executable: the operator's to fix
            raise ProviderPermanentError(
                "provider_not_configured", f"{self.name}: cannot run {argv[0]}: {exc.strerror}"
            ) from exc

    def _classify(self, finished: Finished) -> ProviderError:
        code = finished.returncode
        stderr = finished.stderr_text()
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        message = f"{self.name}: {self.config.argv[0]} {how}: {stderr}"
        kind: ErrorClass = "retryable"
        if code in self.config.errors.exit_codes:
            kind = self.config.errors.exit_codes[code]
        else:
            text = finished.stderr.decode("utf-8", "replace")
            for rule in self.config.errors.stderr:
                if re.search(rule.pattern, text):
                    kind = rule.class_
                    break
        if kind == "rate_limited":
            return ProviderRateLimited(
                message, retry_after_s=hint_from_message(stderr), http_status=None
            )
        if kind == "permanent":
            return ProviderPermanentError("command_failed", message)
        return ProviderRetryableError("command_failed", message)

    async def _output_bytes(self, finished: Finished, workdir: Path, output: Path) -> bytes:
        document: Any = None
        if self.config.stdout == "json":
            try:
                document = json.loads(finished.stdout)
            except ValueError as exc:
                text = finished.stdout[:200].decode("utf-8", "replace")
                raise ProviderRetryableError(
                    "malformed_response", f"{self.name}: stdout is not JSON: {text!r}"
                ) from exc
        result = self.config.result
        if result is None:
            return await asyncio.to_thread(self._read_file, output, workdir)
        key = "image_path" if result.image_path else "image_url"
        path = result.image_path or result.image_url or ""
        try:
            value = parse(path).find(document)
        except JsonPathNotFound as exc:
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: result.{key}: {exc}"
            ) from exc
        if not isinstance(value, str) or not value:
            raise ProviderRetryableError(
                "malformed_response", f"{self.name}: result.{key} {path} is not a string"
            )
        if result.image_url:
            return await self._download_http().download(value)
        return await asyncio.to_thread(self._read_file, workdir / value, workdir)

    def _read_file(self, path: Path, workdir: Path) -> bytes:
        """The command's output file, only from its own directory (a path in its stdout
        could point anywhere) and only up to the image cap."""
        resolved = path.resolve()
        if not resolved.is_relative_to(workdir.resolve()):
            raise ProviderPermanentError(
                "malformed_response", f"{self.name}: output {path} is outside the job's directory"
            )
        try:
            with resolved.open("rb") as file:
                data = file.read(IMAGE_BODY_LIMIT + 1)
        except OSError as exc:
            raise ProviderRetryableError(
                "no_output", f"{self.name}: no output file {path.name}: {exc.strerror}"
            ) from exc
        if len(data) > IMAGE_BODY_LIMIT:
            raise ProviderRetryableError(
                "response_too_large", f"{self.name}: output file is over the image cap"
            )
        return data

    def _download_http(self) -> ProviderHTTP:
        if self._downloads is None:
            downloads = self._deps.http
            if downloads is None:
                downloads = guarded_client(self._deps.settings or get_settings())
                self._owned.append(downloads)
            self._downloads = ProviderHTTP(self.name, self.config, downloads, downloads=downloads)
        return self._downloads

    async def aclose(self) -> None:
        for client in self._owned:
            await client.aclose()


def build(name: str, config: CommandConfig, deps: ProviderDeps) -> CommandProvider:
    return CommandProvider(name, config, deps)


KIND = Kind("command", CommandConfig, build)
