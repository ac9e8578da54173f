"""A generated APT ``Packages`` file the size and shape of Debian main (for benchmarks).

``generate(63000)`` gives about 63,000 stanzas and 43,000 Provides: library
chains, ``a | b`` alternatives, versioned dependencies, virtual packages
with several providers, and an Essential set closed under its own
dependencies, with the fields (Maintainer, Filename, Size, SHA256,
Description...) that make a real index as large as it is.
"""

from __future__ import annotations

import hashlib
import random

ESSENTIAL = ["base-files", "bash", "coreutils", "dash", "debianutils", "diffutils", "dpkg",
             "findutils", "grep", "gzip", "hostname", "init-system-helpers", "libc-bin",
             "login", "ncurses-bin", "perl-base", "sed", "sysvinit-utils", "tar", "util-linux"]
ESSENTIAL_LIBS = ["libc6", "libgcc-s1", "gcc-12-base", "libtinfo6", "libselinux1", "libpcre2-8-0",
                  "libacl1", "libattr1", "libbz2-1.0", "liblzma5", "zlib1g", "libzstd1",
                  "libmd0", "libcrypt1", "libaudit1", "libpam0g", "libcap-ng0", "libsmartcols1",
                  "libblkid1", "libmount1", "libuuid1", "libudev1", "libsystemd0", "libgmp10"]


def generate(n_packages: int = 63000, seed: int = 0) -> bytes:
    """The Packages file as bytes (deterministic for a seed)."""
    rng = random.Random(seed)
    names = ESSENTIAL + ESSENTIAL_LIBS
    names += [f"pkg{i:05d}" if i % 3 else f"lib{i:05d}-{rng.randint(0, 9)}"
              for i in range(n_packages - len(names))]
    virtuals = [f"virtual-{i:05d}" for i in range(2500)]
    libraries = [n for n in names if n.startswith("lib")]
    #: the libraries most packages link against (as libc6, libssl3, libglib2.0-0 are)
    common = libraries[:400]
    stanzas = []
    provided = 0
    for position, name in enumerate(names):
        depends: list[str] = []
        if name in ESSENTIAL:
            depends = [f"{lib} (>= 2.{rng.randint(10, 36)})" for lib in
                       rng.sample(ESSENTIAL_LIBS, 3)]
        elif name in ESSENTIAL_LIBS:
            earlier = ESSENTIAL_LIBS[:ESSENTIAL_LIBS.index(name)]
            depends = [rng.choice(earlier)] if earlier else []
        elif name in common:
            earlier = common[:common.index(name)]
            depends = [rng.choice(ESSENTIAL_LIBS)] + ([rng.choice(earlier[-60:])]
                                                      if earlier and rng.random() < 0.5 else [])
        else:
            for _ in range(rng.randint(0, 7)):
                roll = rng.random()
                if roll < 0.6:
                    depends.append(f"{rng.choice(common)} (>= {rng.randint(1, 9)}.{rng.randint(0, 9)})")
                elif roll < 0.8:
                    depends.append(f"{rng.choice(ESSENTIAL_LIBS)}")
                elif roll < 0.9:
                    depends.append(f"{rng.choice(common)} | {rng.choice(virtuals)}")
                elif roll < 0.95:
                    depends.append(rng.choice(names))
                else:
                    depends.append(rng.choice(virtuals) + (":any" if rng.random() < 0.2 else ""))
        provides = []
        if position > len(ESSENTIAL) + len(ESSENTIAL_LIBS):
            while rng.random() < 0.41 and provided < n_packages * 0.69:
                provides.append(rng.choice(virtuals) + (f" (= {rng.randint(1, 9)}.0)"
                                                       if rng.random() < 0.3 else ""))
                provided += 1
        version = f"{rng.randint(0, 3)}:{rng.randint(1, 30)}.{rng.randint(0, 99)}-{rng.randint(1, 9)}"
        lines = [f"Package: {name}"]
        if name in ESSENTIAL:
            lines.append("Essential: yes")
        lines += [f"Version: {version}", "Installed-Size: " + str(rng.randint(10, 90000)),
                  "Maintainer: Debian Example Maintainers <maint@example.org>",
                  f"Architecture: {'all' if rng.random() < 0.2 else 'amd64'}"]
        if provides:
            lines.append("Provides: " + ", ".join(provides))
        if depends:
            lines.append("Depends: " + ", ".join(depends))
        if rng.random() < 0.2:
            lines.append(f"Recommends: {rng.choice(names)}")
        digest = hashlib.sha256(name.encode()).hexdigest()
        lines += [f"Description: the {name} package",
                  f"Homepage: https://example.org/{name}",
                  f"Description-md5: {digest[:32]}", "Section: misc", "Priority: optional",
                  f"Filename: pool/main/{name[0]}/{name}/{name}_{version}_amd64.deb",
                  f"Size: {rng.randint(1000, 9000000)}", f"SHA256: {digest}"]
        stanzas.append("\n".join(lines) + "\n")
    return "\n".join(stanzas).encode()
