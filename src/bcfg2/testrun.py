"""bcfg2-test: build every client's configuration and report what fails.

It loads the repository once (a LocalCore, as bcfg2-info does), builds the
configuration of every client (or of those named, globbed or in a group)
and prints, for each client that has a problem, one line per problem::

    web1.example.com: Path:/etc/motd: no matching generator

A problem is an entry the server marks with a ``failure`` attribute, a
bundle the client should get but does not (missing or unreadable file, a
template that fails), a structure or goal validation error, or an
exception. The exit status is 0 when every client built cleanly, 1 when
one did not, 2 on a usage or configuration error, so that the command can
gate a commit hook or a CI job (``--junit`` writes a report CI systems
read).

With ``-j N`` the clients are shared among N worker processes forked from
the loaded core: the repository is parsed once, and each worker sends back
only its failure lists. Output is in client-name order whatever ``-j``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import lxml.etree

from bcfg2 import options, tools
from bcfg2.core import Core
from bcfg2.errors import Bcfg2Error
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import BundleInfo, Structure

PROG = "bcfg2-test"


# -- what the tools share: building one client and naming what went wrong -------


@contextlib.contextmanager
def quiet_builds() -> Iterator[None]:
    """Keep the per-entry error log of builds off the console (unless -v or -d).

    The tools report failures themselves, one line per entry; the core's own
    log of the same failures would only double them.
    """
    root_level = logging.getLogger().getEffectiveLevel()
    bcfg2_logger = logging.getLogger("bcfg2")
    before = bcfg2_logger.level
    if root_level > logging.INFO:
        bcfg2_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        bcfg2_logger.setLevel(before)


def find_bundle(core: Core, name: str) -> tuple[Structure, BundleInfo] | None:
    """The structure plugin with a bundle called ``name`` (or read from that file) and the
    bundle, or None."""
    plugins = core.plugins_by_type(Structure)
    for plugin in plugins:
        info = plugin.bundle_info(name)
        if info is not None:
            return plugin, info
    suffix = os.sep + name.lstrip(os.sep)
    for plugin in plugins:
        for bundle in plugin.list_bundles():
            info = plugin.bundle_info(bundle)
            if info is not None and info.path and info.path.endswith(suffix):
                return plugin, info
    return None


def bundle_problem(core: Core, name: str, metadata: ClientMetadata) -> str:
    """Why a bundle the client should get is not in its configuration."""
    found = find_bundle(core, name)
    if found is None:
        return "no such bundle"
    plugin, info = found
    if not info.in_service:
        return info.error or "cannot be used"
    try:
        plugin.render_bundle(info.name, metadata)
    except Exception as err:
        return str(err) or err.__class__.__name__
    return "not built (-v shows why)"


def config_failures(core: Core, config: lxml.etree._Element,
                    metadata: ClientMetadata | None) -> list[str]:
    """The problems of a built configuration, as ``Tag:name: reason`` lines."""
    if config.tag == "error":
        return [f"error: {config.get('type') or 'configuration not built'}"]
    failures = [f"{entry.tag}:{entry.get('name')}: {entry.get('failure')}"
                for entry in config.iter() if "failure" in entry.attrib]
    if metadata is not None:
        built = {s.get("name") for s in config if s.tag in ("Bundle", "Independent")}
        for name in sorted(set(metadata.bundles) - built):
            failures.append(f"Bundle:{name}: {bundle_problem(core, name, metadata)}")
    return failures


def build_client(core: Core, client: str) -> tuple[lxml.etree._Element | None, list[str]]:
    """Build one client's configuration: (the document or None, its problems)."""
    try:
        config = core.BuildConfiguration(client)
        metadata = None if config.tag == "error" else core.build_metadata(client)
        return config, config_failures(core, config, metadata)
    except Exception as err:
        logging.getLogger("bcfg2.test").debug("building %s failed", client, exc_info=True)
        return None, [f"exception: {err.__class__.__name__}: {err}"]


# -- choosing clients ------------------------------------------------------------------


def select_clients(core: Core, patterns: Sequence[str], groups: Sequence[str] = ()) -> list[str]:
    """Clients named (or aliased), matching a glob, or in a group; all if none given.

    Raises ToolError (status 2) for a name or glob that matches nothing and
    for an unknown group.
    """
    clients = sorted(core.metadata.list_clients())
    if not patterns and not groups:
        return clients
    chosen: set[str] = set()
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            found = fnmatch.filter(clients, pattern)
        else:
            name = core.metadata.resolve_name(pattern)
            found = [name] if name is not None else []
        if not found:
            raise tools.ToolError(f"no client matches {pattern!r}", status=2)
        chosen.update(found)
    known_groups = {group.name for group in core.metadata.list_groups()}
    for group in groups:
        if group not in known_groups:
            raise tools.ToolError(f"unknown group {group!r}", status=2)
    if groups:
        for client in clients:
            try:
                member = core.build_metadata(client).groups
            except Bcfg2Error:
                continue
            if any(group in member for group in groups):
                chosen.add(client)
    return sorted(chosen)


# -- building many clients, possibly in forked workers --------------------------------


#: the core workers inherit from the parent over fork
_WORKER_CORE: Core | None = None


def _build_share(clients: list[str]) -> dict[str, list[str]]:
    core = _WORKER_CORE
    assert core is not None
    with quiet_builds():
        return {client: build_client(core, client)[1] for client in clients}


def _worker(clients: list[str], conn: Any) -> None:
    try:
        result = _build_share(clients)
    except BaseException as err:  # report instead of dying silently
        result = {client: [f"exception: worker failed: {err.__class__.__name__}: {err}"]
                  for client in clients}
    try:
        conn.send(result)
    finally:
        conn.close()


def build_all(core: Core, clients: list[str], jobs: int = 1) -> dict[str, list[str]]:
    """Failure lists of every client, built in ``jobs`` forked workers (1: here)."""
    global _WORKER_CORE
    jobs = max(1, min(jobs, len(clients)))
    if jobs == 1:
        _WORKER_CORE = core
        try:
            return _build_share(clients)
        finally:
            _WORKER_CORE = None
    ctx = multiprocessing.get_context("fork")
    _WORKER_CORE = core
    workers = []
    try:
        for index in range(jobs):
            share = clients[index::jobs]
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(share, send), name=f"{PROG}-{index}")
            proc.start()
            send.close()
            workers.append((proc, receive, share))
        results: dict[str, list[str]] = {}
        for proc, receive, share in workers:
            try:
                results.update(receive.recv())
            except EOFError:
                proc.join()
                results.update({client: [f"exception: worker died (exit status "
                                         f"{proc.exitcode})"] for client in share})
            finally:
                receive.close()
        return results
    finally:
        _WORKER_CORE = None
        for proc, _receive, _share in workers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()


# -- reports ---------------------------------------------------------------------------


def junit_report(results: dict[str, list[str]], seconds: float) -> bytes:
    """A JUnit XML document: one testcase per client, a failure element per problem."""
    failed = sum(1 for problems in results.values() if problems)
    suite = lxml.etree.Element("testsuite", name=PROG, tests=str(len(results)),
                               failures=str(failed), errors="0", time=f"{seconds:.3f}")
    for client in sorted(results):
        case = lxml.etree.SubElement(suite, "testcase", classname="bcfg2.clients", name=client)
        problems = results[client]
        if problems:
            failure = lxml.etree.SubElement(
                case, "failure", type="BuildFailure",
                message=f"{len(problems)} problem{'s' if len(problems) != 1 else ''}")
            failure.text = "\n".join(problems)
    suites = lxml.etree.Element("testsuites")
    suites.append(suite)
    return lxml.etree.tostring(suites, xml_declaration=True, encoding="UTF-8",
                               pretty_print=True)


def make_parser() -> Any:
    """The command line: the server's options plus bcfg2-test's own."""
    parser = options.make_parser(PROG, "Build the configuration of every client (or of "
                                       "those given) and report what fails.")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                        help="worker processes building configurations (default: the "
                             "number of CPUs)")
    parser.add_argument("--group", action="append", default=[], metavar="GROUP",
                        help="also test the members of GROUP (may be repeated)")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the failures, not the summary line")
    parser.add_argument("--junit", metavar="FILE", help="write a JUnit XML report to FILE")
    parser.add_argument("clients", nargs="*", metavar="client",
                        help="client names, aliases or globs (default: every client)")
    return parser


def run(argv: Sequence[str] | None) -> int:
    """bcfg2-test proper; errors are raised for tools.run to report."""
    setup, ns = tools.parse(make_parser(), argv, PROG)
    if ns.jobs < 1:
        raise tools.ToolError(f"-j {ns.jobs}: needs at least one job", status=2)
    with contextlib.ExitStack() as stack:
        try:
            core = stack.enter_context(tools.local_core(setup))
        except tools.ToolError as err:  # no repository, no Metadata plugin...: the setup
            raise tools.ToolError(str(err), status=2) from None
        clients = select_clients(core, ns.clients, ns.group)
        start = time.monotonic()
        results = build_all(core, clients, ns.jobs)
        elapsed = time.monotonic() - start
    failed = 0
    for client in sorted(results):
        problems = results[client]
        if problems:
            failed += 1
            for problem in problems:
                print(f"{client}: {problem}")
    if not ns.quiet:
        print(f"{len(results)} clients, {failed} failed")
    if ns.junit:
        try:
            with open(ns.junit, "wb") as fh:
                fh.write(junit_report(results, elapsed))
        except OSError as err:
            raise tools.ToolError(f"cannot write {ns.junit}: {err.strerror}",
                                  status=2) from None
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the bcfg2-test console script."""
    words = list(argv if argv is not None else sys.argv[1:])
    return tools.run(PROG, lambda: run(words),
                     debug=lambda: "-d" in words or "--debug" in words)


__all__ = ["build_all", "build_client", "config_failures", "main", "select_clients"]

if __name__ == "__main__":
    sys.exit(main())
