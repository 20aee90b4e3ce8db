"""Hostile review bodies on the console: control characters, surrogates, the byte cap (issue 21)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from support.console_harness import call, raw, run_console

from listener.web.httplog import escape
from listener.web.server import WebServer
from listener.web.views import StationView


async def review_url(server: WebServer) -> tuple[str, dict[str, str]]:
    det = (await call("GET", server.url + "/api/detections")).json()["detections"][0]
    csrf = (await call("GET", server.url + "/api/session")).json()["csrf"]
    return f"{server.url}/api/detections/{det['id']}/review", {"X-CSRF-Token": csrf}


def test_review_text_with_control_characters_or_surrogates_is_a_400_naming_the_field(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def test(server: WebServer, view: StationView) -> None:
        url, csrf = await review_url(server)
        hdr = {**csrf, "Content-Type": "application/json"}
        cases = {
            "comments": {"SRKWFound": "yes", "comments": "a\ud800b"},
            "moderator": {"SRKWFound": "yes", "moderator": "ana\nINFO forged: review of x"},
            "tags": {"SRKWFound": "yes", "tags": "call\u0000"},
        }
        for field, doc in cases.items():
            r = await call("POST", url, data=json.dumps(doc).encode(), headers=hdr)
            assert r.status_code == 400, (field, r.status_code, r.text)
            assert r.text.startswith(f"{field}: ") and "U+" in r.text
        bidi = {"SRKWFound": "yes", "moderator": "ana\u202egnp.exe"}
        r = await call("POST", url, json=bidi, headers=csrf)
        assert r.status_code == 400 and r.text.startswith("moderator: ")
        r = await call("POST", url, json={"comments": "x"}, headers=csrf)
        assert r.status_code == 400
        assert r.text == "SRKWFound: missing; choose yes, no or don't know\n"
        r = await call("POST", url, json={"SRKWFound": None}, headers=csrf)
        assert r.text == "SRKWFound: got null; choose yes, no or don't know\n"
        r = await call("POST", url, json={"SRKWFound": "yes", "comments": 3}, headers=csrf)
        assert r.text == "comments: must be text; got a number\n"
        for body in (b"[" * 16000, b"\xff\xfe{}", b'{"SRKWFound": "yes"', b"[1]"):
            r = await call("POST", url, data=body, headers=hdr)
            assert r.status_code == 400 and "Traceback" not in r.text, body[:10]
        # A comment keeps its newlines; the moderator is logged on one line.
        r = await call("POST", url, json={"SRKWFound": "no", "comments": "two\nlines",
                                          "moderator": "ana \\ bo"}, headers=csrf)
        assert r.status_code == 201

    caplog.set_level(logging.INFO)
    run_console(tmp_path, test)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("review of")]
    assert len(logged) == 1 and "forged" not in logged[0] and "ana \\\\ bo" in logged[0]
    assert escape("a\nb\u2028c\ud800\\") == "a\\x0ab\\u2028c\\ud800\\\\"


def test_review_body_cap_counts_the_bytes_read_whatever_the_encoding(tmp_path: Path) -> None:
    def chunked(port: int, path: str, csrf: str, total: int) -> bytes:
        doc = json.dumps({"SRKWFound": "yes", "comments": "x" * (total - 40)}).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(doc[i:i + 4096]), doc[i:i + 4096])
                          for i in range(0, len(doc), 4096))
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-CSRF-Token: {csrf}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        return raw(port, head.encode() + chunks + b"0\r\n\r\n")

    async def test(server: WebServer, view: StationView) -> None:
        url, csrf = await review_url(server)
        path = url.removeprefix(server.url)
        out = await asyncio.to_thread(chunked, server.port, path, csrf["X-CSRF-Token"],
                                      500_000)
        assert out.split(b"\r\n")[0].endswith(b"413 Request Entity Too Large"), out[:200]
        assert not view.reviews_path.exists()  # type: ignore[union-attr]
        big = {"SRKWFound": "yes", "comments": "x" * 20000}
        r = await call("POST", url, json=big, headers=csrf)
        assert r.status_code == 413
        out = await asyncio.to_thread(chunked, server.port, path, csrf["X-CSRF-Token"], 3000)
        assert b" 400 " in out.split(b"\r\n")[0]  # under the cap: read, and too long a comment
        assert out.endswith(b"comments: at most 2000 characters; got 2960\n")
        out = await asyncio.to_thread(chunked, server.port, path, csrf["X-CSRF-Token"], 1000)
        assert b" 201 " in out.split(b"\r\n")[0]

    run_console(tmp_path, test)
