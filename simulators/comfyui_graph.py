"""The ComfyUI simulator's idea of a workflow: a small catalogue of node classes, the
server's validation of an API-format prompt (with its real error shapes), the order
the nodes run in, and the image a run "makes".

The validation follows ComfyUI's `execution.validate_prompt`: a node without a
`class_type` or with an unknown class fails the whole prompt with `node_errors` empty;
otherwise every output node's inputs are checked, recursively through its links, and
each failing node gets `{errors: [{type, message, details, extra_info}],
dependent_outputs, class_type}` in `node_errors`. A prompt whose outputs all fail is a
400 (`prompt_outputs_failed_validation`); one with some good outputs is queued with the
others' errors in the answer.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from PIL import Image

CHECKPOINTS = ("sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.ckpt")
CONTROLNETS = ("controlnet-canny-sdxl-1.0.safetensors",)
IPADAPTER_PRESETS = ("PLUS (high strength)", "STANDARD (medium strength)")
MIN_SIDE, MAX_SIDE = 16, 4096
# Pixels per latent cell (Stable Diffusion's VAE).
LATENT_SCALE = 8


@dataclass(frozen=True)
class NodeClass:
    required: tuple[str, ...]
    output: bool = False
    ints: tuple[str, ...] = ()
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


NODE_CLASSES: dict[str, NodeClass] = {
    "CheckpointLoaderSimple": NodeClass(("ckpt_name",), choices={"ckpt_name": CHECKPOINTS}),
    "CLIPTextEncode": NodeClass(("text", "clip")),
    "EmptyLatentImage": NodeClass(("width", "height", "batch_size"), ints=("width", "height")),
    "KSampler": NodeClass(
        (
            "model",
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "positive",
            "negative",
            "latent_image",
            "denoise",
        ),
        ints=("seed", "steps"),
    ),
    "VAEDecode": NodeClass(("samples", "vae")),
    "VAEEncode": NodeClass(("pixels", "vae")),
    "VAEEncodeForInpaint": NodeClass(("pixels", "vae", "mask", "grow_mask_by")),
    "SetLatentNoiseMask": NodeClass(("samples", "mask")),
    "LoadImage": NodeClass(("image",)),
    "LoadImageMask": NodeClass(("image", "channel")),
    "ImageScale": NodeClass(
        ("image", "upscale_method", "width", "height", "crop"), ints=("width", "height")
    ),
    "ControlNetLoader": NodeClass(("control_net_name",), choices={"control_net_name": CONTROLNETS}),
    "ControlNetApplyAdvanced": NodeClass(
        ("positive", "negative", "control_net", "image", "strength", "start_percent", "end_percent")
    ),
    # ComfyUI_IPAdapter_plus, a custom node pack the simulated server has installed.
    "IPAdapterUnifiedLoader": NodeClass(("model", "preset"), choices={"preset": IPADAPTER_PRESETS}),
    "IPAdapterAdvanced": NodeClass(
        ("model", "ipadapter", "image", "weight", "weight_type", "start_at", "end_at")
    ),
    "SaveImage": NodeClass(("images", "filename_prefix"), output=True),
    "PreviewImage": NodeClass(("images",), output=True),
}


class PromptRejected(Exception):
    """The 400 answer to POST /prompt: `error` and `node_errors` as the server sends them."""

    def __init__(self, error: Any, node_errors: Any) -> None:
        super().__init__(str(error))
        self.error = error
        self.node_errors = node_errors


def _error(kind: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def validate(
    prompt: Any, has_input_file: Callable[[str], bool]
) -> tuple[list[str], dict[str, Any]]:
    """(the output node ids that will run, node_errors of the others); raises
    PromptRejected when nothing can run."""
    if not isinstance(prompt, dict):
        raise PromptRejected(_error("invalid_prompt", "Prompt is not a JSON object", ""), {})
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            message = "Cannot execute because a node is missing the class_type property."
            raise PromptRejected(_error("invalid_prompt", message, f"Node ID '#{node_id}'"), {})
        class_type = node["class_type"]
        if class_type not in NODE_CLASSES:
            message = f"Node '{class_type}' not found. The custom node may not be installed."
            error = _error(
                "missing_node_type",
                message,
                f"Node ID '#{node_id}'",
                node_id=node_id,
                class_type=class_type,
            )
            raise PromptRejected(error, {})
    outputs = [key for key, node in prompt.items() if NODE_CLASSES[node["class_type"]].output]
    if not outputs:
        raise PromptRejected(_error("prompt_no_outputs", "Prompt has no outputs", ""), {})
    checked: dict[str, list[dict[str, Any]]] = {}
    good: list[str] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        failing = _failing_nodes(prompt, output, checked, has_input_file)
        if not failing:
            good.append(output)
        for node_id in failing:
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": checked[node_id],
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                },
            )
            if output not in entry["dependent_outputs"]:
                entry["dependent_outputs"].append(output)
    if not good:
        details = "\n".join(
            f"{error['message']}: {error['details']}"
            for entry in node_errors.values()
            for error in entry["errors"]
        )
        message = "Prompt outputs failed validation"
        raise PromptRejected(
            _error("prompt_outputs_failed_validation", message, details), node_errors
        )
    return good, node_errors


def _failing_nodes(
    prompt: dict[str, Any],
    node_id: str,
    checked: dict[str, list[dict[str, Any]]],
    has_input_file: Callable[[str], bool],
) -> list[str]:
    """Node ids, among `node_id` and what it links to, whose inputs do not validate."""
    if node_id in checked:
        return [node_id] if checked[node_id] else []
    checked[node_id] = []
    node = prompt[node_id]
    spec = NODE_CLASSES[node["class_type"]]
    inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
    errors: list[dict[str, Any]] = []
    failing: list[str] = []
    for name in spec.required:
        if name not in inputs:
            errors.append(
                _error("required_input_missing", "Required input is missing", name, input_name=name)
            )
            continue
        value = inputs[name]
        if isinstance(value, list):
            if len(value) != 2 or not isinstance(value[0], str) or value[0] not in prompt:
                message = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
                errors.append(_error("bad_linked_input", message, name, input_name=name))
            else:
                failing += _failing_nodes(prompt, value[0], checked, has_input_file)
            continue
        problem = _value_error(node["class_type"], spec, name, value, has_input_file)
        if problem is not None:
            errors.append(problem)
    checked[node_id] = errors
    return ([node_id] if errors else []) + failing


def _value_error(
    class_type: str,
    spec: NodeClass,
    name: str,
    value: Any,
    has_input_file: Callable[[str], bool],
) -> dict[str, Any] | None:
    if name in spec.ints:
        if isinstance(value, bool) or not isinstance(value, int):
            message = "Failed to convert an input value to a INT value"
            return _error("invalid_input_type", message, f"{name}, {value!r}", input_name=name)
        if name in ("width", "height") and not MIN_SIDE <= value <= MAX_SIDE:
            bound = "smaller than min" if value < MIN_SIDE else "bigger than max"
            limit = MIN_SIDE if value < MIN_SIDE else MAX_SIDE
            message = f"Value {bound} of {limit}"
            return _error(f"value_{bound.replace(' ', '_')}", message, f"{name}", input_name=name)
    allowed = spec.choices.get(name)
    if allowed is not None and value not in allowed:
        details = f"{name}: '{value}' not in {list(allowed)}"
        return _error("value_not_in_list", "Value not in list", details, input_name=name)
    if class_type in ("LoadImage", "LoadImageMask") and name == "image":
        if not isinstance(value, str) or not has_input_file(value):
            message = "Custom validation failed for node"
            return _error(
                "custom_validation_failed", message, f"image - Invalid image file: {value}"
            )
    return None


def execution_order(prompt: dict[str, Any], outputs: list[str]) -> list[str]:
    """Every node the outputs depend on, each after the nodes it links to."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in seen:
            return
        seen.add(node_id)
        for value in prompt[node_id].get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2 and value[0] in prompt:
                visit(value[0])
        order.append(node_id)

    for output in outputs:
        visit(output)
    return order


def _on_latent_grid(side: Any) -> int:
    return max(LATENT_SCALE, int(side) // LATENT_SCALE * LATENT_SCALE)


@dataclass(frozen=True)
class RenderPlan:
    """What the run's image depends on."""

    width: int
    height: int
    seed: int
    texts: tuple[str, ...]
    batch: int
    reference: str | None


def render_plan(
    prompt: dict[str, Any], order: list[str], image_size: Callable[[str], tuple[int, int] | None]
) -> RenderPlan:
    """The output size comes from the latent (EmptyLatentImage, rounded down to its grid
    of 8 pixels) or from a scaled input image (ImageScale), else from the loaded image
    itself, as a real graph would."""
    size: tuple[int, int] | None = None
    seed, batch = 0, 1
    texts: list[str] = []
    reference: str | None = None
    for node_id in order:
        node = prompt[node_id]
        inputs = node.get("inputs", {})
        kind = node["class_type"]
        if kind == "EmptyLatentImage":
            # The latent is an eighth of the image, so a side that is not a multiple of 8
            # comes back shorter, as it does from ComfyUI.
            size = (_on_latent_grid(inputs["width"]), _on_latent_grid(inputs["height"]))
            batch = int(inputs.get("batch_size", 1))
        elif kind == "ImageScale":
            size = (int(inputs["width"]), int(inputs["height"]))
        elif kind == "KSampler":
            seed = int(inputs["seed"])
        elif kind == "CLIPTextEncode" and isinstance(inputs.get("text"), str):
            texts.append(inputs["text"])
        elif kind == "LoadImage":
            reference = str(inputs["image"])
            size = size or image_size(reference)
    width, height = size or (512, 512)
    return RenderPlan(width, height, seed, tuple(texts), max(1, min(batch, 8)), reference)


@lru_cache(maxsize=128)
def render_png(
    width: int, height: int, seed: int, texts: tuple[str, ...], index: int, reference: bytes | None
) -> bytes:
    """A deterministic PNG: colours from the seed and texts, the reference image (an
    img2img run) blended in. Cached: a benchmark renders the same few images."""
    digest = hashlib.sha256(repr((seed, texts, index)).encode()).digest()
    ramp = Image.linear_gradient("L")
    red = ramp.resize((width, height)).point(lambda v: (v + digest[0]) % 256)
    green = ramp.rotate(90).resize((width, height)).point(lambda v: (v + digest[1]) % 256)
    blue = Image.new("L", (width, height), digest[2])
    image = Image.merge("RGB", (red, green, blue))
    if reference is not None:
        with Image.open(io.BytesIO(reference)) as loaded:
            image = Image.blend(image, loaded.convert("RGB").resize((width, height)), 0.5)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
