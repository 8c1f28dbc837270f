"""A throw-away self-signed certificate for the tests' TLS servers (the SMTP sink's STARTTLS,
nginx in front of the receiver), and the contexts that serve it and trust it.

Not a conftest: imported by name (``from tls_certs import self_signed``), like pgserver. Made
fresh per test run in a temporary folder, valid from yesterday to tomorrow: nothing to renew,
nothing kept in the repository.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Certificate:
    """The certificate and its key as PEM files (what a server in another process reads)."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """A server's context presenting this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client's context trusting this certificate and nothing else (so a test also sees
        that a client without it refuses the server)."""
        return ssl.create_default_context(cafile=str(self.cert_file))


def self_signed(directory: Path, *names: str) -> Certificate:
    """A certificate for ``names`` (IP addresses or host names; 127.0.0.1 and localhost when
    none are given), written to ``directory`` as cert.pem and key.pem."""
    names = names or LOOPBACK
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([_alt_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate = Certificate(directory / "cert.pem", directory / "key.pem")
    certificate.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certificate.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
