"""File names for outputs, made from the optional `output_name` a caller gives a job.

The caller's name is a wish, not a path: only its last component survives, the extension always
comes from the real image format, and what remains is reduced to a conservative ASCII alphabet so
the name is safe in a storage key, in a URL, in a zip file and on any filesystem a user unpacks to.
"""

from __future__ import annotations

import re
import unicodedata

from service.providers.base import EXTENSIONS

MAX_STEM_LENGTH = 120

_SEPARATORS = re.compile(r"[/\\]")
# An extension has a letter in it: "Release 1.2" keeps its ".2", "cover.png" loses its ".png".
_USER_EXTENSION = re.compile(r"(?<=[^.])\.(?=[0-9]*[A-Za-z])[A-Za-z0-9]{1,10}$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_REPEATS = re.compile(r"([._-])[._-]+")
_EDGE_PUNCTUATION = "._-"
_ALNUM = re.compile(r"[A-Za-z0-9]")  # the stem is ASCII by then: what str.isalnum finds
# A name every step below leaves as it is (ASCII alphanumeric runs joined by single "-" or
# "_"): a CSV's SKU column is usually one, and 50,000 of them should not cost half a second.
_ALREADY_SAFE = re.compile(r"[A-Za-z0-9]+(?:[_-][A-Za-z0-9]+)*")
# Device names Windows will not create as files, whatever the extension.
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)


def safe_output_stem(name: str) -> str:
    """A file-name stem from a caller's output_name, or "" when nothing usable is left."""
    if len(name) <= MAX_STEM_LENGTH and _ALREADY_SAFE.fullmatch(name):
        return f"{name}_" if name.upper() in _WINDOWS_RESERVED else name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    stem = _SEPARATORS.split(ascii_name)[-1].strip().lstrip(".")
    stem = _USER_EXTENSION.sub("", stem)
    stem = _UNSAFE_RUN.sub("-", stem)
    stem = _REPEATS.sub(r"\1", stem).strip(_EDGE_PUNCTUATION)
    stem = stem[:MAX_STEM_LENGTH].rstrip(_EDGE_PUNCTUATION)
    if _ALNUM.search(stem) is None:
        return ""
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem = f"{stem}_"
    return stem


def output_file_name(stem: str, fmt: str) -> str:
    """`stem` plus the extension of the image's real format; the stem must come from the above."""
    if not stem:
        raise ValueError("empty file name stem")
    if fmt not in EXTENSIONS:
        raise ValueError(f"unknown image format {fmt!r}")
    return f"{stem}.{EXTENSIONS[fmt]}"
