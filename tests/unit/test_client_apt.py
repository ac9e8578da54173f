"""The APT driver against a throwaway dpkg database and APT state under a tmp root, with
small .deb files built by the test (``dpkg-deb --build``) served from a local repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import lxml.etree
import pytest

from bcfg2.client.drivers import Context
from bcfg2.client.drivers.apt import APT

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("dpkg", "dpkg-deb", "dpkg-query", "apt-get",
                                      "dpkg-scanpackages")),
    reason="needs dpkg, apt and dpkg-dev (dpkg-scanpackages) to build and install test packages")


def build_deb(out: Path, name: str, version: str, text: str) -> Path:
    """A package with one file, /usr/share/NAME/greeting, holding ``text``."""
    tree = out / f"{name}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        f"Maintainer: Tests <tests@example.invalid>\nDescription: test package\n")
    (tree / f"usr/share/{name}").mkdir(parents=True)
    (tree / f"usr/share/{name}/greeting").write_text(text)
    deb = out / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)
    shutil.rmtree(tree)
    return deb


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat APT repository of hello-bcfg 1.0-1 and 2.0-1 and oldtool 0.1-1."""
    repo = tmp_path_factory.mktemp("debrepo")
    build_deb(repo, "hello-bcfg", "1.0-1", "hello one\n")
    build_deb(repo, "hello-bcfg", "2.0-1", "hello two\n")
    build_deb(repo, "oldtool", "0.1-1", "old\n")
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo,
                              check=True, capture_output=True).stdout
    (repo / "Packages").write_bytes(packages)
    return repo


@pytest.fixture
def root(tmp_path: Path, repo: Path) -> Path:
    """An empty system: a dpkg database with oldtool installed, APT pointed at ``repo``."""
    root = tmp_path / "root"
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers",
              "var/lib/apt/lists/partial", "var/cache/apt/archives/partial",
              "etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
              "var/log/apt"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("")
    (root / "etc/apt/sources.list").write_text(f"deb [trusted=yes] file:{repo} ./\n")
    subprocess.run(["dpkg", f"--root={root}", "-i", str(repo / "oldtool_0.1-1_all.deb")],
                   check=True, capture_output=True)
    apt = APT(Context(root=str(root)))
    subprocess.run(["apt-get", *apt.apt_options(), "-q", "update"], check=True,
                   capture_output=True)
    return root


def driver(root: Path, calls: list[list[str]] | None = None, **kw: object) -> APT:
    def runner(argv, **opts):
        if calls is not None:
            calls.append(argv)
        return subprocess.run(argv, **opts)

    return APT(Context(root=str(root), runner=runner, **kw))


def package(name: str, version: str | None = None, **attrs: str) -> lxml.etree._Element:
    entry = lxml.etree.Element("Package", name=name, type="deb", **attrs)
    if version is not None:
        entry.set("version", version)
    return entry


def installed(root: Path, name: str) -> str | None:
    """The version dpkg's database under the root has installed, or None."""
    out = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                          "-f", "${Version} ${db:Status-Status}", name], capture_output=True,
                         text=True).stdout
    version, _, status = out.partition(" ")
    return version if status == "installed" else None


def test_a_missing_package_is_installed_into_the_root(root: Path) -> None:
    drv = driver(root)
    hello = package("hello-bcfg", "1.0-1")
    assert drv.verify(hello, []).reasons == ["is not installed"]
    assert drv.install([hello]) == {("Package", "hello-bcfg"): True}
    assert installed(root, "hello-bcfg") == "1.0-1"
    assert (root / "usr/share/hello-bcfg/greeting").read_text() == "hello one\n"
    assert not Path("/usr/share/hello-bcfg").exists()
    assert driver(root).verify(hello, []).correct


def test_a_wrong_version_is_detected_and_upgraded_or_downgraded(root: Path) -> None:
    driver(root).install([package("hello-bcfg", "1.0-1")])
    drv = driver(root)
    newer = package("hello-bcfg", "2.0-1")
    assert drv.verify(newer, []).reasons == ["version is 1.0-1, should be 2.0-1"]
    assert newer.get("current_version") == "1.0-1"
    assert drv.install([newer]) == {("Package", "hello-bcfg"): True}
    assert installed(root, "hello-bcfg") == "2.0-1"
    older = package("hello-bcfg", "1.0-1")
    assert not drv.verify(older, []).correct
    assert drv.install([older]) == {("Package", "hello-bcfg"): True}
    assert installed(root, "hello-bcfg") == "1.0-1"


def test_auto_wants_the_candidate_and_any_takes_what_is_there(root: Path) -> None:
    driver(root).install([package("hello-bcfg", "1.0-1")])
    drv = driver(root)
    assert drv.verify(package("hello-bcfg", "any"), []).correct
    auto = package("hello-bcfg", "auto")
    assert drv.verify(auto, []).reasons == ["version is 1.0-1, should be 2.0-1"]
    assert drv.install([auto]) == {("Package", "hello-bcfg"): True}
    assert installed(root, "hello-bcfg") == "2.0-1"
    assert drv.verify(package("oldtool", "any"), []).correct
    assert drv.verify(package("hello-bcfg"), []).reasons == ["has no version: cannot be verified"]


def test_changed_files_are_found_unless_managed_or_quick_and_a_reinstall_fixes_them(
        root: Path) -> None:
    driver(root).install([package("hello-bcfg", "1.0-1")])
    greeting = root / "usr/share/hello-bcfg/greeting"
    greeting.write_text("tampered\n")
    drv = driver(root)
    hello = package("hello-bcfg", "1.0-1")
    assert drv.verify(hello, []).reasons == ["changed files: /usr/share/hello-bcfg/greeting"]
    assert drv.verify(hello, ["/usr/share/hello-bcfg/greeting"]).correct
    assert drv.verify(package("hello-bcfg", "1.0-1", verify="false"), []).correct
    from types import SimpleNamespace
    quick = driver(root, setup=SimpleNamespace(client=SimpleNamespace(quick=True)))
    assert quick.verify(hello, []).correct
    assert drv.install([hello]) == {("Package", "hello-bcfg"): True}
    assert greeting.read_text() == "hello one\n"


def test_everything_wrong_goes_in_one_transaction(root: Path) -> None:
    calls: list[list[str]] = []
    drv = driver(root, calls)
    entries = [package("hello-bcfg", "2.0-1"), package("oldtool", "any"),
               package("bad name!", "1"), package("nover")]
    result = drv.install(entries)
    assert result == {("Package", "hello-bcfg"): True, ("Package", "oldtool"): True,
                      ("Package", "bad name!"): False, ("Package", "nover"): False}
    apt_calls = [c for c in calls if any(a.endswith("apt-get") for a in c)]
    assert len(apt_calls) == 1
    assert apt_calls[0][-3:] == ["--", "hello-bcfg=2.0-1", "oldtool"]
    assert f"Dir::State::status={root}/var/lib/dpkg/status" in apt_calls[0]


def test_extra_packages_are_found_and_purged(root: Path) -> None:
    drv = driver(root)
    hello = package("hello-bcfg", "1.0-1")
    drv.verify(hello, [])
    drv.install([hello])
    extra = drv.find_extra()
    assert [(e.get("name"), e.get("current_version")) for e in extra] == [("oldtool", "0.1-1")]
    assert drv.remove(extra) == {("Package", "oldtool"): True}
    assert installed(root, "oldtool") is None
    assert not (root / "usr/share/oldtool/greeting").exists()
    assert driver(root).verify(package("oldtool", "any"), []).reasons == ["is not installed"]
    assert installed(root, "hello-bcfg") == "1.0-1"


def test_dry_run_changes_nothing(root: Path) -> None:
    calls: list[list[str]] = []
    drv = driver(root, calls, dry_run=True)
    assert drv.install([package("hello-bcfg", "1.0-1")]) == {("Package", "hello-bcfg"): False}
    assert drv.remove([package("oldtool")]) == {("Package", "oldtool"): False}
    assert not any(a.endswith("apt-get") for c in calls for a in c)
    assert installed(root, "oldtool") == "0.1-1" and installed(root, "hello-bcfg") is None


def test_available_only_where_install_path_has_the_tools(tmp_path: Path) -> None:
    from types import SimpleNamespace

    assert APT.available(Context())
    elsewhere = SimpleNamespace(APT=SimpleNamespace(install_path=str(tmp_path)))
    assert not APT.available(Context(setup=elsewhere))


def test_kevlar_finishes_an_interrupted_dpkg_run_and_refreshes_the_lists(
        root: Path, repo: Path, tmp_path: Path) -> None:
    from types import SimpleNamespace

    subprocess.run(["dpkg", f"--root={root}", "--unpack", str(repo / "hello-bcfg_1.0-1_all.deb")],
                   check=True, capture_output=True)
    assert installed(root, "hello-bcfg") is None  # unpacked, never configured
    newer = tmp_path / "newer"
    newer.mkdir()
    build_deb(newer, "hello-bcfg", "3.0-1", "hello three\n")
    (newer / "Packages").write_bytes(subprocess.run(
        ["dpkg-scanpackages", "."], cwd=newer, check=True, capture_output=True).stdout)
    (root / "etc/apt/sources.list").write_text(f"deb [trusted=yes] file:{newer} ./\n")
    kevlar = SimpleNamespace(client=SimpleNamespace(kevlar=True))
    drv = driver(root, setup=kevlar)
    assert installed(root, "hello-bcfg") == "1.0-1"
    assert drv.candidate("hello-bcfg") == "3.0-1"
    assert drv.verify(package("hello-bcfg", "auto"), []).reasons == [
        "version is 1.0-1, should be 3.0-1"]
    # without -k nothing runs before the entries are verified
    calls: list[list[str]] = []
    driver(root, calls)
    assert calls == []
