"""The per-statement modules compiled with mypyc, and the guard against stale builds.

`make` compiles these modules to C extensions beside their sources
(scripts/compile_hot_path.py); Python then imports the extension instead of
the `.py`. They are compiled as one group that calls across modules
natively, so a build is used whole or not at all: when any source of the
package is newer than the build (edited since), or SLUICE_INTERPRETED=1 is
set, every module of the group is imported from its source instead, with a
warning. Without a build everything runs from source.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

HOT_MODULES: Final = (
    "sluice.audit.lines",
    "sluice.audit.log",
    "sluice.audit.sinks.file",
    "sluice.audit.stamps",
    "sluice.masking.masker",
    "sluice.masking.model",
    "sluice.masking.pgtypes",
    "sluice.masking.precheck",
    "sluice.masking.scanner",
    "sluice.policy.engine",
    "sluice.policy.prepared",
    "sluice.policy.secrets",
    "sluice.policy.textkeys",
    "sluice.protocols.postgres.framing",
    "sluice.protocols.postgres.messages",
    "sluice.protocols.postgres.tracker",
    "sluice.proxy.governance",
    "sluice.proxy.pg_masking",
    "sluice.proxy.pg_session",
    "sluice.proxy.pg_statements",
    "sluice.recording.format",
    "sluice.recording.pagecache",
    "sluice.recording.writer",
)
"""What runs per statement and per result batch, in the order of the data path."""

GROUP: Final = "sluice._hot"
"""The group's shared library is `sluice/_hot__mypyc.*.so`."""

INTERPRETED_ENV: Final = "SLUICE_INTERPRETED"

_PACKAGE_ROOT: Final = Path(__file__).resolve().parent.parent  # the folder holding sluice/


def source_path(module: str) -> Path:
    return _PACKAGE_ROOT.joinpath(*module.split(".")).with_suffix(".py")


def built_path(module: str) -> Path | None:
    """The compiled extension of `module`, if one was built."""
    base = _PACKAGE_ROOT.joinpath(*module.split("."))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.exists():
            return candidate
    return None


def stale_sources(modules: Sequence[str] = HOT_MODULES) -> list[str]:
    """Why the build cannot be used: its missing parts, or the sources
    changed since it was made. Any source counts, not only the hot modules':
    compiled code may have taken in a constant of another module."""
    built = [built_path(module) for module in (*modules, GROUP + "__mypyc")]
    missing = [m for m, path in zip((*modules, GROUP), built, strict=True) if path is None]
    if missing:
        return [f"{name} (not built)" for name in missing]
    oldest_build = min(path.stat().st_mtime for path in built if path is not None)
    package = _PACKAGE_ROOT / "sluice"
    return sorted(
        str(source.relative_to(package))
        for source in package.rglob("*.py")
        if source.stat().st_mtime > oldest_build
    )


class _FromSource(importlib.abc.MetaPathFinder):
    """Imports the hot modules from their `.py`, past any compiled extension."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in HOT_MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


_mode = "interpreted (no compiled build)"


def hot_path_mode() -> str:
    """How the hot modules run in this process, for logs and `--version`."""
    return _mode


def install_guard() -> None:
    """Decide, before any hot module is imported, whether the build is used."""
    global _mode
    if not any(built_path(module) is not None for module in HOT_MODULES):
        return  # nothing was compiled: plain imports find the sources
    if os.environ.get(INTERPRETED_ENV) == "1":
        reason = f"{INTERPRETED_ENV}=1"
    else:
        stale = stale_sources()
        if not stale:
            _mode = "compiled (mypyc)"
            return
        names = ", ".join(stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
        incomplete = any(name.endswith("(not built)") for name in stale)
        reason = f"the build is {'incomplete' if incomplete else 'older than'}: {names}"
        warnings.warn(
            f"sluice: {reason}; running the hot path from source (slower). "
            "Rebuild it with `make compile`.",
            RuntimeWarning,
            stacklevel=2,
        )
    _mode = f"interpreted ({reason})"
    if not any(isinstance(finder, _FromSource) for finder in sys.meta_path):
        sys.meta_path.insert(0, _FromSource())
