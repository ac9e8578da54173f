"""The openssl command the compat encryption format must agree with, for the tests.

The passphrase reaches openssl through its environment (``-pass env:``) or a
file (``-pass file:``), never its command line, where other users could read it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(
    OPENSSL is None, reason="openssl is not installed (apt-get install openssl)")

#: upstream's cipher and key derivation, as bcfg2-crypt's compat format writes them
ENC = ["enc", "-aes-256-cbc", "-md", "md5", "-a", "-salt"]
_VAR = "BCFG2_TEST_PASSPHRASE"


def _pass_args(passphrase: str, via: str, tmp_path: Path | None) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if via == "env":
        env[_VAR] = passphrase
        return ["-pass", f"env:{_VAR}"], env
    assert tmp_path is not None, "-pass file: needs a directory"
    secret = tmp_path / "openssl-passphrase"
    secret.write_text(passphrase + "\n")
    secret.chmod(0o600)
    return ["-pass", f"file:{secret}"], env


def openssl_encrypt(plaintext: bytes, passphrase: str, via: str = "env",
                    tmp_path: Path | None = None) -> bytes:
    """``openssl enc -aes-256-cbc -md md5 -a -salt`` of ``plaintext``."""
    args, env = _pass_args(passphrase, via, tmp_path)
    done = subprocess.run([str(OPENSSL), *ENC, *args], input=plaintext, env=env,
                          capture_output=True, check=True, timeout=30)
    return done.stdout


def openssl_decrypt(ciphertext: bytes, passphrase: str, via: str = "env",
                    tmp_path: Path | None = None, one_line: bool = False,
                    ) -> subprocess.CompletedProcess[bytes]:
    """``openssl enc -d ...`` of ``ciphertext`` (``-A`` with ``one_line``): the completed process."""
    args, env = _pass_args(passphrase, via, tmp_path)
    extra = ["-A"] if one_line else []
    return subprocess.run([str(OPENSSL), *ENC, "-d", *extra, *args], input=ciphertext, env=env,
                          capture_output=True, timeout=30)
