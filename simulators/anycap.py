"""An AnyCap-style image CLI, for the command provider (kind `command`):

    python -m simulators.anycap image generate --prompt P --model M \\
        [--width W --height H --seed S --image REF --mask MASK] --output-format json -o OUT

It writes a real PNG to OUT and prints JSON:
`{"status": "succeeded", "model", "prompt", "seed", "files": [{"path", "mime_type",
"width", "height"}], "argv": [...], "image_bytes"?, "mask_bytes"?}` (argv as received, so
tests can see that a request's text stayed one argument; the size of the input images
read). Options take the next argument whatever it starts with, as getopt does: `--prompt
-o` is a prompt of "-o".

What to simulate comes from ANYCAP_SIM_MODE (or a model named `fault:<mode>`):
- `ok` (default);
- `rate_limit`: exit 4, stderr "Error: rate limit exceeded (429). Try again in 12s";
- `permanent`: exit 3, stderr "Error: content policy violation: prompt rejected";
- `crash`: exit 1, stderr "Traceback ... RuntimeError: CUDA out of memory";
- `hang`: sleep (SIGTERM ends it); `stubborn`: sleep, ignoring SIGTERM;
- `spawn_hang`: start a child that sleeps, write its pid to ANYCAP_SIM_PIDFILE, sleep;
- `garbage`: exit 0, OUT holds bytes that are not an image;
- `bad_json`: exit 0, image written, stdout is not JSON;
- `no_output`: exit 0, nothing written;
- `noisy`: 4 MiB of stdout and stderr before the normal answer;
- `escape`: exit 0, stdout's path points outside the working directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

USAGE = "usage: anycap image generate --prompt P --model M [--width W] [--height H] -o OUT"
_OPTIONS = {
    "--prompt": "prompt",
    "--model": "model",
    "--width": "width",
    "--height": "height",
    "--seed": "seed",
    "--output-format": "output_format",
    "-o": "output",
    "--output": "output",
    "--image": "image",
    "--mask": "mask",
}
EXIT_USAGE = 2
EXIT_PERMANENT = 3
EXIT_RATE_LIMITED = 4


def parse_args(args: list[str]) -> dict[str, str]:
    """getopt-style: `--name value` or `--name=value`; a value is taken as is."""
    if args[:2] != ["image", "generate"]:
        raise SystemExit(_usage("expected 'image generate'"))
    values: dict[str, str] = {}
    rest = args[2:]
    index = 0
    while index < len(rest):
        arg = rest[index]
        name, equals, inline = arg.partition("=")
        if name not in _OPTIONS or (equals and not name.startswith("--")):
            raise SystemExit(_usage(f"unexpected argument {arg!r}"))
        if equals:
            values[_OPTIONS[name]] = inline
            index += 1
        elif index + 1 < len(rest):
            values[_OPTIONS[name]] = rest[index + 1]
            index += 2
        else:
            raise SystemExit(_usage(f"{arg} needs a value"))
    for required in ("prompt", "model", "output"):
        if required not in values:
            raise SystemExit(_usage(f"--{required} is required"))
    return values


def _usage(problem: str) -> int:
    sys.stderr.write(f"Error: {problem}\n{USAGE}\n")
    return EXIT_USAGE


def _fail(code: int, message: str) -> int:
    sys.stderr.write(message + "\n")
    return code


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image  # only when an image is made: keeps the failing runs quick

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def generate(values: dict[str, str], argv: list[str]) -> int:
    model = values["model"]
    mode = os.environ.get("ANYCAP_SIM_MODE") or (
        model.removeprefix("fault:") if model.startswith("fault:") else "ok"
    )
    if mode == "rate_limit":
        return _fail(EXIT_RATE_LIMITED, "Error: rate limit exceeded (429). Try again in 12s")
    if mode == "permanent":
        return _fail(EXIT_PERMANENT, "Error: content policy violation: prompt rejected")
    if mode == "crash":
        return _fail(1, "Traceback (most recent call last):\nRuntimeError: CUDA out of memory")
    if mode in ("hang", "stubborn", "spawn_hang"):
        return _hang(mode)
    if mode == "noisy":
        sys.stderr.write("warning: noisy\n" * (4 * 1024 * 1024 // 15))
        sys.stdout.write("." * (4 * 1024 * 1024) + "\n")
        return 0
    width, height = int(values.get("width", "512")), int(values.get("height", "512"))
    output = Path(values["output"])
    if mode == "garbage":
        output.write_bytes(b"<html>not an image</html>" * 40)
    elif mode != "no_output":
        output.write_bytes(_png(width, height))
    path = "../../etc/hostname" if mode == "escape" else str(output)
    answer: dict[str, Any] = {
        "status": "succeeded",
        "model": model,
        "prompt": values["prompt"],
        "seed": values.get("seed"),
        "files": [{"path": path, "mime_type": "image/png", "width": width, "height": height}],
        "argv": argv,
    }
    for name in ("image", "mask"):  # input images: how many bytes were found there
        if values.get(name):
            answer[f"{name}_bytes"] = len(Path(values[name]).read_bytes())
    if mode == "bad_json":
        sys.stdout.write("Generated 1 image in 3.2s\n")
    elif values.get("output_format") == "json":
        sys.stdout.write(json.dumps(answer) + "\n")
    else:
        sys.stdout.write(f"Saved {path}\n")
    return 0


def _hang(mode: str) -> int:
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "spawn_hang":
        child = subprocess.Popen(  # stays in this process group
            [sys.executable, "-c", "import time\nwhile True: time.sleep(3600)"],
            stdin=subprocess.DEVNULL,
        )
        pidfile = os.environ.get("ANYCAP_SIM_PIDFILE")
        if pidfile:
            Path(pidfile).write_text(f"{os.getpid()} {child.pid}\n")
    sys.stderr.write("generating...\n")
    sys.stderr.flush()
    _sleep_forever()
    return 0  # pragma: no cover


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        values = parse_args(args)
    except SystemExit as exc:
        return int(exc.code or EXIT_USAGE)
    return generate(values, args)


if __name__ == "__main__":
    sys.exit(main())
