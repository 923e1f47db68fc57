"""A job's fallbacks: when a failing job moves to its next model, and what the move does.

A job may carry, in `params["fallbacks"]`, the models to try after its own, in order,
each with the changes its parameters need on that model (`{"model", "params"}`: a value
None deletes the key). Submit writes that list; this module is the one place that
decides when a job moves along it.

Why a job moves only for these reasons:
- The model itself cannot make this job: it refused the content (content_policy), its
  input (invalid_input: what this model accepts), it does not exist at its provider
  (model_not_found), its workflow or template cannot run (workflow_invalid,
  template_error), or it did not finish in time (deadline_exceeded). Another model may
  well succeed, so waiting for this one is pointless.
- It used up its attempts on retryable errors (5xx, failed generations, workers that
  died): this model is not working now; another may be.

Why it never moves for others:
- A 429 means "wait", not "fail": the account slows down and the job keeps its place.
- auth and insufficient_quota are the account's problem; budget_exceeded is the
  caller's; parent_failed, input_* and storage_* are the job's own inputs or our
  store. Another model would fail the same way, and might be paid for doing so.
- cancelled is what the caller asked for.

No loops: a model is tried at most once per job. The current model and every model
already hopped from are skipped (and dropped) if the list names them again.

Never paying twice: a create that may have reached a provider that can be asked
(resubmission.remember_unconfirmed set `unconfirmed_since` on the attempt) may have
made a generation that runs, and is billed, without a handle (so may an attempt whose worker
died before it stored a handle, at such a provider). Moving to another model
then could pay for the image twice. So a job in that doubt does not move: its next
attempt stays on the same model, whose look_before_sending asks the provider first and
resumes what it finds. That attempt may be one beyond the model's max_attempts (the
look is owed, not a retry). If the doubt remains after it (the provider could not be
asked, or the create was lost again), the job fails on that model and says why, rather
than pay another model. A synchronous provider that cannot be asked (OpenAI, local)
never sets the doubt, and its job moves on as usual.

When every model has failed, the job fails with the last error's code and a message
naming each model's reason in order. Nothing is stored: there is never a placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from service.models import Job
from service.providers.base import ProviderError, ProviderRateLimited

# The model failed for a reason of its own: move at once.
MODEL_FAILURES = frozenset(
    {
        "content_policy",
        "invalid_input",
        "model_not_found",
        "workflow_invalid",
        "deadline_exceeded",
        "template_error",
    }
)
# Not the model's fault: another model would fail (and maybe be paid) the same way.
NOT_THE_MODEL = frozenset(
    {
        "rate_limited",
        "auth",
        "insufficient_quota",
        "budget_exceeded",
        "parent_failed",
        "cancelled",
        "storage_unavailable",
        "storage_error",
    }
)
NOT_THE_MODEL_PREFIXES = ("input_",)
# _start's error for a job whose attempts were used up (by workers that died).
ATTEMPTS_EXHAUSTED = "attempts_exhausted"


def hop_worthy(error: ProviderError, *, exhausted: bool) -> bool:
    """Whether this failure sends the job to its next model (see the module's docstring)."""
    code = error.code
    if isinstance(error, ProviderRateLimited) or code in NOT_THE_MODEL:
        return False
    if code.startswith(NOT_THE_MODEL_PREFIXES):
        return False
    if code in MODEL_FAILURES:
        return True
    return exhausted and (error.retryable or code == ATTEMPTS_EXHAUSTED)


@dataclass(frozen=True)
class Fallback:
    """The next model and the changes to the job's parameters on it; `rest` the list
    that remains after it."""

    model: str
    changes: dict[str, Any]
    rest: list[Any]


def next_fallback(job: Job) -> Fallback | None:
    """The first fallback not yet tried by this job (not its current model, not one it
    already moved from), or None."""
    params = job.params or {}
    tried = {job.model} | {hop.get("model") for hop in hops_of(params)}
    remaining = list(params.get("fallbacks") or [])
    while remaining:
        entry = remaining.pop(0)
        if not isinstance(entry, dict):
            continue
        model = entry.get("model")
        if not isinstance(model, str) or not model or model in tried:
            continue
        changes = entry.get("params")
        return Fallback(model, dict(changes) if isinstance(changes, dict) else {}, remaining)
    return None


def hops_of(params: dict[str, Any] | None) -> list[dict[str, Any]]:
    hops = (params or {}).get("hops")
    return [hop for hop in hops if isinstance(hop, dict)] if isinstance(hops, list) else []


@dataclass(frozen=True)
class Decision:
    """retry: another attempt on the same model; hop: move to `fallback`; fail: the job
    fails. `note` says why a hop was held back (shown on the attempt and the job)."""

    action: Literal["retry", "hop", "fail"]
    fallback: Fallback | None = None
    note: str | None = None


def decide(
    job: Job, error: ProviderError, *, max_attempts: int, in_doubt: bool, account: str
) -> Decision:
    """What follows this failure of the job's current attempt. `in_doubt`: the attempt's
    create may have made a generation at a provider that can be asked (module docstring)."""
    exhausted = job.attempts >= max_attempts
    fallback = next_fallback(job) if hop_worthy(error, exhausted=exhausted) else None
    if fallback is not None:
        if not in_doubt:
            return Decision("hop", fallback)
        if job.attempts <= max_attempts:
            note = (
                f"not moved to {fallback.model} yet: the request may have reached {account}; "
                "the next attempt looks for it there first"
            )
            return Decision("retry", note=note)
        note = (
            f"not moved to {fallback.model}: the request may have made a generation at "
            f"{account}, which could not be confirmed, and another model would pay again"
        )
        return Decision("fail", note=note)
    if error.retryable and not exhausted:
        return Decision("retry")
    return Decision("fail")


def hop(job: Job, fallback: Fallback, error: ProviderError, account: str) -> None:
    """Move the job to `fallback`: its model, its parameters for that model, the reason
    recorded, and a fresh count of attempts (the new model has its own max_attempts;
    `tries` keeps numbering the attempt rows)."""
    params = dict(job.params or {})  # a new dict: JSONB changes are seen on assignment
    if "origin" not in params:  # the first hop: what a retry of the batch starts from again
        params["origin"] = {
            "model": job.model,
            "params": {key: params.get(key) for key in fallback.changes},
            "fallbacks": params.get("fallbacks") or [],
        }
    for key, value in fallback.changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    params["fallbacks"] = fallback.rest
    params["hops"] = [*hops_of(job.params), _record(job, error, account)]
    job.params = params
    job.model = fallback.model
    job.attempts = 0


def _record(job: Job, error: ProviderError, account: str) -> dict[str, Any]:
    return {
        "model": job.model,
        "account": account,
        "code": error.code,
        "message": error.message,
        "attempts": job.attempts,
    }


def final_error(job: Job, error: ProviderError, account: str, note: str | None) -> ProviderError:
    """The error a job fails with: the last error's code; when it moved between models,
    a message giving every model's reason in order."""
    hops = hops_of(job.params)
    if not hops and note is None:
        return error
    reasons = [reason(hop) for hop in [*hops, _record(job, error, account)]]
    message = "; ".join(reasons) + (f" ({note})" if note else "")
    return ProviderError(error.code, message, http_status=error.http_status)


def reason(hop: dict[str, Any]) -> str:
    """ "sdxl: server_error after 3 attempts: <the provider's message>"."""
    attempts = hop.get("attempts")
    tries = f" after {attempts} attempts" if isinstance(attempts, int) and attempts > 1 else ""
    return f"{hop.get('model')}: {hop.get('code')}{tries}: {hop.get('message')}"


def restart(job: Job) -> None:
    """A failed job retried (POST /v1/batches/{id}/retry) starts again from the model it
    was first given, with its whole list of fallbacks, not from the last one it reached."""
    params = dict(job.params or {})
    origin = params.pop("origin", None)
    if not isinstance(origin, dict) or not isinstance(origin.get("model"), str):
        return
    for key, value in (origin.get("params") or {}).items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    params["fallbacks"] = origin.get("fallbacks") or []
    params.pop("hops", None)
    job.params = params
    job.model = origin["model"]
