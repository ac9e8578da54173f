"""The options of the server and the agent: declarative tables for bcfg2.conf and the command line.

Every option lives in the table with its section and name in bcfg2.conf
(the upstream names, so an existing ``/etc/bcfg2.conf`` works), its type,
default, help text and command-line flags. The table is ``OPTIONS`` (the
server's own) plus what the plugins and cores in use declare in their
``options`` attribute (ours and third-party ones alike; each gets a flag
``--section-name``). The same table drives parsing, ``--help`` and
``bcfg2.conf.example`` (``python -m bcfg2.options``, with every plugin's).
The agent (``bcfg2``) reads ``CLIENT_OPTIONS`` instead (``build_client``):
upstream's agent options, sharing the entries both read.

Every option may also come from the environment, as containers and service
managers set it: ``BCFG2_<SECTION>_<OPTION>`` in upper case (``env_name``),
e.g. ``BCFG2_SERVER_BACKEND=cherrypy``. The command line wins over the
environment, which wins over bcfg2.conf, which wins over the default.

Values are reached as ``setup.<section>.<name>``, e.g.
``setup.server.repository`` or ``setup.communication.password``.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import difflib
import os
import re
import secrets
import socket
import sys
import textwrap
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bcfg2.errors import ConfigError

DEFAULT_CONFIG = "/etc/bcfg2.conf"


@dataclass(frozen=True)
class Option:
    """One option: where it lives in bcfg2.conf, its type and its default."""

    section: str
    name: str
    default: Any
    help: str
    #: str, bool, int, float, list, colon (a colon-separated list), octal, path, url, choice,
    #: level (a log level's name), or names: every option of the section that no other
    #: option declares, as a dict (never on the command line)
    type: str = "str"
    flags: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    cli_value: Any = None  # for boolean flags: the value the flag sets

    @property
    def dest(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        """The environment variable that sets it (see ``env_name``)."""
        return env_name(self.section, self.name)


ENV_PREFIX = "BCFG2_"
PRECEDENCE = ("Every option may also be set in the environment as BCFG2_<SECTION>_<OPTION> "
              "(upper case, e.g. BCFG2_SERVER_BACKEND=cherrypy); the command line wins over "
              "the environment, which wins over bcfg2.conf, which wins over the default.")


def env_name(section: str, name: str) -> str:
    """``BCFG2_<SECTION>_<OPTION>``: in upper case, any character but letters and digits as ``_``."""
    return re.sub(r"[^A-Z0-9]", "_", f"{ENV_PREFIX}{section}_{name}".upper())


IGNORE_DEFAULT = ("*~, *#, #*, .#*, *.swp, *.swpx, *.swx, SCCS, .svn, .git, 4913, .gitignore, "
                  "CVS, .hg, .bzr, _darcs")

OPTIONS: list[Option] = [
    # [server]
    Option("server", "repository", "/var/lib/bcfg2", "The Bcfg2 repository to serve.",
           type="path", flags=("-Q", "--repository"), metavar="DIR"),
    Option("server", "plugins", "Bundler, Cfg, Defaults, Metadata, Reporting, Rules",
           "Comma-separated list of server plugins to load (names as in the repository).",
           type="list", flags=("--plugins",)),
    Option("server", "filemonitor", "default",
           "How repository changes are noticed: inotify, pseudo (polling) or default "
           "(the best available).",
           type="choice", choices=("default", "inotify", "pseudo"), flags=("--filemonitor",)),
    Option("server", "ignore_files", IGNORE_DEFAULT,
           "Comma-separated globs of file names the file monitor ignores (editor swap "
           "and backup files, VCS metadata).", type="list"),
    Option("server", "listen_all", False,
           "Listen on all interfaces instead of only the host in [components] bcfg2.",
           type="bool", flags=("--listen-all",), cli_value=True),
    Option("server", "backend", "best",
           "The network core that serves agents: builtin (threads), multiprocessing "
           "(configurations rendered in child processes), cherrypy, best "
           "(multiprocessing on a machine with more than one CPU, else builtin), or the "
           "name of a third-party core (a bcfg2.cores entry point).",
           flags=("--backend",)),
    Option("server", "user", "0", "User name or uid the daemon runs as (with -D)."),
    Option("server", "group", "0", "Group name or gid the daemon runs as (with -D)."),
    Option("server", "umask", "0077", "The umask of the daemon (with -D).", type="octal"),
    Option("server", "vcs_root", "",
           "Root of the version-control checkout holding the repository, if it is not "
           "the repository itself.", type="path"),
    Option("server", "state_dir", "/var/lib/bcfg2-server",
           "Where the server keeps what it learns at run time (declared client versions, "
           "clients registered on first contact, asserted profiles). Set it to the "
           "repository itself to have clients.xml rewritten in place, as upstream does.",
           type="path", flags=("--state-dir",), metavar="DIR"),
    Option("server", "name", "",
           "This server's name among several sharing one database: recorded with every "
           "run it stores, every key or certificate it generates and every cache expiry "
           "it announces (so it skips its own). Empty: the host name and the port it "
           "listens on (host:port), stable across restarts."),
    Option("server", "max_request_size", 10 * 1024 * 1024,
           "Largest request body accepted, in bytes; larger requests are refused unread.",
           type="int"),
    Option("server", "connection_timeout", 30.0,
           "Seconds a connection may stay silent (TLS handshake, request) before it is "
           "closed.", type="float"),
    Option("server", "max_connections", 512,
           "Most connections open at once; more are closed as they arrive, before any TLS. "
           "A few thousand agents, each making one short connection at a time every half "
           "hour or so, rarely hold more than a few dozen; 512 leaves room for every agent "
           "started at once by a site-wide cron job, and stays within the common default "
           "limit of 1024 open files if it cannot be raised.", type="int"),
    Option("server", "max_connections_per_source", 64,
           "Most connections open at once from one source (an IPv4 address or an IPv6 /64). "
           "An agent makes one connection at a time, so 64 is room for a NAT gateway or "
           "proxy in front of dozens of agents, and takes eight sources to fill "
           "max_connections; at that cap a newcomer takes the place of the oldest connection "
           "still being read of the source holding the most.", type="int"),
    Option("server", "request_deadline", 60.0,
           "Seconds from accepting a connection until its whole request (TLS handshake, "
           "headers, body) is received, and again for its response to be sent; a connection "
           "past it is cut however steadily it trickles. 60 s carries a 10 MB body over "
           "1.5 Mbit/s; connection_timeout still bounds each silence.", type="float"),
    Option("server", "auth_failure_limit", 10,
           "Failed authentications one source may have within auth_failure_backoff seconds; "
           "beyond them its attempts are refused unchecked (the right password too) until "
           "the oldest of them is that old. An agent with a wrong password fails once per "
           "run; 10 leaves room for a few retries and typos. 0 turns throttling off.",
           type="int"),
    Option("server", "auth_failure_backoff", 60.0,
           "The window, in seconds, of auth_failure_limit: a throttled source is checked "
           "again at most this long after its last checked failure.", type="float"),
    Option("server", "proxy_protocol", "",
           "Comma-separated addresses or networks (CIDR) of the TCP load balancers in front "
           "of the server (HAProxy with send-proxy-v2). A connection from one of them must "
           "begin with a PROXY protocol v2 header, whose client address is then used for "
           "everything (identification by address, ACLs, connection caps, logs); a "
           "connection from anyone else that sends one is refused. Empty: off.",
           type="list"),
    Option("server", "health_port", "0",
           "Port of a plain-HTTP health endpoint on 127.0.0.1 for a load balancer's checks "
           "(GET /healthz: 200 while serving, 503 while starting or stopping); PORT or "
           "LOOPBACK-ADDRESS:PORT, never another address. 0: off."),
    # [components]
    Option("components", "bcfg2", "https://localhost:6789",
           "The server URL; the server listens on its host and port.",
           type="url", flags=("-S", "--server"), metavar="URL"),
    # [communication]
    Option("communication", "password", None,
           "The password every agent may use (besides its own password in clients.xml).",
           flags=("-x", "--password")),
    Option("communication", "user", "root",
           "The user name tools send to the server when no admin_user is set: root "
           "(identified by address) or a client's uuid.", flags=("-u", "--user")),
    Option("communication", "admin_user", "",
           "The user name of the admin identity: with admin_password it may call the admin "
           "methods and every plugin method (bcfg2-admin xcmd, perf and the other tools "
           "send them). Empty: no admin user.", flags=("--admin-user",), metavar="USER"),
    Option("communication", "admin_password", None,
           "The password of admin_user.", flags=("--admin-password",), metavar="PASSWORD"),
    Option("communication", "admin_cns", "",
           "Comma-separated common names of client certificates (verified with ca) that "
           "identify an admin.", type="list"),
    Option("communication", "trust_loopback", False,
           "Upstream's rule: every client connecting from the loopback address is an admin "
           "too. Off by default, as on a shared host every local user could then administer "
           "the server; a warning is logged at start-up when on.", type="bool"),
    Option("communication", "key", None, "The server's TLS private key (PEM).",
           type="path", flags=("--ssl-key",), metavar="FILE"),
    Option("communication", "certificate", None, "The server's TLS certificate (PEM).",
           type="path", flags=("--ssl-cert",), metavar="FILE"),
    Option("communication", "ca", None,
           "CA certificate (PEM) used to verify client certificates; with it, agents may "
           "identify themselves by certificate.", type="path", flags=("--ssl-ca",),
           metavar="FILE"),
    Option("communication", "protocol", "xmlrpc/tlsv1",
           "Upstream protocol name; both values mean XML-RPC over TLS 1.2 or newer.",
           type="choice", choices=("xmlrpc/tlsv1", "xmlrpc/ssl")),
    Option("communication", "tls_min_version", "1.2",
           "Oldest TLS version accepted: 1.2 or 1.3; 1.0 and 1.1 only for old agents "
           "(a warning is logged).", type="choice", choices=("1.0", "1.1", "1.2", "1.3")),
    Option("communication", "authentication", "cert+password",
           "Default authentication mode of clients without an auth attribute in "
           "clients.xml: cert+password, cert or bootstrap.",
           type="choice", choices=("cert+password", "cert", "bootstrap")),
    # [reporting]: what the server reads of a statistics upload (RecvStats)
    Option("reporting", "max_entries", 50_000,
           "Bad, modified and extra entries of one run that are read and handed to the "
           "Statistics plugins (bad first, then modified, then extra); the others, and every "
           "good entry, are only counted.", type="int"),
    Option("reporting", "large_upload_entries", 5_000,
           "A statistics upload is large once more than this many of its bad, modified and "
           "extra entries are read (about 2 MB of memory).", type="int"),
    Option("reporting", "large_uploads", 2,
           "How many large statistics uploads are read at once; another waits up to "
           "large_upload_wait seconds, then the agent is told to try later.", type="int"),
    Option("reporting", "large_upload_wait", 5.0,
           "Seconds a large statistics upload waits for its turn.", type="float"),
    # [metrics]: /metrics for Prometheus (bcfg2.metrics)
    Option("metrics", "enabled", False,
           "Serve the server's metrics (requests, build times, caches, file events, Packages "
           "indices, children, storage) in the Prometheus text format at /metrics: on the "
           "web page, and on listen if set. Off: /metrics answers 404.", type="bool"),
    Option("metrics", "listen", "",
           "Also serve /metrics on its own plain-HTTP listener at HOST:PORT ([V6]:PORT), an IP "
           "address of this machine, for a site that scrapes without the web page. Needs "
           "enabled = true. Empty: no listener."),
    Option("metrics", "allow", "127.0.0.1, ::1",
           "Comma-separated addresses or networks (CIDR) that may scrape /metrics; a "
           "request from anywhere else gets 403 (and is counted).", type="list"),
    Option("metrics", "token", None,
           "If set, a scrape must also send it as a bearer token (Authorization: Bearer "
           "TOKEN; Prometheus' authorization or bearer_token_file); else 403."),
    # [database]: where run-time state is kept (bcfg2.storage)
    Option("database", "engine", "sqlite",
           "Where the server keeps what it learns at run time (client registrations and "
           "profiles, probe data, client runs): sqlite, one file per store under [server] "
           "state_dir (sqlite3, upstream's name, is the same), or postgresql, every store "
           "in one PostgreSQL database that several servers may share (needs pip install "
           "'psycopg[binary]' psycopg-pool). bcfg2-admin dbmigrate applies schema changes "
           "by hand; the server applies them at start-up.",
           type="choice", choices=("sqlite", "sqlite3", "postgresql")),
    Option("database", "name", "bcfg2",
           "PostgreSQL: the database (SQLite ignores it: each store's file is fixed under "
           "state_dir)."),
    Option("database", "user", "",
           "PostgreSQL: the role to log in as (empty: libpq's default, the login name)."),
    Option("database", "password", None,
           "PostgreSQL: the password (empty: none, or libpq's ~/.pgpass and PGPASSWORD). "
           "Never logged."),
    Option("database", "host", "",
           "PostgreSQL: host name, address or Unix socket directory (empty: libpq's "
           "default, the local socket)."),
    Option("database", "port", "", "PostgreSQL: port (empty: libpq's default, 5432)."),
    Option("database", "options", "",
           "PostgreSQL: more libpq connection parameters as comma-separated keyword=value "
           "pairs, e.g. sslmode=verify-full, sslrootcert=/etc/bcfg2/db-ca.pem, "
           "connect_timeout=10 (the keywords of libpq's connection strings)."),
    Option("database", "pool_size", 10,
           "PostgreSQL: most connections one server process keeps open (a request holds "
           "one for the length of a transaction).", type="int"),
    Option("database", "event_retention", 3600.0,
           "PostgreSQL: seconds the cache expiries servers announce to each other are kept; "
           "a server away longer (cut off from the database) expires all its cached "
           "metadata when it is back.", type="float"),
    # [web]: the login-protected status page (bcfg2.web)
    Option("web", "listen", "",
           "HOST:PORT of the web page (HTTPS with the server's certificate and key, on its own "
           "port, never the agents' one). Port 0 picks a free one. Empty: off.",
           flags=("--web-listen",), metavar="HOST:PORT"),
    Option("web", "users", "",
           "The file of web users and their roles (bcfg2-admin web user add). Empty: "
           "<[server] state_dir>/web/users.json.", type="path"),
    Option("web", "secret", "",
           "The file holding the key that signs session cookies (made, mode 0600, if it does "
           "not exist). Servers behind one name share it. Empty: <[server] state_dir>/web/secret.",
           type="path"),
    Option("web", "stale_hours", 1.0,
           "Hours without a run after which a client counts as stale (twice the usual "
           "half-hour run interval).", type="float"),
    Option("web", "session_hours", 8.0,
           "Hours a login lasts; the session cookie is refused after it.", type="float"),
    Option("web", "login_attempts", 5,
           "Failed logins allowed per source address and per user name within "
           "login_window seconds; more are refused unchecked and logged.", type="int"),
    Option("web", "login_window", 300.0,
           "The window, in seconds, of login_attempts.", type="float"),
    # [caching]
    Option("caching", "client_metadata", "off",
           "Client metadata caching: off, initial, cautious (or on), aggressive.",
           type="choice", choices=("off", "initial", "cautious", "on", "aggressive")),
    Option("caching", "configurations", 10000,
           "Most client configurations kept, serialised, and served again until something "
           "they were built from changes (per process; 0 turns the cache off).", type="int"),
    Option("caching", "configuration_bytes", 256 * 1024 * 1024,
           "Most bytes the kept configurations take, compressed (per process).", type="int"),
    Option("caching", "bound_entries", 100_000,
           "Most bound entries kept per client likeness, for cold builds to copy "
           "(per process; 0 turns it off).", type="int"),
    Option("caching", "bound_bytes", 64 * 1024 * 1024,
           "Most bytes the kept bound entries take, serialised (per process).", type="int"),
    # [logging]
    Option("logging", "path", "", "Also log to this file.", type="path",
           flags=("-o", "--logfile"), metavar="FILE"),
    Option("logging", "syslog", True, "Also log to syslog (when /dev/log exists).",
           type="bool"),
    Option("logging", "level", "",
           "Log level by name: debug, info, warning, error or critical. The most detailed of "
           "it, debug and verbose applies; empty: warning unless debug or verbose is on.",
           type="level"),
    Option("logging", "debug", False, "Log debug messages.", type="bool",
           flags=("-d", "--debug"), cli_value=True),
    Option("logging", "verbose", False, "Log informational messages.", type="bool",
           flags=("-v", "--verbose"), cli_value=True),
    # [encryption]: Cfg *.crypt files, encrypted Properties elements, bcfg2-crypt
    Option("encryption", "passphrases", {},
           "Every other option of this section is a passphrase: NAME = passphrase, one line "
           "each. Cfg .crypt files and encrypted=\"NAME\" elements of Properties files are "
           "decrypted with them; bcfg2-crypt encrypts with them.", type="names",
           metavar="NAME"),
    Option("encryption", "algorithm", "aes_256_cbc",
           "Cipher of the compat (openssl enc) format: aes_128_cbc, aes_192_cbc or "
           "aes_256_cbc. The auth format always uses AES-256-GCM."),
    Option("encryption", "format", "auth",
           "Format bcfg2-crypt writes: auth (authenticated, AES-256-GCM with scrypt; upstream "
           "Bcfg2 and openssl cannot read it) or compat (upstream's, readable by openssl enc "
           "and Bcfg2 1.3/1.4, but with no integrity check). Both are always read.",
           type="choice", choices=("auth", "compat")),
    Option("encryption", "decrypt", "strict",
           "strict: a Properties file with an element no passphrase decrypts is not used; "
           "lax: such elements keep their encrypted text and a warning is logged. A file's "
           "lax_decryption=\"true|false\" attribute overrides it.",
           type="choice", choices=("strict", "lax")),
    Option("encryption", "lax_decryption", False,
           "Upstream 1.4's name for decrypt = lax (either turns lax decryption on).",
           type="bool"),
    # [mdata]
    Option("mdata", "owner", "root", "Default owner of Path entries."),
    Option("mdata", "group", "root", "Default group of Path entries."),
    Option("mdata", "mode", "644", "Default mode of Path entries."),
    Option("mdata", "secontext", "__default__", "Default SELinux context of Path entries."),
    Option("mdata", "paranoid", True, "Default paranoid flag of Path entries.", type="bool"),
    Option("mdata", "sensitive", False, "Default sensitive flag of Path entries.",
           type="bool"),
    Option("mdata", "important", False, "Default important flag of Path entries.",
           type="bool"),
]

#: the options of the agent's drivers, in sections of their own as upstream's client
#: tools have them; the server never reads them, the drivers do (``drivers._common.setting``)
DRIVER_OPTIONS: list[Option] = [
    Option("POSIXUsers", "uid_whitelist", "",
           "Comma-separated uid ranges (1000-1999, 5000-) whose users the agent manages; "
           "when set, uid_blacklist is ignored. Users outside the managed ranges are never "
           "reported extra, and an entry with an explicit uid outside them is an error.",
           type="list"),
    Option("POSIXUsers", "uid_blacklist", "",
           "Comma-separated uid ranges whose users the agent leaves alone (used when no "
           "uid_whitelist is set).", type="list"),
    Option("POSIXUsers", "gid_whitelist", "",
           "Comma-separated gid ranges whose groups the agent manages; when set, "
           "gid_blacklist is ignored.", type="list"),
    Option("POSIXUsers", "gid_blacklist", "",
           "Comma-separated gid ranges whose groups the agent leaves alone (used when no "
           "gid_whitelist is set).", type="list"),
    Option("APT", "install_path", "/usr",
           "Prefix of the APT and dpkg tools (apt-get, apt-cache, dpkg-query are in its "
           "bin/).", type="path"),
    Option("APT", "var_path", "/var",
           "The system's var directory: dpkg's database is lib/dpkg under it, APT's state "
           "lib/apt and its cache cache/apt.", type="path"),
    Option("APT", "etc_path", "/etc", "The system's etc directory (APT's configuration is "
           "apt/ under it).", type="path"),
    Option("YUM", "pkg_checks", True,
           "Check the installed version of rpm packages (false: only that each is "
           "installed).", type="bool"),
    Option("YUM", "pkg_verify", True,
           "Also check the installed files of rpm packages (rpm -V) and reinstall a package "
           "whose files changed.", type="bool"),
    Option("YUM", "install_missing", True,
           "Install missing rpm packages (false: report them only).", type="bool"),
    Option("YUM", "fix_version", True,
           "Upgrade or downgrade rpm packages of the wrong version (false: report them "
           "only).", type="bool"),
    Option("YUM", "reinstall_broken", True,
           "Reinstall rpm packages whose files fail rpm -V (false: report them only).",
           type="bool"),
    Option("YUM", "install_action", "install",
           "The documented spelling of install_missing: install, or none (report only); "
           "both must allow it.", type="choice", choices=("install", "none")),
    Option("YUM", "version_fail_action", "upgrade",
           "The documented spelling of fix_version: upgrade, or none (report only); both "
           "must allow it.", type="choice", choices=("upgrade", "none")),
    Option("YUM", "verify_fail_action", "reinstall",
           "The documented spelling of reinstall_broken: reinstall, or none (report only); "
           "both must allow it.", type="choice", choices=("reinstall", "none")),
    Option("YUM", "verify_flags", "",
           "Comma-separated rpm -V options for every package (nomtime, nomode, "
           "nolinkto...), without their leading dashes.", type="list"),
]

def _shared(section: str, name: str, **changes: Any) -> Option:
    """An option of OPTIONS as the agent reads it (its own flags or help where they differ)."""
    opt = next(o for o in OPTIONS if o.section == section and o.name == name)
    return dataclasses.replace(opt, **changes)


#: the agent's options (``bcfg2``): the bcfg2.conf options upstream's agent reads, with its
#: flags. Options the server reads too ([communication] password...) are the same entries.
CLIENT_OPTIONS: list[Option] = [
    # [client]
    Option("client", "drivers", [],
           "Comma-separated drivers to use (POSIX, Action, APT, DNF, POSIXUsers, Systemd); "
           "empty: every driver this machine can use.", type="list", flags=("-D", "--drivers")),
    Option("client", "decision", "none",
           "Decision list mode: whitelist (install only what the server's whitelist names), "
           "blacklist (never what its blacklist names) or none. Ignored with -f.",
           type="choice", choices=("whitelist", "blacklist", "none"),
           flags=("-l", "--decision")),
    Option("client", "paranoid", False,
           "Back up files marked paranoid=\"true\" before replacing them (see [paranoid]).",
           type="bool", flags=("-P", "--paranoid"), cli_value=True),
    Option("client", "profile", "", "Assert this profile group for the host (AssertProfile).",
           flags=("-p", "--profile")),
    Option("client", "probe_timeout", 300.0,
           "Seconds a probe may run before it is killed (0: no limit).", type="float"),
    Option("client", "command_timeout", 0.0,
           "Seconds an Action's command may run before it is killed (0: no limit).",
           type="float"),
    Option("client", "exit_on_probe_failure", True,
           "Stop the run when a probe fails (exits non-zero or cannot run).", type="bool"),
    Option("client", "servicemode", "default",
           "Service handling: default (restart what changed), disabled (touch no service) or "
           "build (stop services started; skip Actions with build=\"false\").",
           type="choice", choices=("default", "disabled", "build"),
           flags=("-s", "--service-mode")),
    # [components]
    _shared("components", "bcfg2", help="The server's URL.", metavar="URL"),
    Option("components", "lockfile", "/var/lock/bcfg2.run",
           "The lock file that keeps two agent runs from overlapping.", type="path"),
    Option("components", "encoding", "UTF-8", "Text encoding of configuration files.",
           flags=("-E", "--encoding")),
    # [communication]
    _shared("communication", "password", help="The password sent to the server."),
    _shared("communication", "user",
            help="The user name sent to the server: root (the server identifies the client "
                 "by its address) or the client's uuid."),
    _shared("communication", "key", help="The agent's TLS private key, for certificate auth."),
    _shared("communication", "certificate",
            help="The agent's TLS certificate, for certificate auth."),
    _shared("communication", "ca",
            help="CA certificate (PEM) the server's certificate must be signed by. Without "
                 "it the server is not authenticated (a warning says so, as upstream's).",
            flags=("--ca-cert",)),
    Option("communication", "serverCommonNames", [],
           "Colon-separated names the server's certificate may have (its common name or a "
           "subject alternative name); when set, checked instead of the URL's host name.",
           type="colon", flags=("--ssl-cns",)),
    _shared("communication", "protocol"),
    Option("communication", "retries", 3,
           "How many times a call that met a network error is tried again.", type="int",
           flags=("-R", "--retries")),
    Option("communication", "retry_delay", 1.0,
           "Seconds before the first retry; each further retry waits twice as long.",
           type="float", flags=("-y", "--retry-delay")),
    Option("communication", "timeout", 90.0, "Seconds a call to the server may take.",
           type="float", flags=("-t", "--timeout")),
    # [paranoid]
    Option("paranoid", "path", "/var/cache/bcfg2",
           "Where paranoid mode keeps backups (named after the path, / replaced by _, and "
           "the time).", type="path"),
    Option("paranoid", "max_copies", 1, "Backups kept per file in paranoid mode.",
           type="int"),
    # [logging]
    _shared("logging", "path", help="Also log to this file."),
    _shared("logging", "syslog"),
    _shared("logging", "debug"),
    _shared("logging", "verbose"),
]

SERVER_CLI_ONLY = {
    "daemon": ("-D", "--daemon"),
}


class Section:
    """Attribute access to the options of one section."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        # a names option (the [encryption] passphrases) shows its names, never its values;
        # a password shows whether it is set
        items = ", ".join(f"{k}={sorted(v) if isinstance(v, dict) else _shown(k, v)}"
                          for k, v in vars(self).items() if not k.startswith("_"))
        return f"[{self._name}] {items}"


def _shown(name: str, value: Any) -> str:
    """An option's value as a Section's repr shows it: a password or token only as set or not."""
    if ("password" in name or name == "token") and value:
        return "'***'"
    return repr(value)


class Setup:
    """The parsed options: ``setup.server.repository`` and so on.

    ``config_file`` is the bcfg2.conf that was read (or None), ``daemon`` the
    pidfile given with ``-D`` (or None), and ``raw`` the whole parsed
    bcfg2.conf, for plugins with sections of their own.
    """

    def __init__(self) -> None:
        self.config_file: str | None = None
        self.daemon: str | None = None
        self.raw = configparser.RawConfigParser()
        self.args: list[str] = []
        #: every option that was read: OPTIONS and those of the plugins and core in use
        self.options: list[Option] = list(OPTIONS)
        for opt in OPTIONS:
            if not hasattr(self, opt.section):
                setattr(self, opt.section, Section(opt.section))

    def get(self, section: str, name: str) -> Any:
        return getattr(getattr(self, section), name)

    def set(self, section: str, name: str, value: Any) -> None:
        if not hasattr(self, section):
            setattr(self, section, Section(section))
        setattr(getattr(self, section), name, value)


#: the options of the core that started last in this process (``in_service``)
_IN_SERVICE: list[Setup] = []


def put_in_service(setup: Setup) -> None:
    """Record the options a core runs with (the core does it as it starts)."""
    _IN_SERVICE[:] = [setup]


def in_service() -> Setup | None:
    """The options of the core running in this process, for repository code written for
    upstream (``Bcfg2.Options.setup``); None before a core starts."""
    return _IN_SERVICE[0] if _IN_SERVICE else None


_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}


#: the log levels ``[logging] level`` accepts, by name
LEVELS = ("debug", "info", "warning", "error", "critical")


def convert(opt: Option, raw: Any, where: str) -> Any:
    """Turn a raw string into the option's type, or raise a one-line ConfigError.

    ``where`` is the file, ``default``, ``command line`` or ``environment``;
    an error from the environment names the variable.
    """
    if raw is None or not isinstance(raw, str):
        return raw
    value = raw.strip()

    def bad(what: str) -> ConfigError:
        if where == "environment":
            return ConfigError(f"{opt.env}: {what}")
        return ConfigError(f"{where}: [{opt.section}] {opt.name}: {what}")

    if opt.type == "bool":
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise bad(f"{value!r} is not a boolean (use true or false)")
    if opt.type == "int":
        try:
            return int(value)
        except ValueError:
            raise bad(f"{value!r} is not an integer") from None
    if opt.type == "float":
        try:
            return float(value)
        except ValueError:
            raise bad(f"{value!r} is not a number") from None
    if opt.type == "octal":
        try:
            return int(value, 8)
        except ValueError:
            raise bad(f"{value!r} is not an octal number") from None
    if opt.type == "list":
        return [item.strip() for item in value.replace("\n", ",").split(",") if item.strip()]
    if opt.type == "colon":
        return [item.strip() for item in value.split(":") if item.strip()]
    if opt.type == "path":
        return os.path.abspath(os.path.expanduser(value)) if value else ""
    if opt.type == "choice":
        if value not in opt.choices:
            raise bad(f"{value!r} is not one of {', '.join(opt.choices)}")
        return value
    if opt.type == "level":
        if value and value.lower() not in LEVELS:
            raise bad(f"{value!r} is not a log level (use {', '.join(LEVELS)})")
        return value.lower()
    if opt.type == "url":
        parsed = urllib.parse.urlsplit(value)
        try:
            port = parsed.port
        except ValueError:
            raise bad(f"{value!r} has an invalid port") from None
        if parsed.scheme != "https" or not parsed.hostname or port is None:
            raise bad(f"{value!r} is not a URL of the form https://host:port")
        return value
    return value


def make_parser(prog: str, description: str = "", extra: Sequence[Option] = ()) -> argparse.ArgumentParser:
    """An argument parser with -C and every option's flags; tools add their own.

    Give it to ``add_component_options`` before parsing, and the parsed
    namespace to ``build(ns.config, vars(ns))``: it ignores what is not an
    option.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=PRECEDENCE)
    add_version_flag(parser)
    parser.add_argument("-C", "--config", default=None, metavar="FILE",
                        help=f"bcfg2.conf to read (default {DEFAULT_CONFIG})")
    _add_flags(parser, list(OPTIONS) + list(extra))
    return parser


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """``--version``: the program's name and this distribution's version, then exit."""
    from bcfg2 import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def component_flags(opt: Option) -> tuple[str, ...]:
    """A plugin's or core's option on the command line: its own flags, else --section-name."""
    return opt.flags or (f"--{opt.section}-{opt.name}".replace("_", "-"),)


def _add_flags(parser: Any, opts: Sequence[Option], component: bool = False) -> None:
    for opt in opts:
        flags = component_flags(opt) if component else opt.flags
        if not flags:
            continue
        help_text = f"{opt.help} [{opt.section}] {opt.name}, ${opt.env}".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": opt.dest, "default": None, "help": help_text}
        if opt.cli_value is not None:
            kwargs["action"] = "store_const"
            kwargs["const"] = opt.cli_value
        else:
            kwargs["metavar"] = opt.metavar or opt.name.upper()
        parser.add_argument(*flags, **kwargs)


def add_component_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                          plugins: Sequence[str] = ()) -> list[Option]:
    """Add the options of the plugins and core the command line and bcfg2.conf name.

    With ``-h``/``--help`` on the command line, those of every plugin and
    core there is, so the help lists them all. ``plugins`` are added always
    (a tool that reads a plugin's data).
    """
    from bcfg2.plugin.manager import component_options

    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("-C", "--config", default=None)
    peek.add_argument("--plugins", default=None)
    peek.add_argument("--backend", default=None)
    peek.add_argument("-h", "--help", action="store_true")
    known, _ = peek.parse_known_args(argv)
    if known.help:
        opts = component_options(everything=True)
    else:
        names, backend = _components(known.config, known.plugins, known.backend)
        opts = component_options([*names, *plugins], backend)
    group = parser.add_argument_group("options of the plugins and cores")
    _add_flags(group, opts, component=True)
    return opts


def _components(config: str | None, plugins: str | None,
                backend: str | None) -> tuple[list[str], str]:
    """The plugin names and core a command line and its bcfg2.conf choose (no checks)."""
    raw = configparser.RawConfigParser()
    path = config if config is not None else (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG)
                                              else None)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                raw.read_file(fh, source=path)
        except (configparser.Error, UnicodeDecodeError, OSError):
            pass  # build() reports it
    by_name = {opt.dest: opt for opt in OPTIONS}

    def value(dest: str, given: str | None) -> str:
        opt = by_name[dest]
        if given is not None:
            return given
        if opt.env in os.environ:
            return os.environ[opt.env]
        if raw.has_option(opt.section, opt.name):
            return raw.get(opt.section, opt.name)
        return opt.default

    names = convert(by_name["server.plugins"], value("server.plugins", plugins), "peek")
    return list(names), value("server.backend", backend).strip()


def load(
    argv: Sequence[str] | None = None,
    prog: str = "bcfg2-server",
    description: str = "",
    daemon_flag: bool = False,
    positional: str | None = None,
) -> Setup:
    """Parse bcfg2.conf and the command line into a Setup.

    The command line wins over the environment (``BCFG2_<SECTION>_<OPTION>``),
    which wins over bcfg2.conf, which wins over the defaults. Any invalid
    value raises ConfigError naming the file, section and option, or the
    environment variable.
    """
    parser = make_parser(prog, description)
    add_component_options(parser, argv)
    if daemon_flag:
        parser.add_argument("-D", "--daemon", dest="daemon", default=None, metavar="PIDFILE",
                            help="daemonize, writing the pid to PIDFILE")
    if positional:
        parser.add_argument("args", nargs=argparse.REMAINDER, help=positional)
    ns = parser.parse_args(argv)
    return build(ns.config, vars(ns))


def build(config_file: str | None, cli: dict[str, Any] | None = None,
          plugins: Sequence[str] = (), environ: dict[str, str] | None = None) -> Setup:
    """Build a Setup from a bcfg2.conf path (None: the default, if it exists).

    The options of the plugins in ``[server] plugins`` (and of ``plugins``)
    and of the ``[server] backend`` core are read too. ``environ`` (default
    ``os.environ``) gives the ``BCFG2_<SECTION>_<OPTION>`` variables.
    """
    cli = cli or {}
    setup = Setup()
    setup.daemon = cli.get("daemon")
    setup.args = list(cli.get("args") or [])
    path = config_file
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    if path is not None:
        _read(setup, path)
    env = dict(os.environ if environ is None else environ)
    _apply(setup, OPTIONS, path, cli, env)
    from bcfg2.plugin.manager import component_options

    extra = component_options([*setup.server.plugins, *plugins], setup.server.backend)
    _apply(setup, extra, path, cli, env)
    setup.options = list(OPTIONS) + extra
    return setup


def client_parser(prog: str = "bcfg2", description: str = "") -> argparse.ArgumentParser:
    """An argument parser with -C and the flags of the agent's options; the agent adds its own."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-C", "--config", default=None, metavar="FILE",
                        help=f"bcfg2.conf to read (default {DEFAULT_CONFIG})")
    _add_flags(parser, CLIENT_OPTIONS)
    return parser


def build_client(config_file: str | None, cli: dict[str, Any] | None = None,
                 environ: dict[str, str] | None = None) -> Setup:
    """The agent's Setup from a bcfg2.conf path (None: the default, if it exists), the
    command line and the environment (``BCFG2_SECTION_OPTION``).

    Only ``CLIENT_OPTIONS`` and the drivers' ``DRIVER_OPTIONS`` are read.
    """
    cli = cli or {}
    setup = Setup()
    path = config_file
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    if path is not None:
        _read(setup, path)
    env = dict(os.environ if environ is None else environ)
    _apply(setup, [*CLIENT_OPTIONS, *DRIVER_OPTIONS], path, cli, env)
    setup.options = [*CLIENT_OPTIONS, *DRIVER_OPTIONS]
    return setup


def _read(setup: Setup, path: str) -> None:
    """Read a bcfg2.conf into ``setup.raw``; a ConfigError if it is missing or unreadable."""
    if not os.path.exists(path):
        raise ConfigError(f"{path}: no such configuration file")
    try:
        with open(path, encoding="utf-8") as fh:
            setup.raw.read_file(fh, source=path)
    except (configparser.Error, UnicodeDecodeError, OSError) as err:
        raise ConfigError(f"{path}: cannot be parsed: {err}".replace("\n", " ")) from None
    setup.config_file = os.path.abspath(path)


def misspelt_variables(environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """``BCFG2_`` variables that set no option but look like one's: (variable, that one's).

    A variable close to no option's (another program's) is left alone.
    """
    env = os.environ if environ is None else environ
    given = [var for var in env if var.startswith(ENV_PREFIX)]
    if not given:
        return []
    table = all_options()
    known = {opt.env for opt in table if opt.type != "names"}
    prefixes = [env_name(opt.section, "") for opt in table if opt.type == "names"]
    out = []
    for var in sorted(given):
        if var in known or any(var.startswith(prefix) for prefix in prefixes):
            continue
        close = difflib.get_close_matches(var, known, n=1, cutoff=0.85)
        if close:
            out.append((var, close[0]))
    return out


def _apply(setup: Setup, opts: Sequence[Option], path: str | None, cli: dict[str, Any],
           env: dict[str, str]) -> None:
    for opt in opts:
        if opt.type == "names":
            setup.set(opt.section, opt.name,
                      _names(setup, opt, [*OPTIONS, *opts], path, cli, env))
            continue
        value: Any = opt.default
        if path is not None and setup.raw.has_option(opt.section, opt.name):
            value = convert(opt, setup.raw.get(opt.section, opt.name), path)
        elif isinstance(opt.default, str):
            value = convert(opt, opt.default, "default")
        if opt.env in env:
            value = convert(opt, env[opt.env], "environment")
        if cli.get(opt.dest) is not None:
            value = convert(opt, cli[opt.dest], "command line")
        setup.set(opt.section, opt.name, value)


def _names(setup: Setup, opt: Option, known: Sequence[Option], path: str | None,
           cli: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """A ``names`` option: the section's options that no other option of it declares.

    ``BCFG2_<SECTION>_<NAME>`` adds (or replaces) the name in lower case, as
    bcfg2.conf's names are. In-process callers (tests, tools) may give the
    whole dict as ``cli[opt.dest]``.
    """
    given = cli.get(opt.dest)
    if isinstance(given, dict):
        return dict(given)
    declared = {o.name for o in known if o.section == opt.section}
    names = dict(opt.default)
    if path is not None and setup.raw.has_section(opt.section):
        names = {name: value.strip() for name, value in setup.raw.items(opt.section)
                 if name not in declared}
    prefix = env_name(opt.section, "")
    taken = {env_name(opt.section, name) for name in declared}
    for var, value in env.items():
        if var.startswith(prefix) and len(var) > len(prefix) and var not in taken:
            names[var[len(prefix):].lower()] = value.strip()
    return names


#: what a server name may be (it is stored and compared, never used as a path)
SERVER_NAME = re.compile(r"[A-Za-z0-9_.:@\[\]-]{1,200}")


def server_name(setup: Setup, port: int | None = None) -> str:
    """This server's name (``[server] name``, else ``<host name>:<port>``).

    The port is the one the server listens on (``port``, once known), else
    the one ``[components] bcfg2`` gives, so two servers on one machine get
    different names. A server on port 0 that does not know its port yet
    gets a name of its own (two servers of one name would skip each
    other's cache expiries). A ``[server] name`` that is not a plain name
    is a ConfigError.
    """
    given = str(getattr(getattr(setup, "server", None), "name", "") or "").strip()
    if given:
        if not SERVER_NAME.fullmatch(given):
            raise ConfigError(f"[server] name: {given[:64]!r} is not a name of at most 200 "
                              f"letters, digits and _.:@[]-")
        return given
    if port is None:
        url = str(getattr(getattr(setup, "components", None), "bcfg2", "") or "")
        try:
            port = urllib.parse.urlsplit(url).port
        except ValueError:
            port = None
        if port is None:
            port = 6789
    host = socket.gethostname() or "localhost"
    return f"{host}:{port}" if port else f"{host}:0-{secrets.token_hex(6)}"


def require(setup: Setup, section: str, name: str, why: str) -> Any:
    """Return an option's value, or raise ConfigError if it is unset."""
    value = setup.get(section, name)
    if value in (None, ""):
        where = setup.config_file or "bcfg2.conf"
        raise ConfigError(f"{where}: [{section}] {name}: missing; {why}")
    return value


def _format_default(opt: Option) -> str:
    if opt.default is None:
        return ""
    if isinstance(opt.default, bool):
        return "true" if opt.default else "false"
    if isinstance(opt.default, list):
        return ", ".join(opt.default)
    return str(opt.default)


def all_options() -> list[Option]:
    """The whole table: OPTIONS, the options of every plugin and core there is, and the
    agent's that the server does not read."""
    from bcfg2.plugin.manager import component_options

    table = list(OPTIONS) + component_options(everything=True)
    known = {opt.dest for opt in table}
    return table + [opt for opt in (*CLIENT_OPTIONS, *DRIVER_OPTIONS) if opt.dest not in known]


def example() -> str:
    """The text of bcfg2.conf.example: every option, the plugins' and cores' too, commented."""
    out = [
        "# bcfg2.conf: every option the server and the agent (bcfg2) read, with its default.",
        "# Uncomment a line to change it. Command-line flags are noted where they exist.",
        *("# " + line for line in textwrap.wrap(PRECEDENCE, 76)),
        "# Generated from src/bcfg2/options.py: python -m bcfg2.options > bcfg2.conf.example",
    ]
    section = None
    table = all_options()
    order = {}
    for opt in table:
        order.setdefault(opt.section, len(order))
    for opt in sorted(table, key=lambda o: order[o.section]):
        if opt.section != section:
            section = opt.section
            out.extend(["", f"[{section}]"])
        help_text = opt.help
        flags = opt.flags if opt in OPTIONS or opt in CLIENT_OPTIONS else component_flags(opt)
        if flags:
            help_text += f" (command line: {', '.join(flags)})"
        if opt.type == "names":
            help_text += f" (environment: {env_name(opt.section, opt.metavar or 'name')})"
        else:
            help_text += f" (environment: {opt.env})"
        out.extend("# " + line for line in textwrap.wrap(help_text, 76))
        if opt.type == "names":
            out.append(f"# {opt.metavar or 'name'} = ...")
            continue
        default = _format_default(opt)
        out.append(f"#{opt.name} = {default}".rstrip())
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(example())
