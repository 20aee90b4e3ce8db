"""Running ``listener ARGS`` in a test: in this process, or as a real process.

In this process (:func:`run_cli`) a call costs what the command costs, not
the 3 s of a new interpreter importing torch; it is for commands judged by
their exit status and output. A real process (:func:`run_cli_process`) is
for what only a process shows: a pipe's bytes, signals, the README's command.
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from listener.cli.main import main


@dataclass(frozen=True)
class CliResult:
    """What a ``listener`` command gave: its exit status and what it wrote."""

    returncode: int
    stdout: str
    stderr: str


#: What a test gets from either way of running a command.
CliOutcome = subprocess.CompletedProcess[str] | CliResult


def run_cli(*args: str | Path) -> CliResult:
    """``listener ARGS`` in this process; argparse's exits (help, usage) become statuses.

    The root logger and torch's thread count, which the command sets for
    itself, are put back afterwards.
    """
    root = logging.getLogger()
    handlers, level, threads = list(root.handlers), root.level, torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
        torch.set_num_threads(threads)
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli_process(*args: str | Path, timeout_s: float = 300
                    ) -> subprocess.CompletedProcess[str]:
    """``python -m listener ARGS`` as its own process, output captured."""
    return subprocess.run([sys.executable, "-m", "listener", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout_s)
