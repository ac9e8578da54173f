"""A small fleet for the web page's tests: a repository, recorded runs, probe data and users.

Clients ``web<N>.example.com`` (N from 0) have profile basic (even N) or other;
their last runs are, by ``N % 6``: clean, bad (with a diff of /etc/motd),
modified, extra, failed on the server, and (N % 6 == 5) none at all. Every
client with runs has one run a day for ``days`` days before its last, all
clean, so a past date shows a clean fleet. web1 has a sensitive bad entry too.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import lxml.etree

from bcfg2.plugins.probes import SCHEMA as PROBES_SCHEMA
from bcfg2.plugins.probes import DatabaseStore
from bcfg2.reportdb import SCHEMA as RUNS_SCHEMA
from bcfg2.reportdb import RunStore
from bcfg2.storage import open_database
from bcfg2.web.users import Users

GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true">
    <Group name="linux"/>
  </Group>
  <Group name="other" profile="true" public="true"/>
  <Group name="webservers" profile="true"/>
  <Group name="linux"/>
</Groups>
"""
DIFF = "--- /etc/motd\n+++ /etc/motd\n-Welcome\n+Hello, world\n"
OUTCOMES = ("clean", "bad", "modified", "extra", "failed", "never")
PASSWORDS = {"admin": "admin-password-1", "viewer": "viewer-password-1"}


def client_name(n: int) -> str:
    return f"web{n}.example.com"


def stats(outcome: str, n: int, start: float) -> lxml.etree._Element:
    bad = modified = extra = ""
    if outcome == "bad":
        bdiff = base64.b64encode(DIFF.encode()).decode()
        bad = (f'<Path name="/etc/motd" type="file" mode="0644" current_mode="0600" '
               f'current_bdiff="{bdiff}"/>')
        if n == 1:
            secret = base64.b64encode(b"-secret-key-material\n").decode()
            bad += (f'<Path name="/etc/secret.key" type="file" sensitive="true" '
                    f'current_bdiff="{secret}"/>')
    elif outcome == "failed":
        bad = '<Package name="nginx" type="deb" failure="no matching generator"/>'
    elif outcome == "modified":
        modified = '<Service name="sshd" type="systemd"/>'
    elif outcome == "extra":
        extra = '<Package name="telnetd" type="deb"/>'
    state = "dirty" if bad else "clean"
    took = 5.0 + n % 7
    return lxml.etree.fromstring(
        f'<upload-statistics><Statistics total="10" good="{10 - bool(bad)}" state="{state}" '
        f'revision="rev{n % 2}"><OpStamps start="{start}" config="{start + 1}" '
        f'finished="{start + took}"/><Bad>{bad}</Bad><Modified>{modified}</Modified>'
        f'<Extra>{extra}</Extra></Statistics></upload-statistics>')


def build(repo, setup, clients: int = 12, days: int = 3, now: float | None = None) -> float:
    """Write the repository's clients.xml and groups.xml, record the runs and probe data,
    and make the two users; the time of the latest runs."""
    now = time.time() if now is None else now
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Metadata/clients.xml", "<Clients>" + "".join(
        f'<Client name="{client_name(n)}" profile="{"basic" if n % 2 == 0 else "other"}"/>'
        for n in range(clients)) + "</Clients>")
    state = Path(setup.server.state_dir)
    path = str(state / "Reporting" / "reporting.sqlite")
    (state / "Reporting").mkdir(parents=True, exist_ok=True)
    store = RunStore(path, database=open_database(setup, path, RUNS_SCHEMA))
    probes_path = str(state / "Probes" / "probes.sqlite")
    (state / "Probes").mkdir(parents=True, exist_ok=True)
    probes = DatabaseStore(probes_path, open_database(setup, probes_path, PROBES_SCHEMA))
    try:
        for n in range(clients):
            outcome = OUTCOMES[n % len(OUTCOMES)]
            probes.save(client_name(n), {"os": "debian" if n % 3 == 0 else "rhel"}, [])
            if outcome == "never":
                continue
            for day in range(days, 0, -1):
                start = now - day * 86400 - n
                store.record(client_name(n), stats("clean", n, start), timestamp=start,
                             server="srv-a", served_revision="abc123")
            store.record(client_name(n), stats(outcome, n, now - n), timestamp=now - n,
                         server="srv-a" if n % 2 else "srv-b", served_revision="def456")
    finally:
        store.close()
        probes.close()
    users = Users(str(state / "web" / "users.json"))
    for role, password in PASSWORDS.items():
        users.add(role, role, password)
    return now
