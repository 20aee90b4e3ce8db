"""Processes for the console hardening tests: a console alone, or a whole daemon.

``python tests/support/console_process.py console PORT FOLDER``
    A console on 127.0.0.1:PORT over real files in FOLDER, its audio history
    holding 90 s of 48 kHz audio and growing in real time (for RSS figures).
``python tests/support/console_process.py daemon CONFIG_JSON``
    A :class:`~listener.runtime.daemon.Daemon` with the tone model fake, its
    config given as JSON (for descriptor limits: the caller sets ``ulimit -n``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[i]) for i in (2, 1)]

import numpy as np  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from listener.config import Config  # noqa: E402
from listener.web import spectro  # noqa: E402
from listener.web.console import Console  # noqa: E402
from listener.web.server import WebServer  # noqa: E402

RATE = 48000


async def console(port: int, folder: Path) -> None:
    from support.console_support import make_view

    view = make_view(folder)
    history = view.live.history
    assert history is not None
    rng = np.random.default_rng(0)
    block = 0.25
    offset = 0.0
    while offset < 90.0:
        history.append(offset, (rng.standard_normal(int(block * RATE)) * 0.01)
                       .astype(np.float32), RATE)
        offset += block
    spectro.columns(np.zeros(RATE, dtype=np.float32), RATE)  # numpy's FFT set up
    server = WebServer(CollectorRegistry(), "127.0.0.1", port, lambda: (True, "ok"),
                       console=Console([view]))
    await server.start()
    print("ready", flush=True)
    while True:
        history.append(offset, (rng.standard_normal(int(block * RATE)) * 0.01)
                       .astype(np.float32), RATE)
        view.live.observe(offset, None, 0.1)
        offset += block
        await asyncio.sleep(block)


def daemon(config_json: str) -> int:
    import logging

    from listener.runtime.daemon import Daemon
    from support.daemon_support import ToneScorer

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = Config.model_validate(json.loads(config_json))
    return asyncio.run(Daemon(cfg, scorer=ToneScorer(), registry=CollectorRegistry()).run())


if __name__ == "__main__":
    if sys.argv[1] == "console":
        asyncio.run(console(int(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(daemon(sys.argv[2]))
