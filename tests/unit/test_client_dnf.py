"""The DNF driver: rpm queries against an rpm database under a tmp root, and dnf as a stub
on PATH that records its argv and applies what it is asked with rpm, from rpms built by
the test (there is no dnf on a Debian machine; the real dnf is not exercised here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import lxml.etree
import pytest

from bcfg2 import options
from bcfg2.client.drivers import Context
from bcfg2.client.drivers.dnf import DNF
from bcfg2.errors import ConfigError

pytestmark = pytest.mark.skipif(not (shutil.which("rpm") and shutil.which("rpmbuild")),
                                reason="needs rpm and rpmbuild to make an rpm database and rpms")

STUB = """#!{python} -S
import glob, json, os, re, subprocess, sys
with open(os.environ["STUB_LOG"], "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
root = next((a.split("=", 1)[1] for a in args if a.startswith("--installroot=")), "/")
words = [a for a in args if not a.startswith("-")]
verb, specs = words[0], words[1:]
if verb == "check-update":
    sys.exit(100 if specs[0] in os.environ.get("STUB_UPDATES", "").split(",") else 0)
specs = [re.sub(r"-\\d+:", "-", s) for s in specs]
rpm = ["rpm", "--root", root, "--nodeps"]
if verb == "remove":
    sys.exit(subprocess.run(rpm + ["-e", *specs]).returncode)
files = []
for spec in specs:
    if spec.startswith(("file://", "/")):
        files.append(spec.removeprefix("file://"))
        continue
    found = sorted(glob.glob(os.path.join(os.environ["STUB_RPMS"], spec + "*.rpm")))
    if not found:
        print("No match for argument:", spec, file=sys.stderr)
        sys.exit(1)
    files.append(found[-1])
mode = ["-U", "--oldpackage", "--replacepkgs"] if verb != "install-only" else ["-i"]
sys.exit(subprocess.run(rpm + mode + files).returncode)
"""


def build_rpm(topdir: Path, name: str, version: str, epoch: int | None = None,
              path: str | None = None, text: str = "hi\n") -> None:
    spec = topdir / f"{name}-{version}.spec"
    path = path or f"/usr/share/{name}/greeting"
    spec.write_text(textwrap.dedent(f"""\
        Name: {name}
        Version: {version}
        Release: 1
        {f'Epoch: {epoch}' if epoch is not None else ''}
        Summary: test package
        License: MIT
        BuildArch: noarch
        %description
        test package
        %install
        mkdir -p %{{buildroot}}{os.path.dirname(path)}
        printf '{text.strip()}\\n' > %{{buildroot}}{path}
        %files
        {path}
        """))
    subprocess.run(["rpmbuild", "--define", f"_topdir {topdir}", "--define",
                    f"_rpmdir {topdir / 'out'}", "--define",
                    "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
                    "-bb", str(spec)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def rpms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    top = tmp_path_factory.mktemp("rpmbuild")
    build_rpm(top, "tiny-bcfg", "1.0", epoch=2, text="one")
    build_rpm(top, "tiny-bcfg", "2.0", epoch=2, text="two")
    build_rpm(top, "oldrpm", "0.1")
    # install-only, like kernels: each version has files of its own
    build_rpm(top, "kern-bcfg", "1", path="/boot/kern-1")
    build_rpm(top, "kern-bcfg", "2", path="/boot/kern-2")
    return top / "out"


class Env:
    """A tmp root with an rpm database, and a stub dnf on PATH."""

    def __init__(self, tmp: Path, rpms: Path) -> None:
        self.root = tmp / "root"
        self.root.mkdir()
        self.rpms = rpms
        subprocess.run(["rpm", "--initdb", "--root", str(self.root)], check=True)
        bindir = tmp / "bin"
        bindir.mkdir()
        (bindir / "dnf").write_text(STUB.format(python=sys.executable))
        (bindir / "dnf").chmod(0o755)
        self.log = tmp / "dnf.log"
        self.env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
                    "STUB_LOG": str(self.log), "STUB_RPMS": str(rpms)}

    def rpm_install(self, *files: str) -> None:
        subprocess.run(["rpm", "--root", str(self.root), "--nodeps", "-i",
                        *(str(self.rpms / f) for f in files)], check=True, capture_output=True,
                       env=self.env)

    def query(self, name: str) -> list[str]:
        out = subprocess.run(["rpm", "--root", str(self.root), "-q", "--qf",
                              "%{EPOCHNUM}:%{VERSION}-%{RELEASE}\\n", name],
                             capture_output=True, text=True, env=self.env)
        return sorted(out.stdout.split()) if out.returncode == 0 else []

    def dnf_calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def driver(self, dry_run: bool = False, **setup: object) -> DNF:
        namespace = SimpleNamespace(**{k: SimpleNamespace(**v) for k, v in setup.items()})
        return DNF(Context(root=str(self.root), env=self.env, dry_run=dry_run,
                           setup=namespace if setup else None))


@pytest.fixture
def env(tmp_path: Path, rpms: Path) -> Env:
    return Env(tmp_path, rpms)


def package(name: str, *instances: dict[str, str], **attrs: str) -> lxml.etree._Element:
    entry = lxml.etree.Element("Package", name=name, **{"type": "yum", **attrs})
    for instance in instances:
        lxml.etree.SubElement(entry, "Instance", **instance)
    return entry


TINY1 = {"epoch": "2", "version": "1.0", "release": "1", "arch": "noarch"}
TINY2 = {"epoch": "2", "version": "2.0", "release": "1", "arch": "noarch"}


def test_missing_packages_are_installed_in_one_transaction(env: Env) -> None:
    drv = env.driver()
    tiny = package("tiny-bcfg", TINY1)
    old = package("oldrpm", version="0.1", type="rpm")
    assert drv.verify(tiny, []).reasons == ["instance 2:1.0-1.noarch is not installed"]
    assert drv.verify(old, []).reasons == ["instance 0.1 is not installed"]
    assert drv.install([tiny, old]) == {("Package", "tiny-bcfg"): True,
                                        ("Package", "oldrpm"): True}
    assert env.dnf_calls() == [["-y", f"--installroot={env.root}", "install", "--",
                                "tiny-bcfg-2:1.0-1.noarch", "oldrpm-0.1"]]
    assert env.query("tiny-bcfg") == ["2:1.0-1"]
    assert (env.root / "usr/share/tiny-bcfg/greeting").read_text() == "one\n"
    assert env.driver().verify(tiny, []).correct


def test_package_files_named_by_the_entry_are_what_dnf_installs(env: Env) -> None:
    drv = env.driver()
    by_url = package("oldrpm", version="0.1", release="1",
                     url=f"file://{env.rpms}/oldrpm-0.1-1.noarch.rpm", type="rpm")
    by_uri = package("tiny-bcfg", {**TINY1, "simplefile": "tiny-bcfg-1.0-1.noarch.rpm"},
                     uri=str(env.rpms))
    odd = package("kern-bcfg", {"version": "1", "url": "http://mirror/kern; rm -rf /"})
    for entry in (by_url, by_uri, odd):
        assert not drv.verify(entry, []).correct
    assert drv.install([by_url, by_uri, odd]) == {("Package", "oldrpm"): True,
                                                  ("Package", "tiny-bcfg"): True,
                                                  ("Package", "kern-bcfg"): True}
    assert env.dnf_calls()[-1][4:] == [f"file://{env.rpms}/oldrpm-0.1-1.noarch.rpm",
                                       f"{env.rpms}/tiny-bcfg-1.0-1.noarch.rpm", "kern-bcfg-1"]


def test_a_wrong_version_is_named_and_replaced(env: Env) -> None:
    env.rpm_install("tiny-bcfg-1.0-1.noarch.rpm")
    drv = env.driver()
    tiny = package("tiny-bcfg", TINY2)
    assert drv.verify(tiny, []).reasons == [
        "version is tiny-bcfg-2:1.0-1.noarch, should be tiny-bcfg-2:2.0-1.noarch"]
    assert drv.install([tiny]) == {("Package", "tiny-bcfg"): True}
    assert env.query("tiny-bcfg") == ["2:2.0-1"]
    # attributes on the Package itself are its one instance; unset ones match anything
    assert env.driver().verify(package("tiny-bcfg", version="2.0"), []).correct
    assert not env.driver().verify(package("tiny-bcfg", version="2.0", epoch="3"), []).correct
    assert env.driver().verify(package("tiny-bcfg", {"version": "2.0", "release": "any",
                                                     "arch": "any"}), []).correct


def test_any_and_auto(env: Env) -> None:
    env.rpm_install("tiny-bcfg-1.0-1.noarch.rpm")
    assert env.driver().verify(package("tiny-bcfg", version="any"), []).correct
    assert env.driver().verify(package("tiny-bcfg", version="auto"), []).correct
    env.env["STUB_UPDATES"] = "tiny-bcfg"
    drv = env.driver()
    auto = package("tiny-bcfg", version="auto")
    assert drv.verify(auto, []).reasons == ["an update is available"]
    assert [f"--installroot={env.root}", "check-update"] == env.dnf_calls()[-1][1:3]
    del env.env["STUB_UPDATES"]
    assert drv.install([auto]) == {("Package", "tiny-bcfg"): True}
    assert env.dnf_calls()[-2] == ["-y", f"--installroot={env.root}", "upgrade", "--",
                                   "tiny-bcfg"]
    assert env.query("tiny-bcfg") == ["2:2.0-1"]
    assert env.driver().verify(package("oldrpm", version="any"), []).reasons == [
        "is not installed"]


def test_changed_files_unless_managed_ignored_or_unverified_and_reinstalled(env: Env) -> None:
    env.rpm_install("tiny-bcfg-1.0-1.noarch.rpm")
    greeting = env.root / "usr/share/tiny-bcfg/greeting"
    greeting.write_text("tampered, and longer\n")
    drv = env.driver()
    tiny = package("tiny-bcfg", TINY1)
    assert drv.verify(tiny, []).reasons == [
        "tiny-bcfg-2:1.0-1.noarch has changed files: /usr/share/tiny-bcfg/greeting"]
    assert drv.verify(tiny, ["/usr/share/tiny-bcfg/greeting"]).correct
    ignoring = package("tiny-bcfg", TINY1)
    lxml.etree.SubElement(ignoring, "Ignore", name="/usr/share/tiny-bcfg/*")
    assert drv.verify(ignoring, []).correct
    assert drv.verify(package("tiny-bcfg", {**TINY1, "pkg_verify": "false"}), []).correct
    assert env.driver(YUM={"pkg_verify": False}).verify(tiny, []).correct
    assert env.driver(client={"quick": True}).verify(tiny, []).correct
    assert drv.verify(tiny, []).reasons
    assert drv.install([tiny]) == {("Package", "tiny-bcfg"): True}
    assert env.dnf_calls()[-1][2:] == ["reinstall", "--", "tiny-bcfg-1.0-1.noarch"]
    assert greeting.read_text() == "one\n"


def test_yum_options_can_make_it_report_only(env: Env) -> None:
    env.rpm_install("tiny-bcfg-1.0-1.noarch.rpm")
    tiny2 = package("tiny-bcfg", TINY2)
    assert env.driver(YUM={"pkg_checks": False}).verify(tiny2, []).correct
    drv = env.driver(YUM={"install_missing": False, "version_fail_action": "none"})
    old = package("oldrpm", version="0.1")
    assert not drv.verify(old, []).correct and not drv.verify(tiny2, []).correct
    assert drv.install([old, tiny2]) == {("Package", "oldrpm"): False,
                                         ("Package", "tiny-bcfg"): False}
    assert env.dnf_calls() == []
    no_fix = package("tiny-bcfg", {**TINY2, "fix_version": "false"})
    assert env.driver().install([no_fix]) == {("Package", "tiny-bcfg"): False}
    no_install = package("oldrpm", {"version": "0.1", "install_action": "none"})
    assert env.driver().install([no_install]) == {("Package", "oldrpm"): False}
    assert env.dnf_calls() == []


def test_yum_options_come_from_bcfg2_conf_and_a_bad_one_stops_the_driver(
        env: Env, tmp_path: Path) -> None:
    conf = tmp_path / "bcfg2.conf"
    conf.write_text("[YUM]\npkg_checks = no\nverify_flags = nomtime, nomode\n")
    drv = DNF(Context(root=str(env.root), env=env.env, setup=options.build(str(conf))))
    assert drv.yum["pkg_checks"] is False and drv.yum["verify_flags"] == ["nomtime", "nomode"]
    conf.write_text("[YUM]\ninstall_action = always\n")
    with pytest.raises(ConfigError, match=r"\[YUM\] install_action: 'always' is not one of"):
        DNF(Context(root=str(env.root), env=env.env, setup=options.build(str(conf))))


def test_extra_packages_and_extra_instances_are_found_and_removed_in_one_go(env: Env) -> None:
    env.rpm_install("oldrpm-0.1-1.noarch.rpm", "kern-bcfg-1-1.noarch.rpm",
                    "kern-bcfg-2-1.noarch.rpm", "tiny-bcfg-1.0-1.noarch.rpm")
    drv = env.driver()
    kern = package("kern-bcfg", {"version": "2", "release": "1"})
    assert drv.verify(kern, []).correct
    assert drv.verify(package("tiny-bcfg", version="any"), []).correct
    extra = drv.find_extra()
    assert [(e.get("name"), [dict(i.attrib) for i in e]) for e in extra] == [
        ("kern-bcfg", [{"epoch": "0", "version": "1", "release": "1", "arch": "noarch"}]),
        ("oldrpm", [{"epoch": "0", "version": "0.1", "release": "1", "arch": "noarch"}])]
    assert drv.remove(extra) == {("Package", "kern-bcfg"): True, ("Package", "oldrpm"): True}
    assert env.dnf_calls()[-1] == ["-y", f"--installroot={env.root}", "remove", "--",
                                   "kern-bcfg-0:1-1.noarch", "oldrpm-0:0.1-1.noarch"]
    assert env.query("kern-bcfg") == ["0:2-1"] and env.query("oldrpm") == []


def test_dry_run_and_malformed_entries_run_no_dnf(env: Env) -> None:
    drv = env.driver(dry_run=True)
    assert drv.install([package("tiny-bcfg", TINY1)]) == {("Package", "tiny-bcfg"): False}
    bad = package("tiny-bcfg", {"version": "1.0; rm -rf /"})
    real = env.driver()
    assert real.verify(bad, []).reasons == ["version '1.0; rm -rf /' is not an rpm version"]
    assert real.install([bad]) == {("Package", "tiny-bcfg"): False}
    assert env.dnf_calls() == [] and env.query("tiny-bcfg") == []


@pytest.fixture
def signing_keys(tmp_path: Path) -> Iterator[list[tuple[str, str, bytes]]]:
    """Two signing keys made by gpg: (rpm version, rpm release, armoured key) each."""
    if not shutil.which("gpg"):
        pytest.skip("gpg is needed to make signing keys (Debian package gnupg)")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(*args: str) -> str:
        return subprocess.run(["gpg", "--batch", "--quiet", "--passphrase", "", *args], env=env,
                              check=True, capture_output=True, text=True, timeout=120).stdout

    try:
        keys = []
        for who in ("one", "two"):
            gpg("--quick-gen-key", f"{who} <{who}@example.invalid>", "ed25519", "sign", "never")
            pub = next(line.split(":") for line in gpg("--with-colons", "--list-keys",
                                                       f"{who}@example.invalid").splitlines()
                       if line.startswith("pub:"))
            armoured = gpg("--armor", "--export", f"{who}@example.invalid").encode()
            keys.append((pub[4][-8:].lower(), format(int(pub[5]), "x"), armoured))
        yield keys
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], env=env,
                       capture_output=True, timeout=60)


def test_signing_keys_are_imported_found_extra_and_removed_with_rpm(
        env: Env, signing_keys: list[tuple[str, str, bytes]]) -> None:
    (one_v, one_r, one_key), (two_v, two_r, two_key) = signing_keys
    keydir = env.root / "etc/pki/rpm-gpg"
    keydir.mkdir(parents=True)
    (keydir / "one.asc").write_bytes(one_key)
    (keydir / "two.asc").write_bytes(two_key)
    subprocess.run(["rpm", "--root", str(env.root), "--import", str(keydir / "two.asc")],
                   check=True, capture_output=True, env=env.env)
    drv = env.driver()
    keys = package("gpg-pubkey", {"simplefile": "/etc/pki/rpm-gpg/one.asc", "version": one_v,
                                  "release": one_r})
    assert drv.verify(keys, []).reasons == [f"instance {one_v}-{one_r} is not installed"]
    assert drv.install([keys]) == {("Package", "gpg-pubkey"): True}
    assert env.dnf_calls() == []
    assert env.query("gpg-pubkey") == sorted([f"0:{one_v}-{one_r}", f"0:{two_v}-{two_r}"])
    extra = drv.find_extra()
    assert [(e.get("name"), [(i.get("version"), i.get("release"), i.get("arch")) for i in e])
            for e in extra] == [("gpg-pubkey", [(two_v, two_r, None)])]
    assert drv.remove(extra) == {("Package", "gpg-pubkey"): True}
    assert env.query("gpg-pubkey") == [f"0:{one_v}-{one_r}"]
    assert env.dnf_calls() == []


def test_available_only_with_rpm_and_dnf(env: Env, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from bcfg2.client.drivers import _common

    assert DNF.available(Context(env=env.env))
    monkeypatch.setattr(_common, "FALLBACK_PATH", "")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "rpm").symlink_to(shutil.which("rpm") or "/usr/bin/rpm")
    assert not DNF.available(Context(env={"PATH": str(bare)}))
