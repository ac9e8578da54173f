"""Ways around the access rules: each must be impossible, on every core."""

from __future__ import annotations

import shutil
import xmlrpc.client

import pytest
from attack import assert_served, call_body, fault_of, raw_call
from conftest import REPO_EXAMPLE, WEB1

from bcfg2.errors import ACCESS_DENIED, UNKNOWN_METHOD

DENY_ASSERT_PROFILE = """\
<ACL>
  <Deny address="127.0.0.0" netmask="8" method="AssertProfile"/>
</ACL>
"""


@pytest.mark.parametrize("name", ["system.AssertProfile", "System.AssertProfile",
                                  "system.system.AssertProfile", "AssertProfile "])
def test_method_name_aliases_reach_no_method(hostile, name: str) -> None:
    """An alias of a denied method names no method; the denied name itself is denied."""
    server = hostile()
    status, body = raw_call(server, call_body(name, "dbserver"))
    assert status == 200
    fault = fault_of(body)
    assert fault is not None and fault.faultCode == UNKNOWN_METHOD
    assert_served(server)


def test_denied_method_stays_denied_under_any_spelling(hostile, tmp_path) -> None:
    """With ip.xml denying AssertProfile, no spelling of it changes the client's profile."""
    repo = tmp_path / "acl-repo"
    shutil.copytree(REPO_EXAMPLE, repo)
    (repo / "ACL").mkdir()
    (repo / "ACL" / "ip.xml").write_text(DENY_ASSERT_PROFILE)
    server = hostile(repo, server__plugins="Metadata,Bundler,Cfg,Rules,Defaults,Probes,"
                     "Properties,TemplateHelper,GroupPatterns,Decisions,Reporting,ACL")
    for name in ("AssertProfile", "system.AssertProfile"):
        fault = fault_of(raw_call(server, call_body(name, "dbserver"))[1])
        assert fault is not None and fault.faultCode in (ACCESS_DENIED, UNKNOWN_METHOD), name
    with pytest.raises(xmlrpc.client.Fault):
        server.proxy(*WEB1).AssertProfile("dbserver")
    assert server.core.build_metadata("web1.example.com").profile == "webserver"
    assert_served(server)
