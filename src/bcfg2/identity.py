"""Who is calling: the identity a request carries from authentication to the method.

Authentication yields a ``Caller``: the (ip, port) address exposed methods
have always received first, which also says which client authenticated and
whether the caller is an admin. Rights follow from the identity, never from
the address alone: clients may call the agent methods (``AGENT_METHODS``);
admin methods and plugin RMI need an admin identity (a client certificate
whose CN is in ``[communication] admin_cns``, or ``admin_user`` with
``admin_password``). ``[communication] trust_loopback`` restores upstream's
rule that any client connecting from the loopback address is an admin.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bcfg2.metadata import ClientMetadata
    from bcfg2.options import Setup

#: what an agent calls during a run: open to every authenticated client
AGENT_METHODS = frozenset({
    "DeclareVersion", "GetProbes", "RecvProbeData", "GetDecisionList", "GetConfig",
    "RecvStats", "AssertProfile",
})


#: a client name: it becomes part of file names (Cfg, SSHbase) and report rows
CLIENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,252}")
#: names that mean this machine to some part of the server (the ACL plugin with
#: ``trust_loopback``); never registered on first contact, only by an admin in clients.xml
RESERVED_CLIENT_NAMES = frozenset({"localhost", "localhost.localdomain"})


def valid_client_name(name: str) -> bool:
    """Whether a whole string is a client name: no slashes, no '..', no control characters.

    Client names become parts of file names (``.H_<client>``), hence the strictness.
    """
    return CLIENT_NAME.fullmatch(name) is not None and ".." not in name


def reserved_client_name(name: str) -> bool:
    """Whether a name is reserved (``RESERVED_CLIENT_NAMES``, any case, trailing dot or not)."""
    return name.lower().rstrip(".") in RESERVED_CLIENT_NAMES


class Caller(tuple):
    """The caller of one request: ``(ip, port)`` as upstream passes it, plus its identity.

    ``client`` is the client name authentication found (None for an admin
    who is not a client); ``admin`` names the admin identity (``cert:CN``,
    ``user:NAME`` or ``loopback``), None for an ordinary client. The core
    keeps the request's metadata in ``metadata`` once built, so the ACL check
    and the method share one build.
    """

    client: str | None
    admin: str | None
    metadata: ClientMetadata | None

    def __new__(cls, address: tuple[str, int], client: str | None = None,
                admin: str | None = None) -> Caller:
        self = super().__new__(cls, (address[0], address[1]))
        self.client = client
        self.admin = admin
        self.metadata = None
        return self

    @property
    def ip(self) -> str:
        return self[0]

    def __repr__(self) -> str:
        who = ", ".join(f"{k}={v!r}" for k, v in (("client", self.client), ("admin", self.admin))
                        if v)
        return f"Caller({self[0]!r}, {self[1]}{', ' if who else ''}{who})"


def common_name(cert: dict[str, Any] | None) -> str | None:
    """The one commonName of a verified peer certificate, lowercased; None if not exactly one."""
    if not cert:
        return None
    names = {str(value).lower() for rdn in cert.get("subject", ()) for key, value in rdn
             if key == "commonName"}
    return names.pop() if len(names) == 1 else None


def admin_identity(setup: Setup, cert: dict[str, Any] | None, user: str,
                   password: str) -> str | None | bool:
    """The admin identity the credentials prove, None if they claim none, False if refused.

    A verified client certificate whose CN is listed in ``admin_cns`` is an
    admin; so is ``admin_user`` with ``admin_password``. The admin user with
    a wrong password is refused outright (False), never tried as a client.
    """
    comm = setup.communication
    cn = common_name(cert)
    if cn is not None and cn in {name.lower() for name in comm.admin_cns}:
        return f"cert:{cn}"
    if comm.admin_user and user == comm.admin_user:
        if comm.admin_password and hmac.compare_digest(password.encode(),
                                                       comm.admin_password.encode()):
            return f"user:{user}"
        return False
    return None


def is_loopback(ip: str) -> bool:
    """Whether an address is a loopback address (127.0.0.0/8, ::1, or IPv4-mapped 127/8)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def identity_allows(caller: Caller, method: str) -> bool:
    """What the identity alone permits: admins everything, clients the agent methods."""
    if caller.admin:
        return True
    return caller.client is not None and method in AGENT_METHODS


__all__ = ["AGENT_METHODS", "CLIENT_NAME", "RESERVED_CLIENT_NAMES", "Caller", "admin_identity",
           "common_name", "identity_allows", "is_loopback", "reserved_client_name",
           "valid_client_name"]
