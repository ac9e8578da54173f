"""Manage the web page's users: add, delete, list, change a password or role."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from bcfg2.errors import ConfigError
from bcfg2.options import Setup
from bcfg2.tools import ToolError
from bcfg2.web.users import ROLES, UserError, Users, users_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``web user add NAME [--role R]``, ``web user del NAME``, ``web user list``,
    ``web user passwd NAME [--role R]``. The password is asked for (twice) on a terminal,
    else read from the first line of standard input."""
    what = parser.add_subparsers(dest="web_what", metavar="what", required=True)
    user = what.add_parser("user", help="the users of the web page ([web] users)")
    actions = user.add_subparsers(dest="user_action", metavar="action", required=True)
    add = actions.add_parser("add", help="add a user (asks for the password)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="viewer",
                     help="viewer (reads) or admin (also acts on clients); default viewer")
    delete = actions.add_parser("del", help="delete a user (their sessions end)")
    delete.add_argument("name")
    actions.add_parser("list", help="list the users and their roles")
    passwd = actions.add_parser("passwd", help="change a user's password (their sessions "
                                               "end), and with --role their role")
    passwd.add_argument("name")
    passwd.add_argument("--role", choices=ROLES)


def read_password() -> str:
    """The new password: asked twice on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise ToolError("the passwords differ")
        return first
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def run(setup: Setup, args: argparse.Namespace) -> int:
    users = Users(users_path(setup))
    try:
        if args.user_action == "list":
            for user in sorted(users.all().values(), key=lambda u: u.name):
                print(f"{user.name}\t{user.role}")
            return 0
        if args.user_action == "del":
            users.remove(args.name)
            print(f"deleted {args.name}")
        elif args.user_action == "add":
            users.add(args.name, args.role, read_password())
            print(f"added {args.name} ({args.role}) to {users.path}")
        else:
            users.passwd(args.name, read_password(), args.role)
            print(f"changed the password of {args.name}")
    except UserError as err:
        raise ToolError(str(err)) from None
    except (ConfigError, OSError) as err:
        raise ToolError(f"{users.path}: {getattr(err, 'strerror', None) or err}") from None
    if not os.path.exists(users.path):
        raise ToolError(f"{users.path} was not written")
    return 0
