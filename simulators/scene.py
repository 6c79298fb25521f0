"""The camera simulator's scene: a room, a burned-in timestamp and scripted actors.

Every frame is a pure function of ``(scene, instant)``: a fixed background (wall, floor, a
door), the scripted actors active at that instant (a person or a pet crossing left to
right, the door swinging open and shut), a little sensor noise drawn from a bank seeded
by the scene's seed, and two stamps of the frame's UTC second that are drawn last so
nothing covers them:

* top left, the human-readable text ``YYYY-MM-DD HH:MM:SS``;
* top right, a machine-readable *time strip*: 3 rows of 16 black/white blocks holding
  a sync nibble ``1010``, the unix seconds as 32 bits (most significant first), a CRC-8
  of those 4 bytes and a closing nibble ``0101``. Blocks are ``height // 22`` pixels
  (8 at 180 lines), large enough to survive H.264 at the simulator's quality, so the
  stamp is read back without OCR (:func:`read_timestamp`).

Because the simulator draws the actors it knows the ground truth of each event
(:class:`Actor`); the camera's motion detector (``simulators.media``) sees only pixels.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]
ActorKind = Literal["person", "pet", "door"]
ACTOR_KINDS: tuple[ActorKind, ...] = get_args(ActorKind)

DEFAULT_WIDTH = 320
DEFAULT_HEIGHT = 180
DEFAULT_FPS = 10

_STRIP_COLS = 16
_STRIP_ROWS = 3
_SYNC_HEAD = (1, 0, 1, 0)
_SYNC_TAIL = (0, 1, 0, 1)
_NOISE_BANK = 8
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class SceneError(ValueError):
    """A scene or actor was described with values it cannot draw."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Region:
    """An axis-aligned rectangle in pixels: left ``x``, top ``y``, width ``w``, height ``h``."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if self.w <= 0 or self.h <= 0:
            raise SceneError("A region needs a positive width and height.")

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    def grown(self, margin: int) -> Region:
        """The same rectangle with ``margin`` pixels added on every side."""
        return Region(
            x=self.x - margin, y=self.y - margin, w=self.w + 2 * margin, h=self.h + 2 * margin
        )

    def contains(self, other: Region) -> bool:
        return (
            self.x <= other.x
            and self.y <= other.y
            and other.right <= self.right
            and other.bottom <= self.bottom
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Where things are in a frame of ``width`` x ``height``; a camera's configured zones.

    The detector uses ``door`` (the door zone), ``floor_y`` (where the wall meets the
    floor) and ``stamps`` (regions to ignore); :func:`read_timestamp` uses ``strip``.
    """

    width: int
    height: int
    floor_y: int
    door: Region
    text: Region
    strip: Region
    block: int

    @classmethod
    def for_size(cls, width: int, height: int) -> Layout:
        if width < 160 or height < 90:
            raise SceneError("Frames must be at least 160 x 90 pixels.")
        if width % 2 or height % 2:
            raise SceneError("Frame width and height must be even (yuv420p).")
        if width < height:
            raise SceneError("Frames must be landscape (width at least the height).")
        block = max(4, height // 22)
        margin = max(2, block // 2)
        strip = Region(
            x=width - margin - _STRIP_COLS * block,
            y=margin,
            w=_STRIP_COLS * block,
            h=_STRIP_ROWS * block,
        )
        scale, thickness = _text_style(height)
        (tw, th), baseline = cv2.getTextSize("0000-00-00 00:00:00", _FONT, scale, thickness)
        pad = max(2, block // 2)
        text = Region(x=margin, y=margin, w=tw + 2 * pad, h=th + baseline + 2 * pad)
        floor_y = round(height * 0.62)
        door = Region(
            x=round(width * 0.72),
            y=round(height * 0.20),
            w=round(width * 0.13),
            h=floor_y - round(height * 0.20),
        )
        return cls(
            width=width,
            height=height,
            floor_y=floor_y,
            door=door,
            text=text,
            strip=strip,
            block=block,
        )

    @property
    def stamps(self) -> tuple[Region, Region]:
        """The regions that change every second whatever happens in the room."""
        return (self.text, self.strip)


def _text_style(height: int) -> tuple[float, int]:
    scale = height / 340
    return scale, max(1, round(height / 180))


@dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """One scripted event with its ground truth: what crosses (or opens) and when.

    A person or a pet enters at the left edge at ``start`` and has left at the right
    edge ``duration_s`` later; a door swings open and shut again over ``duration_s``.
    """

    kind: ActorKind
    start: datetime
    duration_s: float

    def __post_init__(self) -> None:
        if self.kind not in ACTOR_KINDS:
            raise SceneError(f"Actor kind must be one of {', '.join(ACTOR_KINDS)}.")
        if self.start.tzinfo is None:
            raise SceneError("An actor's start must be timezone-aware.")
        if not 0.5 <= self.duration_s <= 60:
            raise SceneError("An actor's duration must be between 0.5 and 60 seconds.")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration_s)

    def progress(self, at: datetime) -> float | None:
        """How far along the actor is at ``at`` (0 to 1), or None when it is not on stage."""
        elapsed = (at - self.start).total_seconds()
        if elapsed < 0 or elapsed >= self.duration_s:
            return None
        return elapsed / self.duration_s


def script_actors(
    *, start: datetime, count: int, seed: int | str, gap_s: tuple[float, float] = (2.0, 3.5)
) -> list[Actor]:
    """``count`` actors, kinds in equal shares in a seeded order, one after another.

    Each waits a random gap (``gap_s`` range, seconds) after the previous one ended, so
    their motion never overlaps. Durations: person 3.5-5 s, pet 3-4.5 s, door 2.5-3.5 s.
    """
    if count < 0:
        raise SceneError("The number of actors cannot be negative.")
    if not 0 < gap_s[0] <= gap_s[1]:
        raise SceneError("The gap range must be positive and ordered (low, high).")
    rng = random.Random(f"actors:{seed}")
    kinds = [ACTOR_KINDS[i % len(ACTOR_KINDS)] for i in range(count)]
    rng.shuffle(kinds)
    durations: dict[ActorKind, tuple[float, float]] = {
        "person": (3.5, 5.0),
        "pet": (3.0, 4.5),
        "door": (2.5, 3.5),
    }
    actors: list[Actor] = []
    at = start
    for kind in kinds:
        at += timedelta(seconds=round(rng.uniform(*gap_s), 1))
        actor = Actor(kind=kind, start=at, duration_s=round(rng.uniform(*durations[kind]), 1))
        actors.append(actor)
        at = actor.end
    return actors


class Scene:
    """A deterministic room: the same seed, actors and instant always give the same frame."""

    def __init__(
        self,
        *,
        width: int = DEFAULT_WIDTH,
        height: int = DEFAULT_HEIGHT,
        seed: int | str = 0,
        actors: Sequence[Actor] = (),
        noise: float = 2.0,
    ) -> None:
        if not 0 <= noise <= 20:
            raise SceneError("Noise must be between 0 and 20 grey levels.")
        self.layout = Layout.for_size(width, height)
        self.seed = seed
        self.actors: tuple[Actor, ...] = tuple(sorted(actors, key=lambda a: a.start))
        self._rng_seed = random.Random(f"scene:{seed}").getrandbits(32)
        self._noise_level = noise
        # Drawn on the first frame: a fleet camera with synthetic media never renders one,
        # and the background and noise bank cost megabytes and milliseconds per camera.
        self._drawn: tuple[Frame, list[npt.NDArray[np.int16]]] | None = None

    @property
    def width(self) -> int:
        return self.layout.width

    @property
    def height(self) -> int:
        return self.layout.height

    def active(self, at: datetime) -> list[tuple[Actor, float]]:
        """The actors on stage at ``at`` with their progress."""
        found = []
        for actor in self.actors:
            p = actor.progress(at)
            if p is not None:
                found.append((actor, p))
        return found

    def _layers(self) -> tuple[Frame, list[npt.NDArray[np.int16]]]:
        if self._drawn is None:
            gen = np.random.default_rng(self._rng_seed)
            shape = (self.height, self.width, 3)
            bank = [
                np.rint(gen.normal(0.0, self._noise_level, shape)).astype(np.int16)
                for _ in range(_NOISE_BANK if self._noise_level > 0 else 0)
            ]
            self._drawn = (self._draw_background(), bank)
        return self._drawn

    def render(self, at: datetime) -> Frame:
        """The BGR frame (height x width x 3, uint8) the camera sees at ``at``."""
        if at.tzinfo is None:
            raise SceneError("Frames are rendered for timezone-aware instants.")
        background, noise = self._layers()
        frame = background.copy()
        active = self.active(at)
        door_open = max((_door_swing(p) for a, p in active if a.kind == "door"), default=0.0)
        self._draw_door(frame, door_open)
        for actor, p in active:
            if actor.kind == "person":
                self._draw_person(frame, actor, p)
            elif actor.kind == "pet":
                self._draw_pet(frame, actor, p)
        if noise:
            ms = round(at.timestamp() * 1000)
            bank = noise[(ms * 2654435761 >> 7) % len(noise)]
            frame = np.clip(frame.astype(np.int16) + bank, 0, 255).astype(np.uint8)
        second = math.floor(at.timestamp())
        _draw_text(frame, self.layout, second)
        _draw_strip(frame, self.layout, second)
        return frame

    def frames(self, start: datetime, seconds: float, fps: int) -> Iterator[tuple[datetime, Frame]]:
        """Frames at ``start + i / fps`` for ``i`` in ``range(round(seconds * fps))``."""
        if fps <= 0 or seconds <= 0:
            raise SceneError("Frame rate and duration must be positive.")
        for i in range(round(seconds * fps)):
            at = start + timedelta(microseconds=round(i * 1_000_000 / fps))
            yield at, self.render(at)

    # Drawing ------------------------------------------------------------------------------

    def _draw_background(self) -> Frame:
        lay = self.layout
        rng = random.Random(self._rng_seed)
        w, h = lay.width, lay.height
        frame = np.zeros((h, w, 3), np.uint8)
        wall = np.array([rng.randint(150, 185), rng.randint(170, 200), rng.randint(185, 215)])
        shade = np.linspace(1.0, 0.85, lay.floor_y)[:, None, None]
        frame[: lay.floor_y] = np.clip(wall[None, None, :] * shade, 0, 255).astype(np.uint8)
        floor = (rng.randint(70, 95), rng.randint(100, 125), rng.randint(135, 160))
        frame[lay.floor_y :] = floor
        step = max(6, h // 18)
        for y in range(lay.floor_y + step, h, step):
            cv2.line(frame, (0, y), (w - 1, y), tuple(int(c) - 18 for c in floor), 1)
        cv2.rectangle(frame, (0, lay.floor_y - 3), (w - 1, lay.floor_y), (235, 235, 235), -1)
        # A picture on the wall gives the background some texture.
        px, py = round(w * 0.40), round(h * 0.18)
        cv2.rectangle(frame, (px, py), (px + w // 8, py + h // 7), (60, 90, 120), -1)
        cv2.rectangle(frame, (px, py), (px + w // 8, py + h // 7), (30, 30, 30), 1)
        d = lay.door
        cv2.rectangle(frame, (d.x - 2, d.y - 2), (d.right + 1, d.bottom), (215, 215, 215), -1)
        return frame

    def _draw_door(self, frame: Frame, opened: float) -> None:
        """The door panel, hinged on its left edge; ``opened`` 0 (shut) to 1 (wide open)."""
        d = self.layout.door
        cv2.rectangle(frame, (d.x, d.y), (d.right - 1, d.bottom - 1), (35, 35, 40), -1)
        panel = max(2, round(d.w * (1 - 0.85 * opened)))
        cv2.rectangle(frame, (d.x, d.y), (d.x + panel - 1, d.bottom - 1), (40, 75, 125), -1)
        knob = (d.x + panel - max(3, panel // 6), d.y + d.h // 2)
        cv2.circle(frame, knob, max(1, d.w // 14), (40, 190, 220), -1)

    def _actor_colour(self, actor: Actor, salt: str) -> tuple[int, int, int]:
        rng = random.Random(f"{self._rng_seed}:{actor.start.timestamp()}:{salt}")
        palette = [(40, 40, 160), (150, 60, 30), (30, 120, 40), (60, 30, 90), (20, 20, 20)]
        return palette[rng.randrange(len(palette))]

    def _draw_person(self, frame: Frame, actor: Actor, p: float) -> None:
        lay = self.layout
        bw = max(8, round(lay.width * 0.09))
        cx = round(-bw + p * (lay.width + 2 * bw))
        feet = round(lay.height * 0.90)
        top = round(lay.height * 0.42)
        colour = self._actor_colour(actor, "shirt")
        half = bw // 2
        cv2.ellipse(
            frame, (cx, (top + feet) // 2), (half, (feet - top) // 2), 0, 0, 360, colour, -1
        )
        r = max(3, round(lay.height * 0.05))
        cv2.circle(frame, (cx, top - r + 2), r, (80, 120, 170), -1)

    def _draw_pet(self, frame: Frame, actor: Actor, p: float) -> None:
        lay = self.layout
        bw = max(10, round(lay.width * 0.14))
        bh = max(6, round(lay.height * 0.09))
        cx = round(-bw + p * (lay.width + 2 * bw))
        cy = round(lay.height * 0.93) - bh // 2
        colour = self._actor_colour(actor, "fur")
        cv2.ellipse(frame, (cx, cy), (bw // 2, bh // 2), 0, 0, 360, colour, -1)
        cv2.circle(frame, (cx + bw // 2, cy - bh // 3), max(2, bh // 2), colour, -1)


def _door_swing(p: float) -> float:
    """Open over the first half of the actor's time, shut over the second."""
    return math.sin(math.pi * p)


def _draw_text(frame: Frame, lay: Layout, second: int) -> None:
    t = lay.text
    cv2.rectangle(frame, (t.x, t.y), (t.right - 1, t.bottom - 1), (0, 0, 0), -1)
    text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S")
    scale, thickness = _text_style(lay.height)
    (_, th), _ = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(2, lay.block // 2)
    origin = (t.x + pad, t.y + pad + th)
    cv2.putText(frame, text, origin, _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def crc8(data: bytes) -> int:
    """CRC-8 with polynomial x^8 + x^2 + x + 1 (0x07), initial value 0, no reflection."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def strip_bits(second: int) -> list[int]:
    """The 48 bits of the time strip for a unix second (module docstring)."""
    if not 0 <= second < 1 << 32:
        raise SceneError("The time strip holds unix seconds from 1970 to 2106.")
    payload = second.to_bytes(4, "big")
    value_bits = [(second >> (31 - i)) & 1 for i in range(32)]
    check = crc8(payload)
    check_bits = [(check >> (7 - i)) & 1 for i in range(8)]
    return [*_SYNC_HEAD, *value_bits, *check_bits, *_SYNC_TAIL]


def _draw_strip(frame: Frame, lay: Layout, second: int) -> None:
    b, s = lay.block, lay.strip
    for i, bit in enumerate(strip_bits(second)):
        row, col = divmod(i, _STRIP_COLS)
        x, y = s.x + col * b, s.y + row * b
        frame[y : y + b, x : x + b] = 255 if bit else 0


def read_timestamp(frame: Frame) -> datetime | None:
    """The UTC second stamped into ``frame``'s time strip, or None if there is no valid one.

    Samples the middle half of each block, thresholds the luma halfway between black and
    white, and accepts only a strip whose sync nibbles and CRC-8 agree.
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise SceneError("read_timestamp expects a BGR frame (height x width x 3).")
    lay = Layout.for_size(frame.shape[1], frame.shape[0])
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    b, s, q = lay.block, lay.strip, max(1, lay.block // 4)
    bits = []
    for i in range(_STRIP_COLS * _STRIP_ROWS):
        row, col = divmod(i, _STRIP_COLS)
        x, y = s.x + col * b, s.y + row * b
        bits.append(1 if grey[y + q : y + b - q, x + q : x + b - q].mean() >= 128 else 0)
    if tuple(bits[:4]) != _SYNC_HEAD or tuple(bits[-4:]) != _SYNC_TAIL:
        return None
    second = int("".join(map(str, bits[4:36])), 2)
    check = int("".join(map(str, bits[36:44])), 2)
    if crc8(second.to_bytes(4, "big")) != check:
        return None
    return datetime.fromtimestamp(second, UTC)
