"""A camera's continuous H.264 stream in MPEG-TS, cut into segments as an HLS segmenter does.

A real camera runs one encoder and one muxer for as long as it records and cuts the
stream into segments at key frames; the simulated camera does the same, so that segments
played one after the other are one stream (issue 15):

* :class:`TsStream` is one libx264 encoder (PyAV, ``yuv420p``, preset ``ultrafast``, tune
  ``zerolatency``: no B-frames, one packet out per frame in) feeding one MPEG-TS muxer
  that writes into a byte sink. :meth:`TsStream.cut` takes the bytes written since the
  last cut as a :class:`Chunk` and makes the next frame an IDR. The muxer is never
  reopened, so its continuity counters run on across chunks (a player sees no "Packet
  corrupt" at a boundary), and FFmpeg's MPEG-TS muxer writes PAT, PMT and SDT ahead of
  every key frame and a PCR on it, so each chunk also plays alone (the approach of
  FFmpeg's own ``hls`` muxer, which keeps one MPEG-TS context and only swaps its output).
* Frame ``n`` of a stream is shot at ``origin + n / fps`` and stamped
  ``round(origin * 90000) + round(n * 90000 / fps)`` on the 90 kHz MPEG-TS clock: the
  wall time, so consecutive segments continue each other's timestamps with no jitter at a
  boundary (``1 / fps`` exactly). The muxer writes PTS and PCR modulo 2^33, the fields'
  width; the encoder is given the unwrapped value so that a stream crossing a wrap stays
  monotonic.
* :class:`Recorder` draws a :class:`~simulators.scene.Scene` frame by frame into a stream,
  a key frame every :data:`KEYFRAME_SECONDS` and at the end of each :meth:`Recorder.record`,
  keeps the chunks of the last ``keep_s`` seconds (a camera's pre-roll buffer) and hands
  out the video of any recorded ``[start, end)`` on chunk boundaries. Each frame drawn
  can also be shown to a watcher (the camera's motion detector), so a frame is rendered
  once for both.
* :func:`encode_segment` is a one-off segment: a fresh stream, first frame at ``start``.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Self

import av

from simulators.scene import DEFAULT_FPS, DEFAULT_HEIGHT, DEFAULT_WIDTH, Frame, Scene

__all__ = [
    "H264_ENCODER",
    "KEYFRAME_SECONDS",
    "Chunk",
    "EncodeError",
    "MediaError",
    "Recorder",
    "TsStream",
    "encode_segment",
]

#: The H.264 encoder used; PyAV's wheels ship libx264 (checked in the tests).
H264_ENCODER = "libx264"
#: A key frame every 2 s: segments and event clips start on one (a camera's usual GOP).
KEYFRAME_SECONDS = 2
TS_CLOCK = 90_000

Watcher = Callable[[datetime, Frame], None]


class MediaError(Exception):
    """Root of the errors raised by the camera simulator's media code."""


class EncodeError(MediaError):
    """PyAV could not encode or mux a segment."""

    def __init__(self, start: datetime, reason: str) -> None:
        super().__init__(f"Could not encode the segment starting {start.isoformat()}: {reason}")
        self.start = start
        self.reason = reason


class NotRecorded(MediaError):
    """The video asked for is not (or no longer) held as whole chunks of one stream."""

    def __init__(self, start: datetime, end: datetime) -> None:
        super().__init__(f"No recorded video from {start.isoformat()} to {end.isoformat()}")
        self.start = start
        self.end = end


@dataclass(frozen=True, slots=True)
class Chunk:
    """Video of ``[start, end)``, opening on an IDR frame with PAT, PMT and SPS/PPS ahead."""

    start: datetime
    end: datetime
    data: bytes


class _Sink:
    """Where the muxer writes: bytes gathered until the next cut."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def _instant(origin: datetime, n: int, fps: int) -> datetime:
    return origin + timedelta(microseconds=round(n * 1_000_000 / fps))


class TsStream:
    """One encoder and one muxer for the life of a recording (module docstring)."""

    def __init__(
        self,
        *,
        origin: datetime,
        fps: int = DEFAULT_FPS,
        width: int = DEFAULT_WIDTH,
        height: int = DEFAULT_HEIGHT,
    ) -> None:
        if origin.tzinfo is None:
            raise ValueError("The stream's origin must be timezone-aware.")
        if not 1 <= fps <= 60:
            raise ValueError("The frame rate must be between 1 and 60 frames per second.")
        self.origin = origin
        self.fps = fps
        self.frames = 0
        self._base = round(origin.timestamp() * TS_CLOCK)
        self._cut_at = 0
        self._muxed = 0
        self._sink = _Sink()
        try:
            # flush_packets: every packet reaches the sink at once, so a cut is exact.
            self._container = av.open(
                self._sink, mode="w", format="mpegts", options={"flush_packets": "1"}
            )
            stream = self._container.add_stream(H264_ENCODER, rate=fps)
            if not isinstance(stream, av.VideoStream):
                raise EncodeError(origin, f"{H264_ENCODER} did not give a video stream")
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            context = stream.codec_context
            context.time_base = Fraction(1, TS_CLOCK)
            context.thread_count = 1  # many cameras share a core; no frame delay either
            # Key frames only where cut() asks for them.
            stream.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "crf": "26",
                "x264-params": "keyint=infinite:scenecut=0",
            }
        except av.FFmpegError as exc:
            raise EncodeError(origin, str(exc)) from exc
        self._stream = stream

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cursor(self) -> datetime:
        """When the next frame is shot: the end of what has been encoded."""
        return _instant(self.origin, self.frames, self.fps)

    def add(self, image: Frame) -> None:
        """Encode the next frame (BGR, the stream's size); an IDR if a cut came before it."""
        n = self.frames
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = self._base + round(n * TS_CLOCK / self.fps)
        frame.time_base = Fraction(1, TS_CLOCK)
        if n == self._cut_at:
            frame.pict_type = av.video.frame.PictureType.I
        try:
            packets = self._stream.encode(frame)
            self._container.mux(packets)
        except av.FFmpegError as exc:
            raise EncodeError(self.cursor, str(exc)) from exc
        self.frames += 1
        self._muxed += len(packets)

    def cut(self) -> Chunk:
        """The frames encoded since the last cut; the next frame opens a new chunk."""
        if self.frames == self._cut_at:
            raise EncodeError(self.cursor, "no frame since the last cut")
        if self._muxed != self.frames:  # the encoder held frames back: the cut would split one
            raise EncodeError(self.cursor, "the encoder has frames in flight")
        chunk = Chunk(_instant(self.origin, self._cut_at, self.fps), self.cursor, self._sink.take())
        self._cut_at = self.frames
        return chunk

    def close(self) -> None:
        """End the stream; what was encoded since the last cut is dropped."""
        with contextlib.suppress(av.FFmpegError):  # the trailer: no cut chunk needs it
            self._container.close()


class Recorder:
    """A scene drawn into one :class:`TsStream` after another (module docstring).

    :meth:`record` continues the current stream up to ``end``; :meth:`restart` begins a
    new one (after a gap, or at a segment that does not continue the last). The chunks of
    the last ``keep_s`` seconds are kept for :meth:`video`. Thread-safe: a camera records
    in a worker thread.
    """

    def __init__(
        self,
        scene: Scene,
        *,
        fps: int = DEFAULT_FPS,
        keyframe_s: float = KEYFRAME_SECONDS,
        keep_s: float = 0.0,
    ) -> None:
        if keyframe_s <= 0 or keep_s < 0:
            raise ValueError("The key-frame interval must be positive and keep_s not negative.")
        if not 1 <= fps <= 60:
            raise ValueError("The frame rate must be between 1 and 60 frames per second.")
        self.scene = scene
        self.fps = fps
        self.gop = max(1, round(keyframe_s * fps))
        self.keep = timedelta(seconds=keep_s)
        self._stream: TsStream | None = None
        self._cursor: datetime | None = None
        self._since_key = 0
        self._chunks: deque[Chunk] = deque()
        self._lock = threading.RLock()

    @property
    def cursor(self) -> datetime | None:
        """The end of what was recorded (or watched), None before the first frame."""
        return self._cursor

    @property
    def earliest(self) -> datetime | None:
        """The start of the oldest video still held (None when none is)."""
        return self._chunks[0].start if self._chunks else None

    def restart(self, at: datetime) -> None:
        """Drop the stream and its chunks; the next frame recorded is shot at ``at``."""
        with self._lock:
            self._drop()
            self._cursor = at

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._chunks.clear()

    def record(self, end: datetime, *, encode: bool = True, watch: Watcher | None = None) -> None:
        """Draw the frames from the cursor up to ``end`` (exclusive), showing each to
        ``watch``; ``encode`` puts them in the stream, cut at the end so that all of it is
        video. Without ``encode`` the stream ends (a camera that only watches)."""
        with self._lock:
            if self._cursor is None:
                raise MediaError("Nothing to record from: restart() the recorder first.")
            if not encode:
                self._drop()
            elif self._stream is None:
                self._stream = TsStream(
                    origin=self._cursor,
                    fps=self.fps,
                    width=self.scene.width,
                    height=self.scene.height,
                )
                self._since_key = 0
            self._draw(end, encode=encode, watch=watch)
            if self._stream is not None and self._since_key:
                self._keep(self._stream.cut())
                self._since_key = 0
            self._forget_old()

    def _draw(self, end: datetime, *, encode: bool, watch: Watcher | None) -> None:
        assert self._cursor is not None
        start, stream = self._cursor, self._stream if encode else None
        count = round((end - start) / timedelta(seconds=1) * self.fps)
        for n in range(count):
            at = _instant(start, n, self.fps)
            if stream is None and watch is None:
                continue
            image = self.scene.render(at)
            if watch is not None:
                watch(at, image)
            if stream is not None:
                if self._since_key == self.gop:
                    self._keep(stream.cut())
                    self._since_key = 0
                stream.add(image)
                self._since_key += 1
        self._cursor = _instant(start, max(count, 0), self.fps)

    def _keep(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)

    def _forget_old(self) -> None:
        assert self._cursor is not None
        horizon = self._cursor - self.keep
        while len(self._chunks) > 1 and self._chunks[0].end <= horizon:
            self._chunks.popleft()

    def video(self, start: datetime, end: datetime) -> bytes:
        """The chunks that tile ``[start, end)`` exactly, joined; :class:`NotRecorded` if
        no run of held chunks does."""
        with self._lock:
            parts: list[bytes] = []
            for chunk in self._chunks:
                if not parts and chunk.start != start:
                    continue
                parts.append(chunk.data)
                if chunk.end == end:
                    return b"".join(parts)
                if chunk.end > end:
                    break
            raise NotRecorded(start, end)

    def segment(self, start: datetime, seconds: float) -> bytes:
        """``seconds`` of video from ``start``: the stream carries on when ``start`` is
        where the last segment ended, else a new one begins at ``start``."""
        if not 0 < seconds <= 60:
            raise ValueError("A segment lasts more than 0 and at most 60 seconds.")
        if round(seconds * self.fps) < 1:
            raise ValueError("A segment must hold at least one frame.")
        with self._lock:
            if self._stream is None or self._cursor != start:
                self.restart(start)
            self.record(start + timedelta(seconds=seconds))
            cursor = self._cursor
            assert cursor is not None
            return self.video(start, cursor)


def encode_segment(
    scene: Scene,
    start: datetime,
    seconds: float,
    *,
    fps: int = DEFAULT_FPS,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
) -> bytes:
    """``seconds`` of ``scene`` from ``start`` as one MPEG-TS segment of H.264 video.

    ``width`` and ``height`` must be the scene's; ``round(seconds * fps)`` frames are
    encoded, the first at ``start`` exactly (an IDR), so its time strip reads back as
    ``start``'s second; a key frame follows every :data:`KEYFRAME_SECONDS`.
    """
    if start.tzinfo is None:
        raise ValueError("The segment start must be timezone-aware.")
    if (width, height) != (scene.width, scene.height):
        raise ValueError("The segment size must match the scene's width and height.")
    recorder = Recorder(scene, fps=fps, keep_s=seconds)
    try:
        return recorder.segment(start, seconds)
    finally:
        recorder.close()
