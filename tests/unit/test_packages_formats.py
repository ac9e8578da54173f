"""The index formats as mirrors serve them, fetched from 127.0.0.1 and file: URLs."""

from __future__ import annotations

import lzma
import shutil
import time
from pathlib import Path

import lxml.etree
import pytest
from packages_repos import (
    have,
    make_apt_repo,
    make_pacman_db,
    make_pkgng_site,
    make_yum_repo,
    serve,
    write_release,
)

from bcfg2.plugins.packages import apt, drivers, yum
from bcfg2.plugins.packages.fetch import Fetcher, FetchError, decompress
from bcfg2.plugins.packages.sources import Source, parse_source

APT_PACKAGES = [
    {"Package": "base-files", "Essential": "yes"},
    {"Package": "app", "Pre-Depends": "libc6 (>= 2.36)",
     "Depends": "perl:any, default-mta | mail-transport-agent, libfoo [amd64]",
     "Recommends": "app-doc"},
    {"Package": "libc6", "Version": "2.36-9"},
    {"Package": "perl", "Provides": "perl5 (= 5.36), perlapi-5.36.0"},
    {"Package": "exim4", "Provides": "mail-transport-agent"},
    {"Package": "libfoo",
     "Description": "a library\n with a description\n .\n on several lines"},
]


def source(xml: str, base_dir: str = "") -> Source:
    return parse_source(lxml.etree.fromstring(xml), (), "sources.xml", base_dir)


def apt_source(url: str) -> Source:
    return source(f'<Source type="apt" url="{url}" version="bookworm">'
                  '<Component>main</Component><Arch>amd64</Arch></Source>')


def fetcher(timeout: float = 10.0, size: int = 2**26) -> Fetcher:
    return Fetcher(timeout=timeout, max_size=size)


def test_packages_stanzas_parse_to_names_alternatives_and_provides() -> None:
    text = "\n".join("".join(f"{k}: {v}\n" for k, v in p.items()) for p in APT_PACKAGES)
    index = apt.parse_packages(text.encode())
    assert index.packages["app"][2] == [["libc6"], ["perl"],
                                        ["default-mta", "mail-transport-agent"], ["libfoo"]]
    assert index.packages["app"][3] == [["app-doc"]]
    assert index.packages["base-files"][4] is True
    assert index.provides["perl5"] == ["perl"] and "perlapi-5.36.0" in index.provides
    assert index.provides["mail-transport-agent"] == ["exim4"]
    assert index.packages["libc6"][0] == "2.36-9"


def test_an_html_page_is_not_an_empty_index() -> None:
    with pytest.raises(FetchError, match="no package stanza"):
        apt.parse_packages(b"<html><body>503 Service Unavailable</body></html>")


@pytest.mark.parametrize("compressions", [("xz", "gz"), ("gz",), ("plain",), ("zst",)])
def test_apt_over_http_with_each_compression(tmp_path: Path, compressions: tuple[str]) -> None:
    make_apt_repo(tmp_path, APT_PACKAGES, compressions=compressions)
    with serve(tmp_path) as served:
        loaded = drivers.load(apt_source(served.url), "amd64", fetcher())
    assert loaded is not None and set(loaded.index.packages) >= {"app", "exim4", "libfoo"}
    best = {"xz": ".xz", "zst": ".zst", "gz": ".gz", "plain": ""}[compressions[0]]
    assert served.requests[f"/dists/bookworm/main/binary-amd64/Packages{best}"] == 1
    # InRelease (missing here), Release, and the one Packages file: nothing else
    assert sum(served.requests.values()) == 3


def test_inrelease_is_read_and_an_unchanged_key_downloads_nothing_more(tmp_path: Path) -> None:
    make_apt_repo(tmp_path, APT_PACKAGES, inrelease=True)
    with serve(tmp_path) as served:
        loaded = drivers.load(apt_source(served.url), "amd64", fetcher())
        assert loaded is not None
        served.requests.clear()
        assert drivers.load(apt_source(served.url), "amd64", fetcher(),
                            known_key=loaded.key) is None
        assert list(served.requests) == ["/dists/bookworm/InRelease"]


def test_a_checksum_mismatch_names_the_file(tmp_path: Path) -> None:
    dist = make_apt_repo(tmp_path, APT_PACKAGES, compressions=("xz",))
    (dist / "main/binary-amd64/Packages.xz").write_bytes(lzma.compress(b"Package: evil\n"))
    with serve(tmp_path) as served, pytest.raises(drivers.SourceError,
                                                  match="Packages.xz: size or SHA256"):
        drivers.load(apt_source(served.url), "amd64", fetcher())


def test_a_truncated_xz_listed_with_its_checksum_is_an_error(tmp_path: Path) -> None:
    dist = make_apt_repo(tmp_path, APT_PACKAGES, compressions=("xz",))
    path = dist / "main/binary-amd64/Packages.xz"
    data = path.read_bytes()[:-40]
    path.write_bytes(data)
    write_release(dist, [("main/binary-amd64/Packages.xz", data)])
    with serve(tmp_path) as served, pytest.raises(drivers.SourceError, match="truncated"):
        drivers.load(apt_source(served.url), "amd64", fetcher())


def test_an_html_error_page_is_refused(tmp_path: Path) -> None:
    make_apt_repo(tmp_path, APT_PACKAGES)
    with serve(tmp_path) as served:
        served.html.add("/dists/bookworm/Release")
        served.missing.add("/dists/bookworm/InRelease")
        with pytest.raises(drivers.SourceError, match="HTML page"):
            drivers.load(apt_source(served.url), "amd64", fetcher())


def test_a_flat_repository_and_a_relative_file_url(tmp_path: Path) -> None:
    flat = tmp_path / "Packages" / "flat"
    flat.mkdir(parents=True)
    (flat / "Packages.gz").write_bytes(__import__("gzip").compress(b"Package: solo\n"))
    src = source('<Source type="apt" rawurl="file:flat"><Arch>amd64</Arch></Source>',
                 base_dir=str(tmp_path / "Packages"))
    loaded = drivers.load(src, "amd64", fetcher())
    assert loaded is not None and list(loaded.index.packages) == ["solo"]


def test_a_hanging_mirror_times_out(tmp_path: Path) -> None:
    make_apt_repo(tmp_path, APT_PACKAGES)
    with serve(tmp_path) as served:
        served.hang.update({"/dists/bookworm/InRelease", "/dists/bookworm/Release"})
        start = time.monotonic()
        with pytest.raises(drivers.SourceError):
            drivers.load(apt_source(served.url), "amd64", fetcher(timeout=0.5))
        assert time.monotonic() - start < 5


def test_size_limits_and_decompression_bombs() -> None:
    bomb = lzma.compress(b"\0" * (8 * 2**20))
    with pytest.raises(FetchError, match="more than"):
        decompress(bomb, "bomb.xz", 2**20)
    with pytest.raises(FetchError, match="truncated"):
        decompress(bomb[:50], "cut.xz", 2**30)


def test_a_download_over_the_size_limit_stops(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 100_000)
    with serve(tmp_path) as served, pytest.raises(FetchError, match="larger than"):
        fetcher(size=10_000).get(f"{served.url}/big")


# -- Yum ---------------------------------------------------------------------

needs_rpm = pytest.mark.skipif(not (have("rpmbuild") and have("createrepo_c")),
                               reason="rpmbuild and createrepo_c are needed (Debian packages "
                                      "rpm and createrepo-c)")
COMPS = """<?xml version="1.0"?>
<comps><group><id>web-server</id><name>Web Server</name><name xml:lang="de">Webserver</name>
<packagelist><packagereq type="mandatory">httpd</packagereq>
<packagereq type="default">mod-ssl</packagereq>
<packagereq type="optional">mod-extra</packagereq></packagelist></group></comps>
"""
RPMS = [
    {"name": "httpd", "requires": ["/bin/sh", "httpd-filesystem"]},
    {"name": "bash", "files": ["/bin/sh", "/usr/bin/bash"]},
    {"name": "httpd-core", "provides": ["httpd-filesystem"]},
    {"name": "mod-ssl", "requires": ["(openssl-a or openssl-b)"]},
    {"name": "openssl-b"},
    {"name": "mod-extra", "recommends": ["httpd"]},
]


@needs_rpm
@pytest.mark.parametrize("compression", ["gz", "zstd"])
def test_yum_from_createrepo_c(tmp_path: Path, compression: str) -> None:
    make_yum_repo(tmp_path / "el", RPMS, compression=compression, comps=COMPS)
    src = source(f'<Source type="yum" rawurl="file://{tmp_path}/el"><Arch>x86_64</Arch></Source>')
    loaded = drivers.load(src, "x86_64", fetcher())
    assert loaded is not None
    index = loaded.index
    assert index.ptype == "yum"
    assert ["/bin/sh"] in index.packages["httpd"][2]
    assert index.provides["/bin/sh"] == ["bash"]
    assert index.provides["httpd-filesystem"] == ["httpd-core"]
    assert ["openssl-a", "openssl-b"] in index.packages["mod-ssl"][2]
    assert index.packages["mod-extra"][3] == [["httpd"]]
    for name in ("web-server", "Web Server"):
        assert index.groups[name]["mandatory"] == ["httpd"]
        assert index.groups[name]["default"] == ["mod-ssl"]
    assert "Webserver" not in index.groups
    assert drivers.load(src, "x86_64", fetcher(), known_key=loaded.key) is None


@needs_rpm
def test_a_yum_checksum_mismatch(tmp_path: Path) -> None:
    root = make_yum_repo(tmp_path / "el", RPMS[:2])
    primary = next((root / "repodata").glob("*primary.xml.gz"))
    primary.write_bytes(primary.read_bytes()[:-8] + b"\0" * 8)
    src = source(f'<Source type="yum" rawurl="file://{root}"><Arch>x86_64</Arch></Source>')
    with pytest.raises(drivers.SourceError, match="does not match repomd.xml"):
        drivers.load(src, "x86_64", fetcher())


def test_rich_dependencies() -> None:
    assert yum.rich("(a or b or c)") == [["a", "b", "c"]]
    assert yum.rich("(a and b)") == [["a"], ["b"]]
    assert yum.rich("(a if b)") == [["a"]]
    assert yum.rich("(a >= 1.0 or b)") == [["a", "b"]]
    assert yum.rich("libc.so.6()(64bit)") == [["libc.so.6()(64bit)"]]


# -- pacman and pkgng ------------------------------------------------------------

@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_pacman_database(tmp_path: Path, compression: str) -> None:
    make_pacman_db(tmp_path, "core", "x86_64", [
        {"NAME": ["bash"], "DEPENDS": ["readline>=8.0", "glibc"], "PROVIDES": ["sh=5.1"],
         "GROUPS": ["base"]},
        {"NAME": ["glibc"], "OPTDEPENDS": ["perl: for mtrace"], "GROUPS": ["base"]},
        {"NAME": ["readline"]},
    ], compression=compression)
    src = source(f'<Source type="pac" url="file://{tmp_path}"><Component>core</Component>'
                 '<Arch>x86_64</Arch></Source>')
    loaded = drivers.load(src, "x86_64", fetcher())
    assert loaded is not None
    index = loaded.index
    assert index.packages["bash"][2] == [["readline"], ["glibc"]]
    assert index.provides["sh"] == ["bash"]
    assert index.packages["glibc"][3] == [["perl"]]
    assert sorted(index.groups["base"]["mandatory"]) == ["bash", "glibc"]


def test_pkgng_packagesite(tmp_path: Path) -> None:
    make_pkgng_site(tmp_path, "FreeBSD:14:amd64", "latest", [
        {"name": "nginx", "version": "1.24", "deps": {"pcre2": {"origin": "devel/pcre2"}},
         "shlibs_required": ["libcrypto.so.30"]},
        {"name": "pcre2", "version": "10.42"},
        {"name": "openssl", "version": "3.0", "shlibs_provided": ["libcrypto.so.30"]},
    ], name="packagesite.txz")
    src = source(f'<Source type="pkgng" url="file://{tmp_path}" version="14">'
                 '<Component>latest</Component><Arch>amd64</Arch></Source>')
    loaded = drivers.load(src, "amd64", fetcher())
    assert loaded is not None
    assert loaded.index.packages["nginx"][2] == [["pcre2"], ["libcrypto.so.30"]]
    assert loaded.index.provides["libcrypto.so.30"] == ["openssl"]


def test_a_corrupt_tar_is_a_source_error(tmp_path: Path) -> None:
    target = make_pacman_db(tmp_path, "core", "x86_64", [{"NAME": ["x"]}])
    target.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    src = source(f'<Source type="pac" url="file://{tmp_path}"><Component>core</Component>'
                 '<Arch>x86_64</Arch></Source>')
    with pytest.raises(drivers.SourceError):
        drivers.load(src, "x86_64", fetcher())


def test_dpkg_scanpackages_output_is_read(tmp_path: Path) -> None:
    if not (have("dpkg-deb") and have("dpkg-scanpackages")):
        pytest.skip("dpkg-deb and dpkg-scanpackages are needed (Debian package dpkg-dev)")
    import subprocess

    pool = tmp_path / "pool"
    for name, depends in (("hello", "libgreet"), ("libgreet", "")):
        build = tmp_path / "build" / name / "DEBIAN"
        build.mkdir(parents=True)
        fields = {"Package": name, "Version": "1.0", "Architecture": "all",
                  "Maintainer": "t <t@example.com>", "Description": "test"}
        if depends:
            fields["Depends"] = depends
        (build / "control").write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
        pool.mkdir(exist_ok=True)
        subprocess.run(["dpkg-deb", "--build", str(build.parent), str(pool / f"{name}.deb")],
                       check=True, capture_output=True)
    text = subprocess.run(["dpkg-scanpackages", "pool"], cwd=tmp_path, check=True,
                          capture_output=True).stdout
    index = apt.parse_packages(text)
    assert index.packages["hello"][2] == [["libgreet"]]
    shutil.rmtree(tmp_path / "build")


def test_only_a_missing_file_moves_on_to_the_next_name(tmp_path: Path) -> None:
    """A flat repository: no Release (404) means Packages files are tried; a Packages.xz
    that times out is that error, not "no Packages file", and .gz is not read instead."""
    import gzip

    (tmp_path / "Packages.gz").write_bytes(gzip.compress(b"Package: solo\n"))
    with serve(tmp_path) as served:
        src = source(f'<Source type="apt" rawurl="{served.url}"><Arch>amd64</Arch></Source>')
        loaded = drivers.load(src, "amd64", fetcher())
        assert loaded is not None and list(loaded.index.packages) == ["solo"]
        served.hang.add("/Packages.xz")
        with pytest.raises(drivers.SourceError,
                           match="Packages.xz: (not downloaded within|timed out)"):
            drivers.load(src, "amd64", fetcher(timeout=0.5))
        assert served.requests["/Packages.gz"] == 1  # only by the first load
