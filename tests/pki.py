"""A throwaway PKI for TLS tests (the `cryptography` library, which Ansible brings).

    pki = Pki(directory)
    server = pki.issue("server", sans=["127.0.0.1"], server=True)
    client = pki.issue("calico-host.h1")            # client certificate, CN = user name
    expired = pki.issue("old", expired=True)
    rogue = Pki(other_directory).issue("calico-host.h1")   # signed by another CA

Each ``issue`` returns a ``Pair`` of PEM file paths (0600 keys).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    cert: str
    key: str


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


class Pki:
    def __init__(self, directory: str | Path, name: str = "test CA") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.ca = str(self.dir / "ca.crt")
        Path(self.ca).write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, sans: tuple[str, ...] | list[str] = (), server: bool = False,
              expired: bool = False) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = ((now - datetime.timedelta(days=10), now - datetime.timedelta(days=1))
                      if expired else (now - datetime.timedelta(days=1),
                                       now + datetime.timedelta(days=30)))
        names: list[x509.GeneralName] = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            usage.append(ExtendedKeyUsageOID.SERVER_AUTH)
        # an empty cn: a subject with only an organisation (etcd's JSON gateway refuses
        # a client certificate with a common name once authentication is on)
        subject = (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]) if cn else
                   x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "calico")]))
        builder = (x509.CertificateBuilder()
                   .subject_name(subject)
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end)
                   .add_extension(x509.ExtendedKeyUsage(usage), False))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = cn.replace("/", "_") or f"anonymous-{x509.random_serial_number() % 10**6}"
        pair = Pair(str(self.dir / f"{stem}.crt"), str(self.dir / f"{stem}.key"))
        Path(pair.cert).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(Path(pair.key), key)
        return pair
