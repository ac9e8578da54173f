"""Make a self-signed certificate for 127.0.0.1 and localhost (``make run``).

Usage: python -m bcfg2.devcert CERT KEY
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys


def make_self_signed(cert_path: str, key_path: str, days: int = 825,
                     names: tuple[str, ...] = ()) -> None:
    """Write a new EC key and a self-signed certificate for localhost, 127.0.0.1 and ``names``.

    The first of ``names`` (else localhost) is the subject's common name;
    names that are IP addresses go in as such.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    hosts = list(dict.fromkeys([*names, "localhost", "127.0.0.1"]))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    alternatives: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alternatives.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    old = os.umask(0o077)
    try:
        with open(key_path, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    finally:
        os.umask(old)
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    make_self_signed(args[0], args[1])
    print(f"wrote {args[0]} and {args[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
