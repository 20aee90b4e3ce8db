"""Follow an Orcasound node: ``latest.txt`` -> ``hls/<ts>/live.m3u8`` -> segments.

Each poll reads ``<base_url>/<node>/latest.txt`` (the unix time the node's
current stream started) and the playlist of the folder being followed, and
yields the segments not yet yielded. A folder's playlist lists its whole
stream (media sequence 0, no sliding window), so a segment's offset is the
exact sum of the EXTINF durations before it, and its wall-clock time is
``folder unix time + offset`` (see ``docs/sources.md`` for the error bound
and the ffmpeg start-up offset, which the daemon applies, not this module).

Node restart: when ``latest.txt`` names a new folder, the old folder is
finished first: it keeps being polled until it lists ``#EXT-X-ENDLIST``, or a
poll at least ``finish_polls`` polls and ``finish_s`` seconds after the switch
brings nothing new (the node's uploader may publish the old folder's last
segments seconds after ``latest.txt`` changed), or ``4 * finish_polls`` polls
and ``4 * finish_s`` seconds have passed (the bound: an old folder that keeps
growing is a misconfigured node, not a reason to stall). Then the new folder
is followed from its first segment, which is marked discontinuous. The folder
left behind is read again ``6``, ``12``, ``24`` and ``48 * finish_s`` after the
switch (or until it lists ``#EXT-X-ENDLIST``): segments listed there since
are reported as a :class:`Gap` each (too late to score in order), never
dropped unseen.

``latest.txt`` naming an *older* folder than the one followed is a stale
cached copy until it has done so for ``_OLDER_POLLS`` polls in a row; only
then is that folder followed (from its live edge, after finishing the
current one as above). A folder already followed is never started again
from its beginning: it resumes after the last segment yielded from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from listener.config import check_node_name
from listener.errors import ConfigError, PlaylistError
from listener.numerals import ascii_int
from listener.sources.http_client import HttpClient
from listener.sources.playlist import MediaPlaylist
from listener.sources.polling import PollingSource, Stopped
from listener.sources.segments import Gap, Position, Segment, StreamTracker

log = logging.getLogger(__name__)

# latest.txt is "<unix seconds>\n"; anything longer is not latest.txt.
_LATEST_MAX_BYTES = 64
# Orcasound started streaming in 2017; earlier times mean a corrupt file.
_EARLIEST_TS = 1_400_000_000
# Polls in a row latest.txt must name an older folder before it is believed.
_OLDER_POLLS = 12
# The folder left behind at a switch is looked at again this many times
# ``finish_s`` later, doubling, so segments its uploader published late are
# reported (with the default 10 s: 1, 2, 4 and 8 minutes after the switch).
_LATE_LOOK_FACTOR = 6
_LATE_LOOKS = 4


def parse_latest_txt(data: bytes, url: str, now: float | None = None) -> int:
    """Validate ``latest.txt``: decimal unix seconds, not before 2014, not in the future.

    Raises:
        PlaylistError: naming the URL and quoting the bad content.
    """
    # A byte-order mark (a file saved by a Windows editor) is not part of the time.
    text = data.removeprefix(b"\xef\xbb\xbf").decode("ascii", errors="replace").strip()
    ts = ascii_int(text, max_digits=12)
    if ts is None:
        raise PlaylistError(f"{url}: expected unix seconds, got {text[:40]!r}")
    latest_ok = (time.time() if now is None else now) + 86400
    if not _EARLIEST_TS <= ts <= latest_ok:
        raise PlaylistError(f"{url}: unix time {ts} is out of range "
                            f"(before 2014 or more than a day in the future)")
    return ts


@dataclass
class _Folder:
    """One ``hls/<ts>`` stream being followed, and how to start it."""

    ts: int
    key: str
    playlist_url: str
    tracker: StreamTracker
    resume: int | None = None
    from_beginning: bool = False
    discontinuous: bool = False
    reason_prefix: str = ""


class OrcasoundSource(PollingSource):
    """Segments of one Orcasound node, across node restarts.

    Args:
        base_url: bucket URL, e.g.
            ``https://s3-us-west-2.amazonaws.com/audio-orcasound-net``.
        node: node folder, e.g. ``rpi_orcasound_lab``.
        client: the HTTP client.
        finish_polls: polls of the old folder after a restart is seen.
        finish_s: seconds the old folder is still polled after a restart is seen.
        **kwargs: see :class:`~listener.sources.polling.PollingSource`.
    """

    unique_segment_uris = True  # ffmpeg's liveNNN.ts: one name per segment

    def __init__(self, base_url: str, node: str, client: HttpClient, *,
                 poll_interval_s: float = 5.0, start_segments_back: int = 3,
                 stop: asyncio.Event | None = None, max_resume_backlog_s: float | None = None,
                 segment_retries: int | None = None, finish_polls: int = 2,
                 finish_s: float = 10.0) -> None:
        super().__init__(client, poll_interval_s=poll_interval_s,
                         start_segments_back=start_segments_back, stop=stop,
                         max_resume_backlog_s=max_resume_backlog_s,
                         segment_retries=segment_retries)
        try:
            check_node_name(node)
        except ValueError as err:
            raise ConfigError(str(err), key="stream.node") from err
        self.base_url = base_url.rstrip("/")
        self.node = node
        self._finish_polls = max(1, finish_polls)
        self._finish_s = max(0.0, finish_s)
        # Folders left behind: ts -> the last sequence yielded from them.
        self._left: dict[int, int] = {}
        self._older: tuple[int, int] | None = None  # (ts, polls in a row)
        self.latest_url = f"{self.base_url}/{node}/latest.txt"
        #: stream_key of the folder being followed (None before the first read).
        self.stream_key: str | None = None

    def folder_key(self, ts: int) -> str:
        """The stream_key of a folder: ``<node>/hls/<ts>``."""
        return f"{self.node}/hls/{ts}"

    def _folder(self, ts: int, *, resume: int | None = None, from_beginning: bool = False,
                discontinuous: bool = False, reason_prefix: str = "") -> _Folder:
        key = self.folder_key(ts)
        start = datetime.fromtimestamp(ts, UTC)
        tracker = StreamTracker(key, start, restarts=False)
        return _Folder(ts, key, f"{self.base_url}/{key}/live.m3u8", tracker,
                       resume, from_beginning, discontinuous, reason_prefix)

    def _ts_of(self, stream_key: str) -> int | None:
        prefix = f"{self.node}/hls/"
        rest = stream_key[len(prefix):] if stream_key.startswith(prefix) else ""
        return ascii_int(rest)

    async def segments(self, resume: Position | None = None) -> AsyncIterator[Segment | Gap]:
        """Yield segments (and gaps) in order, forever, until the stop event is set.

        ``resume`` is the last segment already processed; see
        ``docs/sources.md`` for the rules.
        """
        try:
            async for item in self._follow(resume):
                yield item
        except Stopped:
            return

    async def _read_latest(self) -> int | None:
        data = await self._get(self.latest_url, "playlist", _LATEST_MAX_BYTES, "latest.txt")
        if data is None:
            return None
        try:
            ts = parse_latest_txt(data, self.latest_url)
        except PlaylistError as err:
            self._parse_failed("latest.txt", self.latest_url, err)
            return None
        self._note_ok("latest.txt", self.latest_url)
        return ts

    async def _follow(self, resume: Position | None) -> AsyncIterator[Segment | Gap]:
        folder: _Folder | None = None
        pending: int | None = None  # the folder to follow once this one is finished
        switch_seen = (0, time.monotonic())  # polls since, and monotonic time of, the switch
        left: tuple[_Folder, float, int] | None = None  # folder left, next look, looks done
        while True:
            latest = await self._read_latest()
            if folder is None:
                if latest is None:
                    await self._pause()
                    continue
                folder, pending, gaps = await self._open(latest, resume)
                switch_seen = (0, time.monotonic())  # a queued folder's wait starts now
                for gap in gaps:
                    yield gap
            elif latest is not None and self._believe(latest, folder, pending):
                log.info("node %s restarted: new folder %s; finishing %s first",
                         self.node, self.folder_key(latest), folder.key)
                pending, switch_seen = latest, (0, time.monotonic())
            self.stream_key = folder.key
            playlist = await self._get_playlist(folder.playlist_url)
            fresh = 0
            if playlist is not None:
                for item in self._advance(folder, playlist):
                    fresh += isinstance(item, Segment | Gap)
                    yield item
            if pending is not None:
                switch_seen = (switch_seen[0] + 1, switch_seen[1])
                if self._old_folder_done(folder, playlist, fresh, *switch_seen):
                    log.info("switching from %s to %s", folder.key, self.folder_key(pending))
                    left = (folder, time.monotonic() + _LATE_LOOK_FACTOR * self._finish_s, 0)
                    folder = self._next_folder(folder, pending)
                    pending = None
                    continue  # the new folder's playlist at once, no pause
            if left is not None and time.monotonic() >= left[1]:
                gaps, ended = await self._late_look(left[0], folder)
                for gap in gaps:
                    yield gap
                looks = left[2] + 1
                left = None if ended or looks >= _LATE_LOOKS else (
                    left[0], time.monotonic() + _LATE_LOOK_FACTOR * self._finish_s * 2 ** looks,
                    looks)
            await self._pause()

    async def _late_look(self, old: _Folder, now: _Folder) -> tuple[list[Gap], bool]:
        """Segments the folder left behind listed after the switch (lost, so reported),
        and whether it is finished (``#EXT-X-ENDLIST``: no need to look again).

        The node's uploader can publish an old folder's last segments well
        after ``latest.txt`` moved on; once the new folder is being followed
        they cannot be scored in order, but they must not vanish unreported.
        """
        if not old.tracker.started:
            return [], True
        playlist = await self._get_playlist(old.playlist_url, "old folder playlist")
        if playlist is None:
            return [], False
        gaps = []
        for item in old.tracker.advance(playlist):
            if isinstance(item, Gap):
                gaps.append(item)
            else:
                gaps.append(Gap(old.key, item.sequence, item.sequence,
                                f"published in {old.key} after the switch to {now.key}; "
                                "too late to score in order", item.utc_start,
                                item.duration_s, item.url))
        return gaps, playlist.endlist

    def _believe(self, latest: int, folder: _Folder, pending: int | None) -> bool:
        """Whether latest.txt naming ``latest`` starts a switch now."""
        if latest == folder.ts or latest == pending:
            self._older = None
            return False
        if latest > folder.ts:
            self._older = None
            return True
        polls = self._older[1] + 1 if self._older and self._older[0] == latest else 1
        self._older = (latest, polls)
        if polls == 1:
            log.warning("%s names an older folder %s than the one followed (%s); treating "
                        "it as a stale copy unless it persists for %d polls",
                        self.latest_url, latest, folder.ts, _OLDER_POLLS)
        if polls < _OLDER_POLLS:
            return False
        log.warning("%s has named the older folder %s for %d polls; following it once %s "
                    "is finished", self.latest_url, latest, polls, folder.key)
        self._older = None
        return True

    def _next_folder(self, old: _Folder, ts: int) -> _Folder:
        """The folder to follow after ``old``; one followed before resumes, never restarts."""
        if old.tracker.next_sequence is not None:
            self._left[old.ts] = old.tracker.next_sequence - 1
        if ts in self._left:
            log.warning("returning to %s after sequence %d", self.folder_key(ts),
                        self._left[ts])
            return self._folder(ts, resume=self._left[ts], discontinuous=True)
        if ts < old.ts:
            return self._folder(ts, discontinuous=True)  # an older folder: its live edge
        return self._folder(ts, from_beginning=True, discontinuous=True)

    def _old_folder_done(self, folder: _Folder, playlist: MediaPlaylist | None, fresh: int,
                         polls: int, since: float) -> bool:
        if playlist is not None and playlist.endlist and folder.tracker.started:
            return True
        waited = time.monotonic() - since
        if polls >= 4 * self._finish_polls and waited >= 4 * self._finish_s:
            log.warning("%s still not finished after %d polls; switching anyway",
                        folder.key, polls)
            return True
        return (playlist is not None and fresh == 0 and polls >= self._finish_polls
                and waited >= self._finish_s)

    async def _open(self, latest: int, resume: Position | None
                    ) -> tuple[_Folder, int | None, list[Gap]]:
        """The first folder to follow, the folder to switch to after it, and gaps."""
        old_ts = self._ts_of(resume.stream_key) if resume is not None else None
        if resume is None or old_ts is None:
            if resume is not None:
                log.warning("resume position %s is not a folder of node %s; starting fresh",
                            resume.stream_key, self.node)
            return self._folder(latest), None, []
        if old_ts >= latest:
            if old_ts > latest:
                # Most likely a stale copy of latest.txt: the folder we
                # followed last is newer. The next polls decide, by the same
                # rule as any older latest.txt (_believe).
                log.warning("%s names %s, older than the resume folder %s; resuming that "
                            "one", self.latest_url, latest, self.folder_key(old_ts))
            return self._folder(old_ts, resume=resume.sequence), None, []
        # The node restarted while we were away. Its old folder stays on the
        # bucket, so finish it from the resume point if that is allowed.
        old = self._folder(old_ts)
        playlist = await self._get_playlist(old.playlist_url, "old folder playlist")
        prefix = f"node restarted while stopped (now {self.folder_key(latest)}); "
        new = self._folder(latest, from_beginning=True, discontinuous=True,
                           reason_prefix=prefix)
        if playlist is None:
            log.warning("cannot read %s to finish it; the rest of %s after sequence %d is "
                        "lost", old.playlist_url, old.key, resume.sequence)
            return new, None, []
        gap = old.tracker.start(playlist, resume.sequence, 0, self._max_backlog_s, prefix)
        if gap is None and old.tracker.next_sequence == resume.sequence + 1:
            log.info("resuming %s after sequence %d, then %s", old.key, resume.sequence,
                     new.key)
            return old, latest, []
        if gap is None and playlist.last_sequence > resume.sequence:
            gap = Gap(old.key, resume.sequence + 1, playlist.last_sequence,
                      prefix + "resume point no longer listed")
        return new, None, [gap] if gap is not None else []

    def _advance(self, folder: _Folder, playlist: MediaPlaylist) -> list[Segment | Gap]:
        out: list[Segment | Gap] = []
        tracker = folder.tracker
        if not tracker.started:
            resume = playlist.media_sequence - 1 if folder.from_beginning else folder.resume
            gap = tracker.start(playlist, resume, self._back, self._max_backlog_s,
                                folder.reason_prefix)
            if gap is not None:
                out.append(gap)
            if folder.discontinuous:
                tracker.mark_discontinuity()
            if playlist.media_sequence != 0:
                log.warning("%s starts at media sequence %d, not 0: offsets count from "
                            "its first listed segment", playlist.url, playlist.media_sequence)
        out.extend(tracker.advance(playlist))
        end = tracker.live_edge_offset_s(playlist)
        self.live_edge_utc = datetime.fromtimestamp(folder.ts, UTC) + timedelta(seconds=end)
        return out
