"""The web page served by bcfg2-server: on its own port over TLS with every core, never on
the agents' port, off unless [web] listen is set; and as a real bcfg2-server process."""

from __future__ import annotations

import http.client
import http.cookiejar
import re
import signal
import ssl
import urllib.error
import urllib.parse
import urllib.request

import pytest
import web_fleet
from conftest import CORES, ServerProcess, make_setup, write_conf

from bcfg2.web.users import Users

WEB_LINE = re.compile(r"Web page on https://127\.0\.0\.1:(\d+)/")


class Browser:
    """urllib with a cookie jar, trusting the test CA: what a browser does, in a few lines."""

    def __init__(self, context: ssl.SSLContext, port: int) -> None:
        self.base = f"https://127.0.0.1:{port}"
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context),
            urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.base + path, timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def login(self, user: str, password: str) -> tuple[int, str]:
        _, form = self.get("/login")
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', form).group(1)
        data = urllib.parse.urlencode({"username": user, "password": password, "csrf": token,
                                       "next": "/"}).encode()
        with self.opener.open(self.base + "/login", data=data, timeout=30) as answer:
            return answer.status, answer.read().decode()


@pytest.mark.parametrize("core", CORES)
def test_every_core_serves_the_page_on_its_own_port_over_tls(repo, tls, network_server,
                                                             core: str) -> None:
    setup = make_setup(repo, communication__key=tls.key, communication__certificate=tls.cert)
    web_fleet.build(repo, setup, clients=6, days=1)
    server = network_server(repo, core=core, web__listen="127.0.0.1:0")
    host, port = server.core.web.address
    assert host == "127.0.0.1" and port not in (0, server.port)
    browser = Browser(tls.client_context(), port)
    status, page = browser.get("/")
    assert status == 200 and 'action="/login"' in page  # redirected to the login page
    status, page = browser.login("viewer", web_fleet.PASSWORDS["viewer"])
    assert status == 200 and "6 clients" in page
    # the agents' port answers XML-RPC only, never the page
    agents = Browser(tls.client_context(), server.port)
    status, page = agents.get("/login")
    assert status != 200 and "csrf" not in page
    # plain HTTP on the web port gets no page
    plain = urllib.request.build_opener()
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        plain.open(f"http://127.0.0.1:{port}/login", timeout=10).read()


@pytest.mark.parametrize("enabled", [True, False])
def test_metrics_are_served_beside_the_pages_under_their_own_rule(repo, tls, network_server,
                                                                  enabled: bool) -> None:
    server = network_server(repo, web__listen="127.0.0.1:0",
                            metrics__enabled="true" if enabled else "false",
                            metrics__token="scrape-Token-1")
    agent = server.proxy("uuid-client1", "pw1")  # one served configuration to count
    agent.GetConfig()
    _, port = server.core.web.address
    context = tls.client_context()
    url = f"https://127.0.0.1:{port}/metrics"

    def scrape(token: str) -> tuple[int, str]:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, ""

    status, text = scrape("scrape-Token-1")
    if not enabled:
        assert status == 404  # the pages are on, the metrics are not
        return
    assert status == 200
    assert re.search(r'bcfg2_requests_total\{method="GetConfig",outcome="ok"\} [1-9]', text)
    assert scrape("wrong")[0] == 403  # no login of the page's needed, but the token is


def test_the_page_is_off_unless_listen_is_set(repo, network_server) -> None:
    server = network_server(repo)
    assert server.core.web is None


def test_a_bad_listen_address_stops_the_start(repo, network_server, tls) -> None:
    from bcfg2.errors import CoreInitError
    from bcfg2.server import load_core

    setup = make_setup(repo, web__listen="127.0.0.1:99999", communication__password="pw",
                       communication__key=tls.key, communication__certificate=tls.cert)
    with pytest.raises(CoreInitError, match="listen"):
        load_core("builtin")(setup)


def test_bcfg2_server_process_serves_the_page(repo, tls, tmp_path, processes) -> None:
    conf = write_conf(tmp_path / "bcfg2.conf", repo, tls)
    conf.write_text(conf.read_text() + "\n[web]\nlisten = 127.0.0.1:0\n")
    users = Users(str(repo.path.parent / "state" / "web" / "users.json"))
    users.add("admin", "admin", "admin-password-1")
    server = ServerProcess(["-C", str(conf), "-v"])
    processes.append(server)
    port = int(server.wait_for(WEB_LINE).group(1))
    agents = server.port()
    assert agents != port
    browser = Browser(tls.client_context(), port)
    status, page = browser.login("admin", "admin-password-1")
    assert status == 200 and "2 clients" in page
    status, data = browser.get("/api/clients")
    assert status == 200 and '"client1"' in data
    server.proc.send_signal(signal.SIGTERM)
    status, _ = server.finish(timeout=20)
    assert status == 0


def test_an_admins_profile_change_reaches_the_multiprocessing_children(repo, tls,
                                                                        network_server) -> None:
    """The action runs in the parent; the children that build the configurations see it."""
    repo.write("Bundler/base.xml", '<Bundle name="base"><Package name="bash"/></Bundle>')
    users = Users(str(repo.path.parent / "state" / "web" / "users.json"))
    users.add("admin", "admin", "admin-password-1")
    server = network_server(repo, core="multiprocessing", web__listen="127.0.0.1:0",
                            server__children="2", caching__client_metadata="aggressive")

    def bundles() -> set[str]:
        config = server.proxy("uuid-client2", "pw2").GetConfig()
        return set(re.findall(r'<Bundle name="([^"]+)"', config))

    assert bundles() == set()  # client2 has profile "other": no bundle
    browser = Browser(tls.client_context(), server.core.web.address[1])
    browser.login("admin", "admin-password-1")
    _, session = browser.get("/api/session")
    token = re.search(r'"csrf": "([0-9a-f]+)"', session).group(1)
    data = urllib.parse.urlencode({"client": "client2", "action": "profile", "profile": "basic",
                                   "csrf": token}).encode()
    with browser.opener.open(browser.base + "/api/action", data=data, timeout=30) as answer:
        assert answer.status == 202
    assert server.core.web.app.actions.wait_idle(30)
    _, audit = browser.get("/api/audit")
    assert '"status": "done"' in audit
    for _ in range(4):  # whichever child serves the call
        assert bundles() == {"base"}
