"""YAML documents the user gives us (--filelist, /etc/escp.conf): yaml.safe_load with a
one-line usage error on bad syntax. yaml is imported only when there is a document to
parse, which keeps ~30 ms off every start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import UsageError


def safe_load(text: bytes, invalid: Callable[[int | None], str]) -> Any:
    """The document in text; UsageError(invalid(line)) when it is not valid YAML (line is
    1-based, or None when the parser does not say where)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UsageError(invalid(mark.line + 1 if mark is not None else None)) from None
