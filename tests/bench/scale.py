"""Scale curves: how start-up, memory and the per-configuration build grow with size.

Three sweeps over repositories written by ``genrepo`` in the load benchmark's
shape (``genrepo.LOAD_SPEC``: each client gets a tenth of the bundles, about
280 entries, 200 Paths, 60 Packages and 20 Services, with group- and
host-specific versions and info.xml files):

- ``clients``: 1,000, 10,000 and 50,000 clients, about 280 entries per
  configuration (the repository itself stays at about 6,600 files);
- ``entries``: 100 to 5,000 entries per configuration at 1,000 clients (the
  repository grows along: every bundle, entry and Rules list scales by the
  same factor, so start-up and memory in this sweep follow the repository);
- ``files``: 20,000 to 200,000 repository files at 1,000 clients and about
  280 entries per configuration: the files added are entries no client
  gets (``RepoSpec.extra_entries``: bundles of groups no profile includes).

Every point runs in a fresh child process, so that its peak RSS is its own:
the child reports its ``VmHWM`` (the high-water mark of the memory it got
at exec), not ``ru_maxrss``, which Linux carries over from the parent
across the (v)fork and exec that start the child, so that after the
parent has generated a large repository every later point would report at
least the parent's peak. Per point:

- generation: the time ``genrepo`` took to write the repository (reported,
  not a target);
- start-up: constructing a ``LocalCore`` (the plugins loaded and every
  repository file read, as bcfg2-info and the server do before serving);
- RSS after start-up and peak RSS (which includes the builds);
- cold build: a sample of clients (``--sample``, 200 by default, spread
  over all clients), each asked for its configuration once, the way an
  agent's GetConfig reaches the core; median and mean ms;
- cached build: the same clients asked a second time, which the
  configuration cache serves without a build (what is timed is GetConfig
  itself; the text is unpacked after the clock stops, as the server sends
  it packed to agents that accept gzip).

Every configuration built is checked against what ``genrepo`` says the
client gets (the entry count), so that a point never measures a broken
build. For each sweep and each quantity a least-squares fit of log(y)
against log(x) gives the growth exponent (1 is linear), stated in words;
the clients sweep also gives the RSS per 1,000 clients (the slope of a
straight-line fit). The machine is usually shared, so figures are
indicative: the fitted exponents matter more than single times.

Output: a text report on stdout; with ``--json FILE`` the figures as JSON
and one PNG per sweep beside it (log-log axes), if matplotlib is installed
(``pip install .[plot]``).

Usage: python tests/bench/scale.py [--quick] [--sweeps clients,entries,files]
       [--sample N] [--json FILE] [--keep DIR] [--filemonitor NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from genrepo import LOAD_SPEC, RepoSpec, generate  # noqa: E402

PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults"

#: entries per configuration of LOAD_SPEC (a tenth of its Paths, Packages and Services)
NOMINAL_ENTRIES = (LOAD_SPEC.entries + LOAD_SPEC.packages + LOAD_SPEC.services) // 10

SWEEPS = ("clients", "entries", "files")

#: what each sweep varies, for the report and the plots
X_LABELS = {"clients": "clients", "entries": "entries per configuration",
            "files": "repository files"}

#: the quantities fitted, by key, with their labels and the key of their CPU-time twin
QUANTITIES = {"startup_s": ("start-up", "startup_cpu_s"), "peak_rss_mb": ("peak RSS", None),
              "cold_ms": ("cold build", "cold_cpu_ms"),
              "cached_ms": ("cached build", "cached_cpu_ms")}


@dataclass(frozen=True)
class Sizes:
    """The points of each sweep and the sizes the other sweeps hold fixed."""

    clients: tuple[int, ...]
    entries: tuple[int, ...]
    files: tuple[int, ...]
    #: clients in the entries and files sweeps
    fixed_clients: int
    #: entries per configuration in the clients and files sweeps
    fixed_entries: int


FULL = Sizes(clients=(1000, 10000, 50000), entries=(100, 500, 1000, 2000, 5000),
             files=(20000, 50000, 100000, 200000), fixed_clients=1000,
             fixed_entries=NOMINAL_ENTRIES)

#: a fast check: smaller configurations, so that the files sweep can start below 5,000
QUICK = Sizes(clients=(200, 1000, 2000), entries=(100, 300, 1000), files=(3000, 6000, 12000),
              fixed_clients=200, fixed_entries=100)


def spec_for(clients: int, per_config: int, files: int = 0) -> RepoSpec:
    """LOAD_SPEC with ``clients`` clients and about ``per_config`` entries per
    configuration (every count scaled alike), grown to at least ``files`` files
    with entries no client gets."""
    spec = dataclasses.replace(LOAD_SPEC, clients=clients)
    if per_config != NOMINAL_ENTRIES:
        factor = per_config / NOMINAL_ENTRIES
        spec = dataclasses.replace(spec, entries=max(1, round(LOAD_SPEC.entries * factor)),
                                   packages=round(LOAD_SPEC.packages * factor),
                                   services=round(LOAD_SPEC.services * factor))
    missing = files - spec.expected_files
    if files and missing < 0:
        raise ValueError(f"{files} files is fewer than the {spec.expected_files} of a "
                         f"repository with {per_config} entries per configuration")
    if missing > 0:
        extra = max(1, math.ceil((missing - spec.bundles) / spec.files_per_entry))
        while dataclasses.replace(spec, extra_entries=extra).expected_files < files:
            extra += 1
        spec = dataclasses.replace(spec, extra_entries=extra)
    return spec


def sweep_points(sweep: str, sizes: Sizes) -> list[tuple[int, RepoSpec]]:
    """The (size, spec) of every point of a sweep."""
    if sweep == "clients":
        return [(n, spec_for(n, sizes.fixed_entries)) for n in sizes.clients]
    if sweep == "entries":
        return [(n, spec_for(sizes.fixed_clients, n)) for n in sizes.entries]
    if sweep == "files":
        return [(n, spec_for(sizes.fixed_clients, sizes.fixed_entries, files=n))
                for n in sizes.files]
    raise ValueError(f"unknown sweep {sweep!r} (choose from {', '.join(SWEEPS)})")


# -- the child: one point, measured in its own process ---------------------------------


def request_config(core: Any, client: str) -> Any:
    """The client's configuration, asked for as an agent's GetConfig reaches the core: a
    string, or the cache's compressed form (``configcache.Packed``) that is sent as it is
    to an agent that accepts gzip (``str()`` gives the text)."""
    from bcfg2.identity import Caller

    return core.GetConfig(Caller(("127.0.0.1", 0), client=client))


def _status_kb(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in KB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (the benchmark needs Linux)")


def _entries_in(config: str) -> int:
    """How many entries a configuration document holds (every child of every Bundle);
    RuntimeError if it is no configuration or an entry of it failed to bind."""
    import lxml.etree

    doc = lxml.etree.fromstring(config.encode())
    if doc.tag != "Configuration":
        raise RuntimeError(f"the server answered {config[:200]!r} instead of a configuration")
    failed = doc.xpath("//*[@failure]")
    if failed:
        raise RuntimeError(f"{len(failed)} entries failed to bind, the first "
                           f"{failed[0].tag}:{failed[0].get('name')}: {failed[0].get('failure')}")
    return sum(len(bundle) for bundle in doc.iterfind("Bundle"))


def _timed(func: Callable[[Any, str], Any], core: Any, clients: Sequence[str]
           ) -> dict[str, list[Any]]:
    """Call ``func`` for each client: wall and CPU seconds, entries and bytes of each answer."""
    out: dict[str, list[Any]] = {"wall": [], "cpu": [], "entries": [], "bytes": []}
    for client in clients:
        start, cpu = time.perf_counter(), time.process_time()
        answer = func(core, client)
        out["wall"].append(time.perf_counter() - start)
        out["cpu"].append(time.process_time() - cpu)
        config = str(answer)
        out["entries"].append(_entries_in(config))
        out["bytes"].append(len(config))
    return out


def measure_point(repository: str, state_dir: str, clients: Sequence[str],
                  filemonitor: str = "default") -> dict[str, Any]:
    """Start a core over ``repository`` and build each client's configuration twice.

    Meant to run alone in its process (``ru_maxrss`` is the process's peak).
    """
    from bcfg2 import options
    from bcfg2.core import LocalCore

    setup = options.build("/dev/null", {
        "server.repository": repository, "server.plugins": PLUGINS,
        "server.state_dir": state_dir, "server.filemonitor": filemonitor,
        "logging.syslog": "false"})
    start, cpu = time.perf_counter(), time.process_time()
    core = LocalCore(setup)
    startup, startup_cpu = time.perf_counter() - start, time.process_time() - cpu
    rss_startup = _status_kb("VmRSS")
    try:
        cold = _timed(request_config, core, clients)
        cached = _timed(request_config, core, clients)  # nothing changed since
    finally:
        core.shutdown()
    if cached["entries"] != cold["entries"]:
        raise RuntimeError("the second request of a configuration gave other entries")
    return {"startup_s": startup, "startup_cpu_s": startup_cpu, "rss_startup_kb": rss_startup,
            "peak_rss_kb": _status_kb("VmHWM"),
            "cold": cold, "cached": cached}


def _child_main() -> int:
    """``--point``: read the point from stdin as JSON, measure it, print JSON."""
    job = json.load(sys.stdin)
    print(json.dumps(measure_point(job["repository"], job["state_dir"], job["clients"],
                                   job["filemonitor"])))
    return 0


def run_child(repository: str, state_dir: str, clients: Sequence[str],
              filemonitor: str = "default") -> dict[str, Any]:
    """``measure_point`` in a fresh Python process."""
    job = json.dumps({"repository": repository, "state_dir": state_dir,
                      "clients": list(clients), "filemonitor": filemonitor})
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--point"],
                          input=job, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the measuring process failed (status {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


# -- the parent: points, sweeps, fits, report ------------------------------------------


def sample(names: Sequence[str], count: int) -> list[str]:
    """``count`` names spread evenly over ``names`` (all of them if fewer)."""
    if count >= len(names):
        return list(names)
    return [names[i * len(names) // count] for i in range(count)]


def _ms(seconds: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(seconds) * 1000, 3),
            "mean": round(statistics.fmean(seconds) * 1000, 3)}


def run_point(sweep: str, size: int, spec: RepoSpec, workdir: str, samples: int,
              filemonitor: str = "default", keep: bool = False) -> dict[str, Any]:
    """Generate one point's repository, measure it in a child, check the builds."""
    root = os.path.join(workdir, f"{sweep}-{size}")
    start = time.perf_counter()
    repo = generate(os.path.join(root, "repo"), spec)
    generated = time.perf_counter() - start
    chosen = sample(repo.clients, samples)
    try:
        got = run_child(repo.root, os.path.join(root, "state"), [c.name for c in chosen],
                        filemonitor)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    for client, count in zip(chosen, got["cold"]["entries"], strict=True):
        expected = sum(repo.expected_entries(client).values())
        if count != expected:
            raise RuntimeError(f"{sweep} sweep, size {size}: {client.name}'s configuration "
                               f"holds {count} entries, the repository gives it {expected}")
    per_config = statistics.fmean(got["cold"]["entries"])
    x = {"clients": spec.clients, "entries": per_config, "files": repo.files}[sweep]
    return {"size": size, "x": x, "clients": spec.clients, "files": repo.files,
            "entries_per_config": round(per_config, 1),
            "config_kb": round(statistics.fmean(got["cold"]["bytes"]) / 1024, 1),
            "sampled": len(chosen), "generate_s": round(generated, 3),
            "startup_s": round(got["startup_s"], 3),
            "startup_cpu_s": round(got["startup_cpu_s"], 3),
            "rss_startup_mb": round(got["rss_startup_kb"] / 1024, 1),
            "peak_rss_mb": round(got["peak_rss_kb"] / 1024, 1),
            "cold_ms": _ms(got["cold"]["wall"]), "cold_cpu_ms": _ms(got["cold"]["cpu"]),
            "cached_ms": _ms(got["cached"]["wall"]), "cached_cpu_ms": _ms(got["cached"]["cpu"])}


def fit_exponent(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """The slope of a least-squares line through (log x, log y): the growth exponent.

    None if fewer than two points with positive values and distinct x remain.
    """
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len({px for px, _ in pairs}) < 2:
        return None
    return statistics.linear_regression([p[0] for p in pairs], [p[1] for p in pairs]).slope


def growth_words(exponent: float) -> str:
    """How a quantity grows, in words, for a fitted exponent."""
    if exponent < 0.15:
        return "stays about flat"
    if exponent < 0.9:
        return "grows sublinearly"
    if exponent <= 1.1:
        return "grows linearly"
    return "grows faster than linearly"


def _value(point: dict[str, Any], quantity: str) -> float:
    value = point[quantity]
    return value["median"] if isinstance(value, dict) else value


def fits(sweep: str, points: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The fitted exponent of every quantity of a sweep (and of its CPU time), with its
    sentence."""
    out: dict[str, dict[str, Any]] = {}
    xs = [p["x"] for p in points]
    for quantity, (label, twin) in QUANTITIES.items():
        exponent = fit_exponent(xs, [_value(p, quantity) for p in points])
        if exponent is None:
            continue
        exponent = round(exponent, 3)  # the words say what the numbers say
        fit: dict[str, Any] = {"exponent": exponent}
        median = " (median)" if quantity.endswith("_ms") else ""
        words = f"{label}{median} {growth_words(exponent)} with {X_LABELS[sweep]} " \
                f"(exponent {exponent:.2f}"
        cpu = fit_exponent(xs, [_value(p, twin) for p in points]) if twin else None
        if cpu is not None:
            cpu = fit["cpu_exponent"] = round(cpu, 3)
            words += f"; CPU time {cpu:.2f}"
        fit["words"] = words + ")"
        out[quantity] = fit
    return out


def rss_per_1000_clients(points: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """MB of RSS each 1,000 clients add: straight-line fits over the clients sweep."""
    if len({p["clients"] for p in points}) < 2:
        return None
    clients = [p["clients"] / 1000 for p in points]
    return {key: round(statistics.linear_regression(
                clients, [p[key] for p in points]).slope, 2)
            for key in ("rss_startup_mb", "peak_rss_mb")}


def run_sweeps(sweeps: Sequence[str], sizes: Sizes, workdir: str, samples: int = 200,
               filemonitor: str = "default", keep: bool = False,
               progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every point of every sweep asked for, with the fits: the whole report."""
    report: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                              "filemonitor": filemonitor, "sizes": dataclasses.asdict(sizes),
                              "sweeps": {}}
    for sweep in sweeps:
        points = []
        for size, spec in sweep_points(sweep, sizes):
            progress(f"{sweep} sweep: {size} ({spec.expected_files} files, "
                     f"{spec.clients} clients)")
            points.append(run_point(sweep, size, spec, workdir, samples, filemonitor, keep))
        entry: dict[str, Any] = {"points": points, "fits": fits(sweep, points)}
        if sweep == "clients":
            entry["rss_per_1000_clients_mb"] = rss_per_1000_clients(points)
        report["sweeps"][sweep] = entry
    return report


def text(report: dict[str, Any]) -> str:
    """The report as text: a table per sweep, then the fitted growth in words."""
    lines = [f"Scale curves ({report['cpus']} CPUs, Python {report['python']}, "
             f"file monitor {report['filemonitor']}; a shared machine: figures are indicative)"]
    head = (f"{'size':>7}{'clients':>8}{'entries':>8}{'files':>7}{'gen s':>7}"
            f"{'start s/CPU':>13}{'RSS0 MB':>8}{'peak MB':>8}"
            f"{'cold ms med/mean/CPU':>23}{'cached ms med/mean/CPU':>25}")

    def build(p: dict[str, Any], key: str) -> str:
        return (f"{p[key + '_ms']['median']:.2f}/{p[key + '_ms']['mean']:.2f}/"
                f"{p[key + '_cpu_ms']['median']:.2f}")

    for sweep, entry in report["sweeps"].items():
        lines += ["", f"{X_LABELS[sweep]} sweep", head]
        for p in entry["points"]:
            start = f"{p['startup_s']:.2f}/{p['startup_cpu_s']:.2f}"
            lines.append(f"{p['size']:>7}{p['clients']:>8}{p['entries_per_config']:>8.0f}"
                         f"{p['files']:>7}{p['generate_s']:>7.1f}{start:>13}"
                         f"{p['rss_startup_mb']:>8.0f}{p['peak_rss_mb']:>8.0f}"
                         f"{build(p, 'cold'):>23}{build(p, 'cached'):>25}")
        for fit in entry["fits"].values():
            lines.append(f"  {fit['words']}")
        per = entry.get("rss_per_1000_clients_mb")
        if per:
            lines.append(f"  RSS per 1,000 clients: {per['rss_startup_mb']:.1f} MB after "
                         f"start-up, {per['peak_rss_mb']:.1f} MB at peak")
    lines.append("")
    lines.append("entries: mean per configuration built; RSS0: after start-up; cold and cached: "
                 "first and second request per sampled client (wall median and mean, CPU "
                 "median); the fits use the medians")
    return "\n".join(lines)


def plot(report: dict[str, Any], json_path: str) -> list[str] | None:
    """One PNG per sweep beside ``json_path`` (log-log); None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    stem = os.path.splitext(json_path)[0]
    written = []
    for sweep, entry in report["sweeps"].items():
        points = entry["points"]
        xs = [p["x"] for p in points]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
        panels = [
            ("build per configuration (ms, median)",
             [("cold", [p["cold_ms"]["median"] for p in points], "cold_ms", "-"),
              ("cached", [p["cached_ms"]["median"] for p in points], "cached_ms", "-"),
              ("cold, CPU", [p["cold_cpu_ms"]["median"] for p in points], None, "--"),
              ("cached, CPU", [p["cached_cpu_ms"]["median"] for p in points], None, "--")]),
            ("start-up (s)",
             [("wall", [p["startup_s"] for p in points], "startup_s", "-"),
              ("CPU", [p["startup_cpu_s"] for p in points], None, "--")]),
            ("RSS (MB)", [("peak", [p["peak_rss_mb"] for p in points], "peak_rss_mb", "-"),
                          ("after start-up", [p["rss_startup_mb"] for p in points], None,
                           "--")]),
        ]
        plain = FuncFormatter(lambda value, _pos: f"{value:g}")
        for ax, (title, series) in zip(axes, panels, strict=True):
            for label, ys, quantity, style in series:
                fit = entry["fits"].get(quantity) if quantity else None
                suffix = f" (exponent {fit['exponent']:.2f})" if fit else ""
                ax.plot(xs, ys, style, marker="o", label=label + suffix)
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis, low, high in ((ax.xaxis, *ax.get_xlim()), (ax.yaxis, *ax.get_ylim())):
                # within a decade, more labelled ticks, so that the axis shows numbers at all
                subs = (1.0, 2.0, 5.0) if high > 10 * low else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
                axis.set_major_locator(LogLocator(subs=subs))
                axis.set_major_formatter(plain)
                axis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(X_LABELS[sweep])
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fixed = points[0]
        note = {"clients": f"about {fixed['entries_per_config']:.0f} entries per configuration",
                "entries": f"{fixed['clients']} clients",
                "files": f"{fixed['clients']} clients, about "
                         f"{fixed['entries_per_config']:.0f} entries per configuration"}[sweep]
        fig.suptitle(f"Scale: {X_LABELS[sweep]} ({note})")
        fig.tight_layout()
        path = f"{stem}-{sweep}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--point", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a fast check (clients 200-2,000, entries "
                             "100-1,000, files 3,000-12,000)")
    parser.add_argument("--sweeps", default=",".join(SWEEPS),
                        help="which sweeps, comma-separated (default: all of "
                             f"{','.join(SWEEPS)})")
    parser.add_argument("--sample", type=int, default=200, metavar="N",
                        help="clients whose configurations are built per point (default 200)")
    parser.add_argument("--json", metavar="FILE",
                        help="write the figures to FILE, and the plots beside it")
    parser.add_argument("--keep", metavar="DIR",
                        help="generate into DIR and keep the repositories (default: a "
                             "temporary directory, each point removed once measured)")
    parser.add_argument("--filemonitor", default="default",
                        choices=("default", "inotify", "pseudo"),
                        help="the core's file monitor (default: the server's default)")
    args = parser.parse_args(argv)
    if args.point:
        return _child_main()
    sweeps = [s.strip() for s in args.sweeps.split(",") if s.strip()]
    unknown = [s for s in sweeps if s not in SWEEPS]
    if unknown or not sweeps:
        parser.error(f"--sweeps takes some of {','.join(SWEEPS)}")
    if args.sample < 1:
        parser.error("--sample must be at least 1")
    sizes = QUICK if args.quick else FULL

    def progress(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        report = run_sweeps(sweeps, sizes, args.keep, args.sample, args.filemonitor, True,
                            progress)
    else:
        with tempfile.TemporaryDirectory(prefix="bcfg2-bench-scale-") as workdir:
            report = run_sweeps(sweeps, sizes, workdir, args.sample, args.filemonitor, False,
                                progress)
    print(text(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
        plots = plot(report, args.json)
        print(f"figures: {args.json}")
        print("plots: " + ", ".join(plots) if plots is not None
              else "plots: not drawn; they need matplotlib (pip install .[plot])")
    else:
        print("plots: none without --json FILE (they are written beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
