"""The command provider (kind command) running the AnyCap-style simulator CLI for real:
argv built from placeholders (request text never becomes its own argument), outputs,
error classes, caps, and the timeout that kills the whole process group."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from service.providers import command
from service.providers.base import (
    GenerationRequest,
    InputImage,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
)
from service.providers.command import CommandProvider, build, build_argv
from service.providers.command_config import CommandConfig
from service.providers.config import ConfigError, parse_config
from service.providers.kinds import ProviderDeps
from simulators import anycap

ROOT = Path(__file__).resolve().parents[2]
# The script itself rather than `-m simulators.anycap`: the package's __init__ imports
# the HTTP simulator (uvicorn, starlette), a second of start-up per run for nothing.
CLI = [sys.executable, str(ROOT / "simulators" / "anycap.py")]
# The configuration contract's anycap block, with the simulator as the program.
ARGV = [*CLI, "image", "generate", "--prompt", "{prompt}", "--model", "{ref}"]
ARGV += ["--output-format", "json", "-o", "{output}"]
ERRORS = {
    "exit_codes": {anycap.EXIT_PERMANENT: "permanent"},
    "stderr": [{"pattern": r"rate limit|\b429\b", "class": "rate_limited"}],
}


def config(**changes: Any) -> CommandConfig:
    values: dict[str, Any] = {
        "kind": "command",
        "argv": ARGV,
        "timeout_s": 20,
        "errors": ERRORS,
        "env": ["ANYCAP_SIM_MODE", "ANYCAP_SIM_PIDFILE"],
    }
    return CommandConfig.model_validate(values | changes)


def provider(**changes: Any) -> CommandProvider:
    return build("anycap", config(**changes), ProviderDeps())


def request(**overrides: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "a lighthouse at dawn",
        "model_ref": "anycap/flux",
        "width": 512,
        "height": 512,
        "format": "png",
        "seed": 11,
    }
    return GenerationRequest(**(values | overrides))


@pytest.fixture(autouse=True)
def simulator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANYCAP_SIM_MODE", raising=False)


# --- argv -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "-o /etc/passwd",
        "--model=evil --output /tmp/x",
        "a prompt; rm -rf / && echo $(id) `id` | cat > /tmp/x",
        "{output} {ref} {{prompt}}",
        "two\nlines\tand 'quotes\" and \\ backslashes",
        "",
    ],
)
def test_request_text_fills_one_element_and_nothing_else(prompt: str) -> None:
    template = ["cli", "--prompt", "{prompt}", "--tag=x{prompt}y", "-o", "{output}"]
    values = {"prompt": prompt, "output": "/tmp/job/output.png"}
    argv = build_argv(template, values | {"ref": "r"})
    assert argv == ["cli", "--prompt", prompt, f"--tag=x{prompt}y", "-o", "/tmp/job/output.png"]


def test_a_nul_in_the_prompt_is_refused_before_anything_runs() -> None:
    with pytest.raises(ProviderPermanentError, match="prompt holds a NUL"):
        command.placeholder_values(request(prompt="a\0b"), Path("/tmp/x.png"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"argv": ["cli", "--p", "{promt}"]}, "providers.anycap.argv.2: '{promt}': unknown"),
        ({"argv": ["cli", "{prompt!r}", "-o", "{output}"]}, "argv.1: '{prompt!r}': {prompt} takes"),
        ({"argv": ["cli", "{width:>8}", "{output}"]}, "argv.1: '{width:>8}': {width} takes no"),
        ({"argv": ["cli", "{prompt", "{output}"]}, "providers.anycap.argv.1: '{prompt'"),
        ({"argv": ["{ref}", "{output}"]}, "argv[0] is the program: it takes no placeholder"),
        ({"argv": []}, "providers.anycap.argv: List should have at least 1 item"),
        ({"argv": ["cli", "--prompt", "{prompt}"]}, "argv has no {output}"),
        ({"result": {"image_path": "$.files[0].path"}}, "result reads stdout as JSON"),
        ({"stdout": "json", "result": {"image_path": "$.files[*]"}}, "result.image_path"),
        ({"errors": {"exit_codes": {"3": "fatal"}}}, "providers.anycap.errors.exit_codes.3"),
        ({"errors": {"stderr": [{"pattern": "(", "class": "permanent"}]}}, "stderr.0.pattern"),
        ({"env": ["OK", "NOT OK"]}, "providers.anycap.env: Value error, not environment"),
        ({"shell": True}, "providers.anycap.shell: Extra inputs are not permitted"),
    ],
)
def test_a_config_error_names_its_path(change: dict[str, Any], expected: str) -> None:
    """As the service reports it at start (service.providers.config)."""
    values = {"kind": "command", "argv": ARGV} | change
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps({"providers": {"anycap": values}}), source="darkroom.yaml")
    assert expected in str(caught.value)


def test_literal_braces_are_allowed() -> None:
    assert config(argv=[*ARGV, "--meta={{}}"]).argv[-1] == "--meta={{}}"


# --- runs -----------------------------------------------------------------------------


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


def spy_on_runs(monkeypatch: pytest.MonkeyPatch) -> list[command.Finished]:
    """What each run of the command returned (its capped stdout and stderr)."""
    finished: list[command.Finished] = []
    original = command.run_command

    async def spy(argv: list[str], **kwargs: Any) -> command.Finished:
        finished.append(await original(argv, **kwargs))
        return finished[-1]

    monkeypatch.setattr(command, "run_command", spy)
    return finished


async def run(cli: CommandProvider, job: GenerationRequest) -> Any:
    try:
        return await cli.generate(job)
    finally:
        await cli.aclose()


async def test_the_cli_writes_an_image_that_is_checked() -> None:
    argv = [*ARGV, "--width", "{width}", "--height", "{height}", "--seed", "{seed}"]
    output = await run(provider(argv=argv), request(width=320, height=200, format="webp"))
    assert (output.format, output.width, output.height) == ("webp", 320, 200)
    with Image.open(io.BytesIO(output.data)) as image:
        assert image.format == "WEBP"


async def test_an_injection_attempt_stays_the_value_of_its_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI reports what it received: the prompt whole, the output where we said."""
    hostile = "-o /etc/passwd --model=evil; $(id)"
    finished = spy_on_runs(monkeypatch)
    output = await run(provider(), request(prompt=hostile, model_ref="--prompt"))
    assert output.width == 512
    received = json.loads(finished[0].stdout)["argv"]
    assert received[:6] == ["image", "generate", "--prompt", hostile, "--model", "--prompt"]
    assert received[6:9] == ["--output-format", "json", "-o"]
    assert received[9].endswith("/output.png")
    assert len(received) == 10


async def test_input_images_are_files_in_the_runs_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference = InputImage("reference", png_bytes(), "image/png")
    argv = [*ARGV, "--image", "{reference}"]
    assert provider(argv=argv).model_inputs({}) == frozenset({"reference"})
    assert provider().model_inputs({}) == frozenset()
    finished = spy_on_runs(monkeypatch)
    await run(provider(argv=argv), request(inputs=(reference,)))
    answer = json.loads(finished[0].stdout)
    assert answer["image_bytes"] == len(reference.data)
    assert answer["argv"][-1].endswith("/reference.png")


async def test_stdout_json_can_say_where_the_output_is() -> None:
    cli = provider(stdout="json", result={"image_path": "$.files[0].path"})
    assert (await run(cli, request())).width == 512


async def test_a_path_outside_the_jobs_directory_is_refused() -> None:
    cli = provider(stdout="json", result={"image_path": "$.files[0].path"})
    with pytest.raises(ProviderPermanentError, match="outside the job's directory"):
        await run(cli, request(model_ref="fault:escape"))


async def test_the_temporary_directory_is_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    await run(provider(), request())
    with pytest.raises(ProviderRetryableError):
        await run(provider(), request(model_ref="fault:crash"))
    assert list(tmp_path.iterdir()) == []


# --- failures -------------------------------------------------------------------------


async def test_a_configured_exit_code_is_permanent() -> None:
    with pytest.raises(ProviderPermanentError, match="content policy violation") as caught:
        await run(provider(), request(model_ref="fault:permanent"))
    assert f"exited with {anycap.EXIT_PERMANENT}" in caught.value.message


async def test_a_stderr_pattern_makes_it_rate_limited_with_the_hint() -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        await run(provider(), request(model_ref="fault:rate_limit"))
    assert caught.value.retry_after_s == 12


async def test_an_exit_code_wins_over_a_stderr_pattern() -> None:
    errors = ERRORS | {"exit_codes": {anycap.EXIT_RATE_LIMITED: "permanent"}}
    with pytest.raises(ProviderPermanentError):
        await run(provider(errors=errors), request(model_ref="fault:rate_limit"))


async def test_an_unclassified_failure_is_retryable() -> None:
    with pytest.raises(ProviderRetryableError, match="CUDA out of memory") as caught:
        await run(provider(), request(model_ref="fault:crash"))
    assert type(caught.value) is ProviderRetryableError


async def test_the_mode_can_come_from_a_passed_through_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANYCAP_SIM_MODE", "permanent")
    with pytest.raises(ProviderPermanentError):
        await run(provider(), request())
    # Not passed through: the CLI never sees it.
    await run(provider(env=[]), request())


@pytest.mark.parametrize(
    ("mode", "code", "names"),
    [
        ("garbage", "invalid_image", "not a decodable image"),
        ("no_output", "no_output", "no output file output.png"),
    ],
)
async def test_broken_outputs_are_retryable(mode: str, code: str, names: str) -> None:
    with pytest.raises(ProviderRetryableError, match=names) as caught:
        await run(provider(), request(model_ref=f"fault:{mode}"))
    assert caught.value.code == code


async def test_stdout_that_is_not_json_is_retryable() -> None:
    cli = provider(stdout="json", result={"image_path": "$.files[0].path"})
    with pytest.raises(ProviderRetryableError, match="stdout is not JSON"):
        await run(cli, request(model_ref="fault:bad_json"))


async def test_output_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = spy_on_runs(monkeypatch)
    with pytest.raises(ProviderRetryableError, match="stdout is not JSON"):
        await run(provider(stdout="json"), request(model_ref="fault:noisy"))
    [finished] = captured
    assert len(finished.stdout) == command.STDOUT_LIMIT
    assert len(finished.stderr) == command.STDERR_LIMIT


async def test_a_video_is_refused_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    finished = spy_on_runs(monkeypatch)
    job = request(media="video", format="mp4", duration_s=2)
    with pytest.raises(ProviderPermanentError, match="images only"):
        await run(provider(), job)
    assert finished == []


async def test_a_missing_program_is_permanent() -> None:
    with pytest.raises(ProviderPermanentError, match="cannot run /nonexistent/anycap"):
        await run(provider(argv=["/nonexistent/anycap", "{output}"]), request())


# --- timeouts -------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def wait_gone(pid: int) -> bool:
    """A SIGKILLed process disappears from /proc once reaped: give the kernel a moment."""
    for _ in range(200):
        if not alive(pid):
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_timeout_kills_the_whole_group_children_included(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    monkeypatch.setenv("ANYCAP_SIM_MODE", "spawn_hang")
    monkeypatch.setenv("ANYCAP_SIM_PIDFILE", str(pidfile))
    with pytest.raises(ProviderRetryableError, match="ran past 3s; killed") as caught:
        await run(provider(timeout_s=3), request())
    assert caught.value.code == "timeout"
    parent, child = map(int, pidfile.read_text().split())
    assert await wait_gone(parent)
    assert await wait_gone(child)


async def test_a_command_that_ignores_sigterm_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command, "KILL_GRACE_S", 0.2)
    with pytest.raises(ProviderRetryableError, match="killed"):
        await run(provider(timeout_s=1), request(model_ref="fault:stubborn"))


async def test_a_cancelled_generation_kills_the_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    monkeypatch.setenv("ANYCAP_SIM_MODE", "spawn_hang")
    monkeypatch.setenv("ANYCAP_SIM_PIDFILE", str(pidfile))
    task = asyncio.create_task(run(provider(), request()))
    for _ in range(1000):
        if pidfile.exists() and len(pidfile.read_text().split()) == 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    parent, child = map(int, pidfile.read_text().split())
    assert await wait_gone(parent)
    assert await wait_gone(child)
