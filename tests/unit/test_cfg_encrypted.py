"""Cfg: encrypted versions (*.crypt), encrypted templates of every template extension."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lxml.etree
import pytest
from conftest import ALL_BASE_GROUPS, Repo, rewrite
from openssl_enc import needs_openssl, openssl_encrypt
from test_cfg import content, paths

from bcfg2.core import LocalCore
from bcfg2.encryption import ScryptCost, auth_encrypt, compat_encrypt
from bcfg2.plugins.cfg import CfgPlaintextGenerator, loader_for
from bcfg2.plugins.cfg.encrypted import CfgEncryptedGenerator
from bcfg2.plugins.cfg.templates import TEMPLATE_EXTENSIONS, CfgJinja2Generator

Factory = Callable[..., LocalCore]
PASSPHRASES = {"ops": "ops passphrase", "dev": "dev passphrase", "web": "web passphrase"}
CHEAP = ScryptCost(ln=10)
MOTD = "Welcome, authorised users only\n"


def base(repo: Repo, *names: str) -> None:
    repo.write("Metadata/groups.xml", ALL_BASE_GROUPS)
    repo.write("Bundler/base.xml", "<Bundle>" + "".join(
        f'<Path name="{name}"/>' for name in names) + "</Bundle>")


def core_for(local_core: Factory, repo: Repo, **overrides: Any) -> LocalCore:
    overrides.setdefault("encryption__passphrases", PASSPHRASES)
    return local_core(repo, **overrides)


def auth(text: str, passphrase: str = "ops passphrase", name: str | None = "ops") -> str:
    return auth_encrypt(text.encode(), passphrase, name, CHEAP)


@needs_openssl
def test_a_file_openssl_encrypted_is_served_decrypted(repo: Repo, local_core: Factory,
                                                      tmp_path) -> None:
    base(repo, "/etc/motd")
    repo.write("Cfg/etc/motd/motd.crypt",
               openssl_encrypt(MOTD.encode(), PASSPHRASES["dev"], "file", tmp_path))
    motd = paths(core_for(local_core, repo), "client1")["/etc/motd"]
    assert "failure" not in motd.attrib
    assert content(motd) == MOTD.encode()


def test_auth_files_binary_too_and_host_specific_versions(repo: Repo, local_core: Factory) -> None:
    base(repo, "/etc/motd", "/etc/keytab")
    repo.write("Cfg/etc/motd/motd", "public motd\n")
    repo.write("Cfg/etc/motd/motd.H_client1.crypt", auth(MOTD))
    secret = bytes(range(256))
    repo.write("Cfg/etc/keytab/keytab.crypt", auth_encrypt(secret, "web passphrase", None, CHEAP))
    core = core_for(local_core, repo)
    one, two = paths(core, "client1"), paths(core, "client2")
    assert content(one["/etc/motd"]) == MOTD.encode()
    assert content(two["/etc/motd"]) == b"public motd\n"
    assert one["/etc/keytab"].get("encoding") == "base64"
    assert content(one["/etc/keytab"]) == secret


@pytest.mark.parametrize("fname,template", [
    ("motd.genshi.crypt", "Host ${metadata.hostname}\n"),
    ("motd.crypt.genshi", "Host ${metadata.hostname}\n"),
    ("motd.G50_linux.jinja2.crypt", "Host {{ metadata.hostname }}\n"),
    ("motd.crypt.jinja2", "Host {{ metadata.hostname }}\n"),
    ("motd.H_client1.cheetah.crypt", "Host $self.metadata.hostname\n"),
    ("motd.crypt.cheetah", "Host $self.metadata.hostname\n"),
])
def test_encrypted_templates_render_per_client(repo: Repo, local_core: Factory, fname,
                                               template) -> None:
    base(repo, "/etc/motd")
    repo.write(f"Cfg/etc/motd/{fname}", compat_encrypt(template.encode(), "dev passphrase"))
    motd = paths(core_for(local_core, repo), "client1")["/etc/motd"]
    assert "failure" not in motd.attrib, motd.get("failure")
    assert content(motd) == b"Host client1\n"


class ShoutingTemplate(CfgJinja2Generator):
    """A template kind registered after Cfg was written (as .cheetah will be)."""

    extension = ".shout"

    def render(self, variables: dict[str, Any]) -> str:
        return super().render(variables).upper()


def test_an_encrypted_template_of_any_registered_extension_works(repo: Repo, local_core: Factory,
                                                                 monkeypatch) -> None:
    monkeypatch.setitem(TEMPLATE_EXTENSIONS, ShoutingTemplate.extension, ShoutingTemplate)
    base(repo, "/etc/motd", "/etc/issue")
    repo.write("Cfg/etc/motd/motd.H_client1.shout.crypt", auth("hello {{ metadata.hostname }}\n"))
    repo.write("Cfg/etc/issue/issue.crypt.shout", auth("issue {{ name }}\n"))
    bound = paths(core_for(local_core, repo), "client1")
    assert content(bound["/etc/motd"]) == b"HELLO CLIENT1\n"
    assert content(bound["/etc/issue"]) == b"ISSUE /ETC/ISSUE\n"


def test_the_longest_suffix_decides_what_loads_a_version() -> None:
    for fname, stem in [("motd.crypt", "motd"), ("motd.H_a.b.genshi.crypt", "motd.H_a.b"),
                        ("motd.crypt.jinja2", "motd"), ("motd.G10_x.jinja2", "motd.G10_x"),
                        ("motd.H_host.example.com", "motd.H_host.example.com"), (".crypt", ".crypt")]:
        assert loader_for(fname)[0] == stem


def test_a_wrong_passphrase_fails_only_that_entry_once_logged(repo: Repo, local_core: Factory,
                                                              caplog) -> None:
    base(repo, "/etc/motd", "/etc/secret", "/etc/plain")
    repo.write("Cfg/etc/motd/motd.crypt", compat_encrypt(MOTD.encode(), "dev passphrase"))
    secret = repo.write("Cfg/etc/secret/secret.crypt", compat_encrypt(b"x" * 100, "not configured"))
    repo.write("Cfg/etc/plain/plain", "plain\n")
    caplog.set_level(logging.ERROR)
    core = core_for(local_core, repo)
    for client in ("client1", "client2", "client1"):
        bound = paths(core, client)
        failure = bound["/etc/secret"].get("failure")
        assert str(secret) in failure and "none of the passphrases" in failure
        assert bound["/etc/secret"].text is None
        assert content(bound["/etc/motd"]) == MOTD.encode()
        assert content(bound["/etc/plain"]) == b"plain\n"
    # the file is reported once when read; the core logs each entry it could not bind
    logged = [r for r in caplog.records if str(secret) in r.getMessage()
              and r.name != "bcfg2.core"]
    assert len(logged) == 1
    assert "ops passphrase" not in caplog.text and "not configured" not in caplog.text


def test_a_tampered_file_fails_and_a_good_version_stays_in_service(repo: Repo,
                                                                    local_core: Factory) -> None:
    base(repo, "/etc/motd")
    good = auth(MOTD)
    path = repo.write("Cfg/etc/motd/motd.crypt", good)
    core = core_for(local_core, repo)
    assert content(paths(core, "client1")["/etc/motd"]) == MOTD.encode()
    # one character in the middle of the ciphertext changes one byte
    lines = good.splitlines()
    middle = lines[1]
    lines[1] = middle[:10] + ("A" if middle[10] != "A" else "B") + middle[11:]
    tampered = "\n".join(lines) + "\n"
    rewrite(path, tampered)
    core.fam.handle_events_in_interval(0.1)
    assert content(paths(core, "client1")["/etc/motd"]) == MOTD.encode()  # the last good one
    entry_set = core.plugins["Cfg"].entries["/etc/motd"]
    assert "changed" in entry_set.entries["motd.crypt"].error


def test_a_tampered_file_never_read_fails_its_entry(repo: Repo, local_core: Factory) -> None:
    base(repo, "/etc/motd")
    sealed = auth(MOTD)
    repo.write("Cfg/etc/motd/motd.crypt", sealed.replace("ln=10", "ln=11"))
    failure = paths(core_for(local_core, repo), "client1")["/etc/motd"].get("failure")
    assert "motd.crypt" in failure and "changed" in failure


def test_a_file_naming_no_passphrase_is_tried_with_each(repo: Repo, local_core: Factory) -> None:
    base(repo, "/etc/a", "/etc/b")
    repo.write("Cfg/etc/a/a.crypt", compat_encrypt(b"for web\n", "web passphrase"))
    repo.write("Cfg/etc/b/b.crypt", auth("for dev\n", "dev passphrase", None))
    bound = paths(core_for(local_core, repo), "client1")
    assert content(bound["/etc/a"]) == b"for web\n"
    assert content(bound["/etc/b"]) == b"for dev\n"


def test_no_passphrases_configured_fails_the_entry_with_a_reason(repo: Repo,
                                                                 local_core: Factory) -> None:
    base(repo, "/etc/motd")
    repo.write("Cfg/etc/motd/motd.crypt", auth(MOTD))
    failure = paths(core_for(local_core, repo, encryption__passphrases={}),
                    "client1")["/etc/motd"].get("failure")
    assert "no passphrase named 'ops'" in failure


def test_encrypted_versions_wrap_the_version_their_plaintext_makes(repo: Repo,
                                                                   local_core: Factory) -> None:
    base(repo, "/etc/motd")
    repo.write("Cfg/etc/motd/motd.crypt", auth(MOTD))
    core = core_for(local_core, repo)
    version = core.plugins["Cfg"].entries["/etc/motd"].entries["motd.crypt"]
    assert isinstance(version, CfgEncryptedGenerator)
    assert isinstance(version.inner, CfgPlaintextGenerator)
    assert version.inner.data == MOTD.encode()


@pytest.mark.parametrize("core", ["builtin", "multiprocessing"])
def test_an_agent_gets_a_decrypted_file_through_a_network_core(repo: Repo, network_server,
                                                               core: str) -> None:
    base(repo, "/etc/motd", "/etc/broken")
    repo.write("Cfg/etc/motd/motd.crypt", auth(MOTD))
    repo.write("Cfg/etc/broken/broken.crypt", auth("x\n", "unknown", None))
    server = network_server(repo, core=core, server__children="1",
                            encryption__passphrases=PASSPHRASES)
    config = lxml.etree.fromstring(server.proxy("uuid-client1", "pw1").GetConfig().encode())
    bound = {el.get("name"): el for el in config.iter("Path")}
    assert bound["/etc/motd"].text == MOTD and "failure" not in bound["/etc/motd"].attrib
    assert "broken.crypt" in bound["/etc/broken"].get("failure")


def test_lint_reads_the_group_of_an_encrypted_version_and_skips_its_ciphertext(
        repo: Repo, tmp_path, capsys) -> None:
    import bcfg2.lint

    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/motd"/></Bundle>')
    # ciphertext that would not compile as a template
    repo.write("Cfg/etc/motd/motd.G50_linux.crypt.jinja2", "{% if %}\n")
    repo.write("Cfg/etc/motd/motd.G50_linux.genshi.crypt", auth("x"))
    repo.write("Cfg/etc/motd/motd.G60_nosuch.crypt.genshi", "{% for x %}\n")
    repo.write("Cfg/etc/motd/motd.G50_linux.crypt.cheetah", "#for $x\n")
    status = bcfg2.lint.main(["-C", "/dev/null", "-Q", str(repo), "--state-dir",
                              str(tmp_path / "state"), "Jinja2", "Genshi", "Cheetah",
                              "GroupNames"])
    out = capsys.readouterr().out
    assert "syntax" not in out
    assert [line for line in out.splitlines() if "undefined-group" in line] == [
        line for line in out.splitlines() if "motd.G60_nosuch.crypt.genshi" in line]
    assert "group nosuch," in out and status == 3  # warnings only
