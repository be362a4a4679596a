"""Throw-away X.509 material for tests: a private CA and server certificates it signs.

Everything is written as PEM files so that Prosody (LuaSec/OpenSSL) and Python's ``ssl`` module
can both load them::

    ca = make_ca(tmpdir)
    cert_path, key_path = ca.issue(tmpdir, ["localhost", "conference.localhost"], "localhost")
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))

Keys are EC P-256 (fast to generate, accepted by every TLS stack we use). Files are written with
mode 0644 so a server process running under another uid can still read them; they only ever
protect loopback test servers.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA", "make_ca"]

#: validity window; start a little in the past to survive small clock skews
_BACKDATE = datetime.timedelta(hours=1)
_LIFETIME = datetime.timedelta(days=30)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # traditional "BEGIN EC PRIVATE KEY" form: understood by every OpenSSL-based loader
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass
class CA:
    """A test certificate authority; ``issue()`` makes server certificates signed by it."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, dirpath: str | os.PathLike[str], names: Iterable[str], basename: str
    ) -> tuple[Path, Path]:
        """Create a server certificate for ``names`` (all put in subjectAltName).

        The first name is also the subject CN. Writes ``<basename>.crt`` (leaf followed by the CA
        certificate, so servers send the whole chain) and ``<basename>.key`` into ``dirpath``;
        returns ``(cert_path, key_path)``.
        """
        names = list(names)
        if not names:
            raise ValueError("at least one name is needed")
        dirpath = Path(dirpath)
        key = _new_key()
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([_san_entry(n) for n in names]), critical=False
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path = _write(
            dirpath / f"{basename}.crt",
            cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem,
        )
        key_path = _write(dirpath / f"{basename}.key", _key_pem(key))
        return cert_path, key_path


def make_ca(dirpath: str | os.PathLike[str], name: str = "SàT test CA") -> CA:
    """Create a self-signed CA; writes ``ca.crt`` and ``ca.key`` into ``dirpath``."""
    dirpath = Path(dirpath)
    key = _new_key()
    now = _now()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Salut à Toi tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = _write(dirpath / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    key_path = _write(dirpath / "ca.key", _key_pem(key))
    return CA(cert=cert, key=key, cert_path=cert_path, key_path=key_path)
