"""``esnode certs``: test and development certificates for the HTTP API's TLS (docs/http.md,
"TLS"). The work is in ``httpapi/tls.py``; this module is only the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from esnode.httpapi import tls

certs_app = typer.Typer(
    help="Make a CA and node certificates for the HTTP API's TLS (for tests and development; "
         "any CA's PEM certificate and key work too).",
    no_args_is_help=True)


def _fail(message: str) -> None:
    typer.echo(f"esnode: {message}", err=True)
    raise typer.Exit(1)


@certs_app.command("create-ca")
def create_ca(
    out: Path = typer.Option(Path("certs"), "--out", help="Folder for ca.crt and ca.key."),
    name: str = typer.Option("esnode development CA", "--name", help="The CA's common name."),
    days: int = typer.Option(tls.CA_DAYS, "--days", min=1, help="Validity in days."),
    force: bool = typer.Option(False, "--force", help="Replace existing files."),
) -> None:
    """Create a CA: OUT/ca.crt (give it to clients: curl --cacert) and OUT/ca.key (keep it
    private; it signs node certificates).

    Example: esnode certs create-ca --out certs
    """
    try:
        cert, key = tls.write_pair(out, "ca", *tls.create_ca(name, days), overwrite=force)
    except tls.TlsError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {cert} and {key}")


@certs_app.command("create-node")
def create_node(
    name: str = typer.Argument(..., help="The node's name: the files are OUT/NAME.crt and "
                                         "OUT/NAME.key."),
    ca_cert: Path = typer.Option(Path("certs/ca.crt"), "--ca-cert", help="The CA certificate."),
    ca_key: Path = typer.Option(Path("certs/ca.key"), "--ca-key", help="The CA key."),
    out: Path = typer.Option(Path("certs"), "--out", help="Folder for the node's files."),
    ip: list[str] = typer.Option([], "--ip", help="An IP address clients reach the node at "
                                                  "(repeat; default 127.0.0.1 and ::1)."),
    dns: list[str] = typer.Option([], "--dns", help="A DNS name clients reach the node at "
                                                    "(repeat; default localhost)."),
    days: int = typer.Option(tls.NODE_DAYS, "--days", min=1, help="Validity in days."),
    force: bool = typer.Option(False, "--force", help="Replace existing files."),
) -> None:
    """Create a node's server certificate, signed by the CA, for the addresses clients use
    (its external_advertise_host, load balancers' names...). Then set the node's
    http_cert_file and http_key_file in the topology.

    Example: esnode certs create-node node1 --ip 127.0.0.1 --dns localhost
    """
    try:
        ca = (ca_cert.read_bytes(), ca_key.read_bytes())
    except OSError as exc:
        _fail(f"cannot read the CA ({exc}); create it with: esnode certs create-ca")
    hosts = [*ip, *dns] or ["127.0.0.1", "::1", "localhost"]
    try:
        cert, key = tls.write_pair(out, name, *tls.create_node_cert(*ca, name, hosts, days),
                                   overwrite=force)
    except (tls.TlsError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {cert} and {key} for {', '.join(hosts)}")


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")
