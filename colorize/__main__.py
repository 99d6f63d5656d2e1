"""`python -m colorize`: the photo colorizer, as the `colorize` command."""
from colorize.cli.colorize import run

run()
