"""Create a new repository and a bcfg2.conf that serves it."""

from __future__ import annotations

import argparse
import datetime
import getpass
import importlib.util
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass

from bcfg2 import options
from bcfg2.errors import Bcfg2Error, ConfigError
from bcfg2.options import Setup
from bcfg2.plugin.manager import find_plugin
from bcfg2.tools import ToolError
from bcfg2.xml import atomic_write

GROUPS_XML = """\
<Groups>
  <!-- Every client has exactly one profile group. A client that is not in
       clients.xml is registered with the default profile at first contact. -->
  <Group name="{profile}" profile="true" public="true" default="true"/>
</Groups>
"""

CLIENTS_XML = """\
<Clients version="3.0">
  <!-- bcfg2-admin client add NAME profile=GROUP adds clients here. -->
</Clients>
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--conf, --force, --yes, --make-cert, --profile; the global -Q, -S, -x, --plugins..."""
    parser.add_argument("--conf", dest="init_conf", metavar="PATH", default=None,
                        help=f"the bcfg2.conf to write (default {options.DEFAULT_CONFIG}); "
                             f"the repository is -Q, the server URL -S, the password -x, the "
                             f"plugins --plugins, the state directory --state-dir, the "
                             f"TLS files --ssl-key and --ssl-cert")
    parser.add_argument("--force", dest="init_force", action="store_true",
                        help="overwrite an existing bcfg2.conf, repository files, key and "
                             "certificate")
    parser.add_argument("--yes", "-y", dest="init_yes", action="store_true",
                        help="do not ask questions, even on a terminal")
    parser.add_argument("--make-cert", dest="init_make_cert", action="store_true",
                        help="generate a self-signed key and certificate for the server's "
                             "host name (from -S), localhost and 127.0.0.1")
    parser.add_argument("--profile", dest="init_profile", default="basic", metavar="GROUP",
                        help="name of the default profile group (default basic)")


@dataclass
class Plan:
    """Everything init will write."""

    conf: str
    repository: str
    plugins: list[str]
    state_dir: str
    server: str
    password: str
    key: str
    certificate: str
    make_cert: bool
    profile: str
    force: bool
    random_password: bool = False
    #: the admin identity the tools (xcmd, perf) use; always a random password
    admin_user: str = "admin"
    admin_password: str = ""


def run(setup: Setup, args: argparse.Namespace) -> int:
    """Ask (on a terminal) or take the flags, check everything, then write."""
    plan = make_plan(setup, args, interactive=sys.stdin.isatty() and not args.init_yes)
    check(plan)
    write(plan)
    print(f"wrote {plan.conf} (mode 0600: it holds the password)")
    print(f"created the repository {plan.repository} "
          f"(plugins: {', '.join(plan.plugins)})")
    if plan.make_cert:
        print(f"wrote the key {plan.key} and the self-signed certificate {plan.certificate}")
    elif not (os.path.exists(plan.key) and os.path.exists(plan.certificate)):
        print(f"note: {plan.key} and {plan.certificate} do not exist yet: create them "
              f"(or run init again with --make-cert --force) before starting the server")
    if plan.random_password:
        print(f"generated a random password: it is in {plan.conf}")
    return 0


def make_plan(setup: Setup, args: argparse.Namespace, interactive: bool) -> Plan:
    """The values to use: flags first, then answers (on a terminal), then defaults."""
    cli = vars(args)

    def value(dest: str, question: str, default: str) -> str:
        given = cli.get(dest)
        if given is not None:
            return str(given)
        if not interactive:
            return default
        answer = input(f"{question} [{default}]: ").strip()
        return answer or default

    conf = os.path.abspath(os.path.expanduser(
        value("init_conf", "bcfg2.conf to write", options.DEFAULT_CONFIG)))
    repository = os.path.abspath(os.path.expanduser(
        value("server.repository", "Repository", setup.server.repository)))
    server = value("components.bcfg2", "Server URL", setup.components.bcfg2)
    plugins_text = value("server.plugins", "Plugins", ", ".join(setup.server.plugins))
    state_dir = os.path.abspath(os.path.expanduser(
        value("server.state_dir", "State directory", setup.server.state_dir)))
    confdir = os.path.dirname(conf)
    key = os.path.abspath(cli.get("communication.key") or os.path.join(confdir, "bcfg2.key"))
    certificate = os.path.abspath(cli.get("communication.certificate")
                                  or os.path.join(confdir, "bcfg2.crt"))
    password = cli.get("communication.password")
    if password is None and interactive:
        password = getpass.getpass("Password agents use (blank for a random one): ") or None
    random_password = password is None
    if password is None:
        password = secrets.token_urlsafe(24)
    make_cert = bool(args.init_make_cert)
    if not make_cert and interactive:
        answer = input("Generate a self-signed key and certificate? [y/N]: ").strip().lower()
        make_cert = answer in ("y", "yes")
    plugins = [name.strip() for name in plugins_text.replace("\n", ",").split(",")
               if name.strip()]
    return Plan(conf=conf, repository=repository, plugins=plugins, state_dir=state_dir,
                server=server, password=password, key=key, certificate=certificate,
                make_cert=make_cert, profile=args.init_profile, force=args.init_force,
                random_password=random_password,
                admin_user=cli.get("communication.admin_user") or "admin",
                admin_password=cli.get("communication.admin_password")
                or secrets.token_urlsafe(24))


def check(plan: Plan) -> None:
    """Refuse what cannot or must not be done, before anything is written."""
    try:
        options.convert(next(o for o in options.OPTIONS if o.dest == "components.bcfg2"),
                        plan.server, "server URL")
    except ConfigError as err:
        raise ToolError(str(err)) from None
    if not urllib.parse.urlsplit(plan.server).hostname:
        raise ToolError(f"{plan.server!r} is not a URL of the form https://host:port")
    if any(c in plan.password for c in "\r\n") or plan.password != plan.password.strip():
        raise ToolError("the password must not have line breaks or surrounding blanks")
    if not plan.plugins:
        raise ToolError("no plugins given")
    if "Metadata" not in plan.plugins:
        raise ToolError("the plugin list needs Metadata")
    for name in plan.plugins:
        try:
            find_plugin(name)
        except Bcfg2Error as err:
            raise ToolError(str(err)) from None
    if not plan.profile or not plan.profile.replace("-", "").replace("_", "").isalnum():
        raise ToolError(f"invalid profile group name {plan.profile!r}")
    if os.path.exists(plan.conf):
        if not os.path.isfile(plan.conf):
            raise ToolError(f"{plan.conf} exists and is not a regular file")
        if os.path.getsize(plan.conf) and not plan.force:
            raise ToolError(f"{plan.conf} exists; use --force to overwrite it")
    if os.path.exists(plan.repository):
        if not os.path.isdir(plan.repository):
            raise ToolError(f"{plan.repository} exists and is not a directory")
        if os.listdir(plan.repository) and not plan.force:
            raise ToolError(f"{plan.repository} is not empty; use --force to write a new "
                            f"repository into it")
    if plan.make_cert:
        for path in (plan.key, plan.certificate):
            if os.path.exists(path) and not plan.force:
                raise ToolError(f"{path} exists; use --force to overwrite it")
        if not have_cryptography() and not shutil.which("openssl"):
            raise ToolError("cannot make a certificate: install the Python package "
                            "cryptography or the openssl program")


def write(plan: Plan) -> None:
    """Write the repository, the key and certificate, then bcfg2.conf."""
    metadata = os.path.join(plan.repository, "Metadata")
    os.makedirs(metadata, exist_ok=True)
    atomic_write(os.path.join(metadata, "groups.xml"), GROUPS_XML.format(profile=plan.profile))
    atomic_write(os.path.join(metadata, "clients.xml"), CLIENTS_XML)
    for name in sorted(set(plan.plugins) | {"Bundler", "Rules", "Cfg", "Defaults"}):
        os.makedirs(os.path.join(plan.repository, name), exist_ok=True)
    if plan.make_cert:
        make_certificate(plan.certificate, plan.key,
                         urllib.parse.urlsplit(plan.server).hostname or "localhost")
    atomic_write(plan.conf, config_text(plan), 0o600)


def config_text(plan: Plan) -> str:
    """The bcfg2.conf for a plan."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"# Written by bcfg2-admin init on {stamp}.\n"
        "# bcfg2.conf.example lists every option with its default.\n"
        "\n[server]\n"
        f"repository = {plan.repository}\n"
        f"plugins = {', '.join(plan.plugins)}\n"
        f"state_dir = {plan.state_dir}\n"
        "\n[components]\n"
        f"bcfg2 = {plan.server}\n"
        "\n[communication]\n"
        f"password = {plan.password}\n"
        "# the admin identity: bcfg2-admin xcmd and perf send it; agents never need it\n"
        f"admin_user = {plan.admin_user}\n"
        f"admin_password = {plan.admin_password}\n"
        f"key = {plan.key}\n"
        f"certificate = {plan.certificate}\n"
    )


def alt_names(host: str) -> str:
    """openssl's subjectAltName value for ``host`` and the loopback names."""
    names = []
    for name in dict.fromkeys([host, "localhost", "127.0.0.1"]):
        try:
            ipaddress.ip_address(name)
            names.append(f"IP:{name}")
        except ValueError:
            names.append(f"DNS:{name}")
    return ",".join(names)


def have_cryptography() -> bool:
    """Whether bcfg2.devcert can work (the cryptography package is importable)."""
    return importlib.util.find_spec("cryptography") is not None


def make_certificate(cert: str, key: str, host: str) -> None:
    """A self-signed certificate for ``host`` (and the loopback names): bcfg2.devcert
    with cryptography, else openssl."""
    for path in (cert, key):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    if have_cryptography():
        from bcfg2.devcert import make_self_signed

        make_self_signed(cert, key, names=(host,))
        return
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ToolError("cannot make a certificate: install the Python package "
                        "cryptography or the openssl program")
    old = os.umask(0o077)
    try:
        done = subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
             "-days", "825", "-subj", f"/CN={host}",
             "-addext", f"subjectAltName={alt_names(host)}"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    finally:
        os.umask(old)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise ToolError(f"openssl could not make the certificate: {last}")
    os.chmod(cert, 0o644)
