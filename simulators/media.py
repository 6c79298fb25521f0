"""The camera simulator's media: H.264 segments in MPEG-TS, motion detection, placeholders.

* :func:`encode_segment` (from ``simulators.stream``, where a camera's continuous stream
  and its segmenting live) draws ``seconds`` of a :class:`~simulators.scene.Scene` as one
  H.264 segment in MPEG-TS opening on an IDR frame: every segment is independently
  playable in HLS. Presentation times are the segment's wall time on the 90 kHz MPEG-TS
  clock (modulo 2^33, the PTS field's width).
* :func:`read_timestamp` (from ``simulators.scene``) reads the burned-in time strip of a
  frame read back with ``replay.media`` (the service's own decoding, for thumbnails).
* :class:`MotionDetector` is the camera's own detection: MOG2 background subtraction on
  the frames, the timestamp stamps masked out, the largest moving blob classified by its
  shape and place (door zone, tall, small and low), votes gathered over an episode of
  motion, one :class:`DetectedEvent` per episode. :func:`evaluate` scores detections
  against the scripted ground truth (:class:`~simulators.scene.Actor`).
* :func:`synthetic_segment` gives correctly sized placeholder bytes for large fleets
  (``--media synthetic``), with no encoding at all.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from simulators.scene import (
    Actor,
    Frame,
    Layout,
    Region,
    read_timestamp,
)
from simulators.stream import H264_ENCODER, EncodeError, MediaError, encode_segment

__all__ = [
    "H264_ENCODER",
    "DetectedEvent",
    "EncodeError",
    "EventType",
    "MediaError",
    "MotionDetector",
    "encode_segment",
    "evaluate",
    "read_timestamp",
    "synthetic_segment",
    "with_scripted_types",
]

EventType = Literal["person", "pet", "door", "motion"]

_TS_PACKET = 188


# Placeholders ------------------------------------------------------------------------------


def synthetic_segment(size: int, seed: int | str) -> bytes:
    """Exactly ``size`` placeholder bytes, shaped as MPEG-TS null packets (PID 0x1FFF).

    For ``--media synthetic``: no drawing, no encoding. Each 188-byte packet carries the
    sync byte and a null-packet header followed by random payload, the same for every
    segment of that size; the first packet's payload opens with a digest of ``seed``, so
    different seeds give different checksums; the last packet is cut short to hit
    ``size``. (Drawing fresh random bytes for each segment was a tenth of a fleet worker's
    CPU at 1,000 cameras, issue 16.)
    """
    if size < 0:
        raise ValueError("A segment size cannot be negative.")
    filler = _null_packets(-(-size // _TS_PACKET))
    stamp = hashlib.blake2b(str(seed).encode(), digest_size=32).digest()
    head = len(_NULL_HEADER)
    if size <= head + len(stamp):
        return (filler[:head] + stamp)[:size]
    return b"".join((filler[:head], stamp, memoryview(filler)[head + len(stamp) : size]))


_NULL_HEADER = bytes((0x47, 0x1F, 0xFF, 0x10))


@functools.lru_cache(maxsize=8)
def _null_packets(count: int) -> bytes:
    """``count`` null packets of seeded random payload (drawn once per count)."""
    rng = random.Random("synthetic")
    return b"".join(
        _NULL_HEADER + rng.randbytes(_TS_PACKET - len(_NULL_HEADER)) for _ in range(count)
    )


# Detection ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectedEvent:
    """One event the camera detected: when motion began, its class and the vote share."""

    at: datetime
    type: EventType
    score: float

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("A detected event's time must be timezone-aware.")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError("A detected event's score must be between 0 and 1.")


class MotionDetector:
    """MOG2 background subtraction with episode tracking and blob classification.

    Feed frames in time order with :meth:`feed`; an episode of motion starts at the first
    frame whose largest foreground blob covers ``min_area`` of the frame, and ends after
    ``quiet_s`` seconds without one; episodes with fewer than ``min_frames`` moving frames
    are dropped as flicker. Each moving frame votes for a class of its largest blob:

    * ``door``: the blob lies inside the door zone (grown by a small margin);
    * ``person``: at least 30 % of the frame tall and taller than 1.2 times its width;
    * ``pet``: under 25 % of the frame tall, its top below the wall-floor line;
    * ``motion``: anything else.

    The event's type is the class with most votes, its score that class's share of the
    votes, its time the episode's first moving frame. The stamp regions (text and time
    strip) are masked out, as they change every second.
    """

    def __init__(
        self,
        *,
        layout: Layout,
        min_area: float = 0.004,
        quiet_s: float = 0.8,
        min_frames: int = 3,
        warmup_frames: int = 5,
    ) -> None:
        if not 0 < min_area < 1:
            raise ValueError("min_area is a fraction of the frame, between 0 and 1.")
        if quiet_s <= 0:
            raise ValueError("quiet_s must be positive.")
        if min_frames < 1 or warmup_frames < 0:
            raise ValueError("min_frames must be at least 1 and warmup_frames not negative.")
        self.layout = layout
        self.min_area_px = min_area * layout.width * layout.height
        self.quiet = timedelta(seconds=quiet_s)
        self.min_frames = min_frames
        self.warmup_frames = warmup_frames
        self._subtractor = cv2.createBackgroundSubtractorMOG2(
            history=300, varThreshold=25, detectShadows=False
        )
        self._mask = np.full((layout.height, layout.width), 255, np.uint8)
        for region in layout.stamps:
            r = region.grown(2)
            self._mask[max(0, r.y) : r.bottom, max(0, r.x) : r.right] = 0
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        self._seen = 0
        self._last: datetime | None = None
        self._episode_start: datetime | None = None
        self._last_motion: datetime | None = None
        self._votes: Counter[EventType] = Counter()

    def feed(self, frame: Frame, at: datetime) -> list[DetectedEvent]:
        """Process the frame shot at ``at``; returns the events whose episode just ended."""
        if frame.shape[:2] != (self.layout.height, self.layout.width):
            raise ValueError("The frame size does not match the detector's layout.")
        if self._last is not None and at <= self._last:
            raise ValueError("Frames must be fed in increasing time order.")
        self._last = at
        foreground = np.asarray(self._subtractor.apply(frame), dtype=np.uint8)
        self._seen += 1
        if self._seen <= self.warmup_frames:
            return []
        blob = self._largest_blob(foreground)
        done: list[DetectedEvent] = []
        if self._last_motion is not None and at - self._last_motion > self.quiet:
            done.extend(self._close())
        if blob is not None:
            if self._episode_start is None:
                self._episode_start = at
            self._last_motion = at
            self._votes[self.classify(blob)] += 1
        return done

    def flush(self) -> list[DetectedEvent]:
        """End the current episode, if any (at the end of the footage)."""
        return self._close()

    def detect(self, frames: Iterable[tuple[datetime, Frame]]) -> list[DetectedEvent]:
        """All events in a run of ``(at, frame)`` pairs, the last episode included."""
        events: list[DetectedEvent] = []
        for at, frame in frames:
            events.extend(self.feed(frame, at))
        events.extend(self.flush())
        return events

    def classify(self, blob: Region) -> EventType:
        """The class of one moving blob from its shape and place (rules in the class doc)."""
        lay = self.layout
        if lay.door.grown(max(3, lay.door.w // 8)).contains(blob):
            return "door"
        if blob.h >= 0.30 * lay.height and blob.h > 1.2 * blob.w:
            return "person"
        if blob.h < 0.25 * lay.height and blob.y >= lay.floor_y:
            return "pet"
        return "motion"

    def _largest_blob(self, foreground: npt.NDArray[np.uint8]) -> Region | None:
        moving = cv2.bitwise_and(foreground, self._mask)
        moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, self._kernel)
        moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, self._kernel, iterations=2)
        contours, _ = cv2.findContours(moving, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        best = max(contours, key=cv2.contourArea, default=None)
        if best is None or cv2.contourArea(best) < self.min_area_px:
            return None
        x, y, w, h = cv2.boundingRect(best)
        return Region(x=int(x), y=int(y), w=int(w), h=int(h))

    def _close(self) -> list[DetectedEvent]:
        start, votes = self._episode_start, self._votes
        self._episode_start, self._last_motion, self._votes = None, None, Counter()
        total = sum(votes.values())
        if start is None or total < self.min_frames:
            return []
        kind, count = votes.most_common(1)[0]
        return [DetectedEvent(at=start, type=kind, score=round(count / total, 3))]


def evaluate(
    actors: Sequence[Actor], detections: Sequence[DetectedEvent], tolerance_s: float
) -> tuple[float, float]:
    """``(precision, recall)`` of ``detections`` against the scripted ``actors``.

    A detection matches an actor of the same kind that started within ``tolerance_s`` of
    it; each actor and each detection is matched at most once (earliest first). Precision
    is matched detections over all detections (1.0 when there are none), recall matched
    actors over all actors (1.0 when there are none).
    """
    if tolerance_s < 0:
        raise ValueError("The tolerance cannot be negative.")
    tolerance = timedelta(seconds=tolerance_s)
    unmatched = sorted(actors, key=lambda a: a.start)
    matched = 0
    for event in sorted(detections, key=lambda d: d.at):
        for actor in unmatched:
            if actor.kind == event.type and abs(event.at - actor.start) <= tolerance:
                unmatched.remove(actor)
                matched += 1
                break
    precision = matched / len(detections) if detections else 1.0
    recall = matched / len(actors) if actors else 1.0
    return precision, recall


def with_scripted_types(
    detections: Sequence[DetectedEvent], actors: Sequence[Actor], tolerance_s: float
) -> list[DetectedEvent]:
    """Detections relabelled with the kind of the scripted actor on stage, when one is.

    The simulator knows what it drew: a detection made while an actor was on stage (from
    ``tolerance_s`` before its start to its end) takes that actor's kind; others keep the
    class the detector gave them. Times and scores come from the detector unchanged.
    """
    tolerance = timedelta(seconds=tolerance_s)
    out = []
    for event in detections:
        actor = next(
            (a for a in actors if a.start - tolerance <= event.at <= a.end),
            None,
        )
        out.append(event if actor is None else replace(event, type=actor.kind))
    return out
