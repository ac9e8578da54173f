"""Benchmark of the agent: verifying and installing many files into a throwaway root.

It writes a configuration of ``--files N`` (default 2,000) Path entries of
type file, spread over 50 directories, then runs the installed ``bcfg2``
script three times with ``-f`` (no server: what is measured is the agent's
own work) under a fresh ``--root``:

- a dry run when nothing exists (every entry verified and diffed);
- the real run (every file written: temporary file, fsync, rename);
- a dry run when everything is in place (every file read and compared).

It reports the wall time of each and files per second. Every run must
succeed and the last must find nothing to change.

Usage: python tests/bench/agent.py [--files N] [--json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape

BIN = Path(sys.executable).parent


def configuration(files: int) -> str:
    """A configuration of ``files`` small text files in 50 directories."""
    entries = "".join(
        f'<Path name="/etc/bench/d{i % 50}/f{i}.conf" type="file" owner="root" group="root" '
        f'mode="0644">{escape(f"# file {i}" + chr(10) + f"value = {i}" + chr(10))}</Path>'
        for i in range(files))
    return f'<Configuration revision="1" version="2.0"><Bundle name="bench">{entries}</Bundle>' \
           "</Configuration>"


def timed(argv: list[str]) -> tuple[float, str]:
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
    return elapsed, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = parser.parse_args(argv)
    work = Path(args.keep or tempfile.mkdtemp(prefix="bcfg2-agent-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        config = work / "config.xml"
        config.write_text(configuration(args.files))
        root = work / "root"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        agent = [str(BIN / "bcfg2"), "-C", "/dev/null", "-O", "-f", str(config), "--root",
                 str(root)]
        results = {}
        for name, extra in (("dry run, nothing there", ["-n"]), ("install", []),
                            ("dry run, all in place", ["-n"])):
            seconds, out = timed(agent + extra)
            results[name] = {"seconds": round(seconds, 2),
                             "files_per_second": round(args.files / seconds, 1)}
        if f"Dry run: 0 of {args.files} entries" not in out:
            raise SystemExit(f"the last run found something to change: {out[-300:]}")
        if args.json:
            print(json.dumps({"files": args.files, "runs": results}, indent=2))
        else:
            print(f"agent, {args.files} files")
            for name, figures in results.items():
                print(f"  {name:<24} {figures['seconds']:>7.2f} s "
                      f"{figures['files_per_second']:>9.1f} files/s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
