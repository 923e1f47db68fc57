"""What `darkroom run FILE` adds to a batch file from the command line: a template (a stored
one by `--template name[@version]`, or inline `--prompt`/`--negative-prompt`/`--output-name`)
and a `--name`, so a plain CSV of sku,name,color becomes a named, templated batch without
writing a YAML file first.

Nothing here renders or checks a template: the server does, once, and names the row that
cannot render (the same 422 as any other entry point). With no option the file goes as its
raw body, as before; with any, a CSV/JSONL/YAML file goes as the multipart form the server
takes (`file` beside `template` and `name`), and a JSON batch gets the fields set in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.api_client import ApiClient

JSON = "application/json"


class BadOptions(Exception):
    """Options that cannot go together: a usage error (exit 2)."""


@dataclass(frozen=True)
class BatchOptions:
    template: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    output_name: str | None = None
    name: str | None = None

    def check(self) -> None:
        """Refuse what has no single meaning before anything is sent."""
        inline = {
            "--prompt": self.prompt,
            "--negative-prompt": self.negative_prompt,
            "--output-name": self.output_name,
        }
        given = [flag for flag, value in inline.items() if value is not None]
        if self.template is not None and given:
            raise BadOptions(
                f"--template names a stored template; {' and '.join(given)} would write "
                "another: give one or the other"
            )
        if given and self.prompt is None:
            # The server's template needs a prompt; a CSV's own prompt column would win
            # over it anyway, so the user means something we cannot send.
            verb = "needs" if len(given) == 1 else "need"
            raise BadOptions(f"{' and '.join(given)} {verb} --prompt: the template's prompt")

    def batch_fields(self) -> dict[str, Any]:
        """The batch-level fields these options set (empty: send the file as it is)."""
        fields: dict[str, Any] = {}
        if self.template is not None:
            fields["template"] = self.template
        elif self.prompt is not None:
            inline = {
                "prompt": self.prompt,
                "negative_prompt": self.negative_prompt,
                "output_name": self.output_name,
            }
            fields["template"] = {key: value for key, value in inline.items() if value is not None}
        if self.name is not None:
            fields["name"] = self.name
        return fields


def submit(api: ApiClient, path: Path, content_type: str, options: BatchOptions) -> dict[str, Any]:
    """POST the batch file, with the options' fields when there are any."""
    fields = options.batch_fields()
    with path.open("rb") as body:
        if not fields:
            return api.call("POST", "/v1/batches", content=body, content_type=content_type)
        if content_type == JSON:
            return api.call("POST", "/v1/batches", **_json_body(body.read(), fields))
        form = {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in fields.items()
        }
        files = {"file": (path.name, body, content_type)}
        return api.call("POST", "/v1/batches", form=form, files=files)


def _json_body(raw: bytes, fields: dict[str, Any]) -> dict[str, Any]:
    """A JSON batch with the options' fields set in it (they win over the file's own, as a
    form's fields win over a YAML file's). A file that is not a JSON object goes as it is:
    the server says what is wrong with it, by field."""
    try:
        batch = json.loads(raw)
    except ValueError:
        batch = None
    if not isinstance(batch, dict):
        return {"content": raw, "content_type": JSON}
    return {"json": {**batch, **fields}}
