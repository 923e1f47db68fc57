from __future__ import annotations

import re

import pytest

from service.storage.naming import MAX_STEM_LENGTH, output_file_name, safe_output_stem


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("covers/My Article: Part 1.png", "My-Article-Part-1"),
        ("../../etc/passwd", "passwd"),
        (".hidden", "hidden"),
        ("C:\\x\\y.jpg", "y"),
        ("Café", "Cafe"),
        ("naïve résumé.webp", "naive-resume"),
        ("plain", "plain"),
        ("photo.jpeg.png", "photo.jpeg"),
        ("Release 1.2", "Release-1.2"),
        ("a  --  b", "a-b"),
        ("a...b", "a.b"),
        ("-rf", "rf"),
        ("trailing.", "trailing"),
        ("..\\..\\windows\\system32", "system32"),
        (
            "\uff46\uff55\uff4c\uff4c\uff0f\uff4e\uff41\uff4d\uff45",
            "name",
        ),  # full width "full/name"
        ("CON.png", "CON_"),
        (".png", "png"),  # a hidden file called "png", not an extension alone
        ("under_score-and.dot", "under_score-and"),
        # Names already safe (a CSV's SKU column) take a shortcut that must agree.
        ("SKU-1-000042", "SKU-1-000042"),
        ("a_b-c", "a_b-c"),
        ("a--b", "a-b"),
        ("nul", "nul_"),
        ("LPT9", "LPT9_"),
        ("com1-x", "com1-x"),
        ("x" * 120, "x" * 120),
        ("x" * 121, "x" * 120),
        ("y" * 119 + "-z", "y" * 119),
    ],
)
def test_safe_output_stem(name: str, stem: str) -> None:
    assert safe_output_stem(name) == stem


@pytest.mark.parametrize(
    "name", ["", "   ", "...", "/", "covers/", "../..", "日本語", "🖼️", "---", "?*<>|", "_.-"]
)
def test_nothing_usable_gives_empty_stem(name: str) -> None:
    assert safe_output_stem(name) == ""


def test_long_names_are_trimmed() -> None:
    stem = safe_output_stem("x" * 119 + "-" + "y" * 300 + ".png")
    assert len(stem) <= MAX_STEM_LENGTH
    assert stem == "x" * 119


@pytest.mark.parametrize(
    "name",
    ["covers/My Article: Part 1.png", "../../etc/passwd", "a\x00b\nc\td", "%2e%2e%2fetc", "¡Hola!"],
)
def test_stems_use_only_the_safe_alphabet(name: str) -> None:
    stem = safe_output_stem(name)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem)
    assert ".." not in stem


@pytest.mark.parametrize(
    ("fmt", "expected"), [("png", "x.png"), ("jpeg", "x.jpg"), ("webp", "x.webp")]
)
def test_output_file_name_uses_the_real_format(fmt: str, expected: str) -> None:
    assert output_file_name("x", fmt) == expected


def test_output_file_name_refuses_empty_stem_and_unknown_format() -> None:
    with pytest.raises(ValueError, match="empty"):
        output_file_name("", "png")
    with pytest.raises(ValueError, match="format"):
        output_file_name("x", "gif")
