"""The family cloud in the companion app (一键转存, R14; closures, R15; issue 15).

A segment is saved as it is (a copy), a range of a camera's recording as one MP4; both are
outside replay retention and count against the account's quota. The family lists its
items with the quota used and left, gets a short-lived download URL of one, and deletes
one to free its bytes. Long stops close the family cloud to saves, then delete it
(R15; :mod:`replay.clips` says how closed reads). The orchestration is
:mod:`gateway.family_cloud`; items and devices of another account are 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import AwareDatetime, model_validator

from devices.errors import NotFound
from gateway import family_cloud
from gateway.http.api import Api, Body, Out, json_out, parse_body
from gateway.http.requests import (
    RANGE,
    SEGMENT,
    WATCHING,
    Identifier,
    app_token_of,
    services_of,
    viewable_segment,
    watchable,
)
from replay.models import FamilyCloudItem

api = Api()


class ItemOut(Out):
    item_id: int
    device_id: str
    #: The segment saved as it is; absent for a range saved as MP4.
    segment_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    bytes: int
    saved_at: datetime
    content_type: str

    @classmethod
    def of(cls, item: FamilyCloudItem) -> ItemOut:
        assert item.item_id is not None
        return cls(
            item_id=item.item_id,
            device_id=item.device_id,
            segment_id=item.segment_id,
            start=item.start,
            end=item.end,
            bytes=item.bytes,
            saved_at=item.saved_at,
            content_type="video/mp4" if item.object_key.endswith(".mp4") else "video/mp2t",
        )


class QuotaOut(Out):
    used_bytes: int
    quota_bytes: int
    left_bytes: int


class SavedOut(ItemOut):
    used_bytes: int
    quota_bytes: int
    left_bytes: int


class ListOut(QuotaOut):
    #: R15: ``open``, or ``closed`` (no saves; the list, downloads and deletes go on);
    #: R18: ``read_only`` after a membership ended with more saved than the quota left.
    status: Literal["open", "closed", "read_only"]
    #: R18: until when it is read-only (then the oldest items go until the rest fits).
    read_only_until: datetime | None = None
    #: R18: the tier of the family-cloud membership held (its quota); absent: the base quota.
    membership_tier: str | None = None
    items: list[ItemOut]


class DownloadOut(ItemOut):
    url: str
    expires_in: int


class DeletedOut(QuotaOut):
    item_id: int


class SaveRange(Body):
    device_id: Identifier
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> SaveRange:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


def _saved(saved: family_cloud.Saved) -> web.Response:
    quota = saved.quota
    out = SavedOut(
        **ItemOut.of(saved.item).model_dump(),
        used_bytes=quota.used,
        quota_bytes=quota.quota,
        left_bytes=quota.left,
    )
    return json_out(out, 201 if saved.created else 200)


def _item_id(request: web.Request) -> int:
    raw = request.match_info["item_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound("family-cloud item", repr(raw))
    return int(raw)


@api.route(
    "POST",
    "/app/v1/segments/{segment_id}/save",
    auth="app",
    tag="app",
    summary="Save a clip to the family cloud (R14)",
    response=SavedOut,
    status=201,
    errors=(*SEGMENT, "family_cloud_closed", "family_cloud_read_only", "quota_exceeded"),
)
async def save_segment(request: web.Request) -> web.StreamResponse:
    """Copy one viewable segment (R5, R6, R8) into the account's family cloud as it is,
    outside replay retention, counted against the quota (R14): 201 with the item and the
    quota after it, 200 with the item saved before if the segment was saved already, 409
    ``quota_exceeded`` (R14; the membership's quota, R18), ``family_cloud_closed`` (R15) or
    ``family_cloud_read_only`` (R18)."""
    services = services_of(request)
    async with services.db.session() as session:
        segment = await viewable_segment(request, session)
    account_id = app_token_of(request).account_id
    return _saved(await family_cloud.save_segment(services, account_id, segment))


@api.route(
    "POST",
    "/app/v1/family-cloud",
    auth="app",
    tag="app",
    summary="Save a range of a camera's recording to the family cloud as MP4 (R14)",
    body=SaveRange,
    response=SavedOut,
    status=201,
    errors=(
        *RANGE,
        *WATCHING,
        "previous_subscription",
        "no_recording",
        "family_cloud_closed",
        "family_cloud_read_only",
        "quota_exceeded",
    ),
)
async def save_range(request: web.Request) -> web.StreamResponse:
    """Export what the camera recorded in ``[start, end)`` and the family may watch (R5,
    R6, R8) as one MP4, at most an hour (400 ``range_too_long``; 404 ``no_recording``),
    and keep it in the account's family cloud, outside replay retention, counted against
    the quota (R14): 201 with the item and the quota after it, 200 with the item if that
    exact range was saved already, 409 ``quota_exceeded`` (R14; the membership's quota,
    R18), ``family_cloud_closed`` (R15) or ``family_cloud_read_only`` (R18)."""
    services = services_of(request)
    body = parse_body(await request.read(), SaveRange)
    account_id = app_token_of(request).account_id
    async with services.db.session() as session:
        current = await watchable(session, account_id, body.device_id)
    return _saved(
        await family_cloud.save_range(services, account_id, current, body.start, body.end)
    )


@api.route(
    "GET",
    "/app/v1/family-cloud",
    auth="app",
    tag="app",
    summary="The family cloud's items and its quota (R14, R15, R18)",
    response=ListOut,
    errors=("family_cloud_deleted",),
)
async def list_items(request: web.Request) -> web.StreamResponse:
    """The account's saved items, the latest first (device, range, bytes, when saved), with
    the quota used and left (R14: the membership's, R18) and whether the family cloud is open,
    closed to saves (R15) or read-only after a membership ended in overflow (R18); 404
    ``family_cloud_deleted`` once a six-month stop has deleted it (R15)."""
    services = services_of(request)
    found = await family_cloud.listing(services, app_token_of(request).account_id)
    assert found.status != "deleted"  # refused before
    read_only = found.status == "open" and found.read_only_until is not None
    return json_out(
        ListOut(
            status="read_only" if read_only else found.status,
            read_only_until=found.read_only_until,
            membership_tier=found.tier,
            items=[ItemOut.of(item) for item in found.items],
            used_bytes=found.quota.used,
            quota_bytes=found.quota.quota,
            left_bytes=found.quota.left,
        )
    )


@api.route(
    "GET",
    "/app/v1/family-cloud/{item_id}",
    auth="app",
    tag="app",
    summary="One saved item with a short-lived download URL",
    response=DownloadOut,
    errors=("family_cloud_deleted",),
)
async def get_item(request: web.Request) -> web.StreamResponse:
    """One of the account's saved items with a presigned URL that downloads it for
    ``url_ttl_seconds``; still served while the family cloud is closed to saves, 404
    ``family_cloud_deleted`` once deleted (R15); another account's item is 404."""
    services = services_of(request)
    account_id = app_token_of(request).account_id
    item, url = await family_cloud.download(services, account_id, _item_id(request))
    return json_out(
        DownloadOut(
            **ItemOut.of(item).model_dump(), url=url, expires_in=services.settings.url_ttl_seconds
        )
    )


@api.route(
    "DELETE",
    "/app/v1/family-cloud/{item_id}",
    auth="app",
    tag="app",
    summary="Delete a saved item and free its quota (R14)",
    response=DeletedOut,
    errors=("family_cloud_deleted",),
)
async def delete_item(request: web.Request) -> web.StreamResponse:
    """Delete one of the account's saved items, its object first; its bytes no longer count
    against the quota (R14), and the answer says what is used and left. Allowed while the
    family cloud is closed to saves; 404 ``family_cloud_deleted`` once deleted (R15)."""
    services = services_of(request)
    item_id = _item_id(request)
    quota = await family_cloud.remove(services, app_token_of(request).account_id, item_id)
    return json_out(
        DeletedOut(
            item_id=item_id, used_bytes=quota.used, quota_bytes=quota.quota, left_bytes=quota.left
        )
    )
