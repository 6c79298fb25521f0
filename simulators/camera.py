"""A simulated camera that records: real H.264 segments or sized placeholders.

It follows its desired recording mode (R1): ``continuous`` uploads a segment of
``segment_seconds`` for every stretch of its clock; ``event`` detects motion on its own
frames (opencv background subtraction; scripted ground truth in synthetic mode) and
uploads one one-minute clip per event, the event inside it; ``off`` records nothing.
Each upload is the MQTT contract's handshake: ``upload/req`` → ``upload/res`` (a
presigned PUT URL or a refusal) → HTTP PUT → ``segment``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import aiohttp
import aiomqtt

from simulators.device import SimulatedDevice
from simulators.media import MotionDetector, encode_segment, synthetic_segment
from simulators.scene import Layout, Scene

log = logging.getLogger(__name__)

Media = Literal["real", "synthetic"]
CLIP_SECONDS = 60
PRE_ROLL_SECONDS = 10


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    segment_id: str
    ok: bool
    code: str | None = None
    key: str | None = None
    data: bytes | None = None


class CameraSimulator(SimulatedDevice):
    listens: tuple[str, ...] = ("desired", "upload/res")

    def __init__(
        self,
        *,
        device_id: str,
        mqtt_url: str,
        media: Media = "real",
        segment_seconds: float = 10.0,
        synthetic_bytes: int = 66_000,
        scene: Scene | None = None,
        record: bool = True,
        response_timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(device_id=device_id, kind="camera", mqtt_url=mqtt_url, **kwargs)
        if not 0 < segment_seconds <= 60:
            raise ValueError("segment_seconds must be more than 0 and at most 60")
        if media not in ("real", "synthetic"):
            raise ValueError("media must be real or synthetic")
        self.media = media
        self.segment_seconds = segment_seconds
        self.synthetic_bytes = synthetic_bytes
        self.scene = scene if scene is not None else Scene(seed=device_id)
        self.record = record
        self.response_timeout = response_timeout
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self.outcomes: Counter[str] = Counter()
        self._detector = MotionDetector(layout=Layout.for_size(self.scene.width, self.scene.height))

    @property
    def mode(self) -> str:
        recording = self.desired.get("recording", {})
        return str(recording.get("mode", "off")) if isinstance(recording, dict) else "off"

    async def on_message(
        self, client: aiomqtt.Client, suffix: str, payload: dict[str, Any]
    ) -> None:
        if suffix == "upload/res":
            waiter = self._waiting.pop(str(payload.get("req_id")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(payload)
            return
        await super().on_message(client, suffix, payload)

    # -- media -------------------------------------------------------------------------
    def media_for(self, start: datetime, seconds: float) -> bytes:
        if self.media == "synthetic":
            return synthetic_segment(self.synthetic_bytes, f"{self.device_id}:{start}")
        return encode_segment(
            self.scene, start, seconds, width=self.scene.width, height=self.scene.height
        )

    # -- the upload handshake ----------------------------------------------------------
    async def upload(
        self,
        http: aiohttp.ClientSession,
        *,
        start: datetime,
        seconds: float,
        kind: str = "continuous",
        event_id: str | None = None,
        data: bytes | None = None,
    ) -> UploadOutcome:
        client = self.client
        if client is None:
            raise RuntimeError(f"{self.device_id} is not connected")
        if data is None:
            data = await asyncio.to_thread(self.media_for, start, seconds)
        n = next(self._ids)
        segment_id = f"{self.device_id}-{int(start.timestamp())}-{n}"
        req_id = f"r{n}"
        notice: dict[str, Any] = {
            "segment_id": segment_id,
            "kind": kind,
            "start": start.isoformat(),
            "end": (start + timedelta(seconds=seconds)).isoformat(),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if event_id is not None:
            notice["event_id"] = event_id
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = waiter
        await self.publish(client, "upload/req", {"req_id": req_id, **notice})
        try:
            answer = await asyncio.wait_for(waiter, self.response_timeout)
        finally:
            self._waiting.pop(req_id, None)
        if not answer.get("ok"):
            code = str(answer.get("code"))
            self.outcomes[f"refused:{code}"] += 1
            return UploadOutcome(segment_id, ok=False, code=code)
        headers = {str(k): str(v) for k, v in dict(answer.get("headers") or {}).items()}
        async with http.put(str(answer["url"]), data=data, headers=headers) as response:
            if response.status >= 300:
                self.outcomes["put_failed"] += 1
                return UploadOutcome(segment_id, ok=False, code=f"http_{response.status}")
        await client.publish(self.topic("segment"), json.dumps(notice), qos=1)
        self.outcomes["uploaded"] += 1
        return UploadOutcome(segment_id, ok=True, key=str(answer.get("key")), data=data)

    async def report_event(self, *, event_id: str, kind: str, at: datetime, score: float) -> None:
        client = self.client
        if client is None:
            raise RuntimeError(f"{self.device_id} is not connected")
        await self.publish(
            client,
            "event",
            {"event_id": event_id, "type": kind, "at": at.isoformat(), "score": score},
        )

    # -- the recording loop ------------------------------------------------------------
    def background(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        return [("record", self._record())] if self.record else []

    async def _record(self) -> None:
        async with aiohttp.ClientSession() as http:
            cursor = self.clock.now()
            pending_clips: list[tuple[datetime, str]] = []
            while True:
                await self.clock.sleep(self.segment_seconds)
                start, cursor = cursor, self.clock.now()
                seconds = min((cursor - start).total_seconds(), 60.0)
                start = cursor - timedelta(seconds=seconds)
                try:
                    if self.mode == "continuous":
                        await self.upload(http, start=start, seconds=seconds)
                    elif self.mode == "event":
                        pending_clips += await self._detect(start, seconds)
                        pending_clips = await self._upload_due_clips(http, pending_clips)
                except (TimeoutError, aiohttp.ClientError, aiomqtt.MqttError) as exc:
                    self.outcomes["errors"] += 1
                    log.warning("%s: recording failed: %s", self.device_id, exc)

    async def _detect(self, start: datetime, seconds: float) -> list[tuple[datetime, str]]:
        end = start + timedelta(seconds=seconds)
        found: list[tuple[datetime, str, float]] = []
        if self.media == "synthetic":
            found = [(a.start, a.kind, 1.0) for a in self.scene.actors if start <= a.start < end]
        else:
            frames = await asyncio.to_thread(lambda: list(self.scene.frames(start, seconds, 10)))
            for event in self._detector.detect(frames):
                found.append((event.at, event.type, event.score))
        clips = []
        for at, kind, score in found:
            event_id = f"{self.device_id}-ev-{int(at.timestamp() * 1000)}"
            await self.report_event(event_id=event_id, kind=kind, at=at, score=score)
            clips.append((at - timedelta(seconds=PRE_ROLL_SECONDS), event_id))
        return clips

    async def _upload_due_clips(
        self, http: aiohttp.ClientSession, clips: list[tuple[datetime, str]]
    ) -> list[tuple[datetime, str]]:
        now, waiting = self.clock.now(), []
        for clip_start, event_id in clips:
            if clip_start + timedelta(seconds=CLIP_SECONDS) <= now:
                await self.upload(
                    http, start=clip_start, seconds=CLIP_SECONDS, kind="event", event_id=event_id
                )
            else:
                waiting.append((clip_start, event_id))
        return waiting
