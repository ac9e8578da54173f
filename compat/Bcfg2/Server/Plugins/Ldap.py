"""``Bcfg2.Server.Plugins.Ldap``: what an upstream ``Ldap/config.py`` imports.

The classes are this server's own (``bcfg2.plugins.ldap``) under the names
upstream gave them, so a config.py written for Bcfg2 1.3 or 1.4 runs as it is.
"""

from bcfg2.plugins.ldap import (
    Ldap,
    LdapConnection,
    LdapQuery,
    LdapSubQuery,
    filter_format,
    register_query,
)

__all__ = ["Ldap", "LdapConnection", "LdapQuery", "LdapSubQuery", "filter_format",
           "register_query"]
