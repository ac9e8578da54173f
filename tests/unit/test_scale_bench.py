"""The scale benchmark (tests/bench/scale.py) at tiny sizes: its report, fits and plots."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lxml.etree
import pytest
import scale  # tests/bench, on the path conftest sets
from conftest import GEN_PLUGINS, genrepo

#: a few seconds in all: two points per sweep, configurations of about 10 entries
TINY = scale.Sizes(clients=(4, 12), entries=(10, 20), files=(500, 800), fixed_clients=4,
                   fixed_entries=10)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("scale")
    return scale.run_sweeps(scale.SWEEPS, TINY, str(workdir), samples=3, filemonitor="pseudo")


@pytest.mark.parametrize("exponent", [0.5, 1.0, 1.5, 2.0])
def test_fit_recovers_a_known_exponent(exponent: float) -> None:
    xs = [10, 100, 1000, 5000]
    assert scale.fit_exponent(xs, [3.0 * x ** exponent for x in xs]) == pytest.approx(exponent)


def test_fit_is_least_squares_over_noisy_points() -> None:
    # y = x^1 with the middle point off by a factor e in both directions: the slope stays 1
    xs = [1.0, 10.0, 10.0, 100.0]
    ys = [1.0, 10.0 * 2.718281828, 10.0 / 2.718281828, 100.0]
    assert scale.fit_exponent(xs, ys) == pytest.approx(1.0)


def test_fit_needs_two_distinct_sizes() -> None:
    assert scale.fit_exponent([100, 100], [1.0, 2.0]) is None
    assert scale.fit_exponent([100, 200], [0.0, 2.0]) is None  # log(0) left out


def test_growth_in_words() -> None:
    assert scale.growth_words(1.03) == "grows linearly"
    assert scale.growth_words(0.5) == "grows sublinearly"
    assert scale.growth_words(1.8) == "grows faster than linearly"
    assert scale.growth_words(0.02) == "stays about flat"


def test_files_sweep_adds_only_entries_no_client_gets() -> None:
    base = scale.spec_for(1000, scale.NOMINAL_ENTRIES)
    assert base == genrepo.dataclasses.replace(genrepo.LOAD_SPEC, clients=1000)
    grown = scale.spec_for(1000, scale.NOMINAL_ENTRIES, files=20000)
    assert grown.expected_files >= 20000
    assert grown.expected_files - 20000 < grown.files_per_entry
    assert dataclasses_equal_but_extra(base, grown)
    with pytest.raises(ValueError, match="fewer than"):
        scale.spec_for(1000, scale.NOMINAL_ENTRIES, files=100)


def dataclasses_equal_but_extra(a: genrepo.RepoSpec, b: genrepo.RepoSpec) -> bool:
    return genrepo.dataclasses.replace(b, extra_entries=a.extra_entries) == a


def test_extra_entries_leave_the_configurations_as_they_were(
        tmp_path: Path, local_core: Callable[..., Any]) -> None:
    spec = genrepo.RepoSpec(clients=6, profiles=2, groups=3, groups_per_profile=1, bundles=3,
                            entries=9, files_per_entry=3)
    plain = genrepo.generate(str(tmp_path / "plain"), spec)
    grown_spec = genrepo.dataclasses.replace(spec, extra_entries=20)
    grown = genrepo.generate(str(tmp_path / "grown"), grown_spec)
    assert grown.files == grown_spec.expected_files == plain.files + 20 * 3 + 3
    core = local_core(grown.root, server__plugins=GEN_PLUGINS)
    for client in grown.clients:
        config = lxml.etree.fromstring(str(scale.request_config(core, client.name)))
        paths = {el.get("name") for el in config.iter("Path")}
        assert paths == {plain.entry_name(e) for e in plain.entries_of(client)}


def test_report_structure(report: dict[str, Any]) -> None:
    assert set(report["sweeps"]) == set(scale.SWEEPS)
    for sweep, entry in report["sweeps"].items():
        points = entry["points"]
        assert [p["size"] for p in points] == list(getattr(TINY, sweep))
        for p in points:
            assert p["startup_s"] > 0 and p["peak_rss_mb"] >= p["rss_startup_mb"] > 0
            for key in ("cold_ms", "cached_ms", "cold_cpu_ms", "cached_cpu_ms"):
                assert p[key]["median"] > 0 and p[key]["mean"] > 0
            assert p["sampled"] == min(3, p["clients"])
        assert set(entry["fits"]) == set(scale.QUANTITIES)
        # each fit is of its quantity against the sweep's own x, and its words say so
        x = {"clients": "clients", "entries": "entries_per_config", "files": "files"}[sweep]
        assert [p["x"] for p in points] == pytest.approx([p[x] for p in points], abs=0.05)
        for quantity, fit in entry["fits"].items():
            ys = [p[quantity]["median"] if isinstance(p[quantity], dict) else p[quantity]
                  for p in points]
            assert fit["exponent"] == pytest.approx(
                scale.fit_exponent([p["x"] for p in points], ys), abs=1e-3)
            assert scale.growth_words(fit["exponent"]) in fit["words"]
            assert scale.X_LABELS[sweep] in fit["words"]
    clients = report["sweeps"]["clients"]["points"]
    assert [p["clients"] for p in clients] == [4, 12]
    entries = report["sweeps"]["entries"]["points"]
    assert entries[1]["entries_per_config"] > entries[0]["entries_per_config"]
    files = report["sweeps"]["files"]["points"]
    assert [p["files"] >= p["size"] for p in files] == [True, True]
    assert files[0]["entries_per_config"] == files[1]["entries_per_config"]
    assert set(report["sweeps"]["clients"]["rss_per_1000_clients_mb"]) == {
        "rss_startup_mb", "peak_rss_mb"}
    json.dumps(report)  # --json writes it as it is


def test_text_report_states_the_growth(report: dict[str, Any]) -> None:
    out = scale.text(report)
    for sweep, entry in report["sweeps"].items():
        assert f"{scale.X_LABELS[sweep]} sweep" in out
        for fit in entry["fits"].values():
            assert fit["words"] in out
    assert "RSS per 1,000 clients" in out


def test_plots_beside_the_json(report: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    paths = scale.plot(report, str(tmp_path / "scale.json"))
    assert paths == [str(tmp_path / f"scale-{s}.png") for s in scale.SWEEPS]
    for path in paths:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_report_says_how_to_get_plots(
        report: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    assert scale.plot(report, str(tmp_path / "scale.json")) is None
    monkeypatch.setattr(scale, "run_sweeps", lambda *args, **kwargs: report)
    assert scale.main(["--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    assert "pip install .[plot]" in out
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(json.dumps(report))
    assert not list(tmp_path.glob("*.png"))


def test_unknown_sweep_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        scale.main(["--sweeps", "clients,bogus"])
    assert exc.value.code == 2
    assert "--sweeps" in capsys.readouterr().err


def test_a_point_whose_entries_fail_to_bind_is_refused() -> None:
    """A broken build must not be measured: an entry with a failure stops the point."""
    config = ('<Configuration><Bundle name="b"><Path name="/etc/x" failure="no matching '
              'generator"/></Bundle></Configuration>')
    with pytest.raises(RuntimeError, match="1 entries failed to bind, the first Path:/etc/x"):
        scale._entries_in(config)
    assert scale._entries_in('<Configuration><Bundle name="b"><Path name="/etc/x"/>'
                             "</Bundle></Configuration>") == 1


def test_the_growth_exponent_of_known_curves() -> None:
    assert scale.fit_exponent([1, 10, 100], [3, 30, 300]) == pytest.approx(1.0)
    assert scale.fit_exponent([1, 10, 100], [2, 200, 20000]) == pytest.approx(2.0)
    assert scale.fit_exponent([1, 10, 100], [5, 5, 5]) == pytest.approx(0.0)
    assert scale.fit_exponent([10, 10], [1, 2]) is None  # one x: no slope
    assert [scale.growth_words(e) for e in (0.0, 0.5, 1.0, 1.5)] == [
        "stays about flat", "grows sublinearly", "grows linearly", "grows faster than linearly"]
