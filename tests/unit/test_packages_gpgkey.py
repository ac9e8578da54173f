"""GPG key files named as ``rpm --import`` names them (gpg-pubkey-VERSION-RELEASE)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from packages_repos import ED25519_KEY as ED25519

from bcfg2.plugins.packages.gpgkey import KeyFileError, dearmor, rpm_names


def test_an_armoured_key_and_its_binary_form_name_the_same_package() -> None:
    assert rpm_names(ED25519) == [("e93e6bf2", "6b112c7f")]
    assert rpm_names(dearmor(ED25519)[0]) == [("e93e6bf2", "6b112c7f")]


@pytest.mark.parametrize("damage, why", [
    (lambda k: k.replace(b"=HyFw", b"=HyFx"), "CRC-24"),
    (lambda k: k.replace(b"-----END PGP PUBLIC KEY BLOCK-----\n", b""), "no end line"),
    (lambda k: k.replace(b"mDMEaxEs", b"mDMEa!Es"), "not base64"),
    (lambda k: dearmor(k)[0][:40], "cut short"),
    (lambda k: b"<html>Not Found</html>", "no packet header"),
    (lambda k: b"\x99\x00\x05\x03abcd", "version 3"),
    (lambda k: b"", "no public key"),
])
def test_a_file_that_is_no_usable_key_says_why(damage, why: str) -> None:
    with pytest.raises(KeyFileError, match=why):
        rpm_names(damage(ED25519))


@pytest.mark.skipif(not (shutil.which("gpg") and shutil.which("rpmkeys")),
                    reason="gpg and rpmkeys are needed (Debian packages gnupg and rpm)")
def test_keys_made_by_gpg_are_named_as_rpm_names_them(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(*args: str) -> bytes:
        return subprocess.run(["gpg", "--batch", "--quiet", "--passphrase", "", *args],
                              env=env, check=True, capture_output=True, timeout=120).stdout

    try:
        gpg("--quick-gen-key", "RSA signer <rsa@example.invalid>", "rsa2048", "sign", "never")
        gpg("--quick-gen-key", "Ed signer <ed@example.invalid>", "ed25519", "sign", "never")
        armoured = gpg("--armor", "--export")
    finally:  # key generation started a gpg-agent for this home: it goes with the test
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], env=env,
                       capture_output=True, timeout=60)
    (tmp_path / "keys.asc").write_bytes(armoured)
    db = tmp_path / "rpmdb"
    subprocess.run(["rpmkeys", "--dbpath", str(db), "--import", str(tmp_path / "keys.asc")],
                   check=True, capture_output=True, timeout=60)
    listed = subprocess.run(["rpm", "--dbpath", str(db), "-q", "gpg-pubkey", "--qf",
                             "%{version} %{release}\\n"], check=True, capture_output=True,
                            text=True, timeout=60).stdout.split("\n")
    by_rpm = sorted(tuple(line.split()) for line in listed if line)
    assert len(by_rpm) == 2
    assert sorted(rpm_names(armoured)) == by_rpm
    assert sorted(rpm_names(gpg("--export"))) == by_rpm
