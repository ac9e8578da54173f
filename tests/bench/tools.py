"""Benchmark of the local tools: ``bcfg2-info buildall`` and ``bcfg2-test -j 1 / -j 2``.

It generates a repository of the load benchmark's shape (``genrepo.LOAD_SPEC``:
1,000 clients whose configurations hold about 280 entries; ``--clients N``
changes the number of clients), then runs each command as an admin would,
as a subprocess of a small measuring process, and reports for each:

- the wall time of the whole command (core start-up included);
- the peak RSS of the largest process of the command (for ``-j 2``: the
  parent or one worker, whichever is larger; not their sum), read with
  ``resource.getrusage(RUSAGE_CHILDREN)`` in a process that ran only that
  command, so that the figures of one command do not leak into the next;
- clients per second.

Every command must succeed (exit status 0) on the generated repository.

Usage: python tests/bench/tools.py [--clients N] [--json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from genrepo import LOAD_SPEC, generate  # noqa: E402

BIN = Path(sys.executable).parent
PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults"


def tool(name: str) -> str:
    """The console script next to this Python (the project's venv), else on PATH."""
    candidate = BIN / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def measure(argv: list[str]) -> dict[str, Any]:
    """Run one command in a fresh measuring process: wall time, peak RSS, status."""
    probe = ("import json, resource, subprocess, sys, time\n"
             "start = time.perf_counter()\n"
             "proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL,\n"
             "                      stderr=subprocess.PIPE, text=True)\n"
             "wall = time.perf_counter() - start\n"
             "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
             "print(json.dumps({'wall': wall, 'rss_kb': rss, 'status': proc.returncode,\n"
             "                  'stderr': proc.stderr[-2000:]}))\n")
    result = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout)


def run_benchmark(clients: int, workdir: str) -> dict[str, Any]:
    """Generate the repository under ``workdir`` and measure the three commands."""
    spec = dataclasses.replace(LOAD_SPEC, clients=clients)
    started = time.perf_counter()
    repo = generate(os.path.join(workdir, "repo"), spec)
    generated = time.perf_counter() - started
    common = ["-C", "/dev/null", "-Q", repo.root, "--plugins", PLUGINS,
              "--state-dir", os.path.join(workdir, "state")]
    commands = {
        "bcfg2-info buildall": [tool("bcfg2-info"), *common, "buildall",
                                os.path.join(workdir, "configs")],
        "bcfg2-test -j 1": [tool("bcfg2-test"), *common, "-j", "1", "--quiet"],
        "bcfg2-test -j 2": [tool("bcfg2-test"), *common, "-j", "2", "--quiet"],
    }
    results = []
    for name, argv in commands.items():
        got = measure(argv)
        if got["status"] != 0:
            raise SystemExit(f"{name} failed with status {got['status']}:\n{got['stderr']}")
        results.append({"command": name, "wall_s": round(got["wall"], 3),
                        "peak_rss_mb": round(got["rss_kb"] / 1024, 1),
                        "clients_per_s": round(clients / got["wall"], 1)})
    written = len(os.listdir(os.path.join(workdir, "configs")))
    if written != clients:
        raise SystemExit(f"bcfg2-info buildall wrote {written} files for {clients} clients")
    return {"clients": clients, "files": repo.files, "cpus": os.cpu_count(),
            "generate_s": round(generated, 3), "python": sys.version.split()[0],
            "results": results}


def table(report: dict[str, Any]) -> str:
    """The results as a small text table."""
    lines = [f"{report['clients']} clients, {report['files']} files, {report['cpus']} CPUs",
             f"{'command':<22}{'wall s':>9}{'peak RSS MB':>13}{'clients/s':>11}"]
    for row in report["results"]:
        lines.append(f"{row['command']:<22}{row['wall_s']:>9.2f}{row['peak_rss_mb']:>13.1f}"
                     f"{row['clients_per_s']:>11.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=LOAD_SPEC.clients, metavar="N",
                        help=f"clients in the generated repository (default {LOAD_SPEC.clients})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", metavar="DIR",
                        help="generate into DIR and keep it (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        report = run_benchmark(args.clients, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bcfg2-bench-tools-") as workdir:
            report = run_benchmark(args.clients, workdir)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
