"""`lfops`: the command line over the backend library, one module per command group (the parser is in main.py)."""

from backend.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
