"""Where a camera's event clips go (R1): pure, no I/O, table-tested.

On an event plan the camera uploads one-minute clips (R1), each opening ``pre_roll``
before the event that started it. R1 also says that clips of one camera never overlap
and that an event happening while a clip is being recorded joins that clip. So, for each
event reported, in time order, :meth:`ClipPlan.add` decides:

* ``joined``: a clip is running and the event falls inside it. The event joins the clip:
  the clip would be extended to the event plus the post-roll (``length - pre_roll``), but
  a clip is one minute (R1; the service takes 60 +- 2 s) and opens a full minute long, so
  that cap keeps its end where it was. The clip carries several events, the first naming
  it (its ``event_id``); the service links the others by their instants.
* ``covered``: the event is older than the end of the last clip (a detection reported
  after its clip ended; events come in time order, so that clip covers its instant).
* ``opened``: a new clip starts ``pre_roll`` before the event, moved back onto the
  key-frame grid (a clip starts on a key frame), but never before the end of the last
  clip (no overlap) nor before the earliest video the camera still holds; it lasts
  ``length``. The event is always inside it: the start is at most ``pre_roll`` plus one
  key-frame interval before the event.
* ``unrecorded``: the event is older than any video the camera holds: no clip.

:meth:`ClipPlan.due` hands out the clips whose end has been recorded: a clip that ended
before the next event opened a clip waits in ``ended`` until then.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

__all__ = ["CLIP_SECONDS", "PRE_ROLL_SECONDS", "Clip", "ClipPlan", "Placement", "floor_to"]

#: R1: an event plan stores one-minute clips.
CLIP_SECONDS = 60
#: How much of a clip comes before the event that opens it.
PRE_ROLL_SECONDS = 10

Placement = Literal["joined", "covered", "opened", "unrecorded"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_to(at: datetime, grid: timedelta) -> datetime:
    """The last instant of ``grid`` (counted from the Unix epoch) at or before ``at``."""
    return _EPOCH + ((at - _EPOCH) // grid) * grid


@dataclass(frozen=True, slots=True)
class Clip:
    """An event clip ``[start, end)`` and the events it carries, the first naming it."""

    start: datetime
    end: datetime
    event_ids: tuple[str, ...]

    @property
    def event_id(self) -> str:
        return self.event_ids[0]

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def covers(self, at: datetime) -> bool:
        return self.start <= at < self.end


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipPlan:
    """One camera's clips: the running one, those ended but not yet handed out, and the
    end of the last one that ended."""

    length: timedelta = timedelta(seconds=CLIP_SECONDS)
    pre_roll: timedelta = timedelta(seconds=PRE_ROLL_SECONDS)
    #: Clips start on this grid (the camera's key-frame interval).
    grid: timedelta = timedelta(seconds=2)
    running: Clip | None = None
    ended: tuple[Clip, ...] = ()
    closed_until: datetime | None = None

    def __post_init__(self) -> None:
        if not timedelta(0) <= self.pre_roll < self.length:
            raise ValueError("The pre-roll must be at least 0 and shorter than a clip.")
        if not timedelta(0) < self.grid <= self.length:
            raise ValueError("The key-frame grid must be positive and at most a clip long.")

    def add(
        self, event_id: str, at: datetime, *, earliest: datetime | None = None
    ) -> tuple[ClipPlan, Placement]:
        """Place the event at ``at`` (module docstring); ``earliest`` is the oldest video
        the camera holds (None: it can record any past instant, e.g. synthetic media)."""
        plan, running = self, self.running
        if running is not None:
            if running.covers(at):
                # Its end would move to at + post-roll, but one minute is the cap (R1).
                joined = replace(running, event_ids=(*running.event_ids, event_id))
                return replace(plan, running=joined), "joined"
            if at >= running.end:  # it has ended: it waits to be handed out
                plan = replace(
                    plan, running=None, ended=(*plan.ended, running), closed_until=running.end
                )
        if plan.closed_until is not None and at < plan.closed_until:
            return plan, "covered"
        if earliest is not None and at < earliest:
            return plan, "unrecorded"
        start = floor_to(at - plan.pre_roll, plan.grid)
        for bound in (plan.closed_until, earliest):
            if bound is not None:
                start = max(start, bound)
        clip = Clip(start, start + plan.length, (event_id,))
        return replace(plan, running=clip), "opened"

    def due(self, recorded_until: datetime) -> tuple[ClipPlan, tuple[Clip, ...]]:
        """The clips whose end has been recorded, in order; they are handed out."""
        running = self.running
        if running is None or running.end > recorded_until:
            return replace(self, ended=()), self.ended
        plan = replace(self, running=None, ended=(), closed_until=running.end)
        return plan, (*self.ended, running)
