"""The ``bcfg2`` command: upstream's agent flags, bcfg2.conf, one run, an exit status.

Exit status 0: the run went through (the machine may still be dirty; the
statistics say so); 1: the run could not go on, with one line saying why;
2: a bad command line or bcfg2.conf.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bcfg2 import options
from bcfg2.client.errors import AgentError
from bcfg2.client.run import REMOVAL, Flags, Run, check_root
from bcfg2.errors import ConfigError
from bcfg2.logger import setup_logging

log = logging.getLogger("bcfg2.client")


def _bundles(text: str) -> list[str]:
    return [name.strip() for name in text.replace(",", ":").split(":") if name.strip()]


def parser() -> argparse.ArgumentParser:
    """The agent's command line: bcfg2.conf options and the flags of one run."""
    p = options.client_parser(
        "bcfg2", "Pull this machine's configuration from the Bcfg2 server, verify it, "
                 "apply what is wrong and report the machine's state.")
    run = p.add_argument_group("this run")
    run.add_argument("-n", "--dry-run", action="store_true",
                     help="change nothing; show what would change and why, with diffs")
    run.add_argument("-q", "--quick", action="store_true",
                     help="skip slow checks (package checksums)")
    run.add_argument("-I", "--interactive", action="store_true",
                     help="ask before each change")
    run.add_argument("-b", "--only-bundles", type=_bundles, default=[], metavar="BUNDLES",
                     help="install only the entries of these bundles (colon-separated)")
    run.add_argument("-B", "--except-bundles", type=_bundles, default=[], metavar="BUNDLES",
                     help="install everything but the entries of these bundles")
    run.add_argument("-Q", "--bundle-quick", action="store_true",
                     help="verify only the bundles of -b/-B, and upload no statistics")
    run.add_argument("-r", "--remove", type=str.lower, choices=sorted(REMOVAL), default="",
                     help="remove extra entries: all, or only services, packages or users")
    source = run.add_mutually_exclusive_group()
    source.add_argument("-f", "--file", default="", metavar="FILE",
                        help="apply the configuration in FILE instead of asking the server")
    source.add_argument("-c", "--cache", default="", metavar="FILE",
                        help="also save the server's configuration in FILE")
    run.add_argument("-e", "--show-extra", action="store_true",
                     help="list extra entries (with -v)")
    run.add_argument("-k", "--kevlar", action="store_true",
                     help="bulletproof mode: recheck everything after changes (APT also "
                          "repairs its state first)")
    run.add_argument("-z", "--only-independent", action="store_true",
                     help="install only independent entries, no bundle")
    run.add_argument("-Z", "--skip-independent", action="store_true",
                     help="install no independent entry")
    run.add_argument("-O", "--no-lock", action="store_true",
                     help="run without the lock file ([components] lockfile)")
    run.add_argument("-i", "--only-important", action="store_true",
                     help="install only the important entries")
    run.add_argument("--root", default="/", metavar="DIR",
                     help="apply the configuration under DIR instead of / (tests, images)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent once."""
    ns = parser().parse_args(argv)
    try:
        setup = options.build_client(ns.config, vars(ns))
    except ConfigError as err:
        sys.stderr.write(f"bcfg2: {err}\n")
        return 2
    setup_logging(setup, prog="bcfg2")
    try:
        if ns.bundle_quick and not (ns.only_bundles or ns.except_bundles):
            raise AgentError("-Q needs the bundles to verify (-b or -B)")
        if ns.bundle_quick and ns.remove:
            raise AgentError("-Q and -r cannot be used together")
        flags = Flags(dry_run=ns.dry_run, quick=ns.quick, interactive=ns.interactive,
                      only_bundles=ns.only_bundles, except_bundles=ns.except_bundles,
                      bundle_quick=ns.bundle_quick, remove=ns.remove, file=ns.file,
                      cache=ns.cache, show_extra=ns.show_extra, kevlar=ns.kevlar,
                      only_independent=ns.only_independent,
                      skip_independent=ns.skip_independent, no_lock=ns.no_lock,
                      only_important=ns.only_important, root=check_root(ns.root))
        return Run(setup, flags).execute()
    except AgentError as err:
        log.error("%s", err)
        return 1
    except KeyboardInterrupt:
        log.error("Interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
