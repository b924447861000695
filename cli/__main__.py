"""``python -m esnode.cli``: the same as the ``esnode`` command."""

from esnode.cli.main import app

app(prog_name="esnode")
