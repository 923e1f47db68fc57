"""ComfyUI workflows: the API-format JSON file a model's `ref` names, and the `inject`
map that says where a job's fields go in it ("node id.input name").

A workflow is read once per file (and again when the file changes), checked to be API
format (the UI's "Save" format has `nodes` and `links`; only "Export (API)" can be
queued), and every inject target is checked against it, so a typo fails the job at once
with the file, node and input named instead of queueing a prompt that renders the
workflow's own example text.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.providers.base import InputRole, ProviderPermanentError

# The job fields a workflow may take, and the input role an image field carries.
INJECT_FIELDS = ("prompt", "negative_prompt", "seed", "width", "height", "reference_image", "mask")
IMAGE_FIELDS: dict[str, InputRole] = {"reference_image": "reference", "mask": "mask"}
MAX_WORKFLOW_BYTES = 4 * 1024 * 1024

Workflow = dict[str, Any]


def _invalid(account: str, message: str) -> ProviderPermanentError:
    return ProviderPermanentError("workflow_invalid", f"{account}: {message}")


@dataclass(frozen=True)
class Target:
    node: str
    input: str

    def __str__(self) -> str:
        return f"{self.node}.{self.input}"


class Workflows:
    """An account's workflow files, read on first use and cached by path and mtime.

    Relative refs are looked up next to the DARKROOM_CONFIG file first (where an operator
    keeps them), then in the current folder."""

    def __init__(self, account: str, config_dir: Path | None) -> None:
        self.account = account
        self.config_dir = config_dir
        self._cache: dict[Path, tuple[float, Workflow]] = {}

    def resolve(self, ref: str) -> Path:
        path = Path(ref).expanduser()
        if path.is_absolute():
            candidates = [path]
        else:
            bases = [base for base in (self.config_dir, Path.cwd()) if base is not None]
            candidates = [base / path for base in bases]
        for candidate in candidates:
            if candidate.is_file():
                return candidate.resolve()
        looked = ", ".join(str(candidate) for candidate in candidates)
        raise _invalid(self.account, f"workflow file {ref!r} not found (looked in {looked})")

    def load(self, ref: str) -> tuple[Path, Workflow]:
        """(the file, a copy of its workflow to fill in)."""
        path = self.resolve(ref)
        try:
            mtime = path.stat().st_mtime
            cached = self._cache.get(path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, parse_workflow(self.account, path, path.read_bytes()))
                self._cache[path] = cached
        except OSError as exc:
            raise _invalid(self.account, f"workflow file {path}: {exc.strerror or exc}") from exc
        return path, copy.deepcopy(cached[1])


def parse_workflow(account: str, path: Path, raw: bytes) -> Workflow:
    if len(raw) > MAX_WORKFLOW_BYTES:
        raise _invalid(account, f"workflow file {path} is over {MAX_WORKFLOW_BYTES} bytes")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _invalid(account, f"workflow file {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise _invalid(account, f"workflow file {path}: expected a JSON object of nodes")
    if "nodes" in data and "links" in data:
        raise _invalid(
            account,
            f"workflow file {path} is in ComfyUI's UI format; export it with "
            "'Export (API)' (Workflow menu) and point the model at that file",
        )
    for node_id, node in data.items():
        if not (
            isinstance(node, dict)
            and isinstance(node.get("class_type"), str)
            and isinstance(node.get("inputs"), dict)
        ):
            raise _invalid(
                account,
                f"workflow file {path}: node {node_id!r} is not an API-format node "
                "({class_type, inputs})",
            )
    return data


def inject_targets(
    account: str, path: Path, workflow: Workflow, inject: Mapping[str, str]
) -> dict[str, Target]:
    """Each inject field's node and input, checked against the workflow."""
    targets: dict[str, Target] = {}
    for field, where in inject.items():
        if field not in INJECT_FIELDS:
            raise _invalid(
                account, f"inject.{field}: unknown field; known: {', '.join(INJECT_FIELDS)}"
            )
        node_id, dot, name = where.rpartition(".")
        if not dot or not node_id or not name:
            raise _invalid(account, f"inject.{field} = {where!r}: expected 'node id.input name'")
        node = workflow.get(node_id)
        if node is None:
            raise _invalid(
                account, f"inject.{field} = {where!r}: workflow {path.name} has no node {node_id!r}"
            )
        if name not in node["inputs"]:
            known = ", ".join(sorted(node["inputs"]))
            raise _invalid(
                account,
                f"inject.{field} = {where!r}: node {node_id} ({node['class_type']}) of "
                f"workflow {path.name} has no input {name!r} (it has: {known})",
            )
        targets[field] = Target(node_id, name)
    return targets


def fill(workflow: Workflow, targets: Mapping[str, Target], values: Mapping[str, Any]) -> None:
    """Set each targeted input to its value (fields without a value keep the workflow's)."""
    for field, target in targets.items():
        if field in values and values[field] is not None:
            workflow[target.node]["inputs"][target.input] = values[field]
