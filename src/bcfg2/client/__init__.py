"""The Python 3 agent: pulls, verifies and applies a client's configuration (``bcfg2``).

``main`` is the command; ``Run`` one run (``Flags`` what its command line
asks); ``Proxy`` the XML-RPC connection to the server; drivers are found by
name in ``bcfg2.client.registry.DRIVERS``.
"""

from bcfg2.client.cli import main
from bcfg2.client.errors import AgentError
from bcfg2.client.proxy import Proxy
from bcfg2.client.run import Flags, Run

__all__ = ["AgentError", "Flags", "Proxy", "Run", "main"]
