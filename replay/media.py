"""Recorded video read back: the frames of a segment and the app's thumbnails of it.

Segments are H.264 in MPEG-TS (R1); :func:`decode_frames` reads them with PyAV into BGR
arrays, :func:`first_frame_jpeg` encodes a segment's first frame as JPEG and
:func:`frame_jpeg_at` the frame nearest an instant of it (an event's thumbnail, R1). Pure
functions of the segment's bytes, no I/O. PyAV and OpenCV take a good part of a second to
import: the gateway imports this module when it first makes a thumbnail.
"""

from __future__ import annotations

import io

import av
import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "DecodeError",
    "decode_first_frame",
    "decode_frames",
    "first_frame_jpeg",
    "frame_at",
    "frame_jpeg_at",
]

Frame = npt.NDArray[np.uint8]


class DecodeError(Exception):
    """The bytes are not a decodable H.264 stream."""

    def __init__(self, size: int, reason: str) -> None:
        super().__init__(f"Could not decode a segment of {size} bytes: {reason}")
        self.size = size
        self.reason = reason


def decode_frames(data: bytes, *, limit: int | None = None) -> list[Frame]:
    """The BGR frames of a segment's first video stream, at most ``limit`` of them."""
    frames: list[Frame] = []
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise DecodeError(len(data), "no video stream")
            for frame in container.decode(container.streams.video[0]):
                frames.append(frame.to_ndarray(format="bgr24").astype(np.uint8, copy=False))
                if limit is not None and len(frames) >= limit:
                    break
    except av.FFmpegError as exc:
        raise DecodeError(len(data), str(exc)) from exc
    return frames


def decode_first_frame(data: bytes) -> Frame:
    """The first decodable frame of a segment, as a BGR array."""
    frames = decode_frames(data, limit=1)
    if not frames:
        raise DecodeError(len(data), "no frame could be decoded")
    return frames[0]


def first_frame_jpeg(data: bytes) -> bytes:
    """The first frame of a segment as JPEG: its thumbnail."""
    ok, jpeg = cv2.imencode(".jpg", decode_first_frame(data))
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(jpeg.tobytes())


def _seconds(frame: av.VideoFrame, origin: int | None) -> float | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return float((frame.pts - (origin or 0)) * frame.time_base)


def _nearest(container: av.container.InputContainer, offset_s: float) -> Frame | None:
    """Decode forward from where the container stands to the frame nearest ``offset_s``
    seconds after the stream's start; ``None`` if the first frame decoded is already past
    it (a seek that overshot) or there is none."""
    stream = container.streams.video[0]
    origin = stream.start_time
    best: tuple[float, av.VideoFrame] | None = None
    for frame in container.decode(stream):
        at = _seconds(frame, origin)
        if at is None:
            continue
        if best is None and at > offset_s + 1e-3:
            return None
        if best is not None and abs(at - offset_s) > abs(best[0] - offset_s):
            break  # frames only move away from the instant from here on
        best = (at, frame)
        if at >= offset_s:
            break
    if best is None:
        return None
    return best[1].to_ndarray(format="bgr24").astype(np.uint8, copy=False)


def frame_at(data: bytes, offset_s: float) -> Frame:
    """The frame of a segment nearest ``offset_s`` seconds after its first frame (the last
    frame for an offset past the end). PyAV seeks to the key frame at or before the
    instant, then decodes forward; a stream it cannot seek in is decoded from its start."""
    if not offset_s >= 0:
        raise ValueError(f"the offset must be a non-negative number of seconds, not {offset_s}")
    try:
        for seek in (True, False):
            with av.open(io.BytesIO(data), mode="r") as container:
                if not container.streams.video:
                    raise DecodeError(len(data), "no video stream")
                stream = container.streams.video[0]
                if seek and stream.time_base is not None:
                    target = int(offset_s / stream.time_base) + (stream.start_time or 0)
                    try:
                        container.seek(target, stream=stream, backward=True, any_frame=False)
                    except av.FFmpegError:
                        continue
                frame = _nearest(container, offset_s)
                if frame is not None:
                    return frame
    except av.FFmpegError as exc:
        raise DecodeError(len(data), str(exc)) from exc
    raise DecodeError(len(data), "no frame could be decoded")


def frame_jpeg_at(data: bytes, offset_s: float) -> bytes:
    """The frame nearest ``offset_s`` seconds into a segment as JPEG: an event's thumbnail."""
    ok, jpeg = cv2.imencode(".jpg", frame_at(data, offset_s))
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(jpeg.tobytes())
