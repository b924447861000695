"""``esnode certs``: a test/dev certificate authority and node certificates for TLS on the HTTP
API (docs/security.md), made with the ``cryptography`` package. Production certificates
come from your own PKI; these are for tests, development and the examples."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

import typer

certs_app = typer.Typer(help="Test and development TLS certificates (`docs/security.md`).",
                        no_args_is_help=True, rich_markup_mode="markdown")

VALID_DAYS = 825
"""The longest validity clients accept for a server certificate (Apple's rule)."""


def _write_private(path: Path, data: bytes) -> None:
    """A private key file readable by its owner only (0600), never overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_ca(out: Path, name: str = "esnode test CA", days: int = 3650) -> tuple[Path, Path]:
    """A self-signed CA: ``OUT/ca.crt`` and ``OUT/ca.key`` (0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    crt_path, key_path = out / "ca.crt", out / "ca.key"
    _write_private(key_path, _pem_key(key))
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt_path, key_path


def create_node(ca_dir: Path, out: Path, name: str, hosts: list[str],
                days: int = VALID_DAYS) -> tuple[Path, Path]:
    """``OUT/NAME.crt`` (signed by the CA in ``ca_dir``) and ``OUT/NAME.key`` (0600), valid
    for every DNS name and IP address in ``hosts``, for serving and for client auth."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = _new_key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    crt_path, key_path = out / f"{name}.crt", out / f"{name}.key"
    _write_private(key_path, _pem_key(key))
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt_path, key_path


@certs_app.command("create-ca")
def create_ca_command(
    out: Path = typer.Option(Path("certs"), "--out", "-o", help="Folder for ca.crt and ca.key."),
    name: str = typer.Option("esnode test CA", "--name", help="The CA's common name."),
) -> None:
    """Make a test/dev certificate authority: ca.crt (give it to clients) and ca.key (0600)."""
    try:
        crt, key = create_ca(out, name)
    except FileExistsError as exc:
        typer.echo(f"esnode: {exc.filename}: already exists (refusing to overwrite a key)",
                   err=True)
        raise typer.Exit(1) from None
    typer.echo(f"CA certificate {crt}, key {key} (mode 0600)")


@certs_app.command("create-node")
def create_node_command(
    name: str = typer.Argument(..., help="The node's name (the certificate's common name)."),
    hosts: list[str] = typer.Option(["127.0.0.1", "localhost"], "--host", "-H",
                                    help="A DNS name or IP address clients use (repeatable)."),
    ca_dir: Path = typer.Option(Path("certs"), "--ca", help="Folder holding ca.crt and ca.key."),
    out: Path = typer.Option(Path("certs"), "--out", "-o", help="Folder for NAME.crt, NAME.key."),
) -> None:
    """Make a node certificate signed by the test CA, for the HTTP API's TLS.

    Example: `esnode certs create-node node1 -H node1.example.internal -H 10.0.0.1`
    """
    try:
        crt, key = create_node(ca_dir, out, name, hosts)
    except FileNotFoundError as exc:
        typer.echo(f"esnode: {exc.filename}: not found (run esnode certs create-ca first)",
                   err=True)
        raise typer.Exit(1) from None
    except FileExistsError as exc:
        typer.echo(f"esnode: {exc.filename}: already exists (refusing to overwrite a key)",
                   err=True)
        raise typer.Exit(1) from None
    typer.echo(f"certificate {crt} for {', '.join(hosts)}, key {key} (mode 0600)")


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")
