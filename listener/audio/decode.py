"""ffmpeg subprocesses: any file or a live segment stream in, float32 PCM out.

ffmpeg is driven through ``ffmpeg-python`` (command building only) and run
with its arguments as a list, never through a shell. It writes a WAV stream
(``pcm_f32le``) to a pipe so the sample rate and channel count come from the
header, without ffprobe (the PyPI ffmpeg wheel ships no ffprobe).

* :class:`FileDecoder` streams a file in blocks at its native rate and
  channels; the caller downmixes by the mean (exactly as the old pipeline).
* :class:`StreamDecoder` is one long-running ffmpeg fed MPEG-TS segment bytes
  in order, so AAC decodes gaplessly across segment boundaries. It outputs
  mono: ``aresample=rematrix_maxval=1`` makes ffmpeg's stereo->mono matrix
  exactly the mean of the channels (its default is (L+R)/sqrt(2)), and keeps
  it when a stream switches between mono and stereo mid-way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import ffmpeg
import numpy as np

from listener.errors import DecodeError, FFmpegNotFoundError

log = logging.getLogger(__name__)

_STDERR_LINES = 20
_MAX_HEADER = 64 * 1024


# Beyond any audio interface (768 kHz) or channel layout a recording uses.
MAX_FILE_RATE = 768_000
MAX_FILE_CHANNELS = 64


def find_ffmpeg() -> str:
    """The ffmpeg binary: ``$LISTENER_FFMPEG``, then PATH, then imageio-ffmpeg's."""
    explicit = os.environ.get("LISTENER_FFMPEG")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise FFmpegNotFoundError(f"LISTENER_FFMPEG={explicit!r} is not an executable file")
        return explicit
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as err:
        raise FFmpegNotFoundError(
            "ffmpeg not found: install it (apt-get install ffmpeg) or "
            "`pip install imageio-ffmpeg`, or set LISTENER_FFMPEG") from err


def _command(ffmpeg_exe: str, stream: ffmpeg.nodes.OutputStream) -> list[str]:
    """Compile with ffmpeg-python, moving global options before the inputs.

    ffmpeg-python appends global options last, where recent ffmpeg ignores them.
    """
    args = stream.compile(cmd=ffmpeg_exe)
    return [args[0], "-hide_banner", "-loglevel", "error", *args[1:]]


def file_url(path: str) -> str:
    """``path`` as ffmpeg's ``file:`` URL, for every ffmpeg run on a local file.

    ffmpeg reads the text before a ':' as a protocol, so a bare relative name
    such as ``2024-06-01T12:00:00Z.wav`` would be refused as protocol
    ``2024-06-01T12``; a name starting with '-' would be read as an option.
    """
    return "file:" + os.path.abspath(path)


def file_command(ffmpeg_exe: str, path: str) -> list[str]:
    out = ffmpeg.input(file_url(path))["a:0"].output("pipe:1", f="wav", acodec="pcm_f32le")
    return _command(ffmpeg_exe, out.global_args("-nostdin"))


#: A live station's decoder is one of fifty on two cores: ask for one thread
#: per component (AAC at 48 kHz needs ~1% of a core; ``auto`` sizes pools by
#: core count), and stop probing after 32 kB (the first AAC frames say all
#: there is) instead of buffering up to 5 MB / 5 s of input first. The same
#: samples come out (checked on the shared HLS segments, mono->stereo switch
#: included). Measured with ffmpeg 9.0 (docs/benchmarks.md, "Where a station's
#: memory goes"): ~0.3 MB less; its per-process cost is mostly the static
#: binary's relocated data, which no option changes. ``-fflags nobuffer`` is
#: not used: it drops the packets read while probing (the first ~0.8 s).
STREAM_INPUT_OPTIONS = {"threads": 1, "probesize": 32768, "analyzeduration": 0}


def stream_command(ffmpeg_exe: str, input_format: str = "mpegts") -> list[str]:
    # ``threads`` on the output sizes the simple filter graph's pool (ffmpeg 7).
    out = ffmpeg.input("pipe:0", f=input_format, **STREAM_INPUT_OPTIONS)["a:0"].output(
        "pipe:1", f="wav", acodec="pcm_f32le", ac=1, af="aresample=rematrix_maxval=1.0",
        threads=1)
    cmd = _command(ffmpeg_exe, out)
    return [*cmd[:4], "-filter_threads", "1", *cmd[4:]]  # a global option: before the input


def scan_wav_header(buf: bytes, source: str) -> int | tuple[int, int, int]:
    """Parse a RIFF/WAVE header held in ``buf`` (sans I/O).

    Returns the number of further bytes needed, or ``(sample_rate, channels,
    header_length)`` once the data chunk starts. Piped WAV carries placeholder
    sizes, so the data chunk simply runs to EOF.
    """
    if len(buf) < 12:
        return 12 - len(buf)
    if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        raise DecodeError(source, "no audio produced (not a WAV stream from ffmpeg)")
    rate = channels = 0
    pos = 12
    while True:
        if len(buf) < pos + 8:
            return pos + 8 - len(buf)
        tag, size = bytes(buf[pos:pos + 4]), struct.unpack("<I", buf[pos + 4:pos + 8])[0]
        if tag == b"data":
            break
        if pos + 8 + size > _MAX_HEADER:
            raise DecodeError(source, f"WAV header chunk {tag!r} too large ({size} bytes)")
        end = pos + 8 + size + (size & 1)
        if len(buf) < end:
            return end - len(buf)
        if tag == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", buf[pos + 8:pos + 16])
            bits = struct.unpack("<H", buf[pos + 22:pos + 24])[0]
            if fmt not in (3, 0xFFFE) or bits != 32:
                raise DecodeError(source, f"unexpected PCM format {fmt}/{bits} bits")
        pos = end
    if rate <= 0 or channels <= 0:
        raise DecodeError(source, "WAV header without a valid fmt chunk")
    return rate, channels, pos + 8


def read_wav_header(read: collections.abc.Callable[[int], bytes], source: str) -> tuple[int, int]:
    """Read a WAV header with a blocking ``read(n)``; return (sample_rate, channels)."""
    buf = b""
    while isinstance(need := scan_wav_header(buf, source), int):
        more = read(need)
        if len(more) < need:
            raise DecodeError(source, "no audio produced (output ended in the WAV header)")
        buf += more
    return need[0], need[1]


class _StderrTail:
    """Keeps the last lines ffmpeg wrote to stderr, for error messages."""

    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)

    def feed(self, raw: bytes) -> None:
        for line in raw.decode("utf-8", "replace").splitlines():
            if line.strip():
                self.lines.append(line.rstrip()[:500])

    def text(self) -> str:
        return "\n".join(self.lines)


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        b = stream.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


class FileDecoder:
    """Decode one file in blocks: ``for block in FileDecoder(path): ...``.

    Blocks are float32 arrays of shape (channels, n) at the file's native rate;
    memory stays bounded whatever the file's length.
    """

    def __init__(self, path: str | Path, block_s: float = 10.0,
                 ffmpeg_exe: str | None = None) -> None:
        self.path = str(path)
        self.block_s = block_s
        self.ffmpeg_exe = ffmpeg_exe or find_ffmpeg()
        self.sample_rate = 0
        self.channels = 0
        self.samples_read = 0

    @property
    def duration_s(self) -> float:
        """Seconds decoded so far (the whole file once iteration ended)."""
        return self.samples_read / self.sample_rate if self.sample_rate else 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        if os.path.isdir(self.path):
            raise DecodeError(self.path, "is a folder; give its audio files (e.g. DIR/*.wav)")
        if not os.path.isfile(self.path):
            raise DecodeError(self.path, "no such file")
        tail = _StderrTail()
        proc = subprocess.Popen(file_command(self.ffmpeg_exe, self.path),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        err_stream = proc.stderr
        def drain() -> None:
            for line in iter(err_stream.readline, b""):
                tail.feed(line)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            out = proc.stdout
            try:
                self.sample_rate, self.channels = read_wav_header(
                    lambda n: _read_exact(out, n), self.path)
            except DecodeError:
                proc.wait(timeout=30)
                reader.join(timeout=5)
                raise DecodeError(self.path, _reason(tail), tail.text()) from None
            if not 0 < self.sample_rate <= MAX_FILE_RATE or self.channels > MAX_FILE_CHANNELS:
                # A corrupt header would size the block buffer (10 s x rate)
                # in gigabytes; refuse it before allocating anything.
                raise DecodeError(self.path, f"header claims {self.sample_rate} Hz x "
                                  f"{self.channels} channels; at most {MAX_FILE_RATE} Hz and "
                                  f"{MAX_FILE_CHANNELS} channels are decoded (corrupt file?)")
            frame = 4 * self.channels
            block_bytes = max(1, int(self.block_s * self.sample_rate)) * frame
            while True:
                raw = _read_exact(out, block_bytes)
                usable = len(raw) - len(raw) % frame
                if usable:
                    block = np.frombuffer(raw[:usable], dtype="<f4")
                    block = block.reshape(-1, self.channels).T.astype(np.float32)
                    self.samples_read += block.shape[1]
                    yield block
                if len(raw) < block_bytes:
                    break
            code = proc.wait(timeout=60)
            reader.join(timeout=5)
            if code != 0:
                raise DecodeError(self.path, f"ffmpeg exited with status {code}", tail.text())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _reason(tail: _StderrTail) -> str:
    text = tail.text().lower()
    if "invalid data" in text:
        return "not an audio file ffmpeg can read (invalid data)"
    if "does not contain any stream" in text or "matches no streams" in text:
        return "the file has no audio stream"
    return "ffmpeg produced no audio"


class StreamDecoder:
    """One long-running ffmpeg fed segment bytes in order (asyncio).

    ``feed`` writes a segment; ``read`` returns decoded mono blocks as they
    come, ``None`` at the end. Sample ``n`` of the output is stream offset
    ``anchor_s + n / sample_rate``, where ``anchor_s`` is the first segment's
    offset; restart (a new decoder) on a gap or a discontinuity.
    """

    def __init__(self, name: str, anchor_s: float, ffmpeg_exe: str | None = None,
                 input_format: str = "mpegts", chunk_bytes: int = 64 * 1024) -> None:
        self.name = name
        self.anchor_s = anchor_s
        self.ffmpeg_exe = ffmpeg_exe or find_ffmpeg()
        self.input_format = input_format
        self.chunk_bytes = chunk_bytes
        self.sample_rate = 0
        self.samples_out = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._tail = _StderrTail()
        self._stderr_task: asyncio.Task[None] | None = None
        self._pending = b""

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *stream_command(self.ffmpeg_exe, self.input_format),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        self._stderr_task = asyncio.create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            self._tail.feed(line)

    def error(self, reason: str) -> DecodeError:
        return DecodeError(self.name, reason, self._tail.text())

    async def feed(self, data: bytes) -> None:
        """Write one segment's bytes; raises DecodeError if ffmpeg has died."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise self.error("decoder not started")
        try:
            proc.stdin.write(data)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as err:
            await asyncio.sleep(0.05)  # let stderr arrive for the message
            raise self.error(f"ffmpeg stopped taking input (exit {proc.returncode})") from err

    async def read(self) -> np.ndarray | None:
        """Next decoded block, (1, n) float32; ``None`` once ffmpeg has finished."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        out = proc.stdout
        if not self.sample_rate:
            buf = b""
            try:
                while isinstance(need := scan_wav_header(buf, self.name), int):
                    buf += await out.readexactly(need)
            except asyncio.IncompleteReadError:
                await proc.wait()
                if self._stderr_task:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._stderr_task, 5)
                if proc.returncode or self._tail.lines:
                    raise self.error(f"ffmpeg produced no audio (exit {proc.returncode})") from None
                return None
            self.sample_rate = need[0]
        data = await out.read(self.chunk_bytes)
        if not data:
            return None
        data = self._pending + data
        usable = len(data) - len(data) % 4
        self._pending = data[usable:]
        block = np.frombuffer(data[:usable], dtype="<f4").astype(np.float32)[None, :]
        self.samples_out += block.shape[1]
        return block

    async def close(self, timeout_s: float = 10.0) -> None:
        """End of input: let ffmpeg flush, then terminate, then kill."""
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await proc.stdin.wait_closed()
        await self.stop(timeout_s)

    async def stop(self, timeout_s: float = 5.0) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            log.warning("%s: ffmpeg did not exit in %.1f s, terminating", self.name, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task
