"""The compiled hot path is used whole, and only while it is as new as the sources."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sluice
from sluice._compiled import HOT_MODULES, INTERPRETED_ENV, built_path, hot_path_mode

SRC = Path(sluice.__file__).resolve().parent.parent

PROBE = (
    "import sluice._compiled as c, sluice.proxy.pg_session as s, sluice.recording.writer as w;"
    "print(c.hot_path_mode()); print(s.__file__); print(w.__file__)"
)

needs_build = pytest.mark.skipif(
    built_path(HOT_MODULES[0]) is None, reason="no compiled build (make compile)"
)


def _probe(path: Path, **env: str) -> tuple[list[str], str]:
    environ = {k: v for k, v in os.environ.items() if k != INTERPRETED_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={**environ, "PYTHONPATH": str(path), **env},
        cwd=path,
    )
    return proc.stdout.splitlines(), proc.stderr


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """The package as built, with its files' times, outside the checkout."""
    shutil.copytree(SRC / "sluice", tmp_path / "sluice", ignore=shutil.ignore_patterns("*.pyc"))
    return tmp_path


@needs_build
def test_a_fresh_build_is_imported(package_copy: Path) -> None:
    (mode, session, writer), stderr = _probe(package_copy)
    assert mode == "compiled (mypyc)"
    assert session.endswith(".so")
    assert writer.endswith(".so")
    assert "RuntimeWarning" not in stderr


@needs_build
def test_an_edited_source_sends_every_hot_module_to_its_source(package_copy: Path) -> None:
    edited = package_copy / "sluice" / "masking" / "detectors.py"  # not itself compiled
    later = time.time() + 5
    os.utime(edited, (later, later))
    (mode, session, writer), stderr = _probe(package_copy)
    assert mode.startswith("interpreted (the build is older than: masking/detectors.py")
    assert session.endswith("pg_session.py")
    assert writer.endswith("writer.py")
    assert "make compile" in stderr


@needs_build
def test_a_missing_part_of_the_build_is_not_used(package_copy: Path) -> None:
    part = built_path("sluice.recording.writer")
    assert part is not None
    (package_copy / part.relative_to(SRC)).unlink()
    (mode, session, writer), _ = _probe(package_copy)
    assert mode.startswith("interpreted (the build is incomplete: ")
    assert "writer (not built)" in mode
    assert session.endswith("pg_session.py")
    assert writer.endswith("writer.py")


def test_the_sources_can_be_asked_for(package_copy: Path) -> None:
    (mode, session, writer), stderr = _probe(package_copy, **{INTERPRETED_ENV: "1"})
    assert session.endswith("pg_session.py")
    assert writer.endswith("writer.py")
    if built_path(HOT_MODULES[0]) is not None:
        assert mode == f"interpreted ({INTERPRETED_ENV}=1)"
    assert "RuntimeWarning" not in stderr


@pytest.mark.parametrize(
    ("target", "literals", "prepared"),
    [
        ("governed", "numbers", False),
        ("governed", "strings", False),
        ("governed", "same", True),
        ("colmask", "numbers", False),
        ("norecord", "same", False),
    ],
)
def test_a_round_trip_runs_no_interpreted_function_of_the_package(
    target: str, literals: str, prepared: bool
) -> None:
    """A call from compiled code into a Python function costs the live gateway
    about a microsecond per statement: everything a round trip reaches is compiled."""
    if hot_path_mode() != "compiled (mypyc)":
        pytest.skip(f"the hot path runs {hot_path_mode()}")
    from bench.hotpath import _run

    interpreted: set[str] = set()
    asyncio.run(
        _run(target, 300, False, literals=literals, prepared=prepared, interpreted=interpreted)
    )
    assert interpreted == set()
