"""Packaging: the wheel builds without warnings, ships every module, installs and runs.

Slowish (about half a minute): the wheel's dependencies are installed into a
fresh virtual environment with pip as configured (the index, pip's cache).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import bcfg2

ROOT = Path(__file__).resolve().parents[2]
#: where each source folder lands in the wheel (pyproject's package-dir)
MAPPED = {"src/bcfg2": "bcfg2", "cores": "bcfg2/cores", "plugins": "bcfg2/plugins",
          "compat/Bcfg2": "Bcfg2"}
#: what never goes into the copy the wheel is built from
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", ".nox", ".run", "build", "dist",
                                    "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache")


def run(args: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600,
                          **kwargs)
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, built from a copy of the tree (the checkout stays as it is), and the log."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    # without PYTHONDONTWRITEBYTECODE, whose "byte-compiling is disabled" is no packaging fault
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", tmp / "dist",
                source], env=env)
    (built,) = (tmp / "dist").glob("bcfg2_server-*.whl")
    return built, done.stdout + done.stderr


def test_the_wheel_builds_without_warnings(wheel):
    _, log = wheel
    # the build backend's output (pip -v indents it); pip's own lines (WARNING: ...) are about
    # the machine's pip configuration
    warnings = [line for line in log.splitlines()
                if re.search(r"(?i)warn", line) and not line.startswith("WARNING:")]
    assert warnings == []


def test_the_wheel_ships_every_module_and_the_schemas(wheel):
    built, _ = wheel
    with zipfile.ZipFile(built) as whl:
        names = set(whl.namelist())
    expected = set()
    for folder, package in MAPPED.items():
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".rng") and "__pycache__" not in path.parts:
                expected.add(f"{package}/{path.relative_to(ROOT / folder).as_posix()}")
    assert "bcfg2/lint/rng/common.rng" in expected
    assert sorted(expected - names) == []
    assert built.name == f"bcfg2_server-{bcfg2.__version__}-py3-none-any.whl"


def test_the_wheel_installs_into_a_fresh_venv_and_runs(wheel, tmp_path):
    built, _ = wheel
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    bin_dir = venv / "bin"
    run([bin_dir / "python", "-m", "pip", "install", "--quiet", built])
    run([bin_dir / "python", "-m", "pip", "check"])
    for tool in ("bcfg2-server", "bcfg2-info", "bcfg2-admin", "bcfg2-lint", "bcfg2-test",
                 "bcfg2-crypt"):
        assert run([bin_dir / tool, "--version"]).stdout == f"{tool} {bcfg2.__version__}\n"
    # from the venv, not from this checkout: the schemas are there and the entry points work
    check = run([bin_dir / "python", "-c",
                 # pyinotify imports asyncore, gone from Python 3.12: pyasyncore gives it back
                 "import pyinotify, bcfg2, bcfg2.lint.schemas as s, importlib.metadata as md; "
                 "print(bcfg2.__file__); print(len([s.load(n) for n in s.schema_names()])); "
                 "print(','.join(sorted(e.name for e in md.entry_points(group='bcfg2.plugins'))))"
                 ], cwd=tmp_path)
    where, schemas, plugins = check.stdout.splitlines()
    assert Path(where).is_relative_to(venv)
    assert int(schemas) == len(list((ROOT / "src/bcfg2/lint/rng").glob("*.rng"))) - 1
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert plugins.split(",") == sorted(declared["bcfg2.plugins"])
    # --help lists the options of every plugin and core found through the entry points
    helptext = run([bin_dir / "bcfg2-server", "--help"], cwd=tmp_path).stdout
    assert "--probes-allowed-groups" in helptext and "BCFG2_<SECTION>_<OPTION>" in helptext
