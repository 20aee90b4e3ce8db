"""Log set-up: text by default, JSON lines on request, the station on every record."""

from __future__ import annotations

import json
import logging

import pytest

from listener.runtime.logs import setup_logging


def test_json_lines_carry_the_station(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "json", station="rpi_orcasound_lab")
    logging.getLogger("listener.test").warning("segment %d lost", 7)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    doc = json.loads(line)
    assert doc["message"] == "segment 7 lost"
    assert doc["level"] == "WARNING" and doc["station"] == "rpi_orcasound_lab"
    assert doc["logger"] == "listener.test" and doc["time"].endswith("+00:00")


def test_text_is_the_default_and_setup_is_idempotent(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "text", station="rpi_bush_point")
    setup_logging("INFO", "text", station="rpi_bush_point")
    logging.getLogger("listener.test").info("hello")
    err = capsys.readouterr().err.strip().splitlines()
    assert len([ln for ln in err if "hello" in ln]) == 1
    assert "[rpi_bush_point] listener.test: hello" in err[-1]
    setup_logging("WARNING", "text")
