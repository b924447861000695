"""TLS for the HTTP API (docs/http.md, "TLS"): the server's ``ssl`` context from the
certificate and key files a node's topology names, and test and development certificates
(``esnode certs create-ca`` / ``create-node``, with the ``cryptography`` package).

The certificates made here are for a cluster's own CA: a CA certificate (constrained to sign
server certificates only, ``pathlen 0``) and one ECDSA P-256 server certificate per node whose
subject alternative names list every address clients use to reach it. Production deployments
may use certificates from any CA instead: the node only needs a PEM certificate (chain) and
its key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Iterable
from pathlib import Path

CA_DAYS = 3650
NODE_DAYS = 825
"""The longest server certificate lifetime browsers and macOS accept."""


class TlsError(ValueError):
    """A certificate or key that cannot be used; the message names the file and the problem."""


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context with the node's certificate chain and key; TLS 1.2 or later, Python's
    default ciphers (forward secrecy only)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for path in (cert_file, key_file):
        if not Path(path).is_file():
            raise TlsError(f"{path}: no such file (HTTP TLS certificate or key)")
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsError(f"{cert_file} / {key_file}: not a usable PEM certificate and matching "
                       f"key ({exc})") from None
    return context


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_ca(common_name: str = "esnode development CA", days: int = CA_DAYS
              ) -> tuple[bytes, bytes]:
    """A self-signed CA: ``(certificate PEM, key PEM)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def create_node_cert(ca_cert_pem: bytes, ca_key_pem: bytes, common_name: str,
                     hosts: Iterable[str], days: int = NODE_DAYS) -> tuple[bytes, bytes]:
    """A server certificate signed by the CA for ``hosts`` (IP addresses and DNS names, the
    subject alternative names clients check): ``(certificate PEM, key PEM)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    names = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if not names:
        raise TlsError("a node certificate needs at least one IP address or DNS name")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def write_pair(folder: Path, stem: str, cert_pem: bytes, key_pem: bytes,
               overwrite: bool = False) -> tuple[Path, Path]:
    """``<folder>/<stem>.crt`` and ``<stem>.key`` (the key readable by its owner only)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    if not overwrite:
        for path in (cert_path, key_path):
            if path.exists():
                raise TlsError(f"{path}: exists already (--force replaces it)")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert_pem)
    return cert_path, key_path
