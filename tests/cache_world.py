"""A small repository that random steps change (repository edits, probe uploads,
metadata changes), and a configuration built with nothing kept: what the
randomised configuration-cache tests of every core compare with."""

from __future__ import annotations

import os
import random
import shutil

import lxml.etree
from conftest import Repo

from bcfg2.xml import tostring

PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Probes,Properties,GroupPatterns"
CLIENTS = [f"c{i}" for i in range(8)]
PROFILES = ["p0", "p1", "p2"]
GROUPS = [f"g{i}" for i in range(5)]
FILES = [f"/etc/f{i}" for i in range(8)]
PACKAGES = [f"pkg{i}" for i in range(6)]
SERVICES = [f"svc{i}" for i in range(3)]
BUNDLES = [f"b{i}" for i in range(4)]
#: a Genshi template; the last of FILES is a symlink in Rules until Cfg has it too
TEMPLATE = "/etc/f1"


class World:
    """The repository the random steps change, and a random step."""

    def __init__(self, repo: Repo, rng: random.Random) -> None:
        self.repo = repo
        self.rng = rng
        self.profile_groups = {p: sorted(rng.sample(GROUPS, 2)) for p in PROFILES}
        self.profile_bundles = {p: sorted(rng.sample(BUNDLES, 2)) for p in PROFILES}
        self.client_profile = {c: rng.choice(PROFILES) for c in CLIENTS}
        self.write_groups()
        self.write_clients()
        for bundle in BUNDLES:
            self.write_bundle(bundle)
        for path in FILES[:-1]:
            if path != TEMPLATE:
                self.cfg_file(path, "", f"all {path}\n")
        self.repo.write(f"Cfg{TEMPLATE}/f1.genshi",
                        "groups ${','.join(sorted(metadata.groups))}\n"
                        "{% for name in sorted(metadata.Probes) %}"
                        "${name}=${metadata.Probes[name]}\n{% end %}"
                        "{% if 'props.xml' in metadata.Properties %}"
                        "${metadata.Properties['props.xml'].xdata.get('color')}{% end %}\n")
        for i in range(2):
            self.write_rules(i)
        self.write_defaults()
        self.write_properties()
        for probe in ("os", "arch"):
            self.repo.write(f"Probes/{probe}", "#!/bin/sh\necho x\n")
        self.repo.write("GroupPatterns/config.xml",
                        "<GroupPatterns><GroupPattern><NamePattern>c[0-3]</NamePattern>"
                        "<Group>g4</Group></GroupPattern></GroupPatterns>")

    # -- the files ---------------------------------------------------------

    def write_groups(self) -> None:
        lines = ["<Groups>"]
        for profile in PROFILES:
            lines.append(f'<Group name="{profile}" profile="true" public="true">')
            lines += [f'<Group name="{g}"/>' for g in self.profile_groups[profile]]
            lines += [f'<Bundle name="{b}"/>' for b in self.profile_bundles[profile]]
            lines.append("</Group>")
        lines.append("</Groups>")
        self.repo.write("Metadata/groups.xml", "\n".join(lines))

    def write_clients(self) -> None:
        body = "".join(f'<Client name="{c}" profile="{p}" uuid="u-{c}" password="pw"/>'
                       for c, p in sorted(self.client_profile.items()))
        self.repo.write("Metadata/clients.xml", f'<Clients version="3.0">{body}</Clients>')

    def write_bundle(self, bundle: str) -> None:
        rng = self.rng
        items = []
        for path in rng.sample(FILES, 3):
            items.append(f'<Path name="{path}"/>')
        for pkg in rng.sample(PACKAGES, 2):
            items.append(f'<Group name="{rng.choice(GROUPS)}"><Package name="{pkg}"/></Group>')
        items.append(f'<Service name="{rng.choice(SERVICES)}"/>')
        if rng.random() < 0.3:
            items.append(f'<RequiredBundle name="{rng.choice(BUNDLES)}"/>')
        self.repo.write(f"Bundler/{bundle}.xml", f'<Bundle>{"".join(items)}</Bundle>')

    def cfg_file(self, path: str, suffix: str, text: str) -> None:
        base = os.path.basename(path)
        self.repo.write(f"Cfg{path}/{base}{suffix}", text)

    def write_rules(self, i: int) -> None:
        rng = self.rng
        items = [] if i else [f'<Path name="{FILES[-1]}" type="symlink" to="/x{rng.randint(0, 9)}"/>']
        for pkg in (rng.sample(PACKAGES, 4) if i else PACKAGES):
            items.append(f'<Package name="{pkg}" version="{rng.randint(1, 9)}.{i}"/>')
        for svc in (rng.sample(SERVICES, 2) if i else SERVICES):
            inner = f'<Service name="{svc}" status="{rng.choice(["on", "off"])}"/>'
            items.append(f'<Group name="{rng.choice(GROUPS)}">{inner}</Group>'
                         if i and rng.random() < 0.5 else inner)
        self.repo.write(f"Rules/r{i}.xml", f'<Rules priority="{i}">{"".join(items)}</Rules>')

    def write_defaults(self) -> None:
        value = self.rng.choice(["systemd", "chkconfig", "upstart"])
        self.repo.write("Defaults/d.xml", f'<Defaults priority="1"><Service name="svc.*" '
                                          f'type="{value}"/></Defaults>')

    def write_properties(self) -> None:
        color = self.rng.choice(["red", "green", "blue"])
        self.repo.write("Properties/props.xml", f'<Properties color="{color}"/>')

    # -- one random step -----------------------------------------------------

    def step(self, core) -> str:  # noqa: ANN001 - a LocalCore
        rng = self.rng
        kind = rng.choice(["cfg", "cfg", "cfg-version", "cfg-entry", "info", "bundle",
                           "bundle-file", "rules", "rules-file", "defaults", "groups",
                           "clients", "properties", "probes", "probes", "nothing"])
        path = rng.choice(FILES)
        base = os.path.basename(path)
        directory = self.repo.path / f"Cfg{path}"
        if kind == "cfg" and path == TEMPLATE:
            self.cfg_file(path, ".genshi", f"${{metadata.hostname}} {rng.randint(0, 9)}\n"
                          f"${{metadata.profile}}\n")
        elif kind == "cfg":
            self.cfg_file(path, "", f"{path} v{rng.randint(0, 1000)}\n")
        elif kind == "cfg-version" and path != FILES[-1]:
            suffix = rng.choice([f".G{rng.randint(1, 3)}_{rng.choice(GROUPS)}",
                                 f".H_{rng.choice(CLIENTS)}"])
            target = directory / f"{base}{suffix}"
            if target.exists():
                target.unlink()
            else:
                self.cfg_file(path, suffix, f"{path}{suffix}\n")
        elif kind == "cfg-entry" and path != TEMPLATE:
            # mostly bring back what is gone: a missing entry fails, and is not kept
            gone = [p for p in FILES[:-1] if not (self.repo.path / f"Cfg{p}").exists()]
            conflict = self.repo.path / f"Cfg{FILES[-1]}"
            if conflict.exists():  # Rules serves it too: a conflict, gone again next time
                shutil.rmtree(conflict)
            elif gone and rng.random() < 0.7:
                path = rng.choice(gone)
                self.cfg_file(path, "", f"new {path}\n")
            elif path == FILES[-1]:
                self.cfg_file(path, "", "conflict\n")
            elif directory.exists():
                shutil.rmtree(directory)
        elif kind == "info":
            info = directory / "info.xml"
            if info.exists() and rng.random() < 0.3:
                info.unlink()
            elif directory.exists():
                group = rng.choice(GROUPS)
                info.write_text(f'<FileInfo><Group name="{group}"><Info owner="o{rng.randint(0, 9)}"'
                                f'/></Group><Info mode="0{rng.randint(600, 777)}"/></FileInfo>')
        elif kind == "bundle":
            self.write_bundle(rng.choice(BUNDLES))
        elif kind == "bundle-file":
            target = self.repo.path / f"Bundler/{rng.choice(BUNDLES)}.xml"
            if target.exists():
                target.unlink()
            else:
                self.write_bundle(target.stem)
        elif kind == "rules":
            self.write_rules(rng.randint(0, 1))
        elif kind == "rules-file":
            target = self.repo.path / "Rules/r1.xml"
            if target.exists():
                target.unlink()
            else:
                self.write_rules(1)
        elif kind == "defaults":
            self.write_defaults()
        elif kind == "groups":
            profile = rng.choice(PROFILES)
            self.profile_groups[profile] = sorted(rng.sample(GROUPS, rng.randint(1, 3)))
            self.profile_bundles[profile] = sorted(rng.sample(BUNDLES, rng.randint(1, 3)))
            self.write_groups()
        elif kind == "clients":
            self.client_profile[rng.choice(CLIENTS)] = rng.choice(PROFILES)
            self.write_clients()
        elif kind == "properties":
            self.write_properties()
        elif kind == "probes":
            client = rng.choice(CLIENTS)
            probe = lxml.etree.Element("probe-data", name=rng.choice(["os", "arch"]),
                                       source="Probes")
            probe.text = f"value{rng.randint(0, 3)}\ngroup:{rng.choice(GROUPS)}"
            core.plugins["Probes"].ReceiveData(core.build_metadata(client), [probe])
        return kind


def from_scratch(core, client: str) -> str:  # noqa: ANN001 - a LocalCore
    """The client's configuration built with nothing kept: no configuration cache, no
    bound entry copied (``bcfg2.bindmemo``)."""
    memo = core.bind_memo
    limit, memo.max_entries = memo.max_entries, 0  # the same object: clears still reach it
    try:
        return tostring(core.BuildConfiguration(client))
    finally:
        memo.max_entries = limit
