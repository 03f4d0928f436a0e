"""Image naming and finding the machine's Debian mirror (no Docker engine needed)."""

from __future__ import annotations

import pytest

from schemas.job import ModelRef
from services.sheep import images

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_model_images_are_named_registry_name_version():
    model = ModelRef(name="echo", version="1")
    assert images.image_name("127.0.0.1:5050", model) == "127.0.0.1:5050/echo:1"


@pytest.mark.parametrize("name", ["Echo", "echo-", "a..b", "a_-b"])
def test_names_docker_refuses_are_refused_with_the_reason(name: str):
    with pytest.raises(images.ImageError, match="lowercase"):
        images.image_name("127.0.0.1:5050", ModelRef(name=name, version="1"))


def test_the_mirror_of_the_suite_is_found_in_deb822_sources():
    assert images._deb822_mirror(DEB822, "bookworm") == "http://mirror.example/debian"
    assert images._deb822_mirror(DEB822, "trixie") is None


def test_the_mirror_of_the_suite_is_found_in_one_line_sources():
    text = (
        "# deb http://old.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    )
    assert images._one_line_mirror(text, "bookworm") == "http://mirror.example/debian"
    assert images._one_line_mirror(text, "bullseye") is None
