"""Appended files survive logrotate: a rename or a deletion is noticed before the next write."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path

import pytest
from support.sink_events import make_event

from listener.appendlog import AppendFile
from listener.config import JsonlSinkConfig
from listener.events.sinks import JsonlSink
from listener.events.sinks.jsonl import read_records
from listener.web.coverage import CoverageLedger


def _ids(*paths: Path) -> list[str]:
    return [r["id"] for p in paths if p.exists() for r in read_records(p)]


def test_jsonl_sink_follows_a_rename_and_a_deletion(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "events.jsonl"
    rotated = tmp_path / "events.jsonl.1"
    events = [make_event(i) for i in range(9)]

    async def main() -> None:
        sink = JsonlSink(JsonlSinkConfig(path=path))
        for ev in events[:3]:
            await sink.emit(ev)
        os.rename(path, rotated)  # what logrotate does (without copytruncate)
        for ev in events[3:6]:
            await sink.emit(ev)
        assert _ids(rotated) == [e.id for e in events[:3]]
        path.unlink()  # an operator deleting the current file
        for ev in events[6:]:
            await sink.emit(ev)
        await sink.close(1.0)

    with caplog.at_level(logging.WARNING, logger="listener.appendlog"):
        asyncio.run(main())
    assert _ids(rotated) == [e.id for e in events[:3]]
    assert _ids(path) == [e.id for e in events[6:]]  # recreated after the deletion
    assert sum("renamed or deleted" in r.getMessage() for r in caplog.records) == 2


def test_no_event_is_lost_while_logrotate_renames_during_a_run(tmp_path: Path) -> None:
    """A real sink writing 300 events while another thread rotates the file 5 times:
    every event is in exactly one of the files, in order."""
    path = tmp_path / "events.jsonl"
    events = [make_event(i) for i in range(300)]
    written = threading.Event()
    done = threading.Event()

    async def writer() -> None:
        sink = JsonlSink(JsonlSinkConfig(path=path))
        for n, ev in enumerate(events):
            await sink.emit(ev)
            if n == 10:
                written.set()
            await asyncio.sleep(0.001)
        await sink.close(1.0)

    def rotate() -> None:
        written.wait(10)
        for k in range(1, 6):
            while path.exists() and not done.is_set():
                try:
                    os.rename(path, tmp_path / f"events.jsonl.{k}")
                    break
                except FileNotFoundError:
                    continue
            done.wait(0.05)

    rotator = threading.Thread(target=rotate)
    rotator.start()
    asyncio.run(writer())
    done.set()
    rotator.join(10)
    files = [tmp_path / f"events.jsonl.{k}" for k in range(1, 6)] + [path]
    assert sum(p.exists() for p in files) >= 3  # it did rotate during the run
    assert _ids(*files) == [e.id for e in events]


def test_append_file_reopens_and_cuts_a_failed_write(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.log"
    f = AppendFile(path)
    f.append(b"one\n")
    path.unlink()
    f.append(b"two\n")
    assert path.read_bytes() == b"two\n" and f.reopened == 1
    f.close()
    with open(path, "ab") as raw:
        raw.write(b"torn")
    f.append(b"three\n")
    assert path.read_bytes() == b"two\ntorn\nthree\n"
    f.close()


def test_a_failed_write_never_cuts_another_writers_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two stations share an output path, each with its own AppendFile: station A's
    write fails part way (a full disk) while B appends; A's clean-up keeps B's line."""
    import errno

    from listener import appendlog

    path = tmp_path / "events.jsonl"
    a, b = AppendFile(path), AppendFile(path)
    a.append(b"A0\n")
    b.append(b"B0\n")
    a_writing = threading.Event()
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if fd == a._fd:
            real_write(fd, bytes(data[:2]))
            a_writing.set()
            b_done.wait(0.5)  # B has the time to append (it waits for A's lock)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    b_done = threading.Event()

    def station_b() -> None:
        a_writing.wait(5)
        b.append(b"B1\n")
        b_done.set()

    monkeypatch.setattr(appendlog.os, "write", write)
    other = threading.Thread(target=station_b)
    other.start()
    with pytest.raises(OSError, match="No space"):
        a.append(b"A1\n")
    other.join(5)
    monkeypatch.setattr(appendlog.os, "write", real_write)
    assert b_done.is_set()
    assert path.read_bytes() == b"A0\nB0\nB1\n"
    a.close()
    b.close()


def test_coverage_ledger_follows_a_rotation(tmp_path: Path) -> None:
    ledger = CoverageLedger(tmp_path / "coverage-x.jsonl", clock=lambda: 1000.0)
    ledger.record(0.0, 10.0, "scored")
    ledger.record(20.0, 30.0, "lost", "gap")
    os.rename(ledger.path, tmp_path / "old.jsonl")
    ledger.record(40.0, 50.0, "scored")
    ledger.flush()
    assert ledger.path.exists()
    lines = ledger.path.read_text().splitlines()
    assert any('"start":40.0' in line for line in lines)
