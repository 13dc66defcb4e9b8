"""Compile Sluice's per-statement modules with mypyc, in place (`make compile`).

The extensions land beside their sources under src/, where the editable
install imports them; `sluice._compiled` lists the modules and falls back
to the sources when the build is older than any of them. Needs a C compiler
and Python's headers (scripts/install-system-deps.sh installs both).

    .venv/bin/python scripts/compile_hot_path.py
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _compiled_module() -> dict[str, Any]:
    """sluice._compiled's names, run by path: importing `sluice` would run its guard."""
    return runpy.run_path(str(ROOT / "src" / "sluice" / "_compiled.py"))


def _drop_strays(modules: set[str]) -> None:
    """Remove builds of modules no longer in the list: beside their `.py`,
    they would still be imported instead of it."""
    package = ROOT / "src"
    for built in package.glob("sluice/**/*.cpython-*.so"):
        source = built.with_name(built.name.split(".", 1)[0] + ".py")
        module = ".".join(source.relative_to(package).with_suffix("").parts)
        if source.exists() and module not in modules:
            print(f"compile_hot_path: removing {built.relative_to(ROOT)} (no longer compiled)")
            built.unlink()


def main() -> int:
    from mypyc.build import mypycify
    from setuptools import Distribution

    compiled = _compiled_module()
    modules, group = compiled["HOT_MODULES"], compiled["GROUP"]
    os.chdir(ROOT)
    _drop_strays(set(modules))
    paths = [str(Path("src", *m.split(".")).with_suffix(".py")) for m in modules]
    extensions = mypycify(paths, opt_level="3", group_name=group)
    # A bare Distribution: setup() would also read pyproject.toml, which is pip's.
    dist = Distribution(
        {"name": "sluice-hot-path", "package_dir": {"": "src"}, "ext_modules": extensions}
    )
    build = dist.get_command_obj("build_ext")
    build.inplace = True
    build.build_temp = str(Path("build", "mypyc"))
    dist.run_command("build_ext")
    # An extension whose generated C did not change is copied with its old
    # time; it is as new as the sources now.
    for module in (*modules, group + "__mypyc"):
        built = compiled["built_path"](module)
        if built is not None:
            built.touch()
    stale = compiled["stale_sources"]()
    if stale:
        print(f"compile_hot_path: the build is not usable: {', '.join(stale)}", file=sys.stderr)
        return 1
    print(f"compiled {len(paths)} hot-path modules with mypyc")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
