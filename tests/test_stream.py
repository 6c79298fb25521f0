"""A simulated camera's video is one stream cut as an HLS segmenter cuts it (issue 15, 4).

Real media, checked by the tools a player is built on: FFmpeg decodes consecutive
segments joined (as one file and through its concat demuxer, as an HLS player reads a
playlist) without "Packet corrupt", "DTS out of order" or "non monotonic"; ffprobe's
packet times step exactly one frame across every boundary; the MPEG-TS continuity
counters, parsed here, run on from one segment to the next.
"""

from __future__ import annotations

import io
import itertools
import shutil
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import pytest

from replay.media import decode_first_frame
from simulators.camera import CameraSimulator
from simulators.scene import Actor, Scene, read_timestamp
from simulators.stream import (
    KEYFRAME_SECONDS,
    TS_CLOCK,
    Chunk,
    MediaError,
    Recorder,
    TsStream,
    encode_segment,
)

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
FPS = 10
FRAME_TICKS = TS_CLOCK // FPS
#: What FFmpeg says at a broken boundary (the issue's measurements).
BROKEN = ("Packet corrupt", "DTS out of order", "non monotonic", "discontinuity")

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="needs ffmpeg and ffprobe (Debian package ffmpeg)",
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def scene() -> Scene:
    return Scene(
        seed="cam-stream",
        actors=[
            Actor(kind="person", start=at(3), duration_s=4),
            Actor(kind="door", start=at(21), duration_s=3),
        ],
    )


def ffmpeg_errors(*args: str) -> str:
    """FFmpeg's complaints (stderr at ``-v error``) decoding the input ``args`` name."""
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", *args, "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def packet_pts(path: Path) -> list[int]:
    done = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-select_streams", "v:0"),
            *("-show_entries", "packet=pts", "-of", "csv=p=0", str(path)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return [int(line.strip(",")) for line in done.stdout.split() if line.strip(",")]


def continuity_breaks(data: bytes) -> list[tuple[int, int]]:
    """``(packet number, PID)`` of every MPEG-TS packet whose continuity counter does not
    follow its PID's last one (ISO/IEC 13818-1 2.4.3.3: +1 mod 16 on each payload)."""
    assert len(data) % 188 == 0
    last: dict[int, int] = {}
    breaks = []
    for n in range(len(data) // 188):
        packet = data[n * 188 : (n + 1) * 188]
        assert packet[0] == 0x47, f"packet {n} is not in sync"
        pid = (packet[1] & 0x1F) << 8 | packet[2]
        has_payload, counter = bool(packet[3] & 0x10), packet[3] & 0x0F
        if pid == 0x1FFF or not has_payload:
            continue
        if pid in last and counter != (last[pid] + 1) % 16:
            breaks.append((n, pid))
        last[pid] = counter
    return breaks


def write(tmp_path: Path, segments: Sequence[bytes]) -> list[Path]:
    paths = []
    for i, data in enumerate(segments):
        path = tmp_path / f"seg{i}.ts"
        path.write_bytes(data)
        paths.append(path)
    return paths


def consecutive(count: int, seconds: float = 10) -> list[bytes]:
    """``count`` consecutive segments as a real-media camera uploads them."""
    camera = CameraSimulator(
        device_id="cam-stream", mqtt_url="mqtt://127.0.0.1:1", scene=scene(), record=False
    )
    return [camera.media_for(at(i * seconds), seconds) for i in range(count)]


def test_consecutive_segments_play_as_one_stream(tmp_path: Path) -> None:
    """Joined, and through the concat demuxer (a playlist), FFmpeg finds nothing wrong."""
    segments = consecutive(4)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(segments))
    playlist = tmp_path / "list.txt"
    playlist.write_text("".join(f"file '{p}'\n" for p in write(tmp_path, segments)))
    for args in (("-i", str(joined)), ("-f", "concat", "-safe", "0", "-i", str(playlist))):
        errors = ffmpeg_errors(*args)
        assert not [word for word in BROKEN if word in errors], errors
        assert errors == ""


def test_continuity_counters_run_on_across_segments() -> None:
    segments = consecutive(3)
    assert continuity_breaks(b"".join(segments)) == []
    # Each segment alone also opens a fresh decoder: it starts on an IDR with its time.
    for i, data in enumerate(segments):
        assert read_timestamp(decode_first_frame(data)) == at(10 * i)


def test_a_restarted_stream_is_what_the_old_segmenter_gave() -> None:
    """The check above can fail: separately encoded segments restart their counters."""
    first = encode_segment(scene(), T0, 2)
    second = encode_segment(scene(), at(2), 2)
    assert continuity_breaks(first + second) != []


def test_frames_are_one_frame_apart_across_every_boundary(tmp_path: Path) -> None:
    segments = consecutive(4)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(segments))
    pts = packet_pts(joined)
    assert len(pts) == 4 * 10 * FPS
    assert pts[0] == round(T0.timestamp() * TS_CLOCK) % (1 << 33)
    steps = [b - a for a, b in itertools.pairwise(pts)]
    assert all(abs(step - FRAME_TICKS) <= TS_CLOCK // 1000 for step in steps), set(steps)
    assert set(steps) == {FRAME_TICKS}


def test_a_stream_crossing_the_pts_wrap_stays_clean(tmp_path: Path) -> None:
    """PTS is 33 bits (26.5 h of the 90 kHz clock): the stream runs on through the wrap."""
    wrap = 1 << 33
    ticks = (round(T0.timestamp() * TS_CLOCK) // wrap + 1) * wrap - 3 * TS_CLOCK
    start = datetime.fromtimestamp(ticks // TS_CLOCK, UTC)
    recorder = Recorder(Scene(seed=4), keep_s=60)
    segments = [recorder.segment(start + timedelta(seconds=2 * i), 2) for i in range(4)]
    joined = tmp_path / "wrap.ts"
    joined.write_bytes(b"".join(segments))
    assert ffmpeg_errors("-i", str(joined)) == ""
    assert continuity_breaks(joined.read_bytes()) == []


def test_key_frames_come_every_keyframe_interval_and_at_each_cut() -> None:
    stream = TsStream(origin=T0)
    image = Scene(seed=5).render(T0)
    chunks: list[Chunk] = []
    with stream:
        for n in range(25):
            if n in (10, 20, 23):
                chunks.append(stream.cut())
            stream.add(image)
        chunks.append(stream.cut())
    assert [(c.start, c.end) for c in chunks] == [
        (at(0), at(1)),
        (at(1), at(2)),
        (at(2), at(2.3)),
        (at(2.3), at(2.5)),
    ]
    for chunk in chunks:
        assert chunk.data[:1] == b"\x47"
        assert read_timestamp(decode_first_frame(chunk.data)) is not None


def test_an_empty_cut_is_refused() -> None:
    with TsStream(origin=T0) as stream, pytest.raises(MediaError, match="no frame"):
        stream.cut()


def held_since(recorder: Recorder) -> datetime | None:
    return recorder.earliest


def test_the_recorder_hands_out_held_video_on_chunk_boundaries() -> None:
    recorder = Recorder(scene(), keep_s=10)
    recorder.restart(T0)
    recorder.record(at(6))
    recorder.record(at(20))
    assert held_since(recorder) == at(10), "keep_s: the last 10 s (whole chunks)"
    clip = recorder.video(at(10), at(20))
    assert read_timestamp(decode_first_frame(clip)) == at(10)
    with pytest.raises(MediaError, match="No recorded video"):
        recorder.video(at(0), at(10))  # forgotten
    with pytest.raises(MediaError, match="No recorded video"):
        recorder.video(at(11), at(20))  # not a key frame
    # Watching without recording ends the stream: the video held goes with it.
    seen: list[datetime] = []
    recorder.record(at(21), encode=False, watch=lambda t, _frame: seen.append(t))
    assert len(seen) == 10
    assert held_since(recorder) is None
    assert recorder.cursor == at(21)


def test_encode_segment_puts_a_key_frame_every_interval() -> None:
    data = encode_segment(Scene(seed=1), T0, 7.0)
    with av.open(io.BytesIO(data), mode="r") as container:
        keys = [p.is_keyframe for p in container.demux(video=0) if p.size]
    assert len(keys) == 70
    assert [i for i, key in enumerate(keys) if key] == list(range(0, 70, KEYFRAME_SECONDS * FPS))
