"""Command-line options and defaults shared by several commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from listener.config import PRECISIONS, Config
from listener.errors import ListenerError
from listener.model.bundled import with_default_weights, with_weights


class UsageError(ListenerError):
    """A command line that cannot work as given (exit status 2, like argparse's own)."""


def add_precision_flag(parser: argparse.ArgumentParser) -> None:
    """``--precision`` for a command that scores (``args.precision``, ``None`` = the config's).

    Apply it with :func:`listener.config.with_precision` after loading the config.
    """
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="the network's number format: auto (float16 on CUDA, float32 "
                             "on CPU), float32, bfloat16 (CPUs with AVX512-BF16/AMX), "
                             "float16 (CUDA), for every model of the config; default: each model's "
                             "precision")


def scoring_config(cfg: Config, weights: str | Path | None = None) -> Config:
    """``cfg`` with ``weights`` (``--weights``), else its own, else the bundled demo model.

    Falling back to the bundled model prints the demo's one-line notice on
    stderr (stdout stays for the command's data). The model id is the one
    the checkpoint declares unless the config sets it
    (:func:`listener.model.bundled.with_weights`).
    """
    cfg = with_weights(cfg, Path(weights) if weights else None)
    cfg, notice = with_default_weights(cfg)
    if notice:
        print(notice, file=sys.stderr, flush=True)
    return cfg
