"""What the fuzz test adds to schemathesis's own generation.

Schemathesis draws strings from all of Unicode (codec utf-8, NUL allowed) but never a
lone surrogate, which no encoder can send, and it nests no deeper than its schemas do.
A client can send both, escaped in JSON; `unsound_bodies` does. `within_reach` keeps
positive cases to what a schema can promise: the rules it cannot state (which models
this deployment runs, file names unique within a batch, cursors only the API makes, an
upload's bytes being an image) are out of its reach, and are tested on their own in tests/batches.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import schemathesis
from hypothesis import strategies as st
from PIL import Image

from service.providers.registry import ProviderRegistry
from service.storage.naming import safe_output_stem

DEEP = "\x01deep\x01"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 10, 200)).save(buffer, "PNG")
    return buffer.getvalue()


# A schema says "binary"; only a decodable image is an upload (tests/uploads).
UPLOAD_IMAGE = _png()  # a placeholder string, swapped for the nesting once serialised


def runnable_models(registry: ProviderRegistry) -> list[str]:
    """Image models this deployment would accept: their account's credentials are set.
    (What a video model takes is beyond a schema: tests/jobs/test_chains.py.)"""
    runnable = []
    for name, spec in sorted(registry.models.items()):
        account = registry.accounts.get(spec.provider)
        if spec.media == "image" and (account is None or not account.missing_env()):
            runnable.append(name)
    return runnable


SAMPLE_ARTICLE = {
    "type": "article.published",
    "data": {"title": "Moths", "slug": "moths", "excerpt": "Night walks", "id": "1"},
}


def _integration_within_reach(body: dict[str, Any], models: list[str]) -> None:
    """What an integration's schema cannot say: the kind checks its own `inbound`, a
    write-back needs a client for the kind, a template must parse, a model must run here."""
    if "kind" in body:  # the only kind whose inbound block may be empty
        body["kind"] = "generic"
    if "inbound" in body or "kind" in body:
        body["inbound"] = {}
    if "writeback" in body:
        body["writeback"] = None
    template = body.get("template")
    if isinstance(template, dict):
        for name in ("prompt", "negative_prompt", "output_name"):
            if isinstance(template.get(name), str):
                # No Jinja delimiters: a template that does not parse is refused.
                template[name] = template[name].replace("{", "(").replace("}", ")")
        if isinstance(template.get("model"), str):
            template["model"] = models[len(template["model"]) % len(models)]


# What a file holds is beyond a schema (tests/batches/files): positive cases send one
# that is valid, in each content type POST /v1/batches takes.
BATCH_FILES: dict[str, Any] = {
    "text/csv": "prompt,width,height\na red bicycle,64,64\n",
    "application/x-ndjson": '{"prompt": "a red bicycle", "width": 64, "height": 64}\n',
    "application/yaml": {"jobs": [{"prompt": "a red bicycle", "width": 64, "height": 64}]},
    "multipart/form-data": {"file": b"prompt,width,height\na kite,64,64\n", "format": "csv"},
}


def _plain_template(template: dict[str, Any]) -> None:
    """No Jinja delimiters (a template that does not parse is refused), and no output
    name (one rendered the same for every job would name every job's file alike)."""
    for name in ("prompt", "negative_prompt"):
        if isinstance(template.get(name), str):
            template[name] = template[name].replace("{", "(").replace("}", ")")
    template.pop("output_name", None)


def _templates_within_reach(body: dict[str, Any]) -> None:
    _plain_template(body)


def _batch_templates_within_reach(body: dict[str, Any]) -> None:
    """Stored templates a batch names exist only if posted first; jobs without a prompt
    need a template to render one."""
    template = body.get("template")
    if isinstance(template, str):
        body["template"] = {"prompt": "a red bicycle"}
    elif isinstance(template, dict):
        _plain_template(template)
    body.pop("templates", None)
    for job in body.get("jobs") if isinstance(body.get("jobs"), list) else []:
        if isinstance(job, dict):
            job.pop("template", None)
            if job.get("prompt") is None and not isinstance(body.get("template"), dict):
                job["prompt"] = "a red bicycle"


_MODEL_BOUND = (
    "media",
    "task",
    "duration_s",
    "fps",
    "resolution",
    "reference_images",
    "mask",
    "input",
)


def within_reach(models: list[str]) -> Callable[[schemathesis.Case], schemathesis.Case]:
    def adjust(case: schemathesis.Case) -> schemathesis.Case:
        if isinstance(case.query, dict):
            case.query.pop("cursor", None)
            if case.operation.label == "GET /v1/usage":
                _usage_window_within_reach(case.query)
        body = case.body
        if case.operation.path.startswith("/v1/integrations") and isinstance(body, dict):
            if case.operation.path.endswith("/preview"):
                body["body"] = SAMPLE_ARTICLE  # a body the generic kind can read
            else:
                _integration_within_reach(body, models)
        if case.operation.label == "POST /v1/uploads" and isinstance(body, dict):
            body["file"] = UPLOAD_IMAGE
        if case.operation.path.startswith("/openai/v1/images/") and isinstance(body, dict):
            _openai_images_within_reach(case.operation.label, body)
        if case.operation.label == "POST /v1/templates" and isinstance(body, dict):
            _templates_within_reach(body)
        if case.operation.label == "POST /v1/batches" and case.media_type in BATCH_FILES:
            case.body = BATCH_FILES[case.media_type]  # a file's rows are beyond a schema
            return case
        schedule = case.operation.path.startswith("/v1/schedules")
        if schedule and isinstance(body, dict):
            _schedule_within_reach(body)
            body = body.get("batch")  # then its batch body, as a submit's
        if (case.operation.label == "POST /v1/batches" or schedule) and isinstance(body, dict):
            _batch_templates_within_reach(body)
            if isinstance(body.get("notify"), list) and body["notify"]:
                # Whether Apprise knows a URL is beyond a schema (tests/notifications).
                body["notify"] = ["json://127.0.0.1:9/fuzz"]
            jobs = body.get("jobs")
            fields = [body.get("defaults"), *(jobs if isinstance(jobs, list) else [])]
            stems: set[str] = set()
            for job in (f for f in fields if isinstance(f, dict)):
                if isinstance(job.get("model"), str):
                    job["model"] = models[len(job["model"]) % len(models)]
                # Media, inputs and chains depend on the model and on other jobs: beyond a
                # schema (tests/jobs/test_chains.py). Positive cases stay images.
                for name in _MODEL_BOUND:
                    job.pop(name, None)
                if job.get("format") in ("mp4", "webm"):
                    job["format"] = "png"
                name = job.get("output_name")
                if isinstance(name, str) and (stem := safe_output_stem(name).lower()):
                    if stem in stems:
                        job["output_name"] = None
                    stems.add(stem)
        return case

    return adjust


# A cron expression's and a timezone's validity are beyond a schema (tests/schedules).
_CRONS = ("30 6 * * 1", "*/5 * * * *", "0 0 1 1 *", "15 14 1 * 1-5")
_TIMEZONES = ("UTC", "Europe/Amsterdam", "America/New_York", "Asia/Kolkata")


def _schedule_within_reach(body: dict[str, Any]) -> None:
    if isinstance(body.get("cron"), str):
        body["cron"] = _CRONS[len(body["cron"]) % len(_CRONS)]
    if isinstance(body.get("timezone"), str):
        body["timezone"] = _TIMEZONES[len(body["timezone"]) % len(_TIMEZONES)]


def _openai_images_within_reach(label: str, body: dict[str, Any]) -> None:
    """The OpenAI door waits for its images: small ones, one each, on the built-in
    renderer (the default model); an edit sends a real picture and no mask, which that
    model does not take (tests/openai_compat covers the rest)."""
    body.pop("model", None)
    body["n"] = 1
    body["size"] = "64x64"
    if label == "POST /openai/v1/images/edits":
        body["image"] = [UPLOAD_IMAGE]  # an array of files in the schema
        body.pop("image[]", None)
        body.pop("mask", None)


def _usage_window_within_reach(query: dict[str, Any]) -> None:
    """A usage window must run forwards (to after from; from before now when to is left
    out) and stay within the calendar in UTC: beyond a schema. Kept only when it does."""
    try:
        start, end = (_utc(datetime.fromisoformat(str(query[k]))) for k in ("from", "to"))
        forwards = end > start
    except (KeyError, ValueError, OverflowError):
        forwards = False
    if not forwards:
        query.pop("from", None)
        query.pop("to", None)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _locations(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """Every place a bad value can go: ("value", path) for each leaf and container,
    ("key", path) for each object key."""
    found: list[tuple[tuple[Any, ...], str]] = [(path, "value")]
    if isinstance(value, dict):
        for key, child in value.items():
            found.append(((*path, key), "key"))
            found.extend(_locations(child, (*path, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_locations(child, (*path, index)))
    return found


def _replace(value: Any, path: tuple[Any, ...], kind: str, bad: Any) -> Any:
    if not path:
        return bad
    head, *rest = path
    if isinstance(value, dict):
        if kind == "key" and not rest:
            return {(bad if k == head else k): v for k, v in value.items()}
        return {
            k: (_replace(v, tuple(rest), kind, bad) if k == head else v) for k, v in value.items()
        }
    return [_replace(v, tuple(rest), kind, bad) if i == head else v for i, v in enumerate(value)]


lone_surrogates = st.integers(0xD800, 0xDFFF).map(chr)
unstorable_text = st.one_of(
    st.tuples(st.text(max_size=5), lone_surrogates, st.text(max_size=5)).map("".join),
    st.tuples(st.text(max_size=5), st.just("\x00"), st.text(max_size=5)).map("".join),
)
nestings = st.tuples(st.sampled_from(["[", '{"a":']), st.sampled_from([65, 1_000, 100_000]))


@st.composite
def unsound_bodies(draw: st.DrawFn, cases: st.SearchStrategy[schemathesis.Case]) -> bytes:
    """A generated body with one value or key made unstorable, or one value nested far
    past any real body, serialised as a client would (surrogates escaped)."""
    body = draw(cases).body
    path, kind = draw(st.sampled_from(_locations(body)))
    if kind == "key" or draw(st.booleans()):
        raw = json.dumps(_replace(body, path, kind, draw(unstorable_text)))
        return raw.encode()
    opener, depth = draw(nestings)
    closer = "]" if opener == "[" else "}"
    raw = json.dumps(_replace(body, path, kind, DEEP))
    return raw.replace(json.dumps(DEEP), opener * depth + "1" + closer * depth).encode()
