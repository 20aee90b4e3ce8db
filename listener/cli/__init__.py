"""Command line: entry points and the progress display."""

from listener.cli.main import main

__all__ = ["main"]
