"""Command-line options shared by several commands."""

from __future__ import annotations

import argparse

from listener.config import PRECISIONS


def add_precision_flag(parser: argparse.ArgumentParser) -> None:
    """``--precision`` for a command that scores (``args.precision``, ``None`` = the config's).

    Apply it with :func:`listener.config.with_precision` after loading the config.
    """
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="the network's number format: auto (float16 on CUDA, float32 "
                             "on CPU), float32, bfloat16 (CPUs with AVX512-BF16/AMX), "
                             "float16 (CUDA); default: model.precision of the config")
