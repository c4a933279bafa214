"""The `lipkit` command line: one module per command (bound, train, bench, reproduce, runs);
main.py builds the parser."""
from .main import build_parser, main

__all__ = ["build_parser", "main"]
