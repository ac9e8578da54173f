"""systemd's readiness protocol (sd_notify): a ``Type=notify`` unit learns when we serve.

systemd starts the service with ``$NOTIFY_SOCKET`` naming a datagram socket
(a path, or ``@name`` in the abstract namespace); the service sends
``READY=1`` once it listens and ``STOPPING=1`` as it stops. Without the
variable (not started by systemd) nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

logger = logging.getLogger("bcfg2.sdnotify")


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``KEY=value`` lines) to ``$NOTIFY_SOCKET``; whether it was sent."""
    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        address = "\0" + path[1:]
    elif path.startswith("/"):
        address = path
    else:
        return False  # not started by systemd (or a transport we do not speak, vsock)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as err:
        logger.warning("Cannot tell systemd %s through NOTIFY_SOCKET %s: %s",
                       state.split("\n", 1)[0], path, err.strerror or err)
        return False
    return True


__all__ = ["notify"]
