"""Clips the family takes away (issue 15): MP4 exports and the family cloud (R14, R15).

Pure decisions, no I/O; the remux itself is :mod:`replay.export`, the family cloud's SQL
:mod:`replay.family_cloud_store`, the orchestration ``gateway.exports`` and
``gateway.family_cloud``.

- **Exports (R5, R6, R8).** Only what the family may watch is exported: the gateway reads
  the segments the timeline would show. :func:`export_refusal` bounds the range: at most
  :data:`MAX_EXPORT` (one hour). An export of a range with nothing recorded is
  :class:`NothingRecorded`.
- **Quota (R14).** A saved item counts its bytes against the account's family-cloud quota:
  :func:`quota_refusal` refuses a save that would pass it; deleting an item frees them.
- **Closures (R15).** :func:`family_cloud_refusal` says what the family may do with its
  family cloud in each R15 status. R15 closes the cloud to *uploads and saves* after three
  months stopped, and deletes it, data and all, after six. Read here: while closed the
  family still browses, downloads and deletes what it saved (the rule forbids only putting
  more in; R18 reads the same way, "keeps browsing and downloading but cannot save or
  upload"); once deleted there is nothing left to list, fetch or delete, even before the
  R15 job has removed the objects: ``family_cloud_deleted``, gone (R15).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, TypeAlias

from devices.broadband import FamilyCloudStatus
from devices.clock import aware_utc
from devices.errors import Conflict, DomainError, Gone, Invalid, NotFound

__all__ = [
    "MAX_EXPORT",
    "FamilyCloudUse",
    "NothingRecorded",
    "export_refusal",
    "family_cloud_refusal",
    "quota_refusal",
]

#: The longest range one MP4 export covers (issue 15).
MAX_EXPORT = timedelta(hours=1)

#: What the family does with its family cloud.
FamilyCloudUse: TypeAlias = Literal["save", "list", "download", "delete"]


class NothingRecorded(NotFound):
    """Nothing the family may watch was recorded in the range asked for an export."""

    code = "no_recording"

    def __init__(self, device_id: str, start: datetime, end: datetime) -> None:
        super().__init__("recording", f"from {start.isoformat()} to {end.isoformat()}")
        self.message = (
            f"{device_id} recorded nothing viewable from {start.isoformat()} to {end.isoformat()}"
        )
        self.args = (self.message,)


def export_refusal(start: datetime, end: datetime) -> DomainError | None:
    """Whether ``[start, end)`` may be exported as one MP4: ``None``, or why not."""
    start, end = aware_utc(start, "start"), aware_utc(end, "end")
    if end <= start:
        return Invalid("the range must end after it starts", code="invalid_range")
    if end - start > MAX_EXPORT:
        return Invalid(
            f"an export covers at most {MAX_EXPORT.total_seconds() / 3600:g} hour, "
            f"not {(end - start).total_seconds():g} s",
            code="range_too_long",
        )
    return None


def quota_refusal(used: int, adding: int, quota: int) -> Conflict | None:
    """R14: ``None`` if ``adding`` bytes fit beside the ``used`` ones, else the refusal."""
    if used + adding > quota:
        return Conflict(
            f"the family cloud holds {used} of {quota} bytes: {adding} more do not fit",
            code="quota_exceeded",
            rule="R14",
        )
    return None


def family_cloud_refusal(status: FamilyCloudStatus, use: FamilyCloudUse) -> DomainError | None:
    """R15: ``None`` if the family may ``use`` its family cloud in ``status``, else why not
    (see the module docstring for how closed is read)."""
    if status == "open":
        return None
    if use == "save":
        return Conflict(
            "the family cloud is closed after a long stop: nothing more can be saved",
            code="family_cloud_closed",
            rule="R15",
        )
    if status == "deleted":
        return Gone(
            "the family cloud and its data were deleted after six months stopped",
            code="family_cloud_deleted",
            rule="R15",
        )
    return None  # closed: browsing, downloading and deleting go on
