"""The camera simulator's media: scene, H.264/MPEG-TS segments, time strip, detection (R1)."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, datetime, timedelta

import av
import cv2
import numpy as np
import pytest

from replay.media import (
    DecodeError,
    decode_first_frame,
    decode_frames,
    first_frame_jpeg,
    frame_at,
    frame_jpeg_at,
)
from simulators.media import (
    H264_ENCODER,
    DetectedEvent,
    EventType,
    MotionDetector,
    encode_segment,
    evaluate,
    synthetic_segment,
    with_scripted_types,
)
from simulators.scene import (
    Actor,
    ActorKind,
    Layout,
    Region,
    Scene,
    SceneError,
    crc8,
    read_timestamp,
    script_actors,
    strip_bits,
)

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def probe(data: bytes) -> tuple[str, str, int, int, int, list[bool], list[int]]:
    """Container format, codec, width, height, frame count, key flags and PTS, via PyAV."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        name = stream.codec_context.name
        width, height = stream.codec_context.width, stream.codec_context.height
        keys, pts = [], []
        for frame in container.decode(stream):
            keys.append(frame.key_frame)
            pts.append(int(frame.pts or 0))
        return container.format.name, name, width, height, len(keys), keys, pts


# Encoding ----------------------------------------------------------------------------------


def test_pyav_wheel_ships_libx264() -> None:
    assert H264_ENCODER == "libx264"
    assert H264_ENCODER in av.codecs_available


def test_two_second_segment_is_mpegts_h264_opening_on_a_keyframe() -> None:
    data = encode_segment(Scene(seed=1), T0, 2.0, fps=10, width=320, height=180)
    assert data[0] == 0x47  # MPEG-TS: 188-byte packets opening on the sync byte
    assert len(data) % 188 == 0
    fmt, codec, width, height, frames, keys, _ = probe(data)
    assert (fmt, codec, width, height) == ("mpegts", "h264", 320, 180)
    assert frames == 20  # 10 fps x 2 s
    assert keys[0] is True


def test_first_frame_timestamp_reads_back_as_the_segment_start() -> None:
    start = datetime(2031, 5, 6, 23, 59, 59, tzinfo=UTC)
    data = encode_segment(Scene(seed="cam-1"), start, 2.0)
    assert read_timestamp(decode_first_frame(data)) == start


def test_consecutive_segments_decode_alone_and_continue_each_others_clock() -> None:
    scene = Scene(seed=2, actors=[Actor(kind="person", start=at(1), duration_s=3)])
    first = encode_segment(scene, T0, 2.0)
    second = encode_segment(scene, at(2), 2.0)
    *_, frames_1, _, pts_1 = probe(first)
    *_, frames_2, keys_2, pts_2 = probe(second)
    assert (frames_1, frames_2) == (20, 20)
    assert keys_2[0] is True  # the second segment needs nothing from the first
    assert read_timestamp(decode_first_frame(second)) == at(2)
    # 90 kHz clock: 2 s later is 180,000 ticks later; frames 1/10 s = 9,000 ticks apart.
    assert pts_2[0] - pts_1[0] == 180_000
    assert pts_2[1] - pts_2[0] == 9_000


def test_encode_refuses_a_size_other_than_the_scenes() -> None:
    with pytest.raises(ValueError, match="scene's width and height"):
        encode_segment(Scene(), T0, 1.0, width=640, height=360)


def test_the_thumbnail_is_the_first_frame_as_jpeg() -> None:
    data = encode_segment(Scene(seed=1), T0, 1.0, fps=10, width=320, height=180)
    jpeg = first_frame_jpeg(data)
    assert jpeg[:2] == b"\xff\xd8"  # JPEG start of image
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert image.shape == decode_first_frame(data).shape == (180, 320, 3)


@pytest.mark.parametrize(
    ("offset", "second"),
    [(0.0, 7), (0.4, 7), (3.5, 10), (12.0, 19), (19.95, 26), (25.0, 26)],
    ids=["start", "same-second", "mid", "late", "last-frame", "past-the-end-is-the-last"],
)
def test_the_frame_at_an_instant_is_that_instant(offset: float, second: int) -> None:
    """Issue 15: an event's thumbnail is the frame of its instant, not the clip's first."""
    start = T0 + timedelta(seconds=7)
    data = encode_segment(Scene(seed=1), start, 20.0, fps=10, width=320, height=180)
    expected = T0 + timedelta(seconds=second)
    assert read_timestamp(frame_at(data, offset)) == expected
    jpeg = frame_jpeg_at(data, offset)
    image = np.asarray(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), np.uint8)
    assert read_timestamp(image) == expected, "the strip survives JPEG"


def test_garbage_bytes_are_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_frames(b"\x00" * 1000)
    with pytest.raises(DecodeError):
        frame_at(b"\x00" * 1000, 1.0)


# Time strip --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"", 0x00, id="empty"),
        pytest.param(b"\x01", 0x07, id="one-is-the-polynomial"),
        pytest.param(b"123456789", 0xF4, id="published-check-value"),
    ],
)
def test_crc8(data: bytes, expected: int) -> None:
    assert crc8(data) == expected


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        pytest.param(0, [1, 0, 1, 0] + [0] * 32 + [0] * 8 + [0, 1, 0, 1], id="epoch"),
        pytest.param(
            1, [1, 0, 1, 0] + [0] * 31 + [1] + [0, 0, 0, 0, 0, 1, 1, 1] + [0, 1, 0, 1], id="one"
        ),
    ],
)
def test_strip_bits(second: int, expected: list[int]) -> None:
    assert strip_bits(second) == expected


def test_strip_refuses_seconds_beyond_32_bits() -> None:
    with pytest.raises(SceneError, match="1970 to 2106"):
        strip_bits(1 << 32)


def test_read_timestamp_on_a_raw_frame_and_none_without_a_valid_strip() -> None:
    scene = Scene(seed=3)
    frame = scene.render(at(7.9))
    assert read_timestamp(frame) == at(7)  # the stamp is the frame's UTC second
    assert read_timestamp(np.full_like(frame, 128)) is None
    tampered = frame.copy()
    s, b = scene.layout.strip, scene.layout.block
    x, y = s.x + 4 * b, s.y + 1 * b  # row 1, column 4: bit 20, one of the seconds' bits
    tampered[y : y + b, x : x + b] = 255 - tampered[y : y + b, x : x + b]
    assert read_timestamp(tampered) is None  # the CRC-8 catches a flipped bit


# Scene -------------------------------------------------------------------------------------


def test_scene_is_deterministic_for_a_seed() -> None:
    actors = [Actor(kind="pet", start=at(0), duration_s=4)]
    one = Scene(seed=9, actors=actors).render(at(1.5))
    two = Scene(seed=9, actors=actors).render(at(1.5))
    other = Scene(seed=10, actors=actors).render(at(1.5))
    assert np.array_equal(one, two)
    assert not np.array_equal(one, other)


@pytest.mark.parametrize(
    ("kind", "midway", "where"),
    [
        # R1: a person passes (tall, on the floor), a pet passes (small, low), a door opens.
        pytest.param("person", 2.0, "tall", id="R1-person"),
        pytest.param("pet", 2.0, "low", id="R1-pet"),
        pytest.param("door", 2.0, "door", id="R1-door"),
    ],
)
def test_an_actor_changes_only_its_own_pixels(kind: ActorKind, midway: float, where: str) -> None:
    empty = Scene(seed=4)
    scene = Scene(seed=4, actors=[Actor(kind=kind, start=T0, duration_s=4)])
    diff = np.any(scene.render(at(midway)) != empty.render(at(midway)), axis=2)
    ys, xs = np.nonzero(diff)
    assert len(ys) > 0
    lay = scene.layout
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if where == "door":
        changed = Region(x=int(left), y=int(top), w=int(right - left), h=int(bottom - top))
        assert lay.door.contains(changed)
    elif where == "tall":
        assert bottom - top >= 0.5 * lay.height
        assert bottom > lay.floor_y
    else:
        assert bottom - top <= 0.2 * lay.height
        assert top >= lay.floor_y


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"kind": "cat", "start": T0, "duration_s": 3}, "kind", id="kind"),
        pytest.param(
            {"kind": "pet", "start": T0.replace(tzinfo=None), "duration_s": 3}, "aware", id="naive"
        ),
        pytest.param({"kind": "pet", "start": T0, "duration_s": 0.1}, "duration", id="short"),
    ],
)
def test_actor_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Actor(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        pytest.param(321, 180, "even", id="odd"),
        pytest.param(120, 90, "at least", id="tiny"),
        pytest.param(180, 320, "landscape", id="portrait"),
    ],
)
def test_layout_validation(width: int, height: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Layout.for_size(width, height)


def test_scripted_actors_are_mixed_and_never_overlap() -> None:
    actors = script_actors(start=T0, count=9, seed=1)
    assert sorted(a.kind for a in actors) == ["door"] * 3 + ["person"] * 3 + ["pet"] * 3
    for before, after in itertools.pairwise(actors):
        assert after.start - before.end >= timedelta(seconds=2)


# Synthetic segments ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 187, 188, 189, 250_000])
def test_synthetic_segment_has_the_exact_size(size: int) -> None:
    data = synthetic_segment(size, seed="cam-7")
    assert len(data) == size
    assert all(data[i] == 0x47 for i in range(0, size, 188))


def test_synthetic_segment_is_seeded_and_not_video() -> None:
    assert synthetic_segment(4000, 1) == synthetic_segment(4000, 1)
    assert synthetic_segment(4000, 1) != synthetic_segment(4000, 2)
    with pytest.raises(DecodeError):
        decode_frames(synthetic_segment(4000, 1))
    with pytest.raises(ValueError, match="negative"):
        synthetic_segment(-1, 1)


# Detection ---------------------------------------------------------------------------------

LAYOUT = Layout.for_size(320, 180)  # floor at y=112; door zone x 230-272, y 36-112


@pytest.mark.parametrize(
    ("blob", "expected"),
    [
        pytest.param(Region(x=240, y=40, w=30, h=70), "door", id="R1-door-inside-zone"),
        pytest.param(Region(x=50, y=58, w=30, h=104), "person", id="R1-person-tall"),
        pytest.param(Region(x=235, y=58, w=30, h=104), "person", id="R1-person-before-door"),
        pytest.param(Region(x=0, y=58, w=8, h=104), "person", id="R1-person-entering"),
        pytest.param(Region(x=100, y=150, w=45, h=20), "pet", id="R1-pet-small-low"),
        pytest.param(Region(x=10, y=60, w=100, h=30), "motion", id="wide-on-wall"),
        pytest.param(Region(x=10, y=40, w=100, h=90), "motion", id="big-squat"),
    ],
)
def test_classify_blob(blob: Region, expected: EventType) -> None:
    assert MotionDetector(layout=LAYOUT).classify(blob) == expected


def ev(seconds: float, kind: EventType) -> DetectedEvent:
    return DetectedEvent(at=at(seconds), type=kind, score=1.0)


def actor(seconds: float, kind: ActorKind) -> Actor:
    return Actor(kind=kind, start=at(seconds), duration_s=4)


@pytest.mark.parametrize(
    ("actors", "detections", "expected"),
    [
        pytest.param([], [], (1.0, 1.0), id="nothing-happened-nothing-claimed"),
        pytest.param([actor(10, "person")], [ev(10.5, "person")], (1.0, 1.0), id="hit"),
        pytest.param([actor(10, "person")], [ev(10.5, "pet")], (0.0, 0.0), id="wrong-kind"),
        pytest.param([actor(10, "door")], [ev(12.0, "door")], (0.0, 0.0), id="too-late"),
        pytest.param(
            [actor(10, "pet"), actor(20, "door")],
            [ev(10.2, "pet"), ev(10.4, "pet"), ev(30, "motion")],
            (1 / 3, 1 / 2),
            id="duplicate-and-stray",
        ),
        pytest.param([actor(10, "pet")], [], (1.0, 0.0), id="missed"),
    ],
)
def test_evaluate(
    actors: list[Actor], detections: list[DetectedEvent], expected: tuple[float, float]
) -> None:
    assert evaluate(actors, detections, tolerance_s=1.5) == pytest.approx(expected)


def test_scripted_types_relabel_detections_during_an_actor_only() -> None:
    actors = [actor(10, "pet")]
    relabelled = with_scripted_types([ev(10.3, "motion"), ev(30, "motion")], actors, 1.0)
    assert [e.type for e in relabelled] == ["pet", "motion"]
    assert [e.at for e in relabelled] == [at(10.3), at(30)]


def test_detector_needs_frames_in_time_order() -> None:
    detector = MotionDetector(layout=LAYOUT)
    frame = Scene().render(T0)
    detector.feed(frame, T0)
    with pytest.raises(ValueError, match="increasing time order"):
        detector.feed(frame, T0)


def test_detection_precision_and_recall_over_sixty_scripted_actors() -> None:
    """R1 events from pixels: 60 actors (20 each of person, pet, door) on raw frames."""
    actors = script_actors(start=at(3), count=60, seed=7)
    scene = Scene(seed=7, actors=actors)
    seconds = (actors[-1].end - T0).total_seconds() + 3
    detections = MotionDetector(layout=scene.layout).detect(scene.frames(T0, seconds, 10))
    precision, recall = evaluate(actors, detections, tolerance_s=1.5)
    print(f"detection over {len(actors)} actors: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.9
    assert recall >= 0.9


def test_detection_on_decoded_segments_finds_the_scripted_events() -> None:
    actors = [
        Actor(kind="person", start=at(2), duration_s=3.5),
        Actor(kind="door", start=at(8), duration_s=3),
        Actor(kind="pet", start=at(13), duration_s=3.5),
    ]
    scene = Scene(seed=5, actors=actors)
    frames = []
    for k in range(2):
        start = at(10 * k)
        decoded = decode_frames(encode_segment(scene, start, 10))
        frames += [(start + timedelta(seconds=i / 10), f) for i, f in enumerate(decoded)]
    detections = MotionDetector(layout=scene.layout).detect(frames)
    assert [d.type for d in detections] == ["person", "door", "pet"]
    for found, truth in zip(detections, actors, strict=True):
        assert abs((found.at - truth.start).total_seconds()) <= 1.5
