"""Realistic batch bodies: prompts of 100-200 characters and a few fields per job."""

from __future__ import annotations

import random
from typing import Any

_SUBJECTS = [
    "a lighthouse on a basalt cliff",
    "a fox crossing a frozen river",
    "an espresso cup on marble",
    "a paper boat drifting down a rainy street",
    "a greenhouse full of ferns",
    "a night market",
    "an old tram climbing a hill",
    "a heron standing in reeds",
    "a stack of library books",
    "a mountain hut under the milky way",
    "a bicycle leaning on a blue door",
    "a harbour crane",
]
_STYLES = [
    "oil painting, thick impasto",
    "soft watercolour wash",
    "35mm film photograph, grain",
    "isometric illustration",
    "linocut print, two colours",
    "studio product shot",
    "gouache poster, flat shapes",
    "cinematic still, anamorphic flare",
]
_DETAILS = [
    "golden hour light",
    "overcast and moody",
    "shallow depth of field",
    "wide angle",
    "muted palette",
    "high contrast",
    "morning fog",
    "long shadows",
    "rim lighting",
    "seen from above",
    "symmetrical composition",
    "warm tungsten glow",
]


def prompt(rng: random.Random) -> str:
    parts = [rng.choice(_SUBJECTS), rng.choice(_STYLES)]
    while len(", ".join(parts)) < rng.randint(100, 190):
        parts.append(rng.choice(_DETAILS))
    return ", ".join(parts)[:200]


def batch_body(jobs: int, *, size: int = 512, fmt: str = "png", seed: int = 0) -> dict[str, Any]:
    """One batch as a caller would send it: shared defaults, per-job prompt, seed,
    output name and a little metadata."""
    rng = random.Random(seed)
    return {
        "name": f"bench {jobs} jobs",
        "metadata": {"source": "bench", "run": seed},
        "defaults": {"model": "local/procedural", "width": size, "height": size, "format": fmt},
        "jobs": [
            {
                "prompt": prompt(rng),
                "seed": rng.randrange(2**32),
                "output_name": f"article-{seed}-{index:05d}",
                "metadata": {"article_id": f"a-{seed}-{index}", "locale": rng.choice(["en", "de"])},
            }
            for index in range(jobs)
        ],
    }
