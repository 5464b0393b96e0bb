"""Files and folders shipped as package data of ``citeqa``: the bundled corpus and models.

The one place that resolves them, in the lowest layer so that index and service both use it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def bundled(*parts: str) -> Path:
    """A file or folder shipped as package data of ``citeqa`` (the same in a source checkout,
    an editable and a wheel install): found with importlib.resources, never by repo layout."""
    return Path(str(files("citeqa").joinpath(*parts)))
