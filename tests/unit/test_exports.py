"""The public surface of the escp package is what escp/__init__.py exports, and nothing
else appears there by accident (trio's test_exports habit): a name that is added to or
dropped from the API must be added to or dropped from this list, on purpose."""

from __future__ import annotations

import types

import escp
import escp.errors

PUBLIC = {"transfer", "TransferConfig", "SshOptions", "TransferResult", "FileOutcome", "RemoteTarget",
          "parse_target", "EscpError", "__version__"}

ERRORS = {"EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_PARTIAL", "escape_name", "EscpError", "UsageError",
          "ProtocolError", "IntegrityError", "AuthError", "TransferIOError", "TimeoutError_", "ConnectionFailure",
          "OutOfMemory"}


def test_all_is_the_public_surface() -> None:
    assert set(escp.__all__) == PUBLIC
    assert len(escp.__all__) == len(PUBLIC), "a name listed twice"
    for name in escp.__all__:
        assert getattr(escp, name) is not None


def test_nothing_else_public_at_the_top() -> None:
    """Every other public attribute of the package is one of its submodules."""
    extra = {name for name, value in vars(escp).items()
             if not name.startswith("_") and name not in PUBLIC and not isinstance(value, types.ModuleType)}
    assert extra == set()


def test_exports_come_from_their_modules() -> None:
    from escp.api import transfer
    from escp.results import FileOutcome, TransferResult

    assert escp.transfer is transfer and escp.TransferResult is TransferResult and escp.FileOutcome is FileOutcome
    assert escp.EscpError is escp.errors.EscpError


def test_the_exception_tree_is_public_too() -> None:
    assert set(escp.errors.__all__) == ERRORS
    for name in ERRORS - {"EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_PARTIAL", "escape_name"}:
        assert issubclass(getattr(escp.errors, name), escp.EscpError)
