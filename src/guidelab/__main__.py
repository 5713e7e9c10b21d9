"""``python -m guidelab``: the same command line as the ``guidelab`` script."""

from .cli import app

app(prog_name="guidelab")
