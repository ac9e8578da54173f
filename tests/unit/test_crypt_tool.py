"""bcfg2-crypt: Cfg files whole, Properties files by element, re-keying, the formats."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lxml.etree
import pytest
from openssl_enc import needs_openssl, openssl_decrypt, openssl_encrypt

from bcfg2.crypt import main
from bcfg2.encryption import Encryption, compat_decrypt, detect_format, key_name

PASSPHRASES = {"ops": "ops passphrase", "dev": "dev passphrase"}
MOTD = b"Welcome, authorised users only\n"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "bcfg2.conf"
    path.write_text("[encryption]\n" + "".join(f"{k} = {v}\n" for k, v in PASSPHRASES.items()))
    return path


def run(conf: Path, *args: str) -> int:
    return main(["-C", str(conf), *args])


def decrypt(data: bytes | str) -> tuple[bytes, str]:
    return Encryption(PASSPHRASES).decrypt(data)


def test_cfg_encrypt_writes_auth_with_the_key_name_and_decrypt_gives_it_back(
        conf, tmp_path, capsys) -> None:
    motd = tmp_path / "motd"
    motd.write_bytes(MOTD)
    motd.chmod(0o640)
    assert run(conf, "-p", "ops", str(motd)) == 0
    crypt = tmp_path / "motd.crypt"
    data = crypt.read_bytes()
    assert detect_format(data) == "auth" and key_name(data) == "ops"
    assert decrypt(data) == (MOTD, "ops")
    assert crypt.stat().st_mode & 0o777 == 0o640
    assert motd.exists()  # kept without --remove
    motd.unlink()
    assert run(conf, str(crypt)) == 0  # decrypts: the file is encrypted
    assert motd.read_bytes() == MOTD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bcfg2.conf", "motd", "motd.crypt"]
    assert capsys.readouterr().err == ""


@needs_openssl
def test_cfg_compat_output_decrypts_with_openssl(conf, tmp_path) -> None:
    template = tmp_path / "motd.genshi"
    template.write_bytes(MOTD * 10)
    assert run(conf, "-p", "dev", "--format", "compat", "--remove", str(template)) == 0
    assert not template.exists()
    done = openssl_decrypt((tmp_path / "motd.genshi.crypt").read_bytes(), "dev passphrase",
                           "file", tmp_path)
    assert done.returncode == 0 and done.stdout == MOTD * 10


@needs_openssl
def test_cfg_a_file_openssl_encrypted_decrypts_trying_each_passphrase(conf, tmp_path,
                                                                      capsysbinary) -> None:
    crypt = tmp_path / "motd.crypt.jinja2"
    crypt.write_bytes(openssl_encrypt(MOTD, "dev passphrase"))
    assert run(conf, "--stdout", str(crypt)) == 0
    assert capsysbinary.readouterr().out == MOTD
    assert run(conf, str(crypt)) == 0
    assert (tmp_path / "motd.jinja2").read_bytes() == MOTD


def test_cfg_format_can_be_configured(conf, tmp_path) -> None:
    conf.write_text(conf.read_text() + "format = compat\n")
    motd = tmp_path / "motd"
    motd.write_bytes(MOTD)
    assert run(conf, "-p", "ops", str(motd)) == 0
    assert compat_decrypt((tmp_path / "motd.crypt").read_bytes(), "ops passphrase") == MOTD


def test_cfg_rekey_to_another_passphrase_and_format(conf, tmp_path) -> None:
    motd = tmp_path / "motd"
    motd.write_bytes(MOTD)
    assert run(conf, "-p", "ops", "--remove", str(motd)) == 0
    crypt = tmp_path / "motd.crypt"
    assert run(conf, "--rekey", "-p", "dev", "--format", "compat", str(crypt)) == 0
    assert compat_decrypt(crypt.read_bytes(), "dev passphrase") == MOTD
    assert run(conf, "--rekey", "-p", "ops", str(crypt)) == 0
    assert key_name(crypt.read_bytes()) == "ops" and decrypt(crypt.read_bytes())[0] == MOTD


def test_cfg_failures_change_nothing(conf, tmp_path, capsys) -> None:
    motd = tmp_path / "motd"
    motd.write_bytes(MOTD)
    # two passphrases and no -p: which one?
    assert run(conf, str(motd)) == 1
    assert "choose one with -p NAME" in capsys.readouterr().err
    assert run(conf, "-p", "ops", str(motd)) == 0
    crypt = tmp_path / "motd.crypt"
    sealed = crypt.read_bytes()
    # a plaintext that differs from the decrypted text is not overwritten
    motd.write_bytes(b"edited\n")
    assert run(conf, str(crypt)) == 1
    assert "exists and differs" in capsys.readouterr().err
    assert motd.read_bytes() == b"edited\n"
    # a file no passphrase decrypts
    other = tmp_path / "other.crypt"
    other.write_text(Encryption({"x": "unknown"}).encrypt(MOTD, "x"))
    assert run(conf, "--decrypt", str(other)) == 1
    assert "no passphrase named 'x'" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    assert crypt.read_bytes() == sealed
    assert run(conf, "--encrypt", "-p", "ops", str(crypt)) == 1
    assert "already encrypted" in capsys.readouterr().err


def test_p_takes_a_passphrase_name_never_a_passphrase(conf, tmp_path, capsys) -> None:
    motd = tmp_path / "motd"
    motd.write_bytes(MOTD)
    assert run(conf, "-p", "ops passphrase", str(motd)) == 2
    err = capsys.readouterr().err
    assert "-p takes a name" in err and "ops passphrase" not in err
    assert not (tmp_path / "motd.crypt").exists()


PROPS = b"""<?xml version="1.0" encoding="UTF-8"?>
<Properties>
  <!-- kept -->
  <Password>hunter2</Password>
  <Group name="linux">
    <Token encrypted="dev">t0ken</Token>
  </Group>
  <Empty/>
</Properties>
"""


def elements(path: Path) -> dict[str, lxml.etree._Element]:
    root = lxml.etree.parse(str(path)).getroot()
    return {el.tag: el for el in root.iter() if isinstance(el.tag, str)}


def test_properties_encrypt_flagged_elements_with_their_own_passphrase(conf, tmp_path) -> None:
    props = tmp_path / "auth.xml"
    props.write_bytes(PROPS)
    assert run(conf, "-p", "ops", str(props)) == 0
    data = props.read_bytes()
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Properties')
    assert b"<!-- kept -->" in data
    found = elements(props)
    assert found["Properties"].get("encryption") == "true"
    assert found["Password"].text == "hunter2"  # not flagged: the flagged ones exist
    token = found["Token"]
    assert token.get("encrypted") == "dev" and "\n" not in token.text
    assert decrypt(token.text) == (b"t0ken", "dev")
    # decrypting keeps the attribute, so the next run encrypts the same elements
    assert run(conf, str(props)) == 0
    found = elements(props)
    assert (found["Token"].text, found["Token"].get("encrypted")) == ("t0ken", "dev")
    assert props.read_bytes() == PROPS.replace(b"<Properties>", b'<Properties encryption="true">')


def test_properties_with_no_flagged_element_every_text_is_encrypted(conf, tmp_path) -> None:
    props = tmp_path / "auth.xml"
    props.write_bytes(PROPS.replace(b' encrypted="dev"', b""))
    assert run(conf, "-p", "ops", "--format", "compat", str(props)) == 0
    found = elements(props)
    for tag in ("Password", "Token"):
        assert found[tag].get("encrypted") == "ops"
        assert compat_decrypt(found[tag].text, "ops passphrase") in (b"hunter2", b"t0ken")
    assert found["Empty"].get("encrypted") is None and found["Group"].get("encrypted") is None


def test_properties_xpath_selects_elements_and_rekey_changes_passphrase(conf, tmp_path) -> None:
    props = tmp_path / "auth.xml"
    props.write_bytes(PROPS)
    assert run(conf, "-p", "ops", "--xpath", "//Password", str(props)) == 0
    found = elements(props)
    assert decrypt(found["Password"].text) == (b"hunter2", "ops")
    assert found["Token"].text == "t0ken"
    assert run(conf, "--rekey", "-p", "dev", str(props)) == 0
    found = elements(props)
    assert found["Password"].get("encrypted") == "dev"
    assert decrypt(found["Password"].text) == (b"hunter2", "dev")


def test_properties_a_failing_element_leaves_the_file_as_it_was(conf, tmp_path, capsys) -> None:
    props = tmp_path / "auth.xml"
    bad = Encryption({"gone": "elsewhere"}).encrypt(b"x", "gone", width=None)
    original = PROPS.replace(b"t0ken", bad.encode()).replace(b"hunter2", b"")
    props.write_bytes(original)
    assert run(conf, "--decrypt", str(props)) == 1
    assert f"{props}:6: <Token>" in capsys.readouterr().err
    assert props.read_bytes() == original


def test_cfg_flag_encrypts_a_properties_file_whole(conf, tmp_path) -> None:
    props = tmp_path / "auth.xml"
    props.write_bytes(PROPS)
    assert run(conf, "--cfg", "-p", "ops", str(props)) == 0
    assert decrypt((tmp_path / "auth.xml.crypt").read_bytes()) == (PROPS, "ops")
    other = tmp_path / "data.xml"
    other.write_bytes(b"<Data><Secret encrypted='ops'>s</Secret></Data>")
    assert run(conf, "--properties", str(other)) == 0
    assert decrypt(elements(other)["Secret"].text) == (b"s", "ops")


def test_the_console_script_says_the_default_format_is_not_upstreams() -> None:
    done = subprocess.run([sys.executable, "-m", "bcfg2.crypt", "--help"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "COLUMNS": "100"})
    assert done.returncode == 0
    assert "upstream" in done.stdout and "--format compat" in done.stdout
