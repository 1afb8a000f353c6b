"""The optional extras of the `hf-detr` command: a module one feature needs, imported when that feature runs."""

from __future__ import annotations

import importlib
from types import ModuleType


def require_extra(module: str, purpose: str, extra: str, package: str) -> ModuleType:
    """`module`, or an ImportError naming what needs it (`purpose`), the hf_detr extra that installs it and the
    package itself (e.g. `require_extra("av", "videos are read and written with PyAV", "video", "av")`)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{purpose}, which is not installed: pip install 'hf_detr[{extra}]' (or pip install {package})"
        ) from error
