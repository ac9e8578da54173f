"""The server's TLS context, shared by every network core."""

from __future__ import annotations

import logging
import ssl

from bcfg2.errors import CoreInitError
from bcfg2.options import Setup

logger = logging.getLogger(__name__)


MIN_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def server_context(setup: Setup) -> ssl.SSLContext:
    """TLS 1.2 or newer (``tls_min_version``), the server's key pair, client certs if a CA is set.

    Both upstream ``protocol`` values (``xmlrpc/tlsv1``, ``xmlrpc/ssl``)
    negotiate the best version both sides support, never below the minimum.
    Ciphers are the system's defaults.
    """
    comm = setup.communication
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSIONS[comm.tls_min_version]
    if comm.tls_min_version in ("1.0", "1.1"):
        logger.warning("[communication] tls_min_version = %s: accepting TLS versions that "
                       "are no longer safe, for old agents", comm.tls_min_version)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS < 1.2 at level 1+
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
