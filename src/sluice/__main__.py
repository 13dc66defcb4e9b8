"""`python -m sluice` runs the CLI."""

from sluice.cli.app import main

main()
