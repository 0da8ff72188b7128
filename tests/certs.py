"""Test certificates made with `cryptography`: a CA, a server certificate for 127.0.0.1 and
localhost, and a client certificate, written as PEM files into a directory."""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _issue(subject: str, key, issuer: x509.Name, issuer_key, extensions) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1)))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("bpftools test CA")
    ca = _issue("bpftools test CA", ca_key, ca_name, ca_key, [(x509.BasicConstraints(ca=True, path_length=None), True)])
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths = {}
    for role, usage, names in (
            ("server", ExtendedKeyUsageOID.SERVER_AUTH,
             [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            ("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("prometheus")])):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(f"bpftools test {role}", key, ca_name, ca_key,
                      [(x509.BasicConstraints(ca=False, path_length=None), True),
                       (x509.ExtendedKeyUsage([usage]), False), (x509.SubjectAlternativeName(names), False)])
        (directory / f"{role}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[role] = (directory / f"{role}.crt", _write_key(key, directory / f"{role}.key"))
    return Certs(directory / "ca.crt", *paths["server"], *paths["client"])


def bcrypt_hash(password: str) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()  # cheap rounds: tests only
