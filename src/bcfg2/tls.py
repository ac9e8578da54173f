"""The server's TLS context, shared by every network core."""

from __future__ import annotations

import logging
import ssl

from bcfg2.errors import CoreInitError
from bcfg2.options import Setup

logger = logging.getLogger(__name__)


def server_context(setup: Setup) -> ssl.SSLContext:
    """TLS 1.2 or newer, the server's key pair, client certificates if a CA is set.

    Both upstream ``protocol`` values (``xmlrpc/tlsv1``, ``xmlrpc/ssl``)
    negotiate the best version both sides support, never below TLS 1.2.
    """
    comm = setup.communication
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(comm.certificate, comm.key)
    except (OSError, ssl.SSLError) as err:
        raise CoreInitError(f"cannot load the TLS certificate {comm.certificate} and key "
                            f"{comm.key}: {err}") from None
    if comm.ca:
        try:
            ctx.load_verify_locations(comm.ca)
        except (OSError, ssl.SSLError) as err:
            raise CoreInitError(f"cannot load the CA certificate {comm.ca}: {err}") from None
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx
