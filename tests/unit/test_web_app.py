"""The web page through a WSGI test client (WebTest): every page and its API, filters,
exports, time travel, logins, sessions, CSRF, roles and the admin actions."""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

webtest = pytest.importorskip("webtest", reason="WebTest is not installed: pip install WebTest")

import web_fleet  # noqa: E402

from bcfg2.errors import ConfigError  # noqa: E402
from bcfg2.web.server import WebServer  # noqa: E402
from bcfg2.web.sessions import COOKIE, Signer  # noqa: E402
from bcfg2.web.users import Users  # noqa: E402

HTTPS = {"wsgi.url_scheme": "https", "HTTP_HOST": "localhost", "REMOTE_ADDR": "127.0.0.5"}


class Site:
    """A core over the test fleet, its web server (not listening) and a test client."""

    def __init__(self, core: Any, server: WebServer, now: float) -> None:
        self.core = core
        self.server = server
        self.now = now
        self.client = webtest.TestApp(server.server.wsgi_app, extra_environ=HTTPS)

    def login(self, user: str = "admin", password: str | None = None,
              status: int | str = 303) -> Any:
        form = self.client.get("/login").forms[0]
        form["username"] = user
        form["password"] = web_fleet.PASSWORDS.get(user, "") if password is None else password
        return form.submit(status=status)

    def csrf(self) -> str:
        return self.client.get("/api/session").json["csrf"]

    def act(self, client: str, action: str, status: int = 303, **extra: str) -> Any:
        return self.client.post("/action", {"client": client, "action": action,
                                            "csrf": self.csrf(), **extra}, status=status)

    def wait(self) -> None:
        assert self.server.app.actions.wait_idle(30), "the actions did not finish"


@pytest.fixture
def site(repo, local_core, tls) -> Iterator[Site]:
    from conftest import make_setup

    options = {"web__login_attempts": "3", "communication__key": tls.key,
               "communication__certificate": tls.cert}
    now = web_fleet.build(repo, make_setup(repo, **options))
    core = local_core(repo, **options)
    server = WebServer(core, core.setup, ("127.0.0.1", 0))
    yield Site(core, server, now)
    server.stop()


def rows(page: Any) -> list[str]:
    """The client names a clients table lists, in order."""
    return re.findall(r'<tr class="r-\w+">\s*<td><a href="/client/[^"]+">([^<]+)</a>', page.text)


# -- logging in -------------------------------------------------------------------------

def test_every_page_needs_a_login(site: Site) -> None:
    for path in ("/", "/clients", "/client/web0.example.com", "/entries", "/radiator", "/audit"):
        answer = site.client.get(path, status=303)
        assert answer.headers["Location"].endswith("/login?next=" + path.replace("/", "%2F"))
    assert site.client.get("/api/overview", status=401)
    assert site.client.get("/static/style.css").content_type == "text/css"


def test_a_login_sets_a_signed_secure_cookie_and_goes_where_it_was_asked(site: Site) -> None:
    form = site.client.get("/login?next=/clients%3Fstate%3Dbad").forms[0]
    form["username"], form["password"] = "viewer", web_fleet.PASSWORDS["viewer"]
    answer = form.submit(status=303)
    assert answer.headers["Location"].endswith("/clients?state=bad")
    cookie = [v for k, v in answer.headerlist if k == "Set-Cookie" and v.startswith(COOKIE + "=")]
    assert cookie and all(flag in cookie[0] for flag in ("HttpOnly", "Secure",
                                                         "SameSite=Strict"))
    assert site.client.get("/api/session").json == {
        "user": "viewer", "role": "viewer", "csrf": site.csrf()}
    # an offsite "next" goes home instead
    form = site.client.get("/login?next=//evil.example").forms[0]
    form["username"], form["password"] = "viewer", web_fleet.PASSWORDS["viewer"]
    assert form.submit(status=303).headers["Location"].endswith("/")


def test_failed_logins_are_logged_escaped_and_throttled(site: Site, caplog) -> None:
    caplog.set_level(logging.WARNING, "bcfg2.web")

    def from_(address: str) -> None:
        site.client.extra_environ = {**HTTPS, "REMOTE_ADDR": address}

    answer = site.login("admin", "wrong-password", status=401)
    assert "wrong user name or password" in answer.text
    from_("127.0.0.6")
    site.login("adm\nin", "x", status=401)
    assert "adm\\nin" in caplog.text and "adm\nin" not in caplog.text
    from_("127.0.0.5")
    site.login("viewer", "wrong", status=401)
    site.login("viewer", "wrong-again", status=401)
    # three failures from this address: even the right password is refused unchecked
    site.login("admin", status=429)
    # another address: two more failures for admin, then admin is refused (per user name),
    # other users are not
    from_("127.0.0.9")
    site.login("admin", "wrong-second", status=401)
    site.login("admin", "wrong-third", status=401)
    site.login("admin", status=429)
    site.login("viewer", status=303)
    assert "too many failures" in caplog.text
    # one line per source and burst, however many failures follow (a guesser cannot
    # flood the log): 127.0.0.5, 127.0.0.6 and 127.0.0.9
    assert caplog.text.count("failed login of") == 3


def test_addresses_of_one_ipv6_64_share_their_failed_logins(site: Site) -> None:
    for number, user in enumerate(["admin", "viewer", "admin"]):
        site.client.extra_environ = {**HTTPS, "REMOTE_ADDR": f"2001:db8:0:1::{number + 1}"}
        site.login(user, "wrong", status=401)
    site.client.extra_environ = {**HTTPS, "REMOTE_ADDR": "2001:db8:0:1:ffff::9"}
    site.login("viewer", status=429)  # the same /64
    site.client.extra_environ = {**HTTPS, "REMOTE_ADDR": "2001:db8:0:2::1"}
    site.login("viewer", status=303)  # another one


def test_a_login_without_its_csrf_token_is_refused(site: Site) -> None:
    site.client.get("/login")
    site.client.post("/login", {"username": "admin", "password": web_fleet.PASSWORDS["admin"],
                                "csrf": "forged"}, status=403)


def test_sessions_end_with_logout_a_new_password_or_a_deleted_user(site: Site) -> None:
    site.login("viewer")
    site.client.post("/logout", {"csrf": "wrong"}, status=403)
    site.client.get("/", status=200)
    cookie = site.client.cookies[COOKIE]
    site.client.post("/logout", {"csrf": site.csrf()}, status=303)
    site.client.get("/", status=303)
    site.client.set_cookie(COOKIE, cookie)  # the cookie kept, and sent again
    site.client.get("/", status=303)
    site.client.get("/api/overview", status=401)

    site.login("viewer")
    users = Users(site.server.app.users.path)
    users.passwd("viewer", "a-new-password-2")
    site.client.get("/", status=303)
    users.remove("viewer")
    site.login("viewer", "a-new-password-2", status=401)


def test_a_revoked_session_is_refused_and_the_revocations_kept_are_bounded() -> None:
    signer = Signer(b"k" * 32, lifetime=60)
    cookies = [signer.issue("admin", "stamp", now=1000.0) for _ in range(3)]
    sessions = [signer.read(c, now=1001.0) for c in cookies]
    signer.revoke(sessions[0].sid, now=1001.0)
    assert signer.read(cookies[0], now=1002.0) is None
    assert signer.read(cookies[1], now=1002.0) == sessions[1]
    signer.MAX_REVOKED = 2
    signer.revoke(sessions[1].sid, now=1002.0)
    signer.revoke(sessions[2].sid, now=1003.0)  # the first revoked is forgotten
    assert len(signer._revoked) == 2 and sessions[0].sid not in signer._revoked
    signer.revoke("later", now=1062.5)  # revocations past their cookies' lifetime go
    assert list(signer._revoked) == [sessions[2].sid, "later"]


def test_a_broken_users_file_leaves_the_users_read_before_in_service(
        site: Site, caplog) -> None:
    """A typo in users.json locks nobody out: logged once, the last good users stay (and a
    change to the users is refused rather than written over the edit)."""
    path = Path(site.server.app.users.path)
    site.login("viewer")
    good = path.read_text()
    path.write_text(good.replace('"users"', '"users" oops', 1))
    for _ in range(3):
        site.client.get("/", status=200)  # still logged in
    assert caplog.text.count("cannot read the web users") == 1
    site.client.post("/logout", {"csrf": site.csrf()}, status=303)
    site.login("admin", status=303)
    with pytest.raises(ConfigError, match="cannot read the web users"):
        Users(str(path)).add("erin", "viewer", "a-password-1")
    with pytest.raises(ConfigError, match="cannot read the web users"):
        site.server.app.users.passwd("viewer", "a-new-password-2")
    path.write_text(good)
    Users(str(path)).remove("viewer")  # fixed, then changed: the change applies
    site.client.post("/logout", {"csrf": site.csrf()}, status=303)
    site.login("viewer", status=401)


def test_forged_and_expired_cookies_are_refused() -> None:
    signer = Signer(b"k" * 32, lifetime=60)
    cookie = signer.issue("admin", "stamp", now=1000.0)
    assert signer.read(cookie, now=1010.0).user == "admin"
    assert signer.read(cookie, now=1061.0) is None
    payload, mac = cookie.split(".")
    assert signer.read(payload + "." + "0" * len(mac), now=1010.0) is None
    assert Signer(b"x" * 32, 60).read(cookie, now=1010.0) is None


# -- the pages and their API -------------------------------------------------------------

def test_the_overview_counts_every_state_and_links_to_the_lists(site: Site) -> None:
    site.login("viewer")
    data = site.client.get("/api/overview").json
    assert data["clients"] == 12
    assert data["counts"] == {"clean": 2, "bad": 2, "modified": 2, "extra": 2, "failed": 2,
                              "stale": 0, "never": 2, "dryrun": 0}
    assert sum(data["daily"][-1]["runs"].values()) == 10 and len(data["daily"]) == 30
    assert len(data["durations"]) == 10
    assert [c["state"] for c in data["attention"]][:4] == ["failed", "failed", "bad", "bad"]
    page = site.client.get("/")
    assert 'href="/clients?state=failed"' in page.text and "<svg" in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert page.headers["X-Frame-Options"] == "DENY"


def test_the_client_list_filters_sorts_and_pages(site: Site) -> None:
    site.login("viewer")

    def names(**params: str) -> list[str]:
        return [c["name"] for c in site.client.get("/api/clients", params).json["clients"]]

    assert names(state="bad") == ["web1.example.com", "web7.example.com"]
    assert names(state="dirty") == sorted(
        web_fleet.client_name(n) for n in range(12) if n % 6 in (1, 2, 3, 4))
    assert names(state="never") == ["web11.example.com", "web5.example.com"]
    assert names(profile="basic", state="clean") == ["web0.example.com", "web6.example.com"]
    assert names(group="linux") == names(profile="basic")
    assert names(probe="os=debian") == [web_fleet.client_name(n) for n in (0, 3, 6, 9)]
    assert names(server="srv-b", state="modified") == ["web2.example.com", "web8.example.com"]
    assert names(revision="def", q="web1") == ["web1.example.com", "web10.example.com"]
    assert names(unseen="0.5", q="web1") == ["web11.example.com"]  # never seen at all
    assert names(unseen="0.5", at=time.strftime("%Y-%m-%d", time.gmtime(site.now + 86400)),
                 q="web1") == ["web1.example.com", "web10.example.com", "web11.example.com"]
    assert names(sort="-last")[:2] == ["web0.example.com", "web1.example.com"]
    assert names(sort="-duration")[0] == "web6.example.com"  # 5 + 6 s
    first = site.client.get("/api/clients", {"per": "5", "page": "3"}).json
    assert (first["total"], first["pages"], len(first["clients"])) == (12, 3, 2)
    page = site.client.get("/clients", {"state": "bad"})
    assert rows(page) == ["web1.example.com", "web7.example.com"]
    for bad in ({"state": "purple"}, {"sort": "name;drop"}, {"per": "0"}, {"probe": "os"},
                {"at": "yesterday"}, {"group": "a b"}):
        assert site.client.get("/api/clients", bad, status=400)


def test_the_client_list_exports_csv_and_json(site: Site) -> None:
    site.login("viewer")
    answer = site.client.get("/clients", {"state": "extra", "format": "csv"})
    assert answer.content_type == "text/csv"
    table = list(csv.DictReader(io.StringIO(answer.text)))
    assert [(r["name"], r["state"], r["extra"]) for r in table] == [
        ("web3.example.com", "extra", "1"), ("web9.example.com", "extra", "1")]
    exported = site.client.get("/clients", {"state": "extra", "format": "json"}).json
    assert [c["name"] for c in exported["clients"]] == [r["name"] for r in table]


def test_the_client_page_shows_metadata_probes_runs_diffs_and_masks_secrets(site: Site) -> None:
    site.login("viewer")
    data = site.client.get("/api/client/web1.example.com").json
    assert (data["profile"], data["groups"], data["probes"]) == ("other", ["other"],
                                                                 {"os": "rhel"})
    assert data["run_count"] == 4 and data["runs"][0]["outcome"] == "bad"
    entries = {e["name"]: e for e in data["runs"][0]["entries"]}
    assert entries["/etc/motd"]["content"]["text"] == web_fleet.DIFF
    assert "secret-key-material" not in str(data)
    assert entries["/etc/secret.key"]["content"]["text"].startswith("(masked")
    page = site.client.get("/client/web1.example.com")
    assert "+Hello, world" in page.text and "secret-key-material" not in page.text
    assert "Actions" not in page.text  # a viewer sees no action buttons
    failed = site.client.get("/api/client/web4.example.com").json["runs"][0]
    assert failed["failures"] == 1 and failed["entries"][0]["failure"] == "no matching generator"
    history = site.client.get("/api/client/web1.example.com/history").json
    assert (history["total"], len(history["runs"])) == (4, 4)
    run = site.client.get(f"/api/client/web1.example.com/run/{data['runs'][0]['id']}").json
    assert run["timings"]["finished"] == 6.0
    site.client.get(f"/client/web2.example.com/run/{data['runs'][0]['id']}", status=404)
    site.client.get("/client/nosuch.example.com", status=404)
    site.client.get("/client/web1.example.com/history", {"page": "0"}, status=400)
    assert "web5.example.com" in site.client.get("/client/web5.example.com").text


def test_entries_common_problems_affected_clients_and_changes(site: Site) -> None:
    site.login("viewer")
    problems = site.client.get("/api/entries").json["problems"]
    assert {(p["kind"], p["name"], p["count"]) for p in problems} >= {
        ("Bad", "/etc/motd", 2), ("Modified", "sshd", 2), ("Extra", "telnetd", 2)}
    bad = site.client.get("/api/entries", {"kind": "bad", "group": "linux"}).json["problems"]
    assert [(p["name"], p["clients"]) for p in bad] == [
        ("nginx", ["web10.example.com", "web4.example.com"])]
    entry = site.client.get("/api/entries/entry", {"kind": "Bad", "tag": "Path",
                                                   "name": "/etc/motd"}).json
    assert [c["client"] for c in entry["clients"]] == ["web1.example.com", "web7.example.com"]
    assert "should be" in entry["clients"][0]["reason"]
    assert "web7.example.com" in site.client.get(
        "/entries/entry", {"kind": "Bad", "tag": "Path", "name": "/etc/motd"}).text
    for path in ("/entries/nosuch", "/api/entries/nosuch"):  # the page and its API alike
        site.client.get(path, status=404)
    changes = site.client.get("/api/changes").json["changes"]
    assert {c["client"] for c in changes} == {"web2.example.com", "web8.example.com"}
    assert "sshd" in site.client.get("/changes").text


def test_every_view_travels_to_a_past_date(site: Site) -> None:
    site.login("viewer")
    day = time.strftime("%Y-%m-%d", time.gmtime(site.now - 86400 * 2))
    past = site.client.get("/api/overview", {"at": day}).json
    assert past["counts"]["clean"] == 10 and past["counts"]["bad"] == 0
    assert site.client.get("/api/clients", {"at": day, "state": "bad"}).json["total"] == 0
    client = site.client.get("/api/client/web1.example.com", {"at": day}).json
    assert client["runs"][0]["outcome"] == "clean" and client["run_count"] == 2
    assert site.client.get("/api/entries", {"at": day}).json["problems"] == []
    page = site.client.get("/", {"at": day})
    assert "Showing the state at" in page.text


def test_the_radiator_refreshes_itself(site: Site) -> None:
    site.login("viewer")
    page = site.client.get("/radiator")
    assert '<meta http-equiv="refresh" content="30">' in page.text
    assert "web4.example.com" in page.text


# -- admin actions -------------------------------------------------------------------------

def test_a_viewer_is_refused_every_action(site: Site, caplog) -> None:
    site.login("viewer")
    for action in ("profile", "remove", "expire", "sshkeys", "pin", "unpin"):
        site.act("web0.example.com", action, status=403, profile="other")
    csrf = site.csrf()
    site.client.post("/api/action", {"client": "web0.example.com", "action": "pin",
                                     "csrf": csrf}, status=403)
    assert site.client.get("/api/audit").json["audit"] == []
    assert "refused an admin action" in caplog.text


def test_an_action_without_the_csrf_token_is_refused(site: Site) -> None:
    site.login("admin")
    site.client.post("/action", {"client": "web0.example.com", "action": "pin"}, status=403)
    site.client.post("/action", {"client": "web0.example.com", "action": "pin",
                                 "csrf": "0" * 64}, status=403)
    assert site.client.get("/api/audit").json["audit"] == []


def test_a_client_page_never_shows_an_action_done_beside_the_metadata_from_before_it(
        site: Site, monkeypatch) -> None:
    """The action finishes while the page is being made, after the page read the client's
    metadata: the page may show the action unfinished, never done with the old profile."""
    site.login("admin")
    app = site.server.app
    build = app.core.build_metadata

    def read_then_act(name: str):  # noqa: ANN202
        meta = build(name)  # the profile before the action
        entry = app.audit_log.add("admin", name, "profile", "webservers")
        app.perform(name, "profile", "webservers")
        app.audit_log.set_status(entry, "done", "profile is now webservers")
        return meta

    monkeypatch.setattr(app.core, "build_metadata", read_then_act)
    data = site.client.get("/api/client/web1.example.com").json
    assert data["profile"] == "other"
    assert [a["status"] for a in data["audit"]] != ["done"]
    monkeypatch.setattr(app.core, "build_metadata", build)
    data = site.client.get("/api/client/web1.example.com").json
    assert (data["profile"], [a["status"] for a in data["audit"]]) == ("webservers", ["done"])


def test_an_admin_changes_a_profile_and_the_audit_log_says_so(site: Site) -> None:
    site.login("admin")
    assert "Change profile" in site.client.get("/client/web0.example.com").text
    site.act("web0.example.com", "profile", profile="webservers")  # not public: an admin may
    site.wait()
    assert site.core.build_metadata("web0.example.com").profile == "webservers"
    audit = site.client.get("/api/audit").json["audit"]
    assert [(a["user"], a["client"], a["action"], a["detail"], a["status"]) for a in audit] == [
        ("admin", "web0.example.com", "profile", "webservers", "done")]
    page = site.client.get("/client/web0.example.com")
    assert "profile webservers" in page.text and "done" in page.text
    site.act("web0.example.com", "profile", status=400, profile="linux")  # not a profile
    site.act("nosuch.example.com", "pin", status=404)
    site.act("web0.example.com", "reboot", status=400)


def test_a_pinned_client_keeps_its_profile_and_failed_actions_say_why(site: Site) -> None:
    site.login("admin")
    site.act("web2.example.com", "pin")
    site.act("web2.example.com", "expire")
    site.act("web2.example.com", "sshkeys")  # SSHbase is not loaded here
    site.act("web2.example.com", "remove")  # defined in clients.xml: the admin removes it there
    site.wait()
    assert site.core.metadata.is_pinned("web2.example.com")
    site.core.metadata.set_profile("web2.example.com", "other", ("127.0.0.1", 1))
    assert site.core.build_metadata("web2.example.com").profile == "basic"
    audit = {a["action"]: a for a in site.client.get("/api/audit").json["audit"]}
    assert (audit["pin"]["status"], audit["expire"]["status"]) == ("done", "done")
    assert audit["sshkeys"]["status"] == "failed"
    assert audit["sshkeys"]["reason"] == "SSHbase is not loaded"
    assert audit["remove"]["status"] == "failed" and "clients.xml" in audit["remove"]["reason"]
    answer = site.client.post("/api/action", {"client": "web2.example.com", "action": "unpin",
                                              "csrf": site.csrf()}, status=202)
    site.wait()
    entry = site.server.app.audit_log.get(answer.json["id"])
    assert (entry.status, entry.reason) == ("done", "unpinned")
    assert not site.core.metadata.is_pinned("web2.example.com")


def test_the_pages_follow_the_runs_recorded_while_they_are_open(site: Site) -> None:
    """The latest runs are kept in memory; a run recorded since is shown at once."""
    site.login("viewer")
    assert site.client.get("/api/overview").json["counts"]["bad"] == 2
    store = site.server.app.store
    store.record("web0.example.com", web_fleet.stats("bad", 0, time.time()))
    store.record("web5.example.com", web_fleet.stats("modified", 5, time.time()))
    counts = site.client.get("/api/overview").json["counts"]
    assert (counts["bad"], counts["clean"], counts["modified"], counts["never"]) == (3, 1, 3, 1)
    state = site.client.get("/api/clients", {"q": "web0.example.com"}).json["clients"][0]
    assert state["state"] == "bad"
    # a past date's view is read again too
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    assert site.client.get("/api/overview", {"at": day}).json["counts"]["bad"] == 3


def test_the_pages_and_the_audit_log_on_postgresql(repo, local_core, tls, pg_database) -> None:
    from conftest import make_setup

    options = {"communication__key": tls.key, "communication__certificate": tls.cert,
               **pg_database.overrides}
    web_fleet.build(repo, make_setup(repo, **options))
    core = local_core(repo, **options)
    server = WebServer(core, core.setup, ("127.0.0.1", 0))
    try:
        site = Site(core, server, time.time())
        site.login("admin")
        assert site.client.get("/api/overview").json["counts"]["failed"] == 2
        assert [c["name"] for c in site.client.get(
            "/api/clients", {"probe": "os=debian", "state": "clean"}).json["clients"]] == [
            "web0.example.com", "web6.example.com"]
        site.act("web3.example.com", "pin")
        site.wait()
        assert pg_database.query("SELECT username, client, action, status FROM audit") == [
            ("admin", "web3.example.com", "pin", "done")]
        assert not (repo.path.parent / "state" / "web" / "audit.sqlite").exists()
    finally:
        server.stop()


def test_another_application_is_mounted_beside_the_pages(repo, local_core, tls,
                                                         monkeypatch) -> None:
    import bcfg2.web

    def metrics(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"up 1\n"]

    monkeypatch.setattr(bcfg2.web, "EXTRA_MOUNTS", {})
    monkeypatch.setattr("bcfg2.web.server.EXTRA_MOUNTS", bcfg2.web.EXTRA_MOUNTS)
    bcfg2.web.mount("/metrics", lambda core: metrics)
    bcfg2.web.mount("/off", lambda core: None)  # not enabled: not mounted
    with pytest.raises(ValueError):
        bcfg2.web.mount("metrics", lambda core: metrics)
    core = local_core(repo, communication__key=tls.key, communication__certificate=tls.cert)
    server = WebServer(core, core.setup, ("127.0.0.1", 0))
    try:
        client = webtest.TestApp(server.server.wsgi_app, extra_environ=HTTPS)
        assert client.get("/metrics").text == "up 1\n"
        assert client.get("/off", status=404)  # not mounted: the pages know no such page
    finally:
        server.stop()


def test_every_html_page_renders_what_its_api_gives(site: Site) -> None:
    site.login("admin")
    site.act("web3.example.com", "expire")
    site.wait()
    run_id = site.client.get("/api/client/web1.example.com").json["runs"][0]["id"]
    pages = {
        "/client/web1.example.com/history": "web1.example.com</a>: 4 runs",
        f"/client/web1.example.com/run/{run_id}": "9 of 10 entries good, 2 bad (0 failed",
        "/entries": "Common problems",
        "/entries?kind=modified": "Service:sshd",
        "/changes?hours=2": "Service:sshd",
        "/audit": "expire",
        "/clients?state=pinned": "No client matches.",
        "/clients?sort=-bad&per=2": 'rel="next"',
    }
    for path, text in pages.items():
        assert text in site.client.get(path).text, path
    assert 'aria-current="page">Audit' in site.client.get("/audit").text


def test_an_api_action_needs_its_csrf_token_too(site: Site) -> None:
    site.login("admin")
    site.client.post("/api/action", {"client": "web0.example.com", "action": "pin"}, status=403)
    site.client.post("/api/action", {"client": "web0.example.com", "action": "pin"},
                     headers={"X-CSRF-Token": site.csrf()}, status=202)
    site.wait()
    assert site.core.metadata.is_pinned("web0.example.com")
    site.client.get("/api/action", status=405)
    site.client.get("/action", status=405)


def test_a_run_committed_late_with_a_smaller_id_is_read_in_the_background(
        site: Site, monkeypatch) -> None:
    """(PostgreSQL may commit a run after one with a larger id; catching up by id misses it,
    the whole read every FULL_READ seconds finds it.)"""
    site.login("viewer")
    assert site.client.get("/api/overview").json["counts"]["never"] == 2
    store = site.server.app.store
    site.server.app.view.wait_refreshed(10)
    store.record("web0.example.com", web_fleet.stats("clean", 0, time.time()))
    assert site.client.get("/api/overview").json["counts"]["never"] == 2  # caught up
    late = store.last_id() - 1000  # an id below every one seen: what catching up skips

    def insert(tx: Any) -> None:
        tx.execute("INSERT INTO runs (id, client, timestamp, state, revision, total, good, bad, "
                   "modified, extra, dry_run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (late, "web5.example.com", time.time(), "clean", "", 1, 1, 0, 0, 0, 0))
        tx.execute("INSERT INTO latest_runs (client, run) VALUES (?, ?)",
                   ("web5.example.com", late))

    store.db.run(insert, write=True)
    store.record("web0.example.com", web_fleet.stats("clean", 0, time.time()))
    assert site.client.get("/api/overview").json["counts"]["never"] == 2  # missed so far
    monkeypatch.setattr("bcfg2.web.view.FULL_READ", 0.0)
    site.client.get("/api/overview")  # starts the whole read
    site.server.app.view.wait_refreshed(10)
    assert site.client.get("/api/overview").json["counts"]["never"] == 1
