"""Call any XML-RPC method of the server and print the result."""

from __future__ import annotations

import argparse
import ast
import http.client
import pprint
import ssl
import xmlrpc.client
from collections.abc import Callable
from typing import Any

from bcfg2 import tools
from bcfg2.options import Setup
from bcfg2.tools import ToolError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """METHOD [ARG ...] and --literal."""
    parser.add_argument("--literal", dest="literal", action="store_true",
                        help="read each argument as a Python literal (1, True, ['a'], "
                             "{'k': 'v'}) instead of a string")
    parser.add_argument("method", help="the method, e.g. listMethods or Metadata.list_clients")
    parser.add_argument("method_args", nargs="*", metavar="ARG", help="its arguments")


def run(setup: Setup, args: argparse.Namespace) -> int:
    """Call the method; print strings as they are, anything else pretty-printed."""
    values: list[Any] = list(args.method_args)
    if args.literal:
        values = [_literal(word) for word in args.method_args]
    result = call(setup, lambda server: getattr(server, args.method)(*values))
    print(result if isinstance(result, str) else pprint.pformat(result, width=100))
    return 0


def _literal(word: str) -> Any:
    try:
        return ast.literal_eval(word)
    except (ValueError, SyntaxError):
        raise ToolError(f"{word!r} is not a Python literal (strings need quotes with "
                        f"--literal)") from None


def call(setup: Setup, func: Callable[[xmlrpc.client.ServerProxy], Any]) -> Any:
    """Run ``func`` on a proxy to the server; every failure becomes a one-line ToolError."""
    url = setup.components.bcfg2
    try:
        return func(tools.proxy(setup))
    except xmlrpc.client.Fault as fault:
        raise ToolError(f"Fault {fault.faultCode}: {fault.faultString}") from None
    except xmlrpc.client.ProtocolError as err:
        if err.errcode == 401:
            raise ToolError(f"{url}: authentication refused (user "
                            f"{tools.credentials(setup)[0]}; check [communication] admin_user "
                            f"and admin_password, or -u and -x)") from None
        raise ToolError(f"{url}: HTTP error {err.errcode} {err.errmsg}") from None
    except ssl.SSLCertVerificationError as err:
        raise ToolError(f"{url}: certificate verification failed: "
                        f"{err.verify_message or err.reason} (see --ssl-ca)") from None
    except ssl.SSLError as err:
        raise ToolError(f"{url}: TLS error: {err.reason or err}") from None
    except TimeoutError:
        raise ToolError(f"{url}: timed out") from None
    except (OSError, http.client.HTTPException) as err:
        raise ToolError(f"{url}: cannot connect: {getattr(err, 'strerror', None) or err}"
                        ) from None
    except xmlrpc.client.ResponseError as err:
        raise ToolError(f"{url}: bad response: {err}") from None
