"""The sans-IO protocol core of escp (no sockets, threads or clocks): see docs/protocol.md.

The flatbuffers runtime imports numpy whenever it is installed, only to offer numpy
accessors we never use; that costs every escp process ~0.25 s and starts a BLAS thread
pool. While flatbuffers and our generated code are first imported, numpy is hidden from them.
"""

import importlib.machinery
import sys

if "flatbuffers" not in sys.modules and "numpy" not in sys.modules:
    _find_spec = importlib.machinery.PathFinder.find_spec

    def _no_numpy(name, path=None, target=None):  # type: ignore[no-untyped-def]
        return None if name == "numpy" else _find_spec(name, path, target)

    importlib.machinery.PathFinder.find_spec = _no_numpy  # type: ignore[method-assign]
    try:
        import flatbuffers  # noqa: F401

        from .fb import escp_generated  # noqa: F401  (it asks for numpy at import, too)
    finally:
        importlib.machinery.PathFinder.find_spec = _find_spec  # type: ignore[method-assign]
