"""bcfg2.encryption: upstream's openssl-compatible format, our authenticated one, [encryption]."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time

import pytest
from openssl_enc import OPENSSL, needs_openssl, openssl_decrypt, openssl_encrypt

from bcfg2 import encryption, options
from bcfg2.encryption import (
    AUTH_MAGIC,
    DecryptionError,
    Encryption,
    ScryptCost,
    auth_decrypt,
    auth_encrypt,
    compat_decrypt,
    compat_encrypt,
    detect_format,
    evp_bytes_to_key,
    key_name,
)
from bcfg2.errors import ConfigError

PASS = "correct horse battery"
TEXT = ("# /etc/motd\nWelcome to \x1b[1mthis\x1b[0m host, caf\u00e9 \u2713\n" * 20).encode()
#: cheap scrypt for tests that do not test the cost
CHEAP = ScryptCost(ln=10, r=8, p=1)


def settings(**passphrases: str) -> Encryption:
    return Encryption(passphrases, cost=CHEAP)


# -- compat: upstream's and openssl's format -------------------------------------------------------

@needs_openssl
@pytest.mark.parametrize("via", ["env", "file"])
def test_openssl_output_decrypts(via, tmp_path) -> None:
    ciphertext = openssl_encrypt(TEXT, PASS, via, tmp_path)
    assert detect_format(ciphertext) == "compat"
    assert compat_decrypt(ciphertext, PASS) == TEXT


@needs_openssl
def test_compat_output_decrypts_with_openssl_and_is_wrapped_as_openssl_wraps(tmp_path) -> None:
    ciphertext = compat_encrypt(TEXT, PASS)
    lines = ciphertext.splitlines()
    assert len(lines) > 2 and all(len(line) == 64 for line in lines[:-1])
    assert 0 < len(lines[-1]) <= 64 and ciphertext.endswith("\n")
    done = openssl_decrypt(ciphertext.encode(), PASS, "file", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == TEXT
    # a single line (as Properties elements hold it, and upstream writes it) needs -A
    one_line = compat_encrypt(TEXT, PASS, width=None)
    assert "\n" not in one_line
    assert openssl_decrypt(one_line.encode() + b"\n", PASS, one_line=True).stdout == TEXT


@needs_openssl
def test_key_derivation_is_openssl_evp_bytes_to_key(monkeypatch) -> None:
    salt = bytes.fromhex("0102030405060708")
    monkeypatch.setenv("BCFG2_TEST_PASSPHRASE", PASS)
    shown = subprocess.run([str(OPENSSL), "enc", "-aes-256-cbc", "-md", "md5", "-S", salt.hex(),
                            "-pass", "env:BCFG2_TEST_PASSPHRASE", "-P"],
                           capture_output=True, text=True, check=True, timeout=30).stdout
    values = dict(re.findall(r"^(\w+)\s*=\s*([0-9A-F]+)$", shown, re.M))
    key, iv = evp_bytes_to_key(PASS.encode(), salt, 32, 16)
    assert (key.hex().upper(), iv.hex().upper()) == (values["key"], values["iv"])


def test_compat_wrong_passphrase_never_gives_output() -> None:
    ciphertext = compat_encrypt(TEXT, PASS)
    reasons = set()
    for n in range(300):
        with pytest.raises(DecryptionError) as err:
            compat_decrypt(ciphertext, f"wrong {n}")
        reasons.add("padding" if "padding" in str(err.value) else "text")
    assert "padding" in reasons  # most wrong passphrases: bad padding


def test_compat_output_that_is_not_text_counts_as_a_wrong_passphrase() -> None:
    binary = bytes(range(256))
    with pytest.raises(DecryptionError, match="not text"):
        compat_decrypt(compat_encrypt(binary, PASS), PASS)


def test_compat_garbage_is_refused_with_a_reason() -> None:
    for data, reason in [("not base64 at all!", "not base64"),
                         (base64.b64encode(b"Salted__" + b"x" * 20).decode(), "compat"),
                         (base64.b64encode(b"Unsalted" + b"x" * 24).decode(), "compat")]:
        with pytest.raises(DecryptionError, match=reason):
            compat_decrypt(data, PASS)


def test_compat_algorithms_other_than_aes_cbc_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bf_cbc"):
        compat_encrypt(TEXT, PASS, "bf_cbc")
    for algorithm in encryption.COMPAT_ALGORITHMS:
        assert compat_decrypt(compat_encrypt(TEXT, PASS, algorithm), PASS, algorithm) == TEXT


# -- auth: ours ---------------------------------------------------------------------------------

def test_auth_round_trip_of_text_and_binary_with_the_key_name_in_the_header() -> None:
    for plaintext in (TEXT, bytes(range(256)), b""):
        sealed = auth_encrypt(plaintext, PASS, "team", CHEAP)
        assert sealed.startswith(AUTH_MAGIC) and detect_format(sealed) == "auth"
        assert key_name(sealed) == "team"
        assert auth_decrypt(sealed, PASS) == plaintext
    assert key_name(auth_encrypt(b"x", PASS, None, CHEAP)) is None


def test_auth_default_cost_is_written_in_the_header() -> None:
    sealed = auth_encrypt(b"x", PASS)
    cost = ScryptCost()
    assert f"ln={cost.ln},r={cost.r},p={cost.p}" in sealed.splitlines()[0]


def _retouch(sealed: str, part: str, index: int) -> str:
    """Change one byte of the salt or the body (nonce, ciphertext, tag) of auth data."""
    joined = "".join(sealed.split())
    head, salt, body = joined.rsplit("$", 2)
    field = bytearray(base64.b64decode(salt if part == "salt" else body))
    field[index] ^= 0x01
    encoded = base64.b64encode(bytes(field)).decode()
    return f"{head}${encoded}${body}" if part == "salt" else f"{head}${salt}${encoded}"


@pytest.mark.parametrize("part,index", [("salt", 0), ("body", 0), ("body", 15), ("body", -1),
                                        ("body", -17)])
def test_auth_detects_one_changed_byte(part, index) -> None:
    sealed = auth_encrypt(TEXT, PASS, "team", CHEAP)
    with pytest.raises(DecryptionError, match="wrong passphrase, or the data was changed"):
        auth_decrypt(_retouch(sealed, part, index), PASS)


@pytest.mark.parametrize("old,new", [("key=team", "key=tean"), ("ln=10", "ln=11"),
                                     ("r=8", "r=9")])
def test_auth_header_is_authenticated(old, new) -> None:
    sealed = auth_encrypt(TEXT, PASS, "team", CHEAP)
    with pytest.raises(DecryptionError):
        auth_decrypt(sealed.replace(old, new), PASS)


def test_auth_wrong_passphrase_fails() -> None:
    with pytest.raises(DecryptionError, match="wrong passphrase"):
        auth_decrypt(auth_encrypt(TEXT, PASS, None, CHEAP), PASS + "x")


def test_auth_cost_out_of_bounds_is_refused_at_once() -> None:
    sealed = auth_encrypt(b"x", PASS, None, CHEAP).replace("ln=10", "ln=30")
    started = time.monotonic()
    with pytest.raises(DecryptionError, match="out of bounds"):
        auth_decrypt(sealed, PASS)
    assert time.monotonic() - started < 1


def test_auth_malformed_headers_are_refused() -> None:
    sealed = auth_encrypt(b"x", PASS, None, CHEAP)
    for bad in (sealed.replace("kdf=scrypt", "kdf=md5"), sealed.replace(",p=1", ""),
                sealed.replace(",p=1", ",p=1,p=2"), sealed.replace("ln=10", "ln=ten"),
                AUTH_MAGIC + "nothing"):
        with pytest.raises(DecryptionError):
            auth_decrypt(bad, PASS)


# -- the [encryption] settings -------------------------------------------------------------------

def test_decrypt_tries_each_passphrase_when_none_is_named() -> None:
    crypt = settings(alpha="first one", beta=PASS, gamma="third")
    assert crypt.decrypt(compat_encrypt(TEXT, PASS)) == (TEXT, "beta")
    assert crypt.decrypt(auth_encrypt(TEXT, PASS, None, CHEAP)) == (TEXT, "beta")
    # a named passphrase is the only one tried
    with pytest.raises(DecryptionError, match="wrong passphrase"):
        crypt.decrypt(compat_encrypt(TEXT, PASS), "alpha")
    with pytest.raises(DecryptionError, match="none of the passphrases"):
        crypt.decrypt(compat_encrypt(TEXT, "nobody's"))


def test_the_header_name_picks_the_passphrase_and_unknown_names_are_reported() -> None:
    crypt = settings(alpha="first one", beta=PASS)
    assert crypt.decrypt(crypt.encrypt(TEXT, "beta")) == (TEXT, "beta")
    with pytest.raises(DecryptionError, match="no passphrase named 'team'"):
        crypt.decrypt(auth_encrypt(TEXT, PASS, "team", CHEAP))
    with pytest.raises(DecryptionError, match="not encrypted data"):
        crypt.decrypt(b"plain text\n")
    with pytest.raises(DecryptionError, match="no passphrases"):
        settings().decrypt(compat_encrypt(TEXT, PASS))


def test_encrypt_writes_the_configured_format() -> None:
    assert detect_format(settings(a=PASS).encrypt(TEXT, "a")) == "auth"
    compat = Encryption({"a": PASS}, format="compat")
    sealed = compat.encrypt(TEXT, "a")
    assert detect_format(sealed) == "compat" and compat_decrypt(sealed, PASS) == TEXT
    assert detect_format(compat.encrypt(TEXT, "a", "auth")) == "auth"


def test_no_passphrase_in_repr_or_messages() -> None:
    crypt = settings(team=PASS)
    assert PASS not in repr(crypt)
    for data in (compat_encrypt(TEXT, "other"), auth_encrypt(TEXT, "other", None, CHEAP), b"x"):
        with pytest.raises(DecryptionError) as err:
            crypt.decrypt(data)
        assert PASS not in str(err.value) and "other" not in str(err.value)


def conf(tmp_path, text: str) -> str:
    path = tmp_path / "bcfg2.conf"
    path.write_text(text)
    return str(path)


def test_encryption_section_every_other_option_is_a_passphrase(tmp_path) -> None:
    setup = options.build(conf(tmp_path, """\
        [encryption]
        foo_team = P4ssphr4se
        Bar_Team = Pa55 phra5e
        algorithm = AES-128-CBC
        decrypt = lax
        format = compat
        """.replace("        ", "")))
    assert setup.encryption.passphrases == {"foo_team": "P4ssphr4se", "bar_team": "Pa55 phra5e"}
    crypt = Encryption.from_setup(setup)
    assert (crypt.algorithm, crypt.format, crypt.lax) == ("aes_128_cbc", "compat", True)
    assert crypt.passphrase("Bar_Team") == "Pa55 phra5e"  # bcfg2.conf names ignore case


def test_encryption_section_defaults_and_upstream_lax_decryption(tmp_path) -> None:
    crypt = Encryption.from_setup(options.build(conf(tmp_path, "[server]\n")))
    assert (dict(crypt.passphrases), crypt.algorithm, crypt.format, crypt.lax) == \
        ({}, "aes_256_cbc", "auth", False)
    lax = options.build(conf(tmp_path, "[encryption]\nlax_decryption = true\nteam = x\n"))
    assert Encryption.from_setup(lax).lax and lax.encryption.passphrases == {"team": "x"}


@pytest.mark.parametrize("line,message", [("algorithm = bf_cbc", "algorithm"),
                                          ("decrypt = sometimes", "decrypt"),
                                          ("format = gpg", "format")])
def test_bad_encryption_options_are_config_errors(tmp_path, line, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Encryption.from_setup(options.build(conf(tmp_path, f"[encryption]\n{line}\n")))


def test_bcfg2_info_config_shows_passphrase_names_never_passphrases(tmp_path, repo,
                                                                    capsys) -> None:
    from bcfg2.core import LocalCore
    from bcfg2.info import InfoShell

    path = conf(tmp_path, f"[server]\nrepository = {repo}\nplugins = Metadata, Cfg\n"
                          f"state_dir = {tmp_path / 'state'}\nfilemonitor = pseudo\n"
                          f"[encryption]\nops = {PASS}\n")
    core = LocalCore(options.build(path))
    try:
        shell = InfoShell(core)
        shell.stdout = sys.stdout
        shell.onecmd("config encryption")
    finally:
        core.shutdown()
    out = capsys.readouterr().out
    assert "ops" in out and "aes_256_cbc" in out
    assert PASS not in out and "battery" not in out


def test_the_options_repr_shows_passphrase_names_only(tmp_path) -> None:
    setup = options.build(conf(tmp_path, f"[encryption]\nops = {PASS}\n"))
    assert "ops" in repr(setup.encryption) and PASS not in repr(setup.encryption)
