"""The web page as a CherryPy application: pages, their JSON API, login and admin actions.

Every page has a JSON twin under ``/api`` built from the same data
(``bcfg2.web.view``); docs/web.md lists them. Every request but the login
page and the style sheet needs a session; every POST needs the session's
CSRF token; admin actions need the admin role, checked here on the server
for each request. Nothing a client or a browser sent reaches a log line
unescaped.
"""

from __future__ import annotations

import base64
import binascii
import csv
import functools
import importlib.resources
import io
import json
import logging
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import cherrypy
import jinja2

from bcfg2.limits import BurstLog, source_of
from bcfg2.reportdb import CATEGORIES, DAY, Entry, Run, RunStore
from bcfg2.untrusted import escaped
from bcfg2.web import charts
from bcfg2.web.audit import Actions, AuditLog
from bcfg2.web.sessions import COOKIE, LOGIN_COOKIE, LoginThrottle, Signer
from bcfg2.web.users import MAX_PASSWORD, USER_NAME, User, Users
from bcfg2.web.view import (
    CHART_DAYS,
    NAME,
    STATE_FILTERS,
    BadQuery,
    ClientRow,
    FleetView,
    Query,
    age,
    parse_at,
    when,
)

logger = logging.getLogger("bcfg2.web")

#: the admin actions on a client, with what the audit log calls them
ACTIONS = {
    "profile": "change the profile",
    "remove": "remove the client",
    "expire": "expire its cached metadata",
    "sshkeys": "regenerate its SSH host keys",
    "pin": "pin it to its profile",
    "unpin": "unpin it",
}
#: content attributes that carry a file's content or a diff
CONTENT = ("current_bfile", "current_bdiff", "current_diff")
STATIC = {"style.css": "text/css", "logo.svg": "image/svg+xml"}
RUNS_SHOWN = 10
#: the entries the common-problems page lists (those on the most clients first)
PROBLEMS_SHOWN = 100
HISTORY_PAGE = 50
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
]


@functools.cache
def _static(name: str) -> bytes:
    """A vendored asset (one of STATIC), read once."""
    return (importlib.resources.files("bcfg2.web") / "static" / name).read_bytes()


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bcfg2.web", "templates"),
        autoescape=jinja2.select_autoescape(("html",), default=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        auto_reload=False)  # package data: no file times to look at per page
    env.filters["when"] = when
    env.filters["age"] = age
    env.globals.update(categories=CATEGORIES, state_filters=STATE_FILTERS, actions=ACTIONS)
    return env


def shown_content(entry: Entry) -> tuple[str, str] | None:
    """(what, text) of an entry's diff or content for the page; masked if sensitive."""
    for attr in CONTENT:
        value = entry.attrs.get(attr)
        if value is None:
            continue
        if entry.attrs.get("sensitive", "").lower() == "true":
            return attr, "(masked: the entry is sensitive)"
        if attr in ("current_bfile", "current_bdiff"):
            try:
                value = base64.b64decode(value, validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                return attr, "(not valid base64)"
        return attr, value
    return None


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # a cell a spreadsheet would run as a formula starts with a quote instead
        writer.writerow({k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@\t\r" else v)
                         for k, v in row.items()})
    return out.getvalue()


CSV_COLUMNS = ["name", "profile", "state", "stale", "pinned", "version", "last_run_utc",
               "age_seconds", "duration", "total", "good", "bad", "modified", "extra",
               "failures", "dry_run", "server", "served_revision", "revision"]


class WebApp:
    """The pages (``/``, ``/clients``, ``/client/NAME``...) and their API (``/api/...``)."""

    def __init__(self, core: Any, store: RunStore, probes: Any, users: Users, signer: Signer,
                 throttle: LoginThrottle, audit: AuditLog, stale_hours: float,
                 workers: int = 2) -> None:
        self.core = core
        self.store = store
        self.view = FleetView(core, store, probes, stale_hours)
        self.users = users
        self.signer = signer
        self.throttle = throttle
        #: failed and refused logins: one line per source and burst, then how many followed
        self.login_log = BurstLog(logger, "Web: %s: %d more logins like it in %.0f s")
        self.audit_log = audit
        self.actions = Actions(audit, self.perform, workers)
        self.env = _templates()
        self.api = Api(self)

    # -- sessions and permissions ----------------------------------------------------

    def _session_user(self) -> tuple[User, str] | None:
        """The logged-in user and the session id, or None."""
        morsel = cherrypy.request.cookie.get(COOKIE)
        session = self.signer.read(morsel.value if morsel else None)
        if session is None:
            return None
        user = self.users.get(session.user)
        if user is None or user.stamp != session.stamp:  # removed, or a new password
            return None
        return user, session.sid

    def user(self, api: bool = False) -> tuple[User, str]:
        """The logged-in user, else a redirect to the login page (401 for the API)."""
        found = self._session_user()
        if found is not None:
            return found
        if api:
            raise cherrypy.HTTPError(401, "log in first (POST /login)")
        request = cherrypy.request
        target = request.path_info + (f"?{request.query_string}" if request.query_string
                                      else "")
        raise cherrypy.HTTPRedirect("/login?" + urllib.parse.urlencode({"next": target}), 303)

    def admin(self, api: bool = False) -> tuple[User, str]:
        """The logged-in user if an admin, else 403: checked for every action."""
        user, sid = self.user(api)
        if not user.admin:
            logger.warning("Web: user %s (from %s) was refused an admin action: role %s",
                           escaped(user.name, 64), cherrypy.request.remote.ip, user.role)
            raise cherrypy.HTTPError(403, f"user {user.name} is a {user.role}; this needs "
                                          f"an admin")
        return user, sid

    def check_csrf(self, sid: str, token: Any) -> None:
        header = cherrypy.request.headers.get("X-CSRF-Token")
        if not self.signer.csrf_ok(sid, header or (token if isinstance(token, str) else None)):
            logger.warning("Web: a POST from %s to %s had no valid CSRF token",
                           cherrypy.request.remote.ip, escaped(cherrypy.request.path_info, 200))
            raise cherrypy.HTTPError(403, "the form's CSRF token is missing or wrong; "
                                          "reload the page and try again")

    # -- rendering ---------------------------------------------------------------------

    def render(self, template: str, user: tuple[User, str] | None, **context: Any) -> str:
        cherrypy.response.headers["Content-Type"] = "text/html; charset=utf-8"
        query = {k: v for k, v in cherrypy.request.params.items() if isinstance(v, str)}
        return self.env.get_template(template).render(
            me=user[0] if user else None, csrf=self.signer.csrf(user[1]) if user else "",
            path=cherrypy.request.path_info, query=query, qs=_query_string, **context)

    @staticmethod
    def json(data: Any, status: int = 200) -> bytes:
        cherrypy.response.status = status
        cherrypy.response.headers["Content-Type"] = "application/json"
        return json.dumps(data, indent=1, default=_jsonable).encode()

    @staticmethod
    def _query(params: dict[str, Any]) -> Query:
        try:
            return Query.parse(params)
        except BadQuery as err:
            raise cherrypy.HTTPError(400, str(err)) from None

    @staticmethod
    def _at(params: dict[str, Any]) -> float | None:
        value = params.get("at")
        try:
            return parse_at(value if isinstance(value, str) else None)
        except BadQuery as err:
            raise cherrypy.HTTPError(400, str(err)) from None

    # -- the data behind each page (the API returns it as JSON) -------------------------

    def overview_data(self, params: dict[str, Any]) -> dict[str, Any]:
        at = self._at(params)
        data = self.view.overview(at)
        now = data["now"]
        data["attention"] = [row.as_dict(now) for row in data["attention"]]
        return data

    def clients_data(self, params: dict[str, Any]) -> dict[str, Any]:
        query = self._query(params)
        try:
            rows, total = self.view.select(query)
        except BadQuery as err:
            raise cherrypy.HTTPError(400, str(err)) from None
        now = self.view.now(query.at)
        return {"at": query.at, "total": total, "page": query.page, "per": query.per,
                "pages": max((total + query.per - 1) // query.per, 1),
                "filters": query.raw, "clients": [row.as_dict(now) for row in rows]}

    def _known(self, name: str) -> str | None:
        if not NAME.fullmatch(name):
            raise cherrypy.HTTPError(404, "no such client")
        return self.core.metadata.resolve_name(name)

    def client_data(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        at = self._at(params)
        known = self._known(name)
        runs = self.store.runs(known or name, limit=RUNS_SHOWN, before=at)
        if known is None and not runs:
            raise cherrypy.HTTPError(404, "no such client")
        name = known or name
        now = self.view.now(at)
        data: dict[str, Any] = {"name": name, "at": at, "known": known is not None}
        # the audit log first: an action it shows done is in the metadata read after it
        data["audit"] = [vars(entry) for entry in self.audit_log.recent(name, limit=20)]
        if known is not None:
            try:
                meta = self.core.build_metadata(name)
                data.update(profile=meta.profile, groups=sorted(meta.groups),
                            bundles=sorted(meta.bundles),
                            probes={k: str(v) for k, v in sorted(
                                (getattr(meta, "Probes", None) or {}).items())},
                            pinned=self.core.metadata.is_pinned(name))
            except Exception as err:  # the page still shows the runs
                data["metadata_error"] = str(err)
        data["runs"] = [_run_dict(run, now) for run in runs]
        data["run_count"] = self.store.run_count(name, before=at)
        data["history"] = self.store.client_history(name, now - CHART_DAYS * DAY, now)
        return data

    def history_data(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        at = self._at(params)
        page = params.get("page", "1")
        if not isinstance(page, str) or not re.fullmatch(r"[1-9][0-9]{0,5}", page):
            raise cherrypy.HTTPError(400, "page: a number from 1")
        known = self._known(name) or name
        now = self.view.now(at)
        runs = self.store.runs(known, limit=HISTORY_PAGE, offset=(int(page) - 1) * HISTORY_PAGE,
                               before=at)
        total = self.store.run_count(known, before=at)
        return {"name": known, "at": at, "page": int(page), "total": total,
                "pages": max((total + HISTORY_PAGE - 1) // HISTORY_PAGE, 1),
                "runs": [_run_dict(run, now, entries=False) for run in runs]}

    def run_data(self, name: str, run_id: str) -> dict[str, Any]:
        if not re.fullmatch(r"[0-9]{1,18}", run_id):
            raise cherrypy.HTTPError(404, "no such run")
        run = self.store.run_by_id(int(run_id))
        if run is None or run.client != name:
            raise cherrypy.HTTPError(404, "no such run")
        return _run_dict(run, time.time())

    def entries_data(self, params: dict[str, Any]) -> dict[str, Any]:
        at = self._at(params)
        kind = params.get("kind", "")
        kinds = {"bad": ("Bad",), "modified": ("Modified",), "extra": ("Extra",),
                 "": ("Bad", "Modified", "Extra")}.get(kind if isinstance(kind, str) else "?")
        if kinds is None:
            raise cherrypy.HTTPError(400, "kind: bad, modified or extra")
        group = params.get("group", "")
        if not isinstance(group, str) or (group and not NAME.fullmatch(group)):
            raise cherrypy.HTTPError(400, "group: a group name")
        problems = self.store.common_problems(at, limit=0, kinds=kinds)
        if group:
            members = set(self.core.metadata.clients_in_groups([group]))
            for problem in problems:
                problem.clients = [c for c in problem.clients if c[0] in members]
            problems = [p for p in problems if p.clients]
        return {"at": at, "kind": kind, "group": group,
                "problems": [{"kind": p.kind, "tag": p.tag, "name": p.name,
                              "count": len(p.clients), "clients": [c for c, _ in p.clients]}
                             for p in problems[:PROBLEMS_SHOWN]]}

    def entry_data(self, params: dict[str, Any]) -> dict[str, Any]:
        at = self._at(params)
        kind, tag, name = (params.get(k, "") for k in ("kind", "tag", "name"))
        if kind not in ("Bad", "Modified", "Extra") or not isinstance(tag, str) \
                or not isinstance(name, str) or not tag or len(name) > 1024:
            raise cherrypy.HTTPError(400, "kind (Bad, Modified or Extra), tag and name")
        found = [p for p in self.store.common_problems(at, limit=0, kinds=(kind,))
                 if p.tag == tag and p.name == name]
        clients = found[0].clients if found else []
        return {"at": at, "kind": kind, "tag": tag, "name": name,
                "clients": [{"client": c, "reason": why} for c, why in clients]}

    def changes_data(self, params: dict[str, Any]) -> dict[str, Any]:
        at = self._at(params)
        hours = params.get("hours", "1")
        if not isinstance(hours, str) or not re.fullmatch(r"[0-9]{1,4}(\.[0-9]{1,2})?", hours):
            raise cherrypy.HTTPError(400, "hours: a number of hours")
        until = self.view.now(at)
        changes = self.store.changes(until - float(hours) * 3600, until)
        return {"at": at, "hours": float(hours), "changes": [vars(c) for c in changes]}

    def audit_data(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"audit": [vars(entry) for entry in self.audit_log.recent(limit=200)]}

    # -- pages ---------------------------------------------------------------------------

    @cherrypy.expose
    def index(self, **params: Any) -> str:
        me = self.user()
        data = self.overview_data(params)
        return self.render("overview.html", me, data=data,
                           daily=charts.daily_outcomes(data["daily"]),
                           histogram=charts.histogram(data["durations"]))

    @cherrypy.expose
    def clients(self, **params: Any) -> Any:
        me = self.user()
        fmt = params.pop("format", "html")
        data = self.clients_data(params)
        if fmt == "json":
            return self.json(data)
        if fmt == "csv":
            cherrypy.response.headers["Content-Type"] = "text/csv; charset=utf-8"
            cherrypy.response.headers["Content-Disposition"] = 'attachment; filename="clients.csv"'
            return _csv(data["clients"], CSV_COLUMNS).encode()
        if fmt != "html":
            raise cherrypy.HTTPError(400, "format: html, csv or json")
        return self.render("clients.html", me, data=data)

    @cherrypy.expose
    def client(self, name: str = "", what: str = "", run_id: str = "", **params: Any) -> str:
        me = self.user()
        if what == "history":
            return self.render("history.html", me, data=self.history_data(name, params))
        if what == "run":
            return self.render("run.html", me, run=self.run_data(name, run_id), name=name)
        if what:
            raise cherrypy.HTTPError(404, "no such page")
        data = self.client_data(name, params)
        now = self.view.now(data["at"])
        profiles = [g.name for g in self.core.metadata.list_groups() if g.profile]
        return self.render("client.html", me, data=data, profiles=profiles,
                           chart=charts.client_history(data["history"], now - CHART_DAYS * DAY,
                                                       now))

    @cherrypy.expose
    def entries(self, what: str = "", **params: Any) -> str:
        me = self.user()
        if what == "entry":
            return self.render("entry.html", me, data=self.entry_data(params))
        if what:
            raise cherrypy.HTTPError(404, "no such page")
        return self.render("entries.html", me, data=self.entries_data(params))

    @cherrypy.expose
    def changes(self, **params: Any) -> str:
        return self.render("changes.html", self.user(), data=self.changes_data(params))

    @cherrypy.expose
    def radiator(self, **params: Any) -> str:
        me = self.user()
        return self.render("radiator.html", me, data=self.overview_data(params),
                           refresh=30)

    @cherrypy.expose
    def audit(self, **params: Any) -> str:
        return self.render("audit.html", self.user(), data=self.audit_data(params))

    @cherrypy.expose
    def static(self, name: str = "") -> bytes:
        if name not in STATIC:
            raise cherrypy.HTTPError(404, "no such file")
        cherrypy.response.headers["Content-Type"] = STATIC[name]
        cherrypy.response.headers["Cache-Control"] = "max-age=3600"
        return _static(name)

    # -- logging in and out ----------------------------------------------------------------

    @cherrypy.expose
    def login(self, username: str = "", password: str = "", csrf: str = "",
              next: str = "/", **_: Any) -> Any:  # noqa: A002
        request = cherrypy.request
        target = next if isinstance(next, str) and re.fullmatch(r"/(?![/\\])[^\x00-\x20]*",
                                                                next) else "/"
        if request.method != "POST":
            token = secrets.token_hex(16)
            self._cookie(LOGIN_COOKIE, token, 600)
            return self.render("login.html", None, login_csrf=self.signer.csrf(token),
                               next=target, error="")
        morsel = request.cookie.get(LOGIN_COOKIE)
        if morsel is None or not self.signer.csrf_ok(morsel.value, csrf):
            logger.warning("Web: a login from %s had no valid CSRF token", request.remote.ip)
            raise cherrypy.HTTPError(403, "the login form's CSRF token is missing or wrong; "
                                          "reload the login page")
        if not isinstance(username, str) or not isinstance(password, str) \
                or len(password) > MAX_PASSWORD:
            raise cherrypy.HTTPError(400, "username and password")
        # an IPv6 host counts for its /64: it has the whole of it to pick addresses from
        source = f"ip:{source_of(request.remote.ip)}"
        who = f"user:{username[:64]}"
        if self.throttle.blocked(source, who):
            self.login_log.note(f"refused {source}", "Web: login of %s from %s refused "
                                "unchecked: too many failures", escaped(username, 64),
                                request.remote.ip)
            raise cherrypy.HTTPError(429, "too many failed logins; wait a few minutes")
        user = self.users.verify(username, password) if USER_NAME.fullmatch(username) else None
        if user is None:
            self.throttle.failed(source, who)
            self.login_log.note(source, "Web: failed login of %s from %s",
                                escaped(username, 64), request.remote.ip)
            cherrypy.response.status = 401
            token = secrets.token_hex(16)
            self._cookie(LOGIN_COOKIE, token, 600)
            return self.render("login.html", None, login_csrf=self.signer.csrf(token),
                               next=target, error="wrong user name or password")
        logger.info("Web: %s (%s) logged in from %s", user.name, user.role, request.remote.ip)
        self._cookie(COOKIE, self.signer.issue(user.name, user.stamp),
                     int(self.signer.lifetime))
        self._cookie(LOGIN_COOKIE, "", 0)
        raise cherrypy.HTTPRedirect(target, 303)

    @cherrypy.expose
    def logout(self, csrf: str = "", **_: Any) -> Any:
        if cherrypy.request.method != "POST":
            raise cherrypy.HTTPError(405, "log out with the page's button (a POST)")
        user, sid = self.user()
        self.check_csrf(sid, csrf)
        self.signer.revoke(sid)  # the cookie is refused here even if it is sent again
        self._cookie(COOKIE, "", 0)
        logger.info("Web: %s logged out", user.name)
        raise cherrypy.HTTPRedirect("/login", 303)

    @staticmethod
    def _cookie(name: str, value: str, max_age: int) -> None:
        cookie = cherrypy.response.cookie
        cookie[name] = value
        cookie[name]["path"] = "/"
        cookie[name]["max-age"] = max_age
        cookie[name]["httponly"] = True
        cookie[name]["secure"] = True
        cookie[name]["samesite"] = "Strict"

    # -- admin actions -------------------------------------------------------------------

    def submit(self, user: User, params: dict[str, Any]) -> int:
        """Check and queue one action; its audit entry."""
        client, action, profile = (params.get(k, "") for k in ("client", "action", "profile"))
        if not all(isinstance(v, str) for v in (client, action, profile)):
            raise cherrypy.HTTPError(400, "client, action and profile, once each")
        if action not in ACTIONS:
            raise cherrypy.HTTPError(400, f"action: one of {', '.join(ACTIONS)}")
        known = self._known(client)
        if known is None:
            raise cherrypy.HTTPError(404, "no such client")
        detail = ""
        if action == "profile":
            if profile not in {g.name for g in self.core.metadata.list_groups() if g.profile}:
                raise cherrypy.HTTPError(400, "profile: one of the profile groups")
            detail = profile
        logger.info("Web: %s asks to %s %s %s", user.name, action, known, detail)
        return self.actions.submit(user.name, known, action, detail)

    @cherrypy.expose
    def action(self, **params: Any) -> Any:
        if cherrypy.request.method != "POST":
            raise cherrypy.HTTPError(405, "actions are POSTed by the client page's forms")
        user, sid = self.admin()
        self.check_csrf(sid, params.get("csrf"))
        self.submit(user, params)
        target = "/clients" if params.get("action") == "remove" else \
            "/client/" + urllib.parse.quote(str(params["client"]))
        raise cherrypy.HTTPRedirect(target, 303)

    def perform(self, client: str, action: str, detail: str) -> str:
        """Do one action through the Core and the plugins' interfaces (run by ``Actions``)."""
        core = self.core
        if action == "profile":
            core.metadata.set_profile(client, detail, None)
            return f"profile is now {detail}"
        if action == "remove":
            core.metadata.remove_client(client)
            return "removed"
        if action == "expire":
            core.metadata_cache.expire([client], tag="web")
            core.expire_plugins([client])
            return "cached metadata expired"
        if action == "sshkeys":
            regenerate: Callable[[str], list[str]] | None = core.rmi.get(
                "SSHbase.regenerate_keys")
            if regenerate is None:
                raise RuntimeError("SSHbase is not loaded")
            made = regenerate(client)
            return f"regenerated {', '.join(made)} keys" if made else "it had no keys"
        if action in ("pin", "unpin"):
            core.metadata.set_pinned(client, action == "pin")
            return "pinned" if action == "pin" else "unpinned"
        raise ValueError(f"unknown action {action}")


class Api:
    """``/api/...``: each page's data as JSON (401 without a session, not a redirect)."""

    def __init__(self, app: WebApp) -> None:
        self.app = app

    @cherrypy.expose
    def overview(self, **params: Any) -> bytes:
        self.app.user(api=True)
        return self.app.json(self.app.overview_data(params))

    @cherrypy.expose
    def clients(self, **params: Any) -> bytes:
        self.app.user(api=True)
        return self.app.json(self.app.clients_data(params))

    @cherrypy.expose
    def client(self, name: str = "", what: str = "", run_id: str = "", **params: Any) -> bytes:
        self.app.user(api=True)
        if what == "history":
            return self.app.json(self.app.history_data(name, params))
        if what == "run":
            return self.app.json(self.app.run_data(name, run_id))
        if what:
            raise cherrypy.HTTPError(404, "no such page")
        return self.app.json(self.app.client_data(name, params))

    @cherrypy.expose
    def entries(self, what: str = "", **params: Any) -> bytes:
        self.app.user(api=True)
        if what == "entry":
            return self.app.json(self.app.entry_data(params))
        if what:
            raise cherrypy.HTTPError(404, "no such page")
        return self.app.json(self.app.entries_data(params))

    @cherrypy.expose
    def changes(self, **params: Any) -> bytes:
        self.app.user(api=True)
        return self.app.json(self.app.changes_data(params))

    @cherrypy.expose
    def audit(self, **params: Any) -> bytes:
        self.app.user(api=True)
        return self.app.json(self.app.audit_data(params))

    @cherrypy.expose
    def action(self, **params: Any) -> bytes:
        if cherrypy.request.method != "POST":
            raise cherrypy.HTTPError(405, "POST an action")
        user, sid = self.app.admin(api=True)
        self.app.check_csrf(sid, params.get("csrf"))
        entry = self.app.submit(user, params)
        return self.app.json({"id": entry, "status": "queued"}, status=202)

    @cherrypy.expose
    def session(self) -> bytes:
        """Who is logged in, and the CSRF token the API's POSTs carry."""
        user, sid = self.app.user(api=True)
        return self.app.json({"user": user.name, "role": user.role,
                              "csrf": self.app.signer.csrf(sid)})


def _run_dict(run: Run, now: float, entries: bool = True) -> dict[str, Any]:
    out = {"id": run.id, "timestamp": run.timestamp, "time_utc": when(run.timestamp),
           "age_seconds": round(now - run.timestamp, 1), "state": run.state,
           "outcome": run.category, "revision": run.revision, "total": run.total,
           "good": run.good, "bad": run.bad, "modified": run.modified, "extra": run.extra,
           "failures": run.failures, "dry_run": run.dry_run, "duration": run.duration,
           "timings": run.timings, "server": run.server, "served_revision": run.served_revision,
           "dropped": run.dropped, "truncated": run.truncated}
    if entries:
        out["entries"] = [_entry_dict(e) for e in run.entries]
    return out


def _entry_dict(entry: Entry) -> dict[str, Any]:
    content = shown_content(entry)
    return {"kind": entry.kind, "tag": entry.tag, "name": entry.name, "reason": entry.reason,
            "failure": entry.attrs.get("failure"), "truncated": list(entry.truncated),
            "content": {"attribute": content[0], "text": content[1]} if content else None}


def _jsonable(value: Any) -> Any:
    if isinstance(value, ClientRow):
        return value.as_dict(time.time())
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _query_string(current: dict[str, str], **changes: Any) -> str:
    """The page's query with some parameters changed (None removes one), for links."""
    merged = {**current, **{k: v for k, v in changes.items() if v is not None}}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
    return "?" + urllib.parse.urlencode({k: v for k, v in merged.items() if v != ""})


def application(app: WebApp) -> cherrypy.Application:
    """The WSGI application of the pages (mounted at / by ``bcfg2.web.server``)."""
    def error_page(status: str, message: str, traceback: str, version: str) -> str:
        cherrypy.response.headers["Content-Type"] = "text/plain; charset=utf-8"
        return f"{status}: {message}\n"

    def unexpected() -> None:
        logger.error("Web: error serving %s", escaped(cherrypy.request.path_info, 200),
                     exc_info=True)
        cherrypy.response.status = 500
        cherrypy.response.headers["Content-Type"] = "text/plain; charset=utf-8"
        cherrypy.response.body = b"500: a server-side error (see the server's log)\n"

    root = app
    config = {"/": {
        "request.show_tracebacks": False,
        "request.show_mismatched_params": False,
        "request.error_page": {"default": error_page},
        "request.error_response": unexpected,
        "tools.response_headers.on": True,
        "tools.response_headers.headers": SECURITY_HEADERS,
        "tools.encode.on": True,
        "log.screen": False,
        "log.access_file": "",
        "log.error_file": "",
    }}
    wsgi = cherrypy.Application(root, "", config)
    wsgi.log.screen = False
    wsgi.log.access_log.disabled = True  # our own log lines say what matters, escaped
    wsgi.log.error_log.disabled = True  # errors reach ``unexpected`` and are logged there
    return wsgi


__all__ = ["ACTIONS", "Api", "WebApp", "application", "shown_content"]
