"""Companion-app saves to the family cloud (一键转存, R14), closed by long stops (R15).

A saved clip is a copy of a viewable segment under the account's family-cloud prefix,
outside replay retention, counted against the family-cloud quota; saving the same
segment again answers the item already saved.
"""

from __future__ import annotations

from aiohttp import web
from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from devices import broadband_store
from devices.models import Account
from gateway.http.api import Api, ApiError, Out, json_out
from gateway.http.requests import app_token_of, services_of, viewable_segment
from replay.models import FamilyCloudItem
from replay.recording import family_key

api = Api()


class SavedOut(Out):
    item_id: int
    segment_id: str
    bytes: int
    used_bytes: int
    quota_bytes: int


async def _used_bytes(session: AsyncSession, account_id: str) -> int:
    return int(
        (
            await session.exec(
                select(func.coalesce(func.sum(FamilyCloudItem.bytes), 0)).where(
                    FamilyCloudItem.account_id == account_id
                )
            )
        ).one()
    )


async def _saved(session: AsyncSession, object_key: str) -> FamilyCloudItem | None:
    return (
        await session.exec(select(FamilyCloudItem).where(FamilyCloudItem.object_key == object_key))
    ).first()


@api.route(
    "POST",
    "/app/v1/segments/{segment_id}/save",
    auth="app",
    tag="app",
    summary="Save a clip to the family cloud (R14)",
    response=SavedOut,
    status=201,
    errors=(
        "not_entitled",
        "unsubscribed",
        ("broadband_inactive", 403),
        "previous_subscription",
        "expired",
        "family_cloud_closed",
        "quota_exceeded",
    ),
)
async def save_segment(request: web.Request) -> web.StreamResponse:
    """Save a viewable segment to the account's family cloud in one action (R14): a copy
    outside replay retention, counted against the quota (409 quota_exceeded). Saving it again
    answers the item saved before (200). Closed after three months stopped (409, R15)."""
    services = services_of(request)
    account_id = app_token_of(request).account_id
    quota = services.settings.family_cloud_quota_bytes
    async with services.db.writing() as session:
        # The account's saves go one at a time, so the quota is read and charged in one
        # transaction: a write first takes the account's row lock (PostgreSQL) or the
        # database's write lock (SQLite) until the commit.
        await session.exec(
            update(Account)
            .where(col(Account.account_id) == account_id)
            .values(updated_at=Account.updated_at)
        )
        s = await viewable_segment(request, session)
        if not await broadband_store.family_cloud_open(session, account_id, services.clock.now()):
            raise ApiError(
                409,
                "family_cloud_closed",
                "the family cloud is closed after a long stop",
                rule="R15",
            )
        used = await _used_bytes(session, account_id)
        key = family_key(account_id, s.segment_id, s.start)
        item = await _saved(session, key)
        status = 200  # saved before: the same item again
        if item is None:
            if used + s.bytes > quota:
                raise ApiError(
                    409,
                    "quota_exceeded",
                    f"the family cloud holds {used} of {quota} bytes",
                    rule="R14",
                )
            await services.store.copy(s.object_key, key)
            item = FamilyCloudItem(
                account_id=account_id,
                segment_id=s.segment_id,
                device_id=s.device_id,
                object_key=key,
                bytes=s.bytes,
                saved_at=services.clock.now(),
            )
            session.add(item)
            await session.commit()
            used += s.bytes
            status = 201
    assert item.item_id is not None
    saved = SavedOut(
        item_id=item.item_id,
        segment_id=s.segment_id,
        bytes=item.bytes,
        used_bytes=used,
        quota_bytes=quota,
    )
    return json_out(saved, status)
