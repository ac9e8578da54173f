"""The checks bcfg2-lint runs; each is registered with its error names and default levels."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator

import lxml.etree

from bcfg2.lint import schemas
from bcfg2.lint.base import Context, Finding, check, has_fallback, includes, is_genshi, shorten
from bcfg2.migration import REMOVED_PLUGINS, agent_protocol, cfg_path, random_seeds
from bcfg2.plugin import (
    SPECIFIC_SUFFIX,
    BundleInfo,
    Generator,
    PackageSources,
    Structure,
    flatten_conditions,
)
from bcfg2.plugins.packages.sources import SourceProblem, parse_source
from bcfg2.python2 import (
    check_cheetah,
    check_genshi,
    check_python,
    cheetah_code,
    cheetah_python,
    genshi_code,
    upstream_imports,
)
from bcfg2.templates import (
    TemplateSyntaxError,
    compile_cheetah,
    compile_genshi,
    compile_jinja2,
    sandboxed_environment,
)
from bcfg2.xml import XI_INCLUDE

JINJA2_BUNDLE = ".xml.jinja2"
#: a group name computed by a template: ``${...}``, ``{{ ... }}`` or ``$1``
TEMPLATED = re.compile(r"\$|\{")


# -- helpers -------------------------------------------------------------------

def bundle_files(ctx: Context) -> list[str]:
    """Every bundle file Bundler reads."""
    return ctx.files("Bundler", lambda p: p.endswith((".xml", ".genshi", JINJA2_BUNDLE)))


def bundle_name(path: str) -> str:
    base = os.path.basename(path)
    if base.endswith(JINJA2_BUNDLE):
        return base[:-len(JINJA2_BUNDLE)]
    return os.path.splitext(base)[0]


def structfiles(ctx: Context) -> list[str]:
    """XML files with Group/Client conditionals, in every enabled plugin that has them."""
    out = [p for p in bundle_files(ctx) if not p.endswith(JINJA2_BUNDLE)]
    for plugin in ("Rules", "Defaults", "Decisions", "Deps", "Properties", "Pkgmgr"):
        out += ctx.files(plugin, lambda p: p.endswith(".xml"), recursive=plugin != "Properties")
    out += ctx.files("Cfg", lambda p: os.path.basename(p) == "info.xml")
    out += [path for path, _tree in sources_files(ctx)]
    acl = os.path.join(ctx.repository, "ACL", "metadata.xml")
    if ctx.enabled("ACL") and os.path.isfile(acl):
        out.append(acl)
    return out


def sources_files(ctx: Context) -> list[tuple[str, lxml.etree._ElementTree]]:
    """Packages/sources.xml and the files it includes, parsed on their own."""
    path = os.path.join(ctx.repository, "Packages", "sources.xml")
    if not ctx.enabled("Packages") or not os.path.isfile(path):
        return []
    return ctx.with_includes(path)


def elements(tree: lxml.etree._ElementTree, tag: str) -> Iterator[lxml.etree._Element]:
    yield from tree.getroot().iter(tag)


def metadata_files(ctx: Context, name: str) -> list[tuple[str, lxml.etree._ElementTree]]:
    """Metadata/<name> and the files it includes, parsed on their own."""
    path = os.path.join(ctx.repository, "Metadata", name)
    if not ctx.enabled("Metadata") or not os.path.isfile(path):
        return []
    return ctx.with_includes(path)


def known_bundles(ctx: Context) -> dict[str, tuple[Structure, BundleInfo]]:
    """Every bundle the structure plugins know, with the plugin that builds it."""
    out: dict[str, tuple[Structure, BundleInfo]] = {}
    for plugin in ctx.core.plugins_by_type(Structure):
        for name in plugin.list_bundles():
            info = plugin.bundle_info(name)
            if info is not None:
                out.setdefault(name, (plugin, info))
    return out


def line_of(tree: lxml.etree._ElementTree | None, tag: str, name: str) -> int | None:
    """The line of the first ``<tag name=...>`` in a file, if there is one."""
    if tree is None:
        return None
    for el in tree.getroot().iter(tag):
        if el.get("name") == name or el.get("altsrc") == name:
            return el.sourceline
    return None


# -- Validate ------------------------------------------------------------------

@check("Validate", xml_failed_to_parse="error", xml_failed_to_verify="error",
       xinclude_failed="error")
def validate(ctx: Context) -> Iterator[Finding]:
    """Every XML file parses and matches the schema of its format."""
    done: set[str] = set()
    pending: list[tuple[str, str | None]] = []
    for plugin in sorted({fmt[0] for fmt in schemas.FORMATS} | {"Properties"}):
        for path in ctx.files(plugin, lambda p: p.endswith((".xml", ".genshi"))):
            relative = os.path.relpath(path, os.path.join(ctx.repository, plugin))
            if plugin == "Properties":
                pending.append((path, None))
                continue
            schema = schemas.schema_for(plugin, relative)
            if schema is None:
                continue
            if plugin == "Bundler" and is_genshi(ctx.xml(path), path):
                schema = schemas.GENSHI_BUNDLE
            pending.append((path, schema))
    while pending:
        path, schema = pending.pop(0)
        if path in done:
            continue
        done.add(path)
        try:
            tree = lxml.etree.parse(path, _validating_parser())
        except lxml.etree.XMLSyntaxError as err:
            yield ctx.finding(path, err.lineno or None, "xml-failed-to-parse",
                              f"XML does not parse: {err.msg}")
            continue
        except OSError as err:
            yield ctx.finding(path, None, "xml-failed-to-parse", f"cannot read: {err}")
            continue
        for inc, targets in includes(tree, path):
            existing = [t for t in targets if os.path.isfile(t)]
            if not existing and not has_fallback(inc):
                yield ctx.finding(path, inc.sourceline, "xinclude-failed",
                                  f"XInclude of {inc.get('href')} finds no file")
            # an included file is checked against the schema of the file including it
            pending.extend((target, schema) for target in existing)
        if schema is not None:
            rng = schemas.load(schema)
            if not rng.validate(tree):
                yield from _schema_errors(ctx, path, schema, rng.error_log)
        elif path.endswith(".xml"):
            yield from _validate_property(ctx, path, tree)


def _validating_parser() -> lxml.etree.XMLParser:
    return lxml.etree.XMLParser(no_network=True, huge_tree=True, remove_comments=True)


def _validate_property(ctx: Context, path: str,
                       tree: lxml.etree._ElementTree) -> Iterator[Finding]:
    """A property file with an ``.xsd`` of the same name next to it must match it."""
    xsd = os.path.splitext(path)[0] + ".xsd"
    if not os.path.isfile(xsd):
        return
    try:
        schema = lxml.etree.XMLSchema(lxml.etree.parse(xsd, _validating_parser()))
    except (lxml.etree.XMLSyntaxError, lxml.etree.XMLSchemaParseError) as err:
        yield ctx.finding(xsd, None, "xml-failed-to-parse", f"schema does not load: {err}")
        return
    if not schema.validate(tree):
        yield from _schema_errors(ctx, path, os.path.basename(xsd), schema.error_log)


_EXTRA_CONTENT = re.compile(r"has extra content: (\S+)$")
_UNEXPECTED = re.compile(r"^Did not expect element (\S+) there")


def _schema_errors(ctx: Context, path: str, schema: str,
                   log: lxml.etree._ListErrorLog) -> Iterator[Finding]:
    """The most telling error libxml2 reports on each line (the others follow from it).

    libxml2 follows an invalid child with "<parent> has extra content" at the
    parent's first child, and a bad attribute of an element with children
    with "Expecting an element ..., got nothing" on the same line and a copy
    without a line; when a more precise error exists, that one is kept. An
    unexpected first child is reported ("Did not expect element X there") on
    its parent's line: the "has extra content: X" that follows gives X's own.
    """
    entries = list(log)
    extra = [(m.group(1), e.line) for e in entries
             if e.line and (m := _EXTRA_CONTENT.search(e.message))]
    precise = [e for e in entries if "has extra content" not in e.message] or entries
    precise = [e for e in precise if e.line] or precise
    by_line: dict[int | None, list[str]] = {}
    for entry in precise:
        line = entry.line or None
        unexpected = _UNEXPECTED.search(entry.message)
        if unexpected and line:
            line = min((at for name, at in extra if name == unexpected.group(1) and at >= line),
                       default=line)
        by_line.setdefault(line, []).append(entry.message)
    for line, messages in by_line.items():
        telling = [m for m in messages if not m.startswith("Expecting an element")] or messages
        yield ctx.finding(path, line, "xml-failed-to-verify",
                          f"does not match {schema}: {telling[0]}")


# -- Generators ----------------------------------------------------------------

@check("Generators", unbound_entry="error", conflicting_generators="error",
       bundle_render_failed="error")
def generators(ctx: Context) -> Iterator[Finding]:
    """Every entry of every client's bundles has exactly one generator."""
    if not ctx.enabled("Bundler"):
        return
    core = ctx.core
    files = known_bundles(ctx)
    problems: dict[tuple[str, str, str, str], set[str]] = {}
    failures: dict[str, tuple[str, set[str]]] = {}
    for client in sorted(core.metadata.list_clients()):
        try:
            metadata = core.build_metadata(client)
        except Exception:  # reported by the Metadata checks (or the core's log with -v)
            continue
        for name in sorted(metadata.bundles):
            plugin, bundle = files.get(name, (None, None))
            if plugin is not None and bundle.template and bundle.in_service and bundle.path:
                try:
                    plugin.render_bundle(name, metadata, resolve_conditionals=False)
                except Exception as err:
                    failures.setdefault(bundle.path, (str(err), set()))[1].add(client)
        for structure in core.GetStructures(metadata):
            bundle = files.get(structure.get("name", ""), (None, None))[1]
            source = (bundle.path or "") if bundle is not None else ""
            for entry in structure:
                if not isinstance(entry.tag, str) or entry.tag.startswith("Bound") \
                        or entry.tag == "Bundle":
                    continue
                kind = _generator_problem(core, entry, metadata)
                if kind:
                    key = (source, entry.tag, entry.get("name", ""), kind)
                    problems.setdefault(key, set()).add(client)
    for (source, tag, name, kind), clients in sorted(problems.items()):
        path = source or os.path.join(ctx.repository, "Bundler")
        line = line_of(ctx.xml(source), tag, name) if source else None
        who = shorten(clients, ctx.verbose)
        if kind == "none":
            yield ctx.finding(path, line, "unbound-entry",
                              f"{tag} {name} has no generator for clients {who}")
        else:
            yield ctx.finding(path, line, "conflicting-generators",
                              f"{tag} {name} has more than one generator ({kind}) for "
                              f"clients {who}")
    for source, (message, clients) in sorted(failures.items()):
        where, _, rest = message.partition(": ")
        line = None
        if where.startswith(source + ":") and where[len(source) + 1:].isdigit():
            line = int(where[len(source) + 1:])
            message = rest
        yield ctx.finding(source, line, "bundle-render-failed",
                          f"bundle template fails for clients {shorten(clients, ctx.verbose)}: "
                          f"{message}")


def _generator_problem(core: object, entry: lxml.etree._Element, metadata: object) -> str:
    """"none", the names of competing generators, or "" when one generator binds it."""
    candidates = [entry]
    if entry.get("altsrc"):
        alt = lxml.etree.Element(entry.tag, attrib=dict(entry.attrib))
        alt.set("name", entry.get("altsrc"))
        alt.set("realname", entry.get("name", ""))
        del alt.attrib["altsrc"]
        candidates.insert(0, alt)
    for candidate in candidates:
        handlers = core.generators_for(candidate, metadata)  # type: ignore[attr-defined]
        if len(handlers) == 1:
            return ""
        if handlers:
            return ", ".join(gen.name for gen, _ in handlers)
    return "none"


# -- Duplicates ----------------------------------------------------------------

@check("Duplicates", duplicate_entry="error", duplicate_group="error",
       duplicate_client="error")
def duplicates(ctx: Context) -> Iterator[Finding]:
    """The same entry, group or client given twice where only one can count."""
    for path in bundle_files(ctx):
        tree = ctx.xml(path)
        if path.endswith(JINJA2_BUNDLE) or tree is None or is_genshi(tree, path):
            continue
        seen: dict[tuple[str, str], list[tuple[frozenset, int]]] = {}
        for conds, el in flatten_conditions(tree.getroot()):
            if not isinstance(el.tag, str) or el.get("name") is None or el.tag == XI_INCLUDE:
                continue
            key = (el.tag, el.get("name"))
            cset = frozenset(conds)
            for other, line in seen.get(key, []):
                if other <= cset or cset <= other:
                    yield ctx.finding(path, el.sourceline, "duplicate-entry",
                                      f"{el.tag} {key[1]} is listed twice in bundle "
                                      f"{bundle_name(path)} (also at line {line})")
                    break
            seen.setdefault(key, []).append((cset, el.sourceline))
    for plugin in ("Rules", "Defaults"):
        for path in ctx.files(plugin, lambda p: p.endswith(".xml")):
            tree = ctx.xml(path)
            if tree is None:
                continue
            lines: dict[tuple[str, str, frozenset], int] = {}
            for conds, el in flatten_conditions(tree.getroot()):
                if not isinstance(el.tag, str) or el.get("name") is None:
                    continue
                key3 = (el.tag, el.get("name"), frozenset(conds))
                if key3 in lines:
                    yield ctx.finding(path, el.sourceline, "duplicate-entry",
                                      f"{el.tag} {key3[1]} is given twice under the same "
                                      f"conditions (also at line {lines[key3]})")
                else:
                    lines[key3] = el.sourceline
    declared: dict[str, tuple[str, int]] = {}
    for path, tree in metadata_files(ctx, "groups.xml"):
        for el in _top_groups(tree.getroot()):
            if not any(attr in el.attrib for attr in ("profile", "public", "default",
                                                      "category", "comment")):
                continue
            name = el.get("name", "")
            if name in declared:
                other, line = declared[name]
                also = f"line {line}" if other == path else f"{ctx.relative(other)}:{line}"
                yield ctx.finding(path, el.sourceline, "duplicate-group",
                                  f"group {name} is declared twice (also at {also})")
            else:
                declared[name] = (path, el.sourceline)
    clients: dict[str, tuple[str, int]] = {}
    for path, tree in metadata_files(ctx, "clients.xml"):
        for el in elements(tree, "Client"):
            name = el.get("name", "").lower()
            if not name:
                continue
            if name in clients:
                other, line = clients[name]
                also = f"line {line}" if other == path else f"{ctx.relative(other)}:{line}"
                yield ctx.finding(path, el.sourceline, "duplicate-client",
                                  f"client {name} is listed twice (also at {also})")
            else:
                clients[name] = (path, el.sourceline)


def _top_groups(root: lxml.etree._Element) -> Iterator[lxml.etree._Element]:
    """The Group elements at the top of groups.xml (nested <Groups> included)."""
    for child in root:
        if child.tag == "Groups":
            yield from _top_groups(child)
        elif child.tag == "Group":
            yield child


# -- InfoXML -------------------------------------------------------------------

@check("InfoXML", required_infoxml_attrs_missing="error")
def infoxml(ctx: Context) -> Iterator[Finding]:
    """Every <Info> of a Cfg info.xml sets the attributes of [InfoXML] required_attrs."""
    for path in ctx.files("Cfg", lambda p: os.path.basename(p) == "info.xml"):
        tree = ctx.xml(path)
        if tree is None:
            continue
        entry = "/" + ctx.relative(os.path.dirname(path)).split(os.sep, 1)[-1]
        for info in elements(tree, "Info"):
            missing = [attr for attr in ctx.required_attrs if attr not in info.attrib]
            if missing:
                yield ctx.finding(path, info.sourceline, "required-infoxml-attrs-missing",
                                  f"Info for {entry} does not set {', '.join(missing)}")


# -- Genshi, Jinja2 and Cheetah -----------------------------------------------

@check("Genshi", genshi_syntax_error="error")
def genshi_templates(ctx: Context) -> Iterator[Finding]:
    """Genshi templates compile: Cfg .genshi files, Genshi bundles, GroupLogic."""
    # encrypted templates (*.crypt.genshi) hold ciphertext, not Genshi
    for path in ctx.files("Cfg", lambda p: p.endswith(".genshi") and not p.endswith(".crypt.genshi")):
        yield from _genshi(ctx, path, markup=False)
    markup = [p for p in bundle_files(ctx) if not p.endswith(JINJA2_BUNDLE)]
    logic = os.path.join(ctx.repository, "GroupLogic", "groups.xml")
    if ctx.enabled("GroupLogic") and os.path.isfile(logic):
        markup.append(logic)
    for path in markup:
        tree = ctx.xml(path)
        if tree is not None and is_genshi(tree, path):
            yield from _genshi(ctx, path, markup=True)


def _genshi(ctx: Context, path: str, markup: bool) -> Iterator[Finding]:
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        compile_genshi(path, data, markup=markup)
    except TemplateSyntaxError as err:
        yield ctx.finding(path, err.line, "genshi-syntax-error",
                          f"Genshi template does not compile: {err.reason}")


@check("Python2", python2_code="error")
def python2_code(ctx: Context) -> Iterator[Finding]:
    """Python 2 code in Genshi and Cheetah templates and TemplateHelper modules, with its
    Python 3 form."""
    for path, kind in template_sources(ctx):
        with open(path, "rb") as fh:
            data = fh.read()
        if kind == "cheetah":
            found = check_cheetah(data)
        elif kind == "python":
            found = check_python(data.decode("utf-8", "replace"))
        else:
            found = check_genshi(data, markup=kind == "markup")
        for item in found:
            yield ctx.finding(path, item.line, "python2-code", item.message)


def template_sources(ctx: Context) -> list[tuple[str, str]]:
    """Every repository file that holds template or helper code, with its kind: ``text``
    (Cfg's Genshi text templates), ``cheetah``, ``markup`` (Genshi bundles, GroupLogic's
    groups.xml) or ``python`` (TemplateHelper modules, Ldap's config.py)."""
    sources = [(path, "text") for path in ctx.files("Cfg", lambda p: p.endswith(".genshi"))]
    sources += [(path, "cheetah") for path in ctx.files("Cfg", lambda p: p.endswith(".cheetah"))]
    markup = [p for p in bundle_files(ctx) if not p.endswith(JINJA2_BUNDLE)]
    logic = os.path.join(ctx.repository, "GroupLogic", "groups.xml")
    if os.path.isfile(logic):
        markup.append(logic)
    sources += [(path, "markup") for path in markup if is_genshi(ctx.xml(path), path)]
    sources += [(path, "python") for path in ctx.files(
        "TemplateHelper", lambda p: p.endswith(".py"), recursive=False)]
    ldap = os.path.join(ctx.repository, "Ldap", "config.py")
    if os.path.isfile(ldap):
        sources.append((ldap, "python"))
    return sources


def code_fragments(kind: str, data: bytes, cheetah_expressions: bool = False,
                   ) -> list[tuple[int, str, str]]:
    """The Python of one ``template_sources`` file: (first line, code, compile mode)
    fragments; a Cheetah template's ``$expressions`` too if asked."""
    if kind == "python":
        return [(1, data.decode("utf-8", "replace"), "exec")]
    if kind == "cheetah":
        return cheetah_code(data) + (cheetah_python(data) if cheetah_expressions else [])
    return genshi_code(data, markup=kind == "markup")


@check("UpstreamImports", upstream_import="warning")
def upstream_imports_check(ctx: Context) -> Iterator[Finding]:
    """Imports of upstream Bcfg2's modules that this server's ``Bcfg2`` package lacks."""
    for path, kind in template_sources(ctx):
        with open(path, "rb") as fh:
            data = fh.read()
        for first, code, mode in code_fragments(kind, data):
            for line, message in upstream_imports(code, first, mode):
                yield ctx.finding(path, line, "upstream-import", message)


# -- Migration: what changes for an upstream Bcfg2 1.4 site (docs/migrating.md) ----------

@check("Migration", removed_plugin="error", agent_tls_1_0="warning", upstream_state="warning",
       random_seed="warning")
def migration(ctx: Context) -> Iterator[Finding]:
    """What a site moving from upstream Bcfg2 1.4 changes: files of plugins that are gone,
    agents asking for TLS 1.0, upstream's state files, random.seed() in templates."""
    yield from _removed_plugins(ctx)
    yield from _agent_configs(ctx)
    yield from _upstream_state(ctx)
    yield from _random_seeds(ctx)


def _removed_plugins(ctx: Context) -> Iterator[Finding]:
    """Every file in the directory of a plugin this server does not have, and where it goes."""
    for plugin, instead in REMOVED_PLUGINS.items():
        top = os.path.join(ctx.repository, plugin)
        if not os.path.isdir(top):
            continue
        paths = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not ctx.ignored(d))
            paths += [os.path.join(dirpath, f) for f in filenames if not ctx.ignored(f)]
        message = f"upstream Bcfg2's {plugin} is not part of this server: use {instead}"
        if not paths:
            yield ctx.finding(top, None, "removed-plugin", message)
        for path in sorted(paths):
            target = cfg_path(plugin, os.path.relpath(path, top))
            more = f"; move this file to {target[0]} ({target[1]})" if target else ""
            yield ctx.finding(path, None, "removed-plugin", message + more)


def _agent_configs(ctx: Context) -> Iterator[Finding]:
    """Agents' bcfg2.conf served by Cfg that ask for TLS 1.0, which the server refuses."""
    folder = os.path.join(ctx.repository, "Cfg", "etc", "bcfg2.conf")
    allowed = getattr(ctx.setup.communication, "tls_min_version", "1.2") == "1.0"
    server = ("this server allows it only while [communication] tls_min_version = 1.0"
              if allowed else "this server refuses TLS 1.0 (tls_min_version = "
              f"{getattr(ctx.setup.communication, 'tls_min_version', '1.2')})")
    for path in ctx.files("Cfg", lambda p: os.path.dirname(p) == folder
                          and not p.endswith((".crypt", "info.xml", ":info", ".xml"))):
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        for line, why in agent_protocol(text):
            yield ctx.finding(path, line, "agent-tls-1-0",
                              f"{why}, and {server}: write protocol = xmlrpc/ssl (TLS 1.2 or "
                              f"newer, whatever the agent's OpenSSL offers)")


def _conf_line(path: str, section: str, option: str) -> int | None:
    """The line of ``option`` in ``[section]`` of an ini file, if it is there."""
    current = ""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                header = re.match(r"\s*\[([^\]]+)\]", line)
                if header:
                    current = header.group(1).strip()
                elif current == section and re.match(rf"\s*{re.escape(option)}\s*[=:]", line):
                    return number
    except OSError:
        pass
    return None


def _upstream_state(ctx: Context) -> Iterator[Finding]:
    """Run-time state upstream kept in the repository or its database, which is not read here."""
    probed = os.path.join(ctx.repository, "Probes", "probed.xml")
    storage = getattr(getattr(ctx.setup, "probes", None), "storage", None)
    if os.path.isfile(probed) and storage != "xml":
        yield ctx.finding(probed, None, "upstream-state",
                          "upstream's probe data: this server keeps probe data under [server] "
                          "state_dir and does not read this file; import it with bcfg2-admin "
                          "dbcopy --from xml (or set [probes] storage = xml to keep it here)")
    database = os.path.join(ctx.repository, "etc", "bcfg2.sqlite")
    if os.path.isfile(database):
        yield ctx.finding(database, None, "upstream-state",
                          "upstream's database (Reporting's runs, and clients or probe data "
                          "with use_database): this server does not read it; its stores are "
                          "under [server] state_dir or in [database] engine = postgresql")
    conf = ctx.setup.config_file
    if conf is None:
        return
    raw = ctx.setup.raw
    for section, what in (("metadata", "clients"), ("probes", "probe data")):
        if raw.has_option(section, "use_database") and \
                raw.get(section, "use_database").strip().lower() in ("1", "yes", "true", "on"):
            yield Finding(conf, _conf_line(conf, section, "use_database"), "upstream-state",
                          f"[{section}] use_database: upstream kept {what} in its database, "
                          f"which this server does not read"
                          + ("; list the clients in Metadata/clients.xml" if section == "metadata"
                             else "; agents send their probe data again on their next run"))


def _random_seeds(ctx: Context) -> Iterator[Finding]:
    """random.seed() with a value in templates and helpers: other numbers on Python 3."""
    sources = []
    for path, kind in template_sources(ctx):
        with open(path, "rb") as fh:
            sources.append((path, code_fragments(kind, fh.read(), cheetah_expressions=True)))
    for path, fragments in sources:
        for line in random_seeds(fragments):
            yield ctx.finding(path, line, "random-seed",
                              "random.seed() with a value: Python 3 gives other numbers than "
                              "Python 2 for the same seed (a string seeds differently; randint, "
                              "randrange, choice and shuffle draw differently), so what it "
                              "picks for each client changes once; "
                              "bcfg2.migration.Python2Random(seed) draws Python 2's numbers")


@check("Jinja2", jinja2_syntax_error="error")
def jinja2_templates(ctx: Context) -> Iterator[Finding]:
    """Jinja2 templates compile: Cfg .jinja2 files and .xml.jinja2 bundles."""
    cfg = os.path.join(ctx.repository, "Cfg")
    cfg_env = sandboxed_environment(cfg, relative_includes=True)
    bundle_env = sandboxed_environment(os.path.join(ctx.repository, "Bundler"), autoescape=True)
    paths = [(p, cfg_env) for p in ctx.files(
        "Cfg", lambda p: p.endswith(".jinja2") and not p.endswith(".crypt.jinja2"))]
    paths += [(p, bundle_env) for p in bundle_files(ctx) if p.endswith(JINJA2_BUNDLE)]
    for path, env in paths:
        with open(path, "rb") as fh:
            data = fh.read()
        try:
            compile_jinja2(env, path, data)
        except TemplateSyntaxError as err:
            yield ctx.finding(path, err.line, "jinja2-syntax-error",
                              f"Jinja2 template does not compile: {err.reason}")


@check("Cheetah", cheetah_syntax_error="error")
def cheetah_templates(ctx: Context) -> Iterator[Finding]:
    """Cheetah templates compile: Cfg .cheetah files."""
    for path in ctx.files("Cfg", lambda p: p.endswith(".cheetah")
                          and not p.endswith(".crypt.cheetah")):
        with open(path, "rb") as fh:
            data = fh.read()
        try:
            compile_cheetah(path, data)
        except TemplateSyntaxError as err:
            yield ctx.finding(path, err.line, "cheetah-syntax-error",
                              f"Cheetah template does not compile: {err.reason}")


# -- GroupNames ----------------------------------------------------------------

@check("GroupNames", undefined_group="warning")
def group_names(ctx: Context) -> Iterator[Finding]:
    """Groups that are used but that nothing defines (probes may still assign them)."""
    defined, patterns = defined_groups(ctx)

    def known(name: str) -> bool:
        return name in defined or any(p.fullmatch(name) for p in patterns)

    for path, tree in metadata_files(ctx, "clients.xml"):
        for el in elements(tree, "Client"):
            profile = el.get("profile")
            if profile and not known(profile):
                yield ctx.finding(path, el.sourceline, "undefined-group",
                                  f"client {el.get('name')} has profile {profile}, "
                                  f"which no group definition declares")
    for path in structfiles(ctx):
        tree = ctx.xml(path)
        if tree is None:
            continue
        for el in elements(tree, "Group"):
            name = el.get("name")
            if name and not TEMPLATED.search(name) and not known(name):
                yield ctx.finding(path, el.sourceline, "undefined-group",
                                  f"group {name} is used here but never defined")
    for plugin in ("Cfg", "Probes", "Decisions"):
        for path in ctx.files(plugin):
            fname = os.path.basename(path)
            # .crypt before or after a template's extension (motd.G50_web.genshi.crypt)
            for ext in (".crypt", ".genshi", ".jinja2", ".cheetah", ".crypt"):
                if plugin == "Cfg" and fname.endswith(ext):
                    fname = fname[:-len(ext)]
            match = SPECIFIC_SUFFIX.search(fname)
            if match and match.group("group") and not known(match.group("group")):
                yield ctx.finding(path, None, "undefined-group",
                                  f"file is for group {match.group('group')}, which is "
                                  f"never defined")


def defined_groups(ctx: Context) -> tuple[set[str], list[re.Pattern[str]]]:
    """Groups that groups.xml, GroupPatterns or GroupLogic can give a client.

    Names computed from a pattern (``$1``) or a template become regular expressions.
    """
    names: set[str] = set()
    patterns: list[re.Pattern[str]] = []

    def add(name: str | None) -> None:
        if not name:
            return
        if TEMPLATED.search(name):
            parts = re.split(r"\$\d+|\$\{[^}]*\}|\$\w+|\{\{.*?\}\}", name)
            patterns.append(re.compile(".+".join(re.escape(p) for p in parts)))
        else:
            names.add(name)

    for _path, tree in metadata_files(ctx, "groups.xml"):
        for el in elements(tree, "Group"):
            add(el.get("name"))
    for plugin, fname in (("GroupPatterns", "config.xml"), ("GroupLogic", "groups.xml")):
        path = os.path.join(ctx.repository, plugin, fname)
        if not ctx.enabled(plugin) or not os.path.isfile(path):
            continue
        for _path, tree in ctx.with_includes(path):
            for el in elements(tree, "Group"):
                add(el.text.strip() if plugin == "GroupPatterns" and el.text else el.get("name"))
    return names, patterns


# -- CfgUnused -----------------------------------------------------------------

@check("CfgUnused", unused_cfg_entry="warning")
def cfg_unused(ctx: Context) -> Iterator[Finding]:
    """Cfg files for paths that no bundle lists (templated bundles rendered per client)."""
    if not ctx.enabled("Cfg"):
        return
    cfg = ctx.core.plugins.get("Cfg")
    if not isinstance(cfg, Generator):
        return
    used = set(used_paths(ctx))
    for name in sorted({name for tag, name in cfg.list_entries() if tag == "Path"}):
        if name not in used:
            path = os.path.join(ctx.repository, "Cfg", name.lstrip("/"))
            yield ctx.finding(path, None, "unused-cfg-entry",
                              f"Cfg has files for {name}, but no bundle lists it")


def used_paths(ctx: Context) -> Iterator[str]:
    """Names (and altsrc names) of every Path a bundle or a dependency lists."""
    def of(root: lxml.etree._Element) -> Iterator[str]:
        for el in root.iter("Path", "BoundPath"):
            yield from (v for v in (el.get("name"), el.get("altsrc")) if v)

    for path in bundle_files(ctx) + ctx.files("Deps", lambda p: p.endswith(".xml")):
        tree = ctx.xml(path)
        if tree is not None and not is_genshi(tree, path):
            yield from of(tree.getroot())
    if not ctx.enabled("Bundler"):
        return
    templated = [(plugin, name) for name, (plugin, info) in known_bundles(ctx).items()
                 if info.template and info.in_service]
    if not templated:
        return
    for client in ctx.core.metadata.list_clients():
        try:
            metadata = ctx.core.build_metadata(client)
        except Exception:
            continue
        for plugin, name in templated:
            try:
                yield from of(plugin.render_bundle(name, metadata, resolve_conditionals=False))
            except Exception:  # reported by the Generators check
                continue


# -- Bundles, Metadata, RequiredAttrs, Probes ---------------------------------

@check("Bundles", bundle_not_found="error", unused_bundle="warning")
def bundles(ctx: Context) -> Iterator[Finding]:
    """Bundles named in groups.xml or RequiredBundle exist; every bundle is used."""
    if not ctx.enabled("Bundler"):
        return
    existing = {bundle_name(p) for p in bundle_files(ctx)}
    referenced: set[str] = set()
    refs: list[tuple[str, int, str]] = []
    for path, tree in metadata_files(ctx, "groups.xml"):
        for el in elements(tree, "Bundle"):
            if el.get("name"):
                refs.append((path, el.sourceline, el.get("name")))
    for path in bundle_files(ctx):
        tree = ctx.xml(path)
        if tree is not None:
            refs += [(path, el.sourceline, el.get("name")) for el in elements(tree, "RequiredBundle")
                     if el.get("name")]
    for path, line, name in refs:
        referenced.add(name)
        if name not in existing and not TEMPLATED.search(name):
            yield ctx.finding(path, line, "bundle-not-found",
                              f"bundle {name} does not exist in Bundler/")
    if not metadata_files(ctx, "groups.xml"):
        return
    for path in bundle_files(ctx):
        if bundle_name(path) not in referenced:
            yield ctx.finding(path, None, "unused-bundle",
                              f"bundle {bundle_name(path)} is not given to any group")


@check("Metadata", not_a_profile_group="warning", multiple_default_groups="warning")
def metadata(ctx: Context) -> Iterator[Finding]:
    """A client's profile in clients.xml is a group declared with profile="true"."""
    yield from _multiple_defaults(ctx)
    profiles: set[str] = set()
    declared: set[str] = set()
    for _path, tree in metadata_files(ctx, "groups.xml"):
        for el in elements(tree, "Group"):
            declared.add(el.get("name", ""))
            if el.get("profile", "false").lower() in ("true", "1", "yes", "on"):
                profiles.add(el.get("name", ""))
    for path, tree in metadata_files(ctx, "clients.xml"):
        for el in elements(tree, "Client"):
            profile = el.get("profile")
            if profile and profile in declared and profile not in profiles:
                yield ctx.finding(path, el.sourceline, "not-a-profile-group",
                                  f"client {el.get('name')} has profile {profile}, which is "
                                  f"not a profile group (profile=\"true\" in groups.xml)")


def _multiple_defaults(ctx: Context) -> Iterator[Finding]:
    """More than one group with default="true": the server uses the last one, as Bcfg2 does."""
    top: list[tuple[str, lxml.etree._Element]] = []
    nested: list[tuple[str, lxml.etree._Element]] = []
    for path, tree in metadata_files(ctx, "groups.xml"):
        outer = list(_top_groups(tree.getroot()))
        top += [(path, el) for el in outer]
        nested += [(path, el) for group in outer for el in group.iter("Group") if el is not group]
    # as the Metadata plugin reads it: a top-level declaration sets the attribute, a
    # nested one only if no other did; Bcfg2 reads the top-level declarations first
    marked: dict[str, tuple[bool, int, str, lxml.etree._Element]] = {}
    for order, (path, el) in enumerate(top + nested):
        name = el.get("name", "")
        if "default" in el.attrib and (order < len(top) or name not in marked):
            marked[name] = (el.get("default", "").lower() in ("true", "1", "yes", "on"),
                            order, path, el)
    defaults = sorted(((at[1], name, at[2], at[3]) for name, at in marked.items() if at[0]))
    if len(defaults) < 2:
        return
    *earlier, (_order, chosen, path, el) = defaults
    others = [(name, (p, e)) for _o, name, p, e in earlier]
    also = ", ".join(f"{name} ({ctx.relative(p)}:{e.sourceline})" for name, (p, e) in others)
    yield ctx.finding(path, el.sourceline, "multiple-default-groups",
                      f"more than one group is marked default=\"true\": the server uses "
                      f"{chosen}, the last one (as Bcfg2 1.4 does), not {also}")


#: attributes a Rules entry needs to be usable, by tag and (for Path) type
REQUIRED: dict[str, list[str]] = {
    "Package": ["version"],
    "Path": ["type"],
    "Path:symlink": ["to"],
    "Path:hardlink": ["to"],
    "Path:device": ["dev_type"],
    "Path:directory": ["owner", "group", "mode"],
    "Path:permissions": ["owner", "group", "mode"],
    "Action": ["command"],
}


@check("RequiredAttrs", required_attrs_missing="error")
def required_attrs(ctx: Context) -> Iterator[Finding]:
    """Rules entries set what the client needs (Defaults may supply it)."""
    defaults: list[tuple[str, re.Pattern[str] | None, str, dict[str, str]]] = []
    for path in ctx.files("Defaults", lambda p: p.endswith(".xml")):
        tree = ctx.xml(path)
        if tree is None:
            continue
        for _conds, el in flatten_conditions(tree.getroot()):
            if isinstance(el.tag, str) and el.get("name"):
                try:
                    regex = re.compile(el.get("name"))
                except re.error:
                    regex = None
                defaults.append((el.tag, regex, el.get("name"), dict(el.attrib)))
    for path in ctx.files("Rules", lambda p: p.endswith(".xml")):
        tree = ctx.xml(path)
        if tree is None:
            continue
        for _conds, el in flatten_conditions(tree.getroot()):
            if not isinstance(el.tag, str) or el.tag not in REQUIRED:
                continue
            name = el.get("name", "")
            attrs: dict[str, str] = {}
            for tag, regex, dname, dattrs in defaults:
                if tag == el.tag and (dname == name or (regex and regex.fullmatch(name))):
                    attrs.update(dattrs)
            attrs.update(el.attrib)
            needed = REQUIRED[el.tag] + REQUIRED.get(f"{el.tag}:{attrs.get('type', '')}", [])
            missing = [attr for attr in needed if attr not in attrs]
            if missing:
                yield ctx.finding(path, el.sourceline, "required-attrs-missing",
                                  f"{el.tag} {name} has no {', '.join(missing)}")


@check("Probes", probe_missing_interpreter="warning")
def probes(ctx: Context) -> Iterator[Finding]:
    """Probe scripts start with an interpreter line (#!); without one /bin/sh runs them."""
    for path in ctx.files("Probes", lambda p: not p.endswith((".xml", ".sqlite")),
                          recursive=False):
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head != b"#!":
            yield ctx.finding(path, 1, "probe-missing-interpreter",
                              f"probe {os.path.basename(path)} has no #! interpreter line")


@check("GroupPatterns", invalid_group_pattern="error")
def group_patterns(ctx: Context) -> Iterator[Finding]:
    """GroupPatterns/config.xml reads as the plugin reads it (regular expressions, ranges, $N)."""
    from bcfg2.errors import RepositoryError
    from bcfg2.plugins.grouppatterns import parse_patterns

    path = os.path.join(ctx.repository, "GroupPatterns", "config.xml")
    tree = ctx.xml(path) if ctx.enabled("GroupPatterns") and os.path.isfile(path) else None
    if tree is None:
        return
    try:
        parse_patterns(tree.getroot(), path)
    except RepositoryError as err:
        where, _, message = str(err).partition(": ")
        line = where.rpartition(":")[2]
        yield ctx.finding(path, int(line) if line.isdigit() else None, "invalid-group-pattern",
                          message)


@check("AWSTags", invalid_tag_pattern="error")
def aws_tags(ctx: Context) -> Iterator[Finding]:
    """AWSTags/config.xml patterns (each Tag's name= and value=) compile as regular expressions.

    The plugin refuses the whole file at its first bad pattern; lint names every one.
    """
    path = os.path.join(ctx.repository, "AWSTags", "config.xml")
    tree = ctx.xml(path) if ctx.enabled("AWSTags") and os.path.isfile(path) else None
    if tree is None:
        return
    for tag in tree.getroot().iter("Tag"):
        for attr in ("name", "value"):
            pattern = tag.get(attr)
            if pattern is None:
                continue
            try:
                re.compile(pattern)
            except re.error as err:
                yield ctx.finding(path, tag.sourceline, "invalid-tag-pattern",
                                  f"invalid regular expression {attr}={pattern!r}: {err}")


# -- PackagesSources -----------------------------------------------------------

@check("PackagesSources", source_arch_not_a_group="warning", source_needs_url="error",
       source_needs_version="error", invalid_source="error", unknown_package="warning")
def packages_sources(ctx: Context) -> Iterator[Finding]:
    """Packages sources.xml describes usable sources; bundles name packages they offer.

    Each ``<Source>`` is read by the plugin's own parser, so lint reports
    exactly what would keep the server from using it.
    """
    defined, patterns = defined_groups(ctx)
    for path, tree in sources_files(ctx):
        for source in elements(tree, "Source"):
            try:
                parse_source(source, (), path)
            except SourceProblem as problem:
                yield ctx.finding(path, source.sourceline, problem.check, problem.reason)
            yield from _source_arches(ctx, path, source, defined, patterns)
    yield from _unknown_packages(ctx)


def _source_arches(ctx: Context, path: str, source: lxml.etree._Element, defined: set[str],
                   patterns: list[re.Pattern[str]]) -> Iterator[Finding]:
    kind = source.get("type", "")
    where = source.get("rawurl", "").strip() or source.get("url", "").strip()
    for arch in source.iterchildren("Arch"):
        name = (arch.text or "").strip()
        if name and not TEMPLATED.search(name) and name not in defined \
                and not any(p.fullmatch(name) for p in patterns):
            yield ctx.finding(path, arch.sourceline, "source-arch-not-a-group",
                              f"Arch {name} of {kind} Source {where} is not a group "
                              f"any client can be in")


def _unknown_packages(ctx: Context) -> Iterator[Finding]:
    """Bundle packages that only a package source could bind, and that none offers.

    Entries another generator (Pkgmgr, Rules...) binds for a client are not
    the sources' business; a source with no index loaded (``None``) makes
    no claim either way.
    """
    if not ctx.enabled("Bundler"):
        return
    core = ctx.core
    sources = core.plugins_by_type(PackageSources)
    if not sources:
        return
    files = known_bundles(ctx)
    answers: dict[str, bool | None] = {}

    def known(name: str) -> bool | None:
        if name not in answers:
            replies = [plugin.knows_package(name) for plugin in sources]
            answers[name] = True if True in replies else None if None in replies else False
        return answers[name]

    unknown: dict[tuple[str, str], str] = {}
    for client in sorted(core.metadata.list_clients()):
        try:
            metadata = core.build_metadata(client)
        except Exception:  # reported by the Metadata checks
            continue
        for structure in core.GetStructures(metadata):
            bundle = files.get(structure.get("name", ""), (None, None))[1]
            source = (bundle.path or "") if bundle is not None else ""
            for entry in structure.iter("Package"):
                names = [n for n in (entry.get("altsrc"), entry.get("name")) if n]
                if not names or (source, names[0]) in unknown:
                    continue
                if _bound_by_another_generator(core, entry, names, metadata):
                    continue
                replies = [known(name) for name in names]
                if True not in replies and None not in replies:
                    unknown[(source, names[0])] = entry.get("name", "")
    for (source, name), shown in sorted(unknown.items()):
        path = source or os.path.join(ctx.repository, "Bundler")
        line = line_of(ctx.xml(source), "Package", shown) if source else None
        alias = f" (bound as {name})" if name != shown else ""
        yield ctx.finding(path, line, "unknown-package",
                          f"Package {shown}{alias} is offered by no package source")


def _bound_by_another_generator(core: object, entry: lxml.etree._Element, names: list[str],
                                metadata: object) -> bool:
    """Whether a generator that is not a package source binds the entry under one of its names."""
    for name in names:
        candidate = lxml.etree.Element(entry.tag, attrib=dict(entry.attrib))
        candidate.attrib.pop("altsrc", None)
        candidate.set("name", name)
        handlers = core.generators_for(candidate, metadata)  # type: ignore[attr-defined]
        if any(not isinstance(gen, PackageSources) for gen, _func in handlers):
            return True
    return False


def run_checks(ctx: Context, names: Iterable[str]) -> list[Finding]:
    """Run the named checks; findings in path and line order."""
    from bcfg2.lint.base import CHECKS

    found: list[Finding] = []
    for name in names:
        found.extend(CHECKS[name].func(ctx))
    return sorted(set(found), key=Finding.sort_key)
