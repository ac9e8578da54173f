"""Generate Bcfg2 repositories of a chosen shape for the benchmarks.

A repository is described by a ``RepoSpec`` (how many clients, profiles,
groups, bundles, Cfg entries and versions per entry, how big each file is)
and written by ``generate``, which returns a ``Repository`` that knows what
it wrote: every client's uuid and password, and which file of an entry a
client is served. The same spec always gives the same repository.

The shape, from the top:

- ``profiles`` profile groups ``bench-p<N>``; client ``c<N>.bench.example``
  has profile ``N % profiles`` and its own uuid and password (floating, so
  agents on 127.0.0.1 identify themselves by uuid), and is recorded with
  version ``AGENT_VERSION``, as if each agent had run once;
- profile ``P`` includes ``groups_per_profile`` plain groups, ``bench-g<M>``
  for ``M = P * groups_per_profile + j`` (modulo ``groups``);
- bundle ``bench-b<K>`` belongs to group ``K % groups``; a client gets the
  bundles of its groups;
- Cfg entry ``E`` is ``/etc/bench/b<K>/e<E>.conf`` with ``K = E % bundles``,
  listed in bundle ``K``. It has ``files_per_entry`` versions: the file for
  all clients, then alternately a group-specific one (``.G<prio>_<group>``,
  a priority unique within the entry) and a host-specific one
  (``.H_<client>``).

Optional parts (all 0 by default, so the specs above stay as they were):

- ``info_every``: every Nth Cfg entry (``E % N == 0``) has an ``info.xml``
  giving its owner, group and mode, with a group-specific ``<Info>`` for
  members of ``bench-g<(E + 2) % groups>`` and a default one for the others;
- ``packages`` and ``services``: Package ``bench-pkg<I>`` and Service
  ``bench-svc<I>`` are listed in bundle ``I % bundles`` and bound by Rules:
  ``Rules/bench-base.xml`` (priority 10) holds every one of them, and
  ``Rules/bench-overrides.xml`` (priority 20) gives every fifth package
  another version for members of ``bench-g<(I + 1) % groups>``. Their
  ``type`` comes from ``Defaults/bench-defaults.xml`` (``deb`` and
  ``systemd``), except every tenth package, which sets ``type="rpm"``
  itself (Defaults never overrides an attribute that is set);
- ``templates``: how many of the Cfg entries (the first ones) stand for
  templates. Template entries are counted as plain: until the Cfg template
  handlers (``.jinja2``, ``.genshi``) exist, they are written as plain
  files of the same size, marked ``(template)`` in their first line, so
  that every entry of a generated repository binds;
- ``extra_entries``: Cfg entries no client gets, for a repository much larger
  than any configuration: extra entry ``X`` is ``/etc/bench/x<K>/x<X>.conf``
  with ``K = X % bundles``, listed in bundle ``bench-xb<K>``, which belongs to
  group ``bench-x<K % groups>``; no profile includes those groups. Each has
  ``files_per_entry`` versions chosen as for the other entries.

Files in total: ``entries * files_per_entry + bundles + 2`` (groups.xml and
clients.xml), plus one info.xml per ``info_every``-th entry, with
packages or services the two Rules files and the Defaults file, and
``extra_entries * files_per_entry`` more with one bundle per
``bench-xb<K>`` in use;
``Repository.files`` counts what was written.

Usage: python tests/bench/genrepo.py DIR [--startup | --load] [--entries N] [--clients N] ...
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, fields
from xml.sax.saxutils import quoteattr

#: the agent version every client is recorded with in clients.xml, as after each agent's
#: first run: an agent that declares it again (DeclareVersion) changes nothing on disk
AGENT_VERSION = "1.4.0pre2"

#: plugin directories the server expects (Rules and Defaults are empty without packages/services)
PLUGIN_DIRS = ("Metadata", "Bundler", "Cfg", "Rules", "Defaults")


@dataclass(frozen=True)
class RepoSpec:
    """The shape of a generated repository (see the module docstring)."""

    clients: int = 4
    profiles: int = 2
    groups: int = 2
    groups_per_profile: int = 1
    bundles: int = 2
    #: Cfg (Path) entries in total, spread evenly over the bundles
    entries: int = 40
    #: versions of each entry: one for all clients, then group- and host-specific ones
    files_per_entry: int = 1
    #: bytes of content in each Cfg file
    file_size: int = 512
    #: every Nth Cfg entry has an info.xml (0: none)
    info_every: int = 0
    #: Package entries from Rules, spread evenly over the bundles
    packages: int = 0
    #: Service entries from Rules, spread evenly over the bundles
    services: int = 0
    #: Cfg entries that stand for templates (written as plain files for now)
    templates: int = 0
    #: Cfg entries in bundles of groups no profile includes (so no client gets them)
    extra_entries: int = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            least = 0 if field.name in OPTIONAL_FIELDS else 1
            if getattr(self, field.name) < least:
                raise ValueError(f"{field.name} must be at least {least}")
        if self.groups_per_profile > self.groups:
            raise ValueError("groups_per_profile cannot exceed groups")
        if (self.files_per_entry - 1) // 2 > self.clients:
            raise ValueError("too few clients for that many host-specific versions")
        if self.templates > self.entries:
            raise ValueError("templates cannot exceed entries")

    @property
    def expected_files(self) -> int:
        """How many files ``generate`` writes for this spec."""
        infos = len(range(0, self.entries, self.info_every)) if self.info_every else 0
        rules = 3 if self.packages or self.services else 0
        extra = self.extra_entries * self.files_per_entry + self.extra_bundles
        return self.entries * self.files_per_entry + self.bundles + 2 + infos + rules + extra

    @property
    def extra_bundles(self) -> int:
        """How many ``bench-xb<K>`` bundles hold the extra entries."""
        return min(self.bundles, self.extra_entries)


#: the fields that may be 0 (the optional parts of a repository)
OPTIONAL_FIELDS = frozenset({"info_every", "packages", "services", "templates",
                             "extra_entries"})


#: a repository of about 20,000 files whose clients get about 300 entries each
STARTUP_SPEC = RepoSpec(clients=100, profiles=17, groups=50, groups_per_profile=3, bundles=50,
                        entries=5000, files_per_entry=4, file_size=512)

#: a small repository for measuring how fast an edit is served
LATENCY_SPEC = RepoSpec(clients=4, profiles=2, groups=2, groups_per_profile=1, bundles=2,
                        entries=40, files_per_entry=3, file_size=512)

#: the load benchmark: 1,000 clients whose configurations hold about 280 entries
#: (200 Paths, 60 Packages, 20 Services) and about 150 KB; about 7,000 files
LOAD_SPEC = RepoSpec(clients=1000, profiles=20, groups=40, groups_per_profile=4, bundles=80,
                     entries=2000, files_per_entry=3, file_size=560, info_every=4,
                     packages=600, services=200, templates=0)


@dataclass(frozen=True)
class Client:
    """A generated client and the credentials an agent uses for it."""

    name: str
    uuid: str
    password: str
    profile: str
    #: the profile and the groups it includes
    groups: frozenset[str]


class Repository:
    """A generated repository: where it is and what it holds."""

    def __init__(self, root: str, spec: RepoSpec) -> None:
        self.root = root
        self.spec = spec
        self.files = 0
        self.clients = [_client(spec, n) for n in range(spec.clients)]

    @property
    def cfg(self) -> str:
        return os.path.join(self.root, "Cfg")

    def entry_name(self, entry: int) -> str:
        """The client path of a Cfg entry (``/etc/bench/b3/e17.conf``)."""
        return f"/etc/bench/b{entry % self.spec.bundles}/e{entry}.conf"

    def entry_dir(self, entry: int) -> str:
        """The Cfg directory holding the versions of an entry."""
        return os.path.join(self.cfg, self.entry_name(entry).lstrip("/"))

    def extra_entry_name(self, extra: int) -> str:
        """The client path of an extra entry (``/etc/bench/x3/x17.conf``)."""
        return f"/etc/bench/x{extra % self.spec.bundles}/x{extra}.conf"

    def versions(self, entry: int) -> list[tuple[str, str | None, str | None, int]]:
        """The versions of an entry: (file name, group, host, priority)."""
        return self._versions(os.path.basename(self.entry_name(entry)), entry)

    def extra_versions(self, extra: int) -> list[tuple[str, str | None, str | None, int]]:
        """The versions of an extra entry, chosen as for the others."""
        return self._versions(os.path.basename(self.extra_entry_name(extra)), extra)

    def _versions(self, base: str, entry: int) -> list[tuple[str, str | None, str | None, int]]:
        out: list[tuple[str, str | None, str | None, int]] = [(base, None, None, 0)]
        for v in range(1, self.spec.files_per_entry):
            if v % 2:
                group = f"bench-g{(entry + v) % self.spec.groups}"
                prio = 10 + v
                out.append((f"{base}.G{prio}_{group}", group, None, prio))
            else:
                host = self.clients[(entry + v // 2 - 1) % self.spec.clients].name
                out.append((f"{base}.H_{host}", None, host, 0))
        return out

    def bundles_of(self, client: Client) -> list[int]:
        """The bundle numbers a client gets."""
        return [k for k in range(self.spec.bundles)
                if f"bench-g{k % self.spec.groups}" in client.groups]

    def entries_of(self, client: Client) -> list[int]:
        """The Cfg entries in a client's configuration, in entry order."""
        bundles = set(self.bundles_of(client))
        return [e for e in range(self.spec.entries) if e % self.spec.bundles in bundles]

    def packages_of(self, client: Client) -> list[int]:
        """The Package numbers in a client's configuration."""
        bundles = set(self.bundles_of(client))
        return [i for i in range(self.spec.packages) if i % self.spec.bundles in bundles]

    def services_of(self, client: Client) -> list[int]:
        """The Service numbers in a client's configuration."""
        bundles = set(self.bundles_of(client))
        return [i for i in range(self.spec.services) if i % self.spec.bundles in bundles]

    def expected_entries(self, client: Client) -> dict[str, int]:
        """How many entries of each tag a client's configuration holds."""
        return {"Path": len(self.entries_of(client)), "Package": len(self.packages_of(client)),
                "Service": len(self.services_of(client))}

    def has_info(self, entry: int) -> bool:
        """Whether the Cfg entry has an info.xml."""
        return bool(self.spec.info_every) and entry % self.spec.info_every == 0

    def is_template(self, entry: int) -> bool:
        """Whether the Cfg entry stands for a template (served as plain for now)."""
        return entry < self.spec.templates

    def served_file(self, entry: int, client: Client) -> str:
        """The path of the version of ``entry`` the server binds for ``client``."""
        best: tuple[int, int, str] = (1, 0, self.versions(entry)[0][0])
        for fname, group, host, prio in self.versions(entry)[1:]:
            if host == client.name:
                rank = (3, 0, fname)
            elif group is not None and group in client.groups:
                rank = (2, prio, fname)
            else:
                continue
            best = max(best, rank)
        return os.path.join(self.entry_dir(entry), best[2])


def _client(spec: RepoSpec, n: int) -> Client:
    p = n % spec.profiles
    members = {f"bench-g{(p * spec.groups_per_profile + j) % spec.groups}"
               for j in range(spec.groups_per_profile)}
    return Client(name=f"c{n}.bench.example", uuid=f"bench-uuid-{n:05d}",
                  password=f"bench-pw-{n:05d}", profile=f"bench-p{p}",
                  groups=frozenset(members | {f"bench-p{p}"}))


def content(label: str, size: int) -> str:
    """Deterministic text of about ``size`` bytes, starting with ``label``."""
    lines = [f"# {label}\n"]
    total = len(lines[0])
    n = 0
    while total < size:
        line = f"option{n} = {label}:{n}\n"
        lines.append(line)
        total += len(line)
        n += 1
    return "".join(lines)[:max(size, len(lines[0]))]


def _groups_xml(spec: RepoSpec) -> str:
    out = ["<Groups>"]
    for p in range(spec.profiles):
        default = ' default="true"' if p == 0 else ""
        out.append(f'  <Group name="bench-p{p}" profile="true" public="true"{default}>')
        for j in range(spec.groups_per_profile):
            out.append(f'    <Group name="bench-g{(p * spec.groups_per_profile + j) % spec.groups}"/>')
        out.append("  </Group>")
    for g in range(spec.groups):
        out.append(f'  <Group name="bench-g{g}">')
        for k in range(g, spec.bundles, spec.groups):
            out.append(f'    <Bundle name="bench-b{k}"/>')
        out.append("  </Group>")
    for g in range(min(spec.groups, spec.extra_bundles)):
        out.append(f'  <Group name="bench-x{g}">')
        for k in range(g, spec.extra_bundles, spec.groups):
            out.append(f'    <Bundle name="bench-xb{k}"/>')
        out.append("  </Group>")
    out.append("</Groups>")
    return "\n".join(out) + "\n"


def _clients_xml(clients: list[Client]) -> str:
    out = ['<Clients version="3.0">']
    for c in clients:
        out.append(f"  <Client name={quoteattr(c.name)} profile={quoteattr(c.profile)} "
                   f"uuid={quoteattr(c.uuid)} password={quoteattr(c.password)} "
                   f'floating="true" version="{AGENT_VERSION}"/>')
    out.append("</Clients>")
    return "\n".join(out) + "\n"


def _info_xml(spec: RepoSpec, entry: int) -> str:
    group = f"bench-g{(entry + 2) % spec.groups}"
    return (f'<FileInfo>\n  <Group name="{group}">\n'
            f'    <Info owner="bench" group="bench" mode="0640"/>\n  </Group>\n'
            f'  <Info owner="root" group="adm" mode="0644"/>\n</FileInfo>\n')


def _rules_base_xml(spec: RepoSpec) -> str:
    out = ['<Rules priority="10">']
    for i in range(spec.packages):
        kind = ' type="rpm"' if i % 10 == 0 else ""
        out.append(f'  <Package name="bench-pkg{i}" version="1.{i}-1"{kind}/>')
    for i in range(spec.services):
        status = "off" if i % 4 == 0 else "on"
        out.append(f'  <Service name="bench-svc{i}" status="{status}"/>')
    out.append("</Rules>")
    return "\n".join(out) + "\n"


def _rules_overrides_xml(spec: RepoSpec) -> str:
    out = ['<Rules priority="20">']
    for i in range(0, spec.packages, 5):
        out.append(f'  <Group name="bench-g{(i + 1) % spec.groups}">')
        out.append(f'    <Package name="bench-pkg{i}" version="2.{i}-1"/>')
        out.append("  </Group>")
    out.append("</Rules>")
    return "\n".join(out) + "\n"


def generate(root: str, spec: RepoSpec) -> Repository:
    """Write the repository described by ``spec`` into ``root`` (created if missing)."""
    repo = Repository(root, spec)
    for name in PLUGIN_DIRS:
        os.makedirs(os.path.join(root, name), exist_ok=True)

    def write(path: str, text: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        repo.files += 1

    write(os.path.join(root, "Metadata", "groups.xml"), _groups_xml(spec))
    write(os.path.join(root, "Metadata", "clients.xml"), _clients_xml(repo.clients))
    for k in range(spec.bundles):
        items = "".join(f'  <Path name="{repo.entry_name(e)}"/>\n'
                        for e in range(k, spec.entries, spec.bundles))
        items += "".join(f'  <Package name="bench-pkg{i}"/>\n'
                         for i in range(k, spec.packages, spec.bundles))
        items += "".join(f'  <Service name="bench-svc{i}"/>\n'
                         for i in range(k, spec.services, spec.bundles))
        write(os.path.join(root, "Bundler", f"bench-b{k}.xml"), f"<Bundle>\n{items}</Bundle>\n")
    for e in range(spec.entries):
        directory = repo.entry_dir(e)
        os.makedirs(directory, exist_ok=True)
        for fname, _group, _host, _prio in repo.versions(e):
            label = f"{repo.entry_name(e)} {fname}"
            if repo.is_template(e):
                label += " (template)"
            write(os.path.join(directory, fname), content(label, spec.file_size))
        if repo.has_info(e):
            write(os.path.join(directory, "info.xml"), _info_xml(spec, e))
    for k in range(spec.extra_bundles):
        items = "".join(f'  <Path name="{repo.extra_entry_name(x)}"/>\n'
                        for x in range(k, spec.extra_entries, spec.bundles))
        write(os.path.join(root, "Bundler", f"bench-xb{k}.xml"), f"<Bundle>\n{items}</Bundle>\n")
    for x in range(spec.extra_entries):
        directory = os.path.join(repo.cfg, repo.extra_entry_name(x).lstrip("/"))
        os.makedirs(directory, exist_ok=True)
        for fname, _group, _host, _prio in repo.extra_versions(x):
            write(os.path.join(directory, fname),
                  content(f"{repo.extra_entry_name(x)} {fname}", spec.file_size))
    if spec.packages or spec.services:
        write(os.path.join(root, "Rules", "bench-base.xml"), _rules_base_xml(spec))
        write(os.path.join(root, "Rules", "bench-overrides.xml"), _rules_overrides_xml(spec))
        write(os.path.join(root, "Defaults", "bench-defaults.xml"),
              '<Defaults priority="1">\n  <Package name=".*" type="deb"/>\n'
              '  <Service name=".*" type="systemd"/>\n</Defaults>\n')
    return repo


def main(argv: list[str] | None = None) -> int:
    """Command line: write a repository into a directory."""
    parser = argparse.ArgumentParser(description="Generate a Bcfg2 repository for benchmarks.")
    parser.add_argument("directory")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--startup", action="store_true",
                        help="start from the ~20,000-file start-up spec instead of the small one")
    preset.add_argument("--load", action="store_true",
                        help="start from the 1,000-client load spec instead of the small one")
    for field in fields(RepoSpec):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=int, dest=field.name)
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in fields(RepoSpec)
              if getattr(args, f.name) is not None}
    base = STARTUP_SPEC if args.startup else LOAD_SPEC if args.load else LATENCY_SPEC
    spec = dataclasses.replace(base, **values)
    repo = generate(args.directory, spec)
    print(f"wrote {repo.files} files for {spec.clients} clients into {args.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
