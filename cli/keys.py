"""``esnode keys``: CURVE key pairs for the internal and external networks (docs/security.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from esnode.transport.security import (
    KeyFileError,
    generate_keypair,
    key_hex,
    load_public_key,
    load_secret_key,
)

keys_app = typer.Typer(help="Make and show CURVE key pairs (`docs/security.md`).",
                       no_args_is_help=True, rich_markup_mode="markdown")


@keys_app.command("generate")
def generate(
    names: list[str] = typer.Argument(..., help="One key pair per name: `node1 node2 node3` "
                                                "for the members, `external` for clients."),
    key_dir: Path = typer.Option(Path("keys"), "--dir", "-d",
                                 help="Folder to write NAME.key and NAME.key_secret into."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing key files."),
) -> None:
    """Write a new key pair per NAME: NAME.key (public) and NAME.key_secret (mode 0600).

    A secured 3-node cluster needs `esnode keys generate node1 node2 node3 external`; each
    machine then keeps every `.key` file but only its own `.key_secret` (plus
    `external.key_secret`).
    """
    for name in names:
        if not name or "/" in name or name.startswith("."):
            typer.echo(f"esnode: bad key name {name!r}", err=True)
            raise typer.Exit(2)
        try:
            public_path, secret_path = generate_keypair(key_dir / name, force=force)
        except KeyFileError as exc:
            typer.echo(f"esnode: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"{name}: public {public_path}, secret {secret_path} (mode 0600): "
                   f"{load_public_key(public_path).decode()}")


@keys_app.command("show")
def show(path: Path = typer.Argument(..., help="A NAME.key or NAME.key_secret file.")) -> None:
    """Print the public key of a key file, in Z85 and in hex.

    Clients give the external key as `serverKey=HEX` in the connection string (hex needs no
    escaping in a URL).
    """
    try:
        if path.name.endswith(".key_secret"):
            public, _ = load_secret_key(path)
        else:
            public = load_public_key(path)
    except KeyFileError as exc:
        typer.echo(f"esnode: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"z85: {public.decode()}")
    typer.echo(f"hex: {key_hex(public)}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
