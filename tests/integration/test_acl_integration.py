"""The ACL plugin behind the builtin core: a denied method is a Fault, an Allow grants more."""

from __future__ import annotations

import xmlrpc.client

import lxml.etree
import pytest
from conftest import PLUGINS

from bcfg2.errors import ACCESS_DENIED


def test_a_method_denied_by_ip_xml_is_refused_and_the_others_are_served(repo, network_server):
    repo.write("ACL/ip.xml", """\
        <ACL>
          <Deny address="127.0.0.1" method="GetProbes"/>
          <Allow address="127.0.0.0" netmask="8" method="Metadata.list_clients"/>
        </ACL>
        """)
    server = network_server(repo, server__plugins=PLUGINS + ",ACL")
    agent = server.proxy("uuid-client1", "pw1")
    with pytest.raises(xmlrpc.client.Fault) as info:
        agent.GetProbes()
    assert info.value.faultCode == ACCESS_DENIED
    assert "client1 may not call GetProbes" in info.value.faultString
    assert agent.DeclareVersion("1.4.0") is True
    config = lxml.etree.fromstring(agent.GetConfig().encode())
    assert config.tag == "Configuration"
    # an explicit Allow grants a client a plugin method ...
    assert agent.Metadata.list_clients() == ["client1", "client2"]
    # ... and with no rule the identity decides: a client is no admin, even from 127.0.0.1
    with pytest.raises(xmlrpc.client.Fault) as info:
        agent.Metadata.get_all_group_names()
    assert info.value.faultCode == ACCESS_DENIED
