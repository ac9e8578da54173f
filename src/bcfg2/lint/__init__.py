"""bcfg2-lint: check a repository for mistakes without starting a server.

It reads bcfg2.conf (and the same options as the server) to find the
repository and the enabled plugins, runs the checks over the directories of
those plugins, and prints one finding per line on stdout::

    Bundler/web.xml:12: error: Path /etc/foo has no generator for clients web1 [unbound-entry]

Exit status: 0 when clean, 2 if any error, 3 if only warnings, 1 when lint
itself cannot run. A lint configuration (``--lint-config``, default
/etc/bcfg2-lint.conf, and the same sections in bcfg2.conf) sets the level of
each error name (``[errors] name = error|warning|silent``), which checks run
(``[lint] plugins``) and the attributes every info.xml ``<Info>`` must set
(``[InfoXML] required_attrs``).
"""

from __future__ import annotations

import argparse
import configparser
import os
import sys
from collections.abc import Sequence

from bcfg2 import options, tools
from bcfg2.lint import checks  # noqa: F401 - registers the checks
from bcfg2.lint.base import CHECKS, LEVELS, Context, Finding, all_errors
from bcfg2.lint.checks import run_checks

PROG = "bcfg2-lint"
DEFAULT_LINT_CONFIG = "/etc/bcfg2-lint.conf"

__all__ = ["main", "LintConfig", "lint"]


class LintConfig:
    """Levels per error name, the checks to run and the InfoXML attributes."""

    def __init__(self) -> None:
        self.levels: dict[str, str] = all_errors()
        self.checks: list[str] = list(CHECKS)
        self.required_attrs: list[str] = ["owner", "group", "mode"]

    def read(self, parser: configparser.RawConfigParser, where: str) -> None:
        """Apply the [errors], [lint] and [InfoXML] sections of a parsed file."""
        if parser.has_section("errors"):
            for name, value in parser.items("errors"):
                level = value.strip().lower()
                if level not in LEVELS:
                    raise tools.ToolError(f"{where}: [errors] {name}: {value!r} is not one of "
                                          f"{', '.join(LEVELS)}")
                if name not in self.levels:
                    raise tools.ToolError(f"{where}: [errors] {name}: no such error; "
                                          f"--list-errors shows them")
                self.levels[name] = level
        if parser.has_option("lint", "plugins"):
            self.checks = check_names(split(parser.get("lint", "plugins")), where)
        if parser.has_option("InfoXML", "required_attrs"):
            self.required_attrs = split(parser.get("InfoXML", "required_attrs"))


def split(value: str) -> list[str]:
    return [item.strip() for item in value.replace("\n", ",").split(",") if item.strip()]


def check_names(names: Sequence[str], where: str) -> list[str]:
    """Check names as given, refusing unknown ones (case-insensitive match)."""
    by_lower = {name.lower(): name for name in CHECKS}
    out = []
    for name in names:
        if name.lower() not in by_lower:
            raise tools.ToolError(f"{where}: unknown check {name!r}; known checks: "
                                  f"{', '.join(CHECKS)}")
        out.append(by_lower[name.lower()])
    return out


def load_config(setup: options.Setup, path: str | None) -> LintConfig:
    """The lint configuration: bcfg2.conf's sections, then the lint config file's."""
    config = LintConfig()
    config.read(setup.raw, setup.config_file or "bcfg2.conf")
    if path is None and os.path.exists(DEFAULT_LINT_CONFIG):
        path = DEFAULT_LINT_CONFIG
    if path is not None:
        parser = configparser.RawConfigParser()
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            with open(path, encoding="utf-8") as fh:
                parser.read_file(fh, source=path)
        except (OSError, configparser.Error, UnicodeDecodeError) as err:
            raise tools.ToolError(f"{path}: cannot be read: {err}".replace("\n", " ")) from None
        config.read(parser, path)
    return config


def lint(ctx: Context, names: Sequence[str], only: set[str] | None = None) -> list[Finding]:
    """Run checks over a repository; ``only`` keeps findings about those relative paths."""
    try:
        found = run_checks(ctx, names)
    finally:
        ctx.close()
    if only is not None:
        found = [f for f in found if f.path in only
                 or any(p.startswith(f.path.rstrip("/") + "/") for p in only)]
    return found


def relative_to(repository: str, name: str) -> str:
    """A file named on stdin as a path relative to the repository.

    An absolute path, or one relative to the current directory that lies in
    the repository, is made relative to it; anything else is taken as
    relative to the repository already.
    """
    candidate = os.path.relpath(os.path.abspath(name), repository)
    if os.path.isabs(name) or (os.path.exists(name) and not candidate.startswith("..")):
        return candidate
    return os.path.normpath(name)


def make_parser() -> argparse.ArgumentParser:
    parser = options.make_parser(PROG, "Check a Bcfg2 repository for mistakes.")
    parser.add_argument("--lint-config", default=None, metavar="FILE",
                        help=f"lint configuration (default {DEFAULT_LINT_CONFIG} if it exists)")
    parser.add_argument("--list-errors", action="store_true",
                        help="list every error name with its default level and exit")
    parser.add_argument("--stdin", action="store_true",
                        help="only report on the files named on standard input, one per line")
    parser.add_argument("checks", nargs="*", metavar="check",
                        help=f"checks to run (default all): {', '.join(CHECKS)}")
    return parser


def _run(argv: Sequence[str] | None, state: dict[str, bool]) -> int:
    try:
        setup, ns = tools.parse(make_parser(), argv, PROG)
    except tools.ToolError as err:
        raise tools.ToolError(str(err), status=1) from None
    state["debug"] = bool(setup.logging.debug)
    if ns.list_errors:
        for name, level in sorted(all_errors().items()):
            print(f"{name} = {level}")
        return 0
    config = load_config(setup, ns.lint_config)
    names = check_names(ns.checks, "command line") if ns.checks else config.checks
    repository = setup.server.repository
    if not os.path.isdir(repository):
        raise tools.ToolError(f"repository {repository} does not exist or is not a directory "
                              f"([server] repository, -Q)")
    # lint reads the repository once: no file-monitor threads or inotify watches
    setup.set("server", "filemonitor", "pseudo")
    only = {relative_to(repository, line.strip()) for line in sys.stdin
            if line.strip()} if ns.stdin else None
    ctx = Context(setup, required_attrs=config.required_attrs,
                  verbose=bool(setup.logging.verbose))
    findings = lint(ctx, names, only)
    counts = {"error": 0, "warning": 0}
    for finding in findings:
        level = config.levels.get(finding.name, "error")
        if level == "silent":
            continue
        counts[level] += 1
        print(finding.format(level))
    sys.stdout.flush()
    errors, warnings = counts["error"], counts["warning"]
    print(f"{PROG}: {errors} error{'s' * (errors != 1)}, "
          f"{warnings} warning{'s' * (warnings != 1)}", file=sys.stderr)
    if setup.logging.verbose:
        print(f"{PROG}: checks run: {', '.join(names)}", file=sys.stderr)
    return 2 if errors else 3 if warnings else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The bcfg2-lint command: run the checks and return the exit status."""
    state = {"debug": False}
    return tools.run(PROG, lambda: _run(argv, state), debug=lambda: state["debug"])
