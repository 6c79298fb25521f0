"""A simulated camera that records: real H.264 segments or sized placeholders.

It watches its room all the time, whatever its recording mode: motion detection (opencv
background subtraction on its own frames; scripted ground truth in synthetic mode) runs
in every mode and reports each event, so a continuous timeline carries event marks too.
It follows its desired recording mode (R1): ``continuous`` uploads a segment of
``segment_seconds`` for every stretch of its clock; ``event`` uploads one-minute clips,
an event during a running clip joining it (:mod:`simulators.clips`: clips never
overlap); ``off`` records nothing. With real media its video is one continuous H.264
stream cut at key frames (:mod:`simulators.stream`): segments and clips played one after
the other are one stream, counters and timestamps running on across boundaries.
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
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import aiohttp
import aiomqtt

from simulators.clips import CLIP_SECONDS, PRE_ROLL_SECONDS, ClipPlan, floor_to
from simulators.device import SimulatedDevice
from simulators.media import MotionDetector, synthetic_segment
from simulators.scene import Frame, Layout, Scene
from simulators.stream import KEYFRAME_SECONDS, MediaError, Recorder

log = logging.getLogger(__name__)

Media = Literal["real", "synthetic"]
__all__ = ["CLIP_SECONDS", "PRE_ROLL_SECONDS", "CameraSimulator", "Media", "UploadOutcome"]

#: Video a recording camera holds: a clip is uploaded within a segment of its end.
HOLD_SECONDS = CLIP_SECONDS + 60
#: A camera this far behind its clock (the clock jumped, or runs faster than frames can be
#: drawn) skips ahead to the present: a gap in its recording, as an offline camera has.
MAX_LAG = timedelta(seconds=60)


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
        if media == "real" and record and segment_seconds % KEYFRAME_SECONDS:
            # Segments and clips start on key frames (simulators.stream).
            raise ValueError(
                f"segment_seconds must be a multiple of the {KEYFRAME_SECONDS}-s key-frame "
                "interval for a camera that records real video"
            )
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
        #: The stream media_for() cuts its segments from (real media).
        self._segments: Recorder | None = None
        self._clips = ClipPlan(grid=timedelta(seconds=KEYFRAME_SECONDS))
        #: The end of the last stretch the recording loop has been through.
        self.recorded_until: datetime | None = None

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
        """The video of ``[start, start + seconds)``: with real media, cut from one stream
        that carries on whenever a segment starts where the last one ended."""
        if self.media == "synthetic":
            return synthetic_segment(self.synthetic_bytes, f"{self.device_id}:{start}")
        if self._segments is None:
            self._segments = Recorder(self.scene, keep_s=CLIP_SECONDS)
        return self._segments.segment(start, seconds)

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
        """Stretch after stretch of ``segment_seconds`` on the clock's grid: watch and
        record it, report its events, upload what is due (module docstring)."""
        step = timedelta(seconds=self.segment_seconds)
        recorder = Recorder(self.scene, keep_s=HOLD_SECONDS) if self.media == "real" else None
        cursor = floor_to(self.clock.now(), step)
        if recorder is not None:
            recorder.restart(cursor)
        try:
            async with aiohttp.ClientSession() as http:
                while True:
                    await self._until(cursor + step)
                    if self.clock.now() - (cursor + step) > MAX_LAG:
                        cursor = floor_to(self.clock.now(), step) - step
                        self._clips = replace(self._clips, running=None, ended=())
                        if recorder is not None:
                            recorder.restart(cursor)
                    try:
                        await self._stretch(http, recorder, cursor, cursor + step)
                    except (
                        TimeoutError,
                        aiohttp.ClientError,
                        aiomqtt.MqttError,
                        MediaError,
                    ) as exc:
                        self.outcomes["errors"] += 1
                        log.warning("%s: recording failed: %s", self.device_id, exc)
                    cursor += step
                    self.recorded_until = cursor
        finally:
            if recorder is not None:
                recorder.close()

    async def _stretch(
        self, http: aiohttp.ClientSession, recorder: Recorder | None, start: datetime, end: datetime
    ) -> None:
        mode = self.mode
        for at, kind, score in await self._watch(recorder, start, end, record=mode != "off"):
            event_id = f"{self.device_id}-ev-{int(at.timestamp() * 1000)}"
            await self.report_event(event_id=event_id, kind=kind, at=at, score=score)
            if mode == "event":
                earliest = recorder.earliest if recorder is not None else None
                self._clips, placed = self._clips.add(event_id, at, earliest=earliest)
                self.outcomes[f"event:{placed}"] += 1
        if mode == "continuous":
            data = recorder.video(start, end) if recorder is not None else None
            await self.upload(http, start=start, seconds=self.segment_seconds, data=data)
        self._clips, clips = self._clips.due(end)
        for clip in clips:
            try:
                data = recorder.video(clip.start, clip.end) if recorder is not None else None
            except MediaError as exc:
                self.outcomes["clip_lost"] += 1
                log.warning("%s: %s", self.device_id, exc)
                continue
            await self.upload(
                http,
                start=clip.start,
                seconds=clip.seconds,
                kind="event",
                event_id=clip.event_id,
                data=data,
            )

    async def _watch(
        self, recorder: Recorder | None, start: datetime, end: datetime, *, record: bool
    ) -> list[tuple[datetime, str, float]]:
        """The events found in ``[start, end)``: detected on the frames as they are drawn
        (real media; an episode is reported when it ends, so it may have begun in the
        stretch before), or the scripted actors that start in it (synthetic)."""
        if recorder is None:
            return [(a.start, a.kind, 1.0) for a in self.scene.actors if start <= a.start < end]
        found: list[tuple[datetime, str, float]] = []

        def watch(at: datetime, frame: Frame) -> None:
            found.extend((e.at, e.type, e.score) for e in self._detector.feed(frame, at))

        await asyncio.to_thread(recorder.record, end, encode=record, watch=watch)
        return found
