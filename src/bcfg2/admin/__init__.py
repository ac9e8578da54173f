"""bcfg2-admin: repository and server administration, one module per mode.

Each mode module in ``MODES`` has a one-line docstring (its help), an
``add_arguments(parser)`` for its own arguments and ``run(setup, args) ->
int``, which raises ``bcfg2.tools.ToolError`` for anything the user must fix.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from bcfg2 import options, tools

PROG = "bcfg2-admin"

MODES = ("init", "client", "compare", "minestruct", "pull", "perf", "xcmd", "viz", "reports",
         "dbmigrate", "dbcopy", "web")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``bcfg2-admin [options] mode [mode arguments]`` and run the mode."""
    state = {"debug": False}

    def go() -> int:
        parser = options.make_parser(
            PROG, "Administer a Bcfg2 repository and server. The options below go before "
            "the mode (bcfg2-admin -Q /srv/bcfg2 client list); each mode's own options "
            "after it (bcfg2-admin client --help).")
        modes = parser.add_subparsers(dest="mode", metavar="mode", required=True)
        modules = {}
        for name in MODES:
            module = importlib.import_module(f"bcfg2.admin.{name}")
            doc = (module.__doc__ or "").strip().splitlines()[0]
            sub = modes.add_parser(name, help=doc, description=doc)
            module.add_arguments(sub)
            modules[name] = module
        setup, args = tools.parse(parser, argv, PROG, plugins=("Reporting",))  # reports
        state["debug"] = bool(setup.logging.debug)
        return modules[args.mode].run(setup, args)

    return tools.run(PROG, go, debug=lambda: state["debug"])


if __name__ == "__main__":
    sys.exit(main())
