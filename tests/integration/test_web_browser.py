"""End to end in a real browser: Debian's Chromium, headless, driven by Playwright (no browser
download), against bcfg2-server serving the page over a generated fleet.

Log in, filter to the dirty clients, open one, read a diff, change a profile as an admin and
see it in the audit log, be refused as a viewer, log out. Screenshots of the overview, a client
page and the radiator go to $BCFG2_WEB_SCREENSHOTS, else a temporary directory; the test
prints where.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import web_fleet
from conftest import make_setup

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: pip install playwright")
    if not os.access(CHROMIUM, os.X_OK) and shutil.which("chromium") is None:
        pytest.skip("Chromium is not installed: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium"),
            headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("BCFG2_WEB_SCREENSHOTS")
    where = Path(given) if given else tmp_path_factory.mktemp("web-screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_an_admin_and_a_viewer_in_a_real_browser(repo, tls, network_server, browser,
                                                 shots: Path) -> None:
    setup = make_setup(repo, communication__key=tls.key, communication__certificate=tls.cert)
    web_fleet.build(repo, setup, clients=30, days=20)
    server = network_server(repo, web__listen="127.0.0.1:0")
    base = f"https://127.0.0.1:{server.core.web.address[1]}"
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280,
                                                                      "height": 900})
    page = context.new_page()

    # log in as the admin: the login page, then the overview
    page.goto(base + "/")
    assert page.url.startswith(base + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", web_fleet.PASSWORDS["admin"])
    page.click("button[type=submit]")
    page.wait_for_selector("section.tiles")
    assert page.inner_text("h1") == "30 clients"
    page.screenshot(path=str(shots / "overview.png"), full_page=True)

    # filter to the dirty clients
    page.click("nav a[href='/clients']")
    page.select_option("select[name=state]", "dirty")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/clients?*state=dirty*")
    names = page.locator("table.clients tbody tr td:first-child a").all_inner_texts()
    dirty = sorted(web_fleet.client_name(n) for n in range(30) if n % 6 in (1, 2, 3, 4))
    assert sorted(names) == dirty

    # open a bad client and read its diff
    page.click("text=web1.example.com")
    page.wait_for_selector("details.diff")
    page.click("details.diff summary")
    assert "+Hello, world" in page.inner_text("details.diff pre")
    assert "secret-key-material" not in page.content()
    page.screenshot(path=str(shots / "client.png"), full_page=True)

    # change its profile as the admin; the audit log on the page says so
    page.select_option("#profile-select", "webservers")
    page.click("#change-profile")
    deadline = time.monotonic() + 30
    while "profile webservers" not in page.inner_text("#audit") \
            or "done" not in page.inner_text("#audit"):
        assert time.monotonic() < deadline, page.inner_text("#audit")
        page.reload()
    assert page.inner_text("#profile") == "webservers"
    assert server.core.build_metadata("web1.example.com").profile == "webservers"

    page.goto(base + "/radiator")
    page.wait_for_selector(".tiles.big")
    page.screenshot(path=str(shots / "radiator.png"), full_page=True)

    # the same pages dark (the browser's preference), on a phone, and printed
    page.emulate_media(color_scheme="dark")
    page.goto(base + "/")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(21, 25, 29)"
    page.screenshot(path=str(shots / "overview-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(base + "/client/web1.example.com")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(shots / "client-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.emulate_media(media="print")
    assert not page.is_visible("header.top") and not page.is_visible("section.actions")
    page.screenshot(path=str(shots / "client-print.png"), full_page=True)
    page.emulate_media(media="screen")

    # log out: back to the login page, and the pages need a login again
    page.goto(base + "/")
    page.click("#logout")
    page.wait_for_selector("form.login")
    page.goto(base + "/clients")
    assert page.url.startswith(base + "/login")

    # a viewer sees no actions, and the server refuses one sent anyway
    page.fill("input[name=username]", "viewer")
    page.fill("input[name=password]", web_fleet.PASSWORDS["viewer"])
    page.click("button[type=submit]")
    page.wait_for_url("**/clients")
    page.goto(base + "/client/web1.example.com")
    assert page.locator("#change-profile").count() == 0
    csrf = page.request.get(base + "/api/session").json()["csrf"]
    refused = page.request.post(base + "/action", form={
        "client": "web1.example.com", "action": "profile", "profile": "basic", "csrf": csrf},
        max_redirects=0)
    assert refused.status == 403
    assert server.core.build_metadata("web1.example.com").profile == "webservers"
    page.click("#logout")
    page.wait_for_selector("form.login")
    context.close()
    print(f"\nscreenshots of the overview, a client page and the radiator: {shots}")
    for name in ("overview.png", "client.png", "radiator.png", "overview-dark.png",
                 "client-phone.png", "client-print.png"):
        assert (shots / name).stat().st_size > 10_000
