"""The ACL plugin behind the builtin core: a refused method is a 401, the rest is served."""

from __future__ import annotations

import xmlrpc.client

import lxml.etree
import pytest
from conftest import PLUGINS


def test_a_method_denied_by_ip_xml_is_refused_and_the_others_are_served(repo, network_server):
    repo.write("ACL/ip.xml", """\
        <ACL>
          <Deny address="127.0.0.1" method="GetProbes"/>
        </ACL>
        """)
    server = network_server(repo, server__plugins=PLUGINS + ",ACL")
    assert "ACL" in server.core.plugins and "DefaultACL" not in server.core.plugins
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        server.proxy("uuid-client1", "pw1").GetProbes()
    assert info.value.errcode == 401
    assert server.proxy("uuid-client1", "pw1").DeclareVersion("1.4.0") is True
    config = lxml.etree.fromstring(server.proxy("uuid-client1", "pw1").GetConfig().encode())
    assert config.tag == "Configuration"
    # no rule for plugin methods: localhost is allowed by the implicit last rule
    assert server.proxy("uuid-client1", "pw1").Metadata.list_clients() == ["client1", "client2"]
