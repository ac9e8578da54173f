"""A first end-to-end check: an agent run against the builtin core."""

import lxml.etree


def test_agent_run_against_builtin_core(example_repo, builtin_server):
    server = builtin_server(example_repo)
    agent = server.proxy("5c3f7a62-9d0e-4c1b-8f53-web1", "web1-secret")
    assert agent.DeclareVersion("1.4.0pre2") is True
    config = lxml.etree.fromstring(agent.GetConfig().encode())
    assert config.tag == "Configuration"
    assert {b.get("name") for b in config} == {"admin-user", "motd", "ntp", "sshd"}
    assert not config.xpath("//*[@failure]")
