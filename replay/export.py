"""Recorded video exported as one MP4 (issue 15): segments remuxed, never re-encoded.

:func:`remux_mp4` takes a camera's segments (H.264, in MPEG-TS as cameras record them,
R1) in start order and writes one MP4 of their video, the packets copied as they are
(PyAV, ``-c copy``): no frame is decoded or encoded. A pure function of the segments'
bytes and a path to write; the gateway reads the segments, runs it in a worker thread and
serves or stores the file.

- **What is exported.** The recorded part of ``[start, end)``: each segment's frames from
  the last keyframe at or before ``start`` (a copy can only begin on one, so an export may
  open up to one GOP early; a camera's segment opens on one) up to, not including,
  ``end``. Gaps between segments are skipped: the MP4 holds the recorded seconds, back to
  back. Segments are taken whole and in order otherwise; only their first video stream is
  kept.
- **Continuous timestamps.** Each segment is laid on its own timeline first: its
  timestamps counted from its first packet, a step backwards (the 33-bit MPEG-TS clock
  wrapping, a camera restarting its clock) or forwards by more than :data:`MAX_JUMP_S`
  taken as a discontinuity, the packet following the previous one by a frame. The kept
  packets are then shifted to follow the previous segment's last frame, so the MP4's
  decoding times only grow, from 0, whatever the segments' own timestamps did.
- **Unusable segments are skipped, not fatal.** A segment PyAV cannot read, without video,
  or whose codec or picture size differs from the export's first segment (one MP4 track
  has one sample description) is left out and counted (:attr:`Exported.skipped`).
- The file is written with ``movflags=faststart`` (the index before the media, so a
  player starts before the download ends), which needs a real file to rewrite: hence a
  path, not a stream. PyAV takes a good part of a second to import: the gateway imports
  this module on first use, in its worker thread, as it does :mod:`replay.media`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
from av.container import OutputContainer
from av.packet import Packet
from av.video.stream import VideoStream

from devices.clock import aware_utc

__all__ = [
    "MAX_EXPORT",
    "MAX_JUMP_S",
    "Exported",
    "NothingToExport",
    "Source",
    "remux_mp4",
]

log = logging.getLogger(__name__)

#: The longest range one export covers (issue 15).
MAX_EXPORT = timedelta(hours=1)
#: Within a segment, consecutive packets further apart than this (seconds) are a jump of
#: the camera's clock, not time recorded.
MAX_JUMP_S = 1.0
#: The frame duration taken when neither the packets nor the stream say (25 fps).
_FALLBACK_FPS = 25


class NothingToExport(Exception):
    """No frame of the segments lies in the asked range (or none could be read)."""


@dataclass(frozen=True, slots=True)
class Source:
    """One segment to export: where its recording starts (the index's ``start``, the
    instant of its first frame) and its bytes."""

    start: datetime
    data: bytes


@dataclass(frozen=True, slots=True)
class Exported:
    """What :func:`remux_mp4` wrote: the MP4's duration, the segments it holds and those it
    skipped, its packets, and the recorded instant of its first frame."""

    seconds: float
    segments: int
    skipped: int
    packets: int
    first: datetime


class _Timed(NamedTuple):
    packet: Packet[VideoStream]
    dts: int  # on the segment's own continuous timeline, from 0 (stream time base)
    pts: int
    duration: int


def _step(stream: VideoStream, packets: list[Packet[VideoStream]]) -> int:
    """One frame's duration in the stream's time base."""
    durations = sorted(p.duration for p in packets if p.duration)
    if durations:
        return int(durations[len(durations) // 2])
    rate = stream.average_rate or stream.guessed_rate or _FALLBACK_FPS
    assert stream.time_base is not None
    return max(1, round(1 / (Fraction(rate) * stream.time_base)))


def timeline(packets: Iterable[Packet[VideoStream]], step: int, max_jump: int) -> list[_Timed]:
    """The packets on a continuous timeline from 0, in decoding order: a packet whose
    decoding time goes back, or jumps ahead by more than ``max_jump``, follows the previous
    packet by ``step`` (its composition offset, ``pts - dts``, is kept)."""
    timed: list[_Timed] = []
    shift: int | None = None
    previous = 0
    for p in packets:
        raw_dts = p.dts if p.dts is not None else p.pts
        if raw_dts is None:
            continue  # a packet without a time (the demuxer's flush): nothing to place
        raw_pts = p.pts if p.pts is not None else raw_dts
        if shift is None:
            shift = -raw_dts
        elif not 0 < raw_dts + shift - previous <= max_jump:
            shift = previous + step - raw_dts
        dts = raw_dts + shift
        timed.append(_Timed(p, dts, dts + max(0, raw_pts - raw_dts), p.duration or step))
        previous = dts
    return timed


def kept(
    timed: list[_Timed], seconds_of: Fraction, at: datetime, start: datetime, end: datetime
) -> list[_Timed]:
    """The packets of one segment (recorded from ``at``) to export for ``[start, end)``:
    from the last keyframe shown at or before ``start`` to the last frame shown before
    ``end``."""

    def shown(t: _Timed) -> datetime:
        return at + timedelta(seconds=float(t.pts * seconds_of))

    inside = [t for t in timed if shown(t) < end]
    if not any(
        shown(t) + timedelta(seconds=float(t.duration * seconds_of)) > start for t in inside
    ):
        return []  # it ended at or before the range starts
    first = 0
    for i, t in enumerate(inside):
        if shown(t) > start:
            break
        if t.packet.is_keyframe:
            first = i
    return inside[first:]


class _Mp4:
    """The output: opened on the first segment that has something to export."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.container: OutputContainer | None = None
        self.stream: VideoStream | None = None
        self.shape: tuple[str, int, int] | None = None
        self.next_dts = 0  # where the next segment begins (the first stream's time base)
        self.time_base = Fraction(1, 90_000)
        self.packets = 0

    @staticmethod
    def _shape(stream: VideoStream) -> tuple[str, int, int]:
        return (stream.codec_context.name, stream.width, stream.height)

    def accepts(self, stream: VideoStream) -> bool:
        """Whether the stream's packets fit the track: any do before the first is written."""
        return self.shape is None or self._shape(stream) == self.shape

    def write(self, stream: VideoStream, packets: list[_Timed]) -> None:
        if self.container is None:
            self.container = av.open(
                str(self.path), mode="w", format="mp4", options={"movflags": "+faststart"}
            )
            out = self.container.add_stream_from_template(stream)
            assert isinstance(out, VideoStream)
            self.stream = out
            self.shape = self._shape(stream)
            assert stream.time_base is not None
            self.time_base = stream.time_base
        assert self.stream is not None
        assert stream.time_base is not None
        # Laid on the export's time base (every segment's, in practice: 1/90000).
        scale = stream.time_base / self.time_base
        offset = self.next_dts - round(packets[0].dts * scale)
        for t in packets:
            p = t.packet
            p.dts = round(t.dts * scale) + offset
            p.pts = round(t.pts * scale) + offset
            p.time_base = self.time_base
            p.stream = self.stream
            self.container.mux(p)
            self.packets += 1
        last = packets[-1]
        self.next_dts = round((last.dts + last.duration) * scale) + offset

    def close(self) -> None:
        if self.container is not None:
            self.container.close()


class _Skipped(Exception):
    """The segment is left out: unreadable, or unlike the export's first."""


def _segment(out: _Mp4, source: Source, start: datetime, end: datetime) -> datetime | None:
    """Export what ``source`` holds of ``[start, end)``: the recorded instant of its first
    frame exported, ``None`` when it has none there; :class:`_Skipped` when it is left out."""
    try:
        with av.open(io.BytesIO(source.data), mode="r") as container:
            if not container.streams.video:
                raise _Skipped("no video stream")
            stream = container.streams.video[0]
            assert stream.time_base is not None
            packets = list(container.demux(stream))
            if not out.accepts(stream):
                raise _Skipped(f"not the export's codec and size {out.shape}")
            step = _step(stream, packets)
            max_jump = round(MAX_JUMP_S / stream.time_base)
            timed = timeline(packets, step, max(max_jump, step))
            chosen = kept(timed, stream.time_base, aware_utc(source.start, "start"), start, end)
            if out.container is None:  # a copy must open on a keyframe
                while chosen and not chosen[0].packet.is_keyframe:
                    chosen.pop(0)
            if not chosen:
                return None
            out.write(stream, chosen)
            return source.start + timedelta(seconds=float(chosen[0].pts * stream.time_base))
    except av.FFmpegError as exc:
        raise _Skipped(str(exc)) from exc


def remux_mp4(sources: Iterable[Source], path: Path, *, start: datetime, end: datetime) -> Exported:
    """Write the MP4 of what ``sources`` (in start order) recorded of ``[start, end)`` to
    ``path``; :class:`NothingToExport` when no frame of them lies there."""
    start, end = aware_utc(start, "start"), aware_utc(end, "end")
    if end <= start:
        raise ValueError(f"an export must end after it starts: {start} to {end}")
    out = _Mp4(path)
    segments = skipped = 0
    first: datetime | None = None
    try:
        for source in _ordered(sources):
            try:
                shown = _segment(out, source, start, end)
            except _Skipped as exc:
                log.warning(
                    "a segment of %d bytes is left out of an export: %s", len(source.data), exc
                )
                skipped += 1
                continue
            if shown is not None:
                segments += 1
                first = first or shown
    finally:
        out.close()
    if first is None:
        raise NothingToExport(f"nothing recorded between {start} and {end} could be exported")
    return Exported(
        seconds=float(Fraction(out.next_dts) * out.time_base),
        segments=segments,
        skipped=skipped,
        packets=out.packets,
        first=first,
    )


def _ordered(sources: Iterable[Source]) -> Iterator[Source]:
    """The sources as given, refusing one that starts before the previous one."""
    previous: datetime | None = None
    for source in sources:
        at = aware_utc(source.start, "start")
        if previous is not None and at < previous:
            raise ValueError(f"sources must come in start order: {at} after {previous}")
        previous = at
        yield source
