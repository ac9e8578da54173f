"""What the command-line tools (bcfg2-info, -admin, -lint, -test) share.

Every tool reads bcfg2.conf and the same flags as the server (``-C``, ``-Q``,
``--plugins``...), prints an error as one line (``prog: message``) unless
``-d`` asks for the traceback, and exits with a status a script can test.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import ssl
import sys
import urllib.parse
import xmlrpc.client
from collections.abc import Callable, Iterator, Sequence

from bcfg2 import options
from bcfg2.core import LocalCore
from bcfg2.errors import Bcfg2Error, ConfigError, CoreInitError
from bcfg2.logger import setup_logging


class ToolError(Exception):
    """A tool cannot do what was asked: one line for the user, exit status ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
          prog: str, plugins: Sequence[str] = ()) -> tuple[options.Setup, argparse.Namespace]:
    """Parse the command line and bcfg2.conf; set up console logging.

    The options of the plugins in use (and of ``plugins``, whose data the
    tool reads) join the command line and the Setup. Raises ToolError
    (status 2) for a bad bcfg2.conf; argparse itself exits with status 2 on
    a bad command line.
    """
    try:
        options.add_component_options(parser, argv, plugins)
        ns = parser.parse_args(argv)
        setup = options.build(ns.config, vars(ns), plugins)
    except ConfigError as err:
        raise ToolError(str(err), status=2) from None
    # what a tool does is not a server event: keep it out of syslog
    setup.set("logging", "syslog", False)
    setup_logging(setup, console=True, prog=prog)
    return setup, ns


def run(prog: str, func: Callable[[], int], debug: Callable[[], bool] = lambda: False) -> int:
    """Call ``func`` and turn every failure into one line on stderr and a status.

    ``debug()`` says whether to show the traceback of an unexpected error
    (it is asked after the failure, once the options are known).
    """
    try:
        return func()
    except ToolError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return err.status
    except BrokenPipeError:
        # the reader went away (bcfg2-info clients | head): stop quietly, as cat does;
        # stdout goes to /dev/null so that the final flush does not complain again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (Bcfg2Error, OSError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse: --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    except Exception as err:
        if debug():
            logging.getLogger(prog).exception("unexpected error")
        print(f"{prog}: {err.__class__.__name__}: {err}"
              + ("" if debug() else " (-d shows the traceback)"), file=sys.stderr)
        return 1


@contextlib.contextmanager
def local_core(setup: options.Setup) -> Iterator[LocalCore]:
    """A LocalCore over the configured repository, shut down on leaving."""
    try:
        core = LocalCore(setup)
    except (CoreInitError, ConfigError) as err:
        raise ToolError(str(err)) from None
    try:
        yield core
    finally:
        core.shutdown()


def proxy(setup: options.Setup, timeout: float = 30.0) -> xmlrpc.client.ServerProxy:
    """An XML-RPC proxy to ``[components] bcfg2`` with the admin identity when one is set.

    ``[communication] admin_user`` and ``admin_password`` if set, else
    ``user`` and ``password`` (an agent's identity, which may call only the
    agent methods). The server's certificate is checked against
    ``[communication] ca`` if set (else the system's CAs); ``key`` and
    ``certificate``, if both set, are presented as the client certificate
    (an admin identity when its CN is in the server's ``admin_cns``).
    """
    url = urllib.parse.urlsplit(setup.components.bcfg2)
    comm = setup.communication
    user, password = credentials(setup)
    context = ssl.create_default_context(cafile=comm.ca or None)
    if comm.key and comm.certificate:
        context.load_cert_chain(comm.certificate, comm.key)
    auth = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
    transport = _TimeoutTransport(context=context, timeout=timeout)
    return xmlrpc.client.ServerProxy(f"https://{auth}@{url.netloc}/", transport=transport,
                                     allow_none=True)


def credentials(setup: options.Setup) -> tuple[str, str]:
    """The user and password tools send: the admin's if ``admin_user`` is set."""
    comm = setup.communication
    if comm.admin_user:
        if comm.admin_password is None:
            raise ToolError("[communication] admin_user is set but admin_password is not "
                            "(or use --admin-password)")
        return comm.admin_user, comm.admin_password
    if comm.password is None:
        raise ToolError("no password: set [communication] password or use -x")
    return comm.user or "root", comm.password


class _TimeoutTransport(xmlrpc.client.SafeTransport):
    """SafeTransport with a socket timeout."""

    def __init__(self, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(context=context)
        self._timeout = timeout

    def make_connection(self, host):  # type: ignore[no-untyped-def]
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn
