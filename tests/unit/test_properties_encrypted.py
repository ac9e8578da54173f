"""Properties: elements with encrypted="NAME" are decrypted on reading; strict and lax."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from conftest import PLUGINS, Repo
from openssl_enc import needs_openssl, openssl_encrypt

from bcfg2.core import LocalCore
from bcfg2.encryption import ScryptCost, auth_encrypt, compat_encrypt

Factory = Callable[..., LocalCore]
PASSPHRASES = {"ops": "ops passphrase", "dev": "dev passphrase"}


def sealed(text: str, passphrase: str, kind: str = "compat") -> str:
    if kind == "compat":
        return compat_encrypt(text.encode(), passphrase, width=None)
    return auth_encrypt(text.encode(), passphrase, None, ScryptCost(ln=10), width=None)


def auth_file(ops: str, dev: str, root_attrs: str = "") -> str:
    return (f'<Properties encryption="true"{root_attrs}>\n'
            f'  <Plain>visible</Plain>\n'
            f'  <Group name="linux">\n'
            f'    <Password encrypted="ops">{ops}</Password>\n'
            f'  </Group>\n'
            f'  <Token encrypted="dev">{dev}</Token>\n'
            f'</Properties>\n')


def make(local_core: Factory, repo: Repo, **overrides: Any) -> LocalCore:
    overrides.setdefault("encryption__passphrases", PASSPHRASES)
    return local_core(repo, server__plugins=PLUGINS, **overrides)


def props(core: LocalCore, client: str = "client1") -> dict:
    return core.build_metadata(client).Properties


def test_encrypted_elements_are_decrypted_each_with_its_passphrase(repo: Repo,
                                                                   local_core: Factory) -> None:
    text = auth_file(sealed("hunter2", "ops passphrase"), sealed("t0ken", "dev passphrase", "auth"))
    repo.write("Properties/auth.xml", text)
    auth = props(make(local_core, repo))["auth.xml"]
    assert auth.xdata.find("Group/Password").text == "hunter2"
    assert auth.xdata.find("Token").text == "t0ken"
    assert auth.xdata.find("Plain").text == "visible"
    assert [el.text for el in auth.Match(make(local_core, repo).build_metadata("client1"))
            if el.tag == "Password"] == ["hunter2"]
    assert auth.data == text  # the raw text stays as it is on disk


@needs_openssl
def test_an_element_encrypted_by_openssl_is_decrypted(repo: Repo, local_core: Factory) -> None:
    ops = openssl_encrypt(b"from openssl", "ops passphrase").decode().strip()
    repo.write("Properties/auth.xml", auth_file(ops, sealed("t", "dev passphrase")))
    assert props(make(local_core, repo))["auth.xml"].xdata.find(
        "Group/Password").text == "from openssl"


def test_strict_a_file_with_an_undecryptable_element_is_not_used(repo: Repo, local_core: Factory,
                                                                 caplog) -> None:
    repo.write("Properties/ok.xml", "<Properties><A>a</A></Properties>")
    path = repo.write("Properties/auth.xml",
                      auth_file(sealed("hunter2", "ops passphrase"), sealed("t", "wrong one")))
    caplog.set_level(logging.WARNING)
    core = make(local_core, repo)
    assert sorted(props(core)) == ["ok.xml"]
    assert sorted(props(core, "client2")) == ["ok.xml"]
    logged = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert len(logged) == 1
    assert f"{path}:6: <Token encrypted=\"dev\">" in logged[0] and "strict" in logged[0]
    assert "dev passphrase" not in caplog.text and "wrong one" not in caplog.text


@pytest.mark.parametrize("overrides,attrs", [
    ({"encryption__decrypt": "lax"}, ""),
    ({"encryption__lax_decryption": "true"}, ""),
    ({}, ' lax_decryption="true"'),
])
def test_lax_the_file_is_used_with_the_element_left_encrypted(repo: Repo, local_core: Factory,
                                                              caplog, overrides, attrs) -> None:
    bad = sealed("t", "wrong one")
    path = repo.write("Properties/auth.xml", auth_file(sealed("hunter2", "ops passphrase"), bad,
                                                       attrs))
    caplog.set_level(logging.WARNING)
    core = make(local_core, repo, **overrides)
    auth = props(core)["auth.xml"]
    assert auth.xdata.find("Group/Password").text == "hunter2"
    assert auth.xdata.find("Token").text == bad
    props(core, "client2")
    logged = [r for r in caplog.records if str(path) in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    assert f"{path}:6:" in logged[0].getMessage()


def test_a_file_can_ask_for_strict_when_lax_is_the_default(repo: Repo, local_core: Factory) -> None:
    repo.write("Properties/auth.xml", auth_file(sealed("x", "ops passphrase"), sealed("t", "nope"),
                                                ' lax_decryption="false"'))
    assert "auth.xml" not in props(make(local_core, repo, encryption__decrypt="lax"))


def test_an_unknown_passphrase_name_or_plain_text_is_a_failure(repo: Repo,
                                                               local_core: Factory) -> None:
    repo.write("Properties/unknown.xml",
               '<Properties><A encrypted="nobody">' + sealed("x", "ops passphrase") +
               "</A></Properties>")
    repo.write("Properties/plain.xml", '<Properties><A encrypted="ops">not encrypted</A>'
                                       '<Empty encrypted="ops"/></Properties>')
    core = make(local_core, repo)
    assert not {"unknown.xml", "plain.xml"} & set(props(core))
    errors = {name: entry.error for name, entry in core.plugins["Properties"].entries.items()}
    assert "no passphrase named 'nobody'" in errors["unknown.xml"]
    assert "not encrypted data" in errors["plain.xml"]
