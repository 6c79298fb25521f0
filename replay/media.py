"""Recorded video read back: the frames of a segment and the app's thumbnail of it.

Segments are H.264 in MPEG-TS (R1); :func:`decode_frames` reads them with PyAV into BGR
arrays, and :func:`first_frame_jpeg` encodes a segment's first frame as the JPEG the app
shows. Pure functions of the segment's bytes, no I/O. PyAV and OpenCV take a good part
of a second to import: the gateway imports this module when it first makes a thumbnail.
"""

from __future__ import annotations

import io

import av
import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["DecodeError", "decode_first_frame", "decode_frames", "first_frame_jpeg"]

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
