"""The family cloud under a membership, end to end (issue 18; R14 with R18).

A simulated camera uploads real H.264 through the MQTT handshake; the family saves
segments to its family cloud through the app API. The quota follows the membership's tier;
after an unsubscription takes effect with more saved than the base quota, the family cloud
is read-only for three months (lists and downloads yes, saves no), then the job deletes the
oldest items until the rest fits. The manual clock is moved through the ops API, which runs
the clock-driven jobs. SQLite with the filesystem store, and PostgreSQL with SeaweedFS.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devices.clock import ManualClock
from tests.conftest import T0
from tests.services import Broker
from tests.test_family_cloud_e2e import TWO_STACKS, S, call, record, stored_keys
from tests.test_recording_e2e import Home, home

__all__ = ["home"]

#: The base quota (no membership) and the ordinary tier's, in bytes: one 10-s segment
#: (about 90 kB) fits the base, five fit the ordinary tier.
BASE = 100_000
ORDINARY = 600_000


@pytest.fixture
def home_settings(tmp_path: Path) -> dict[str, Any]:
    plans = tmp_path / "plans.json"
    plans.write_text(
        json.dumps(
            {
                "plans": [
                    {
                        "id": "continuous-30d",
                        "family": "continuous",
                        "retention_days": 30,
                        "monthly_fee": "30.00",
                    }
                ],
                "memberships": [
                    {"id": "ordinary", "monthly_fee": "10.00", "quota_bytes": ORDINARY},
                    {"id": "gold", "monthly_fee": "20.00", "quota_bytes": 4 * ORDINARY},
                ],
            }
        )
    )
    return {
        "family_cloud_quota_bytes": BASE,
        "plans_file": str(plans),
        "app_token_ttl_days": 365,
    }


async def advance_to(home: Home, at: datetime) -> None:
    """Move the clock to ``at``; the ops API then runs every clock-driven job."""
    await home.advance((at - home.gw.services.clock.now()).total_seconds())


async def save(home: Home, segment_id: str) -> tuple[int, Any]:
    status, body = await call(home, "POST", f"/app/v1/segments/{segment_id}/save")
    return int(status), body


async def listed(home: Home) -> Any:
    status, body = await call(home, "GET", "/app/v1/family-cloud")
    assert status == 200, body
    return body


@TWO_STACKS
async def test_the_quota_follows_the_tier_and_an_overflow_is_read_only_then_cleaned(
    home: Home, broker: Broker, clock: ManualClock
) -> None:
    await home.subscribe("cam-1", "continuous-30d", "o-1")
    start = T0 + 100 * S
    ids = await record(home, broker, clock, [start + 10 * i * S for i in range(5)])

    status, first = await save(home, ids[0])
    assert status == 201, first
    assert first["quota_bytes"] == BASE
    status, body = await save(home, ids[1])
    assert (status, body["error"]["code"], body["error"]["rule"]) == (409, "quota_exceeded", "R14")

    status, ordered = await home.platform(
        "POST",
        "/platform/v1/family-cloud/memberships",
        {
            "order_id": "m-1",
            "account_id": "acc-1",
            "tier": "ordinary",
            "orderer_id": "owner-1",
            "channel": "electronic",
        },
    )
    assert status == 201, ordered
    mid = ordered["membership_id"]
    saved = [first]
    for segment_id in ids[1:4]:
        status, item = await save(home, segment_id)
        assert (status, item["quota_bytes"]) == (201, ORDINARY), "R18: the tier's quota"
        saved.append(item)
    now = await listed(home)
    assert (now["quota_bytes"], now["membership_tier"], now["status"]) == (
        ORDINARY,
        "ordinary",
        "open",
    )
    used = sum(item["bytes"] for item in saved)
    assert BASE < used <= ORDINARY, "the test's premise: more than the base quota saved"

    status, body = await home.platform(
        "POST", f"/platform/v1/family-cloud/memberships/{mid}/unsubscribe", {"order_id": "u-1"}
    )
    assert (status, body["status"]) == (200, "unsubscribed")
    status, item = await save(home, ids[4])
    assert status == 201, "in force through the month's end"
    saved.append(item)
    used += item["bytes"]

    # 1 December 00:00 Shanghai: the unsubscription takes effect, in overflow.
    await advance_to(home, datetime(2026, 11, 30, 16, 0, 1, tzinfo=UTC))
    status, read = await home.platform("GET", f"/platform/v1/family-cloud/memberships/{mid}")
    assert (read["status"], read["overflow"]) == ("ended", "read_only")
    until = datetime(2027, 2, 28, 16, tzinfo=UTC)  # 1 March 00:00 Shanghai
    assert datetime.fromisoformat(read["read_only_until"]) == until
    now = await listed(home)
    assert (now["status"], now["quota_bytes"], now["used_bytes"], len(now["items"])) == (
        "read_only",
        BASE,
        used,
        5,
    )
    assert "membership_tier" not in now
    status, body = await call(home, "DELETE", f"/app/v1/family-cloud/{saved[0]['item_id']}")
    assert status == 200, "deleting goes on"
    saved, used = saved[1:], used - saved[0]["bytes"]
    status, body = await save(home, ids[0])
    assert (status, body["error"]["code"], body["error"]["rule"]) == (
        409,
        "family_cloud_read_only",
        "R18",
    )
    status, item = await call(home, "GET", f"/app/v1/family-cloud/{saved[-1]['item_id']}")
    assert status == 200, "downloads go on"
    async with aiohttp.ClientSession() as anonymous, anonymous.get(item["url"]) as got:
        assert got.status == 200

    await home.advance(86400)  # the job again, a day on: nothing more happens
    assert len((await listed(home))["items"]) == 4

    await advance_to(home, until)
    now = await listed(home)
    kept = [i["item_id"] for i in reversed(now["items"])]  # the oldest first
    doomed = []
    left = used
    for item in saved:  # saved oldest first: the cleanup's order
        if left > BASE:
            doomed.append(item["item_id"])
            left -= item["bytes"]
    assert doomed, "the test's premise: something to clean up"
    assert kept == [i["item_id"] for i in saved if i["item_id"] not in doomed]
    assert (now["status"], now["used_bytes"]) == ("open", left)
    assert now["used_bytes"] <= BASE
    assert len(await stored_keys(home)) == len(kept), "the objects went with the items"
    status, read = await home.platform("GET", f"/platform/v1/family-cloud/memberships/{mid}")
    assert read["overflow"] == "cleaned"
