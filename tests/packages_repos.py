"""Package repositories in the real formats, made in a test, and a server for them.

- ``make_apt_repo``: ``dists/<suite>/Release`` (or ``InRelease``) with the
  SHA256 of every index, ``Packages`` compressed as asked;
- ``make_yum_repo``: RPMs built with rpmbuild, indexed by createrepo_c;
- ``make_pacman_db`` and ``make_pkgng_site``: the tarballs those tools read;
- ``serve``: an HTTP server on 127.0.0.1 port 0 for a directory, which can
  answer chosen paths with an HTML page or never answer them at all.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import lzma
import os
import shutil
import subprocess
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import zstandard

COMPRESSORS = {"xz": (".xz", lzma.compress), "gz": (".gz", gzip.compress),
               "zst": (".zst", lambda d: zstandard.ZstdCompressor().compress(d)),
               "plain": ("", lambda d: d)}

#: an ed25519 signing key made with gpg 2.2; ``rpm -q gpg-pubkey`` names it e93e6bf2-6b112c7f
ED25519_KEY = b"""\
-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEaxEsfxYJKwYBBAHaRw8BAQdAubb/gzCBfEZ2zMrLhJBxCHuKc2ec8hTAoT7s
KH6/eEu0GlNlY29uZCA8c0BleGFtcGxlLmludmFsaWQ+iJAEExYIADgWIQTs52gB
Mk1GtwtWP3tZGDZk6T5r8gUCaxEsfwIbAwULCQgHAgYVCgkICwIEFgIDAQIeAQIX
gAAKCRBZGDZk6T5r8mkJAQDgbsehngKNrbPHykHfTDc11SiiInXgBE/PxTitteM/
DAD/X2S3oqiJBuYIJ3soaeOcBT0911hAnFI3hiHywOvN4gU=
=HyFw
-----END PGP PUBLIC KEY BLOCK-----
"""


def stanza(fields: dict[str, str]) -> str:
    return "".join(f"{key}: {value}\n" for key, value in fields.items())


def make_apt_repo(root: Path, packages: list[dict[str, str]], suite: str = "bookworm",
                  component: str = "main", arch: str = "amd64",
                  compressions: tuple[str, ...] = ("xz", "gz"), inrelease: bool = False) -> Path:
    """An APT repository below ``root`` (``url=root``, ``version=suite``); returns dists/suite."""
    dist = root / "dists" / suite
    directory = dist / component / f"binary-{arch}"
    directory.mkdir(parents=True, exist_ok=True)
    text = "\n".join(stanza({"Architecture": arch, "Version": "1.0", **p}) for p in packages)
    listed = []
    for kind in compressions:
        suffix, compress = COMPRESSORS[kind]
        data = compress(text.encode())
        (directory / f"Packages{suffix}").write_bytes(data)
        listed.append((f"{component}/binary-{arch}/Packages{suffix}", data))
    write_release(dist, listed, inrelease)
    return dist


def write_release(dist: Path, files: list[tuple[str, bytes]], inrelease: bool = False) -> None:
    lines = ["Suite: test", f"Codename: {dist.name}", "SHA256:"]
    lines += [f" {hashlib.sha256(d).hexdigest()} {len(d)} {p}" for p, d in files]
    body = "\n".join(lines) + "\n"
    if inrelease:
        body = ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n" + body +
                "-----BEGIN PGP SIGNATURE-----\n\nnot checked\n-----END PGP SIGNATURE-----\n")
        (dist / "InRelease").write_text(body)
    else:
        (dist / "Release").write_text(body)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def make_yum_repo(root: Path, rpms: list[dict[str, object]], compression: str = "gz",
                  comps: str | None = None) -> Path:
    """A Yum repository at ``root``: noarch RPMs built with rpmbuild, then createrepo_c.

    Each rpm dict: name, and optionally requires, provides, recommends (lists)
    and files (paths the package installs).
    """
    top = root.parent / f".rpmbuild-{root.name}"
    for sub in ("SPECS", "RPMS", "BUILD", "BUILDROOT", "SOURCES", "SRPMS"):
        (top / sub).mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(top)}
    for rpm in rpms:
        name = rpm["name"]
        files = list(rpm.get("files", [f"/usr/share/doc/{name}/README"]))
        lines = [f"Name: {name}", "Version: 1.0", "Release: 1", "Summary: test package",
                 "License: MIT", "BuildArch: noarch"]
        lines += [f"Requires: {r}" for r in rpm.get("requires", [])]
        lines += [f"Provides: {p}" for p in rpm.get("provides", [])]
        lines += [f"Recommends: {r}" for r in rpm.get("recommends", [])]
        install = "\n".join(f"mkdir -p %{{buildroot}}{os.path.dirname(f)}\n"
                            f"touch %{{buildroot}}{f}" for f in files)
        spec = "\n".join(lines) + (f"\n%description\ntest\n%install\n{install}\n"
                                   f"%files\n" + "\n".join(files) + "\n")
        path = top / "SPECS" / f"{name}.spec"
        path.write_text(spec)
        subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}", str(path)], env=env,
                       check=True, capture_output=True)
    for built in (top / "RPMS").rglob("*.rpm"):
        shutil.copy(built, root)
    native = compression if compression != "zstd" else "gz"
    command = ["createrepo_c", "--compress-type", native, "--general-compress-type", native]
    if comps is not None:
        groupfile = top / "comps.xml"
        groupfile.write_text(comps)
        command += ["--groupfile", str(groupfile)]
    subprocess.run(command + [str(root)], check=True, capture_output=True)
    shutil.rmtree(top)
    if compression == "zstd":
        recompress_zstd(root)
    return root


def recompress_zstd(root: Path) -> None:
    """Turn a repository's gzip metadata into zstd, as RHEL 10 ships it (createrepo_c
    before 1.0 cannot write zstd), with repomd.xml's checksums updated."""
    import lxml.etree

    repo_ns = "{http://linux.duke.edu/metadata/repo}"
    repomd = root / "repodata" / "repomd.xml"
    tree = lxml.etree.parse(str(repomd))
    for data in tree.getroot().iter(f"{repo_ns}data"):
        location = data.find(f"{repo_ns}location")
        href = location.get("href")
        if not href.endswith(".gz"):
            continue
        raw = gzip.decompress((root / href).read_bytes())
        packed = zstandard.ZstdCompressor().compress(raw)
        new_href = href[:-3] + ".zst"
        (root / new_href).write_bytes(packed)
        (root / href).unlink()
        location.set("href", new_href)
        digest = data.find(f"{repo_ns}checksum")
        digest.set("type", "sha256")
        digest.text = hashlib.sha256(packed).hexdigest()
        size = data.find(f"{repo_ns}size")
        if size is not None:
            size.text = str(len(packed))
    tree.write(str(repomd), xml_declaration=True, encoding="UTF-8")


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_pacman_db(root: Path, repo: str, arch: str, packages: list[dict[str, list[str]]],
                   compression: str = "gz") -> Path:
    """``root/<repo>/os/<arch>/<repo>.db``: one ``desc`` per package (NAME, DEPENDS...)."""
    members = {}
    for pkg in packages:
        name = pkg["NAME"][0]
        text = "".join(f"%{key}%\n" + "\n".join(values) + "\n\n" for key, values in
                       {"VERSION": ["1.0-1"], "ARCH": [arch], **pkg}.items())
        members[f"{name}-1.0-1/desc"] = text.encode()
    data = _tar(members)
    data = gzip.compress(data) if compression == "gz" else \
        zstandard.ZstdCompressor().compress(data)
    target = root / repo / "os" / arch / f"{repo}.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def make_pkgng_site(root: Path, abi: str, component: str, packages: list[dict[str, object]],
                    name: str = "packagesite.pkg") -> Path:
    """``root/<abi>/<component>/packagesite.pkg``: an xz tar of packagesite.yaml."""
    yaml = "\n".join(json.dumps(p) for p in packages).encode() + b"\n"
    target = root / abi / component / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(lzma.compress(_tar({"packagesite.yaml": yaml})))
    return target


class Served:
    """What ``serve`` gives a test: the base URL and switches per path."""

    def __init__(self) -> None:
        self.url = ""
        self.html: set[str] = set()
        self.missing: set[str] = set()
        self.hang: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.release = threading.Event()


@contextlib.contextmanager
def serve(root: Path) -> Iterator[Served]:
    """Serve ``root`` on 127.0.0.1 (port 0) until the block ends."""
    served = Served()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?")[0]
            served.requests[path] += 1
            if path in served.hang:
                served.release.wait()
                return
            if path in served.html or path in served.missing:
                body = b"<html><body>Not here</body></html>"
                self.send_response(200 if path in served.html else 404)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield served
    finally:
        served.release.set()
        server.shutdown()
        server.server_close()
        thread.join()
