"""Run one station as its own process, as ``listener run`` does, with the tone model fake.

For the process faults of the matrix (SIGKILL, SIGSTOP, restarts): the test
writes the station's :class:`~listener.config.Config` as JSON and starts

    python -m support.fault_daemon CONFIG.json

from ``tests/``. Everything but the model is production: the
:class:`~listener.runtime.runner.Runner` that ``listener run`` runs, with its
signal handling, logging, state, sinks and probes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from listener.config import Config
from listener.runtime.logs import setup_logging
from listener.runtime.models import ModelRegistry
from listener.runtime.runner import Runner
from support.fault_node import OnsetScorer


def main(path: str) -> int:
    cfg = Config.model_validate(json.loads(Path(path).read_text()))
    setup_logging("INFO", "text", station=cfg.station.id)
    return asyncio.run(Runner([cfg], models=ModelRegistry(scorer=OnsetScorer())).run())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
