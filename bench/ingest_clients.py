"""Benchmark 1's paho-mqtt side: the publisher that pre-loads the broker and the bare
subscriber that is the baseline (it counts, acknowledging on arrival), with the message and
drain records the benchmark's report is made of (:mod:`bench.ingest`)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.mqtt.messages import INBOUND, PREFIX

#: A broker login: (username, password).
Login = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    kind: str
    device: str


@dataclass(frozen=True, slots=True)
class Drain:
    messages: int
    seconds: float
    shares: tuple[int, ...] = ()  # messages each gateway process handled
    cpu_seconds: float | None = None  # this process's CPU (all threads) over the drain
    batches: tuple[int, float] | None = None  # recording group commits: count, mean size

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def _client(client_id: str, *, clean: bool, login: Login | None = None) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    if login is not None:
        client.username_pw_set(*login)
    return client


def publish_all(
    port: int, messages: Sequence[Message], passwords: dict[str, str] | None = None
) -> float:
    """Publish at QoS 1 (in-flight window 100) until every PUBACK came; returns seconds.
    With ``passwords`` (the broker checks each device's identity) each device publishes its
    own messages on its own connection, 16 devices at a time."""
    if passwords is None:
        return _publish(port, f"bench-pub-{random.getrandbits(32):08x}", None, messages)
    by_device: dict[str, list[Message]] = {}
    for message in messages:
        by_device.setdefault(message.device, []).append(message)
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        done = [
            pool.submit(_publish, port, device, (device, passwords[device]), its)
            for device, its in by_device.items()
        ]
        for each in done:
            each.result()
    return time.perf_counter() - began


def _publish(port: int, client_id: str, login: Login | None, messages: Sequence[Message]) -> float:
    client = _client(client_id, clean=True, login=login)
    done = threading.Event()
    acked = 0

    def on_publish(*_args: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(messages):
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    began = time.perf_counter()
    for message in messages:
        client.publish(message.topic, message.payload, qos=1)
    if not done.wait(600):
        raise RuntimeError(f"only {acked} of {len(messages)} messages were acknowledged")
    took = time.perf_counter() - began
    client.disconnect()
    client.loop_stop()
    return took


class BareSubscriber:
    """paho-mqtt doing nothing but counting (the baseline)."""

    CLIENT_ID = "bench-bare-subscriber"

    def __init__(self, port: int, login: Login | None = None) -> None:
        self.port = port
        self.login = login

    def register(self) -> None:
        client = _client(self.CLIENT_ID, clean=False, login=self.login)
        subscribed = threading.Event()
        client.on_subscribe = lambda *_args: subscribed.set()
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        client.subscribe([(f"{PREFIX}+/{suffix}", 1) for suffix in INBOUND])
        if not subscribed.wait(10):
            raise RuntimeError("the bare subscriber's SUBACK never came")
        client.disconnect()
        client.loop_stop()

    def drain(self, expected: int) -> Drain:
        client = _client(self.CLIENT_ID, clean=False, login=self.login)
        done = threading.Event()
        stamps: list[float] = []

        def on_message(*_args: object) -> None:
            stamps.append(time.perf_counter())
            if len(stamps) == expected:
                done.set()

        client.on_message = on_message
        cpu_began = time.process_time()  # the process is otherwise idle meanwhile
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        if not done.wait(600):
            raise RuntimeError(f"the bare subscriber got {len(stamps)} of {expected}")
        cpu = time.process_time() - cpu_began
        client.disconnect()
        client.loop_stop()
        return Drain(expected, stamps[-1] - stamps[0], cpu_seconds=cpu)


def bare_cpu_per_message(port: int, login: Login | None = None, count: int = 5_000) -> float:
    """A same-run measure of the machine's speed: the CPU microseconds the bare subscriber
    spends on each of ``count`` telemetry-sized QoS-1 messages pre-loaded on the broker at
    ``port`` (``login``: the broker's admin, where devices must sign in). Run it before any
    gateway's session exists there, or the messages would be queued for it."""
    bare = BareSubscriber(port, login)
    bare.register()
    payload = json.dumps({"fps": 10, "bitrate_kbps": 300.0}).encode()
    messages = [
        Message(f"{PREFIX}calibration-{n % 100}/telemetry", payload, "telemetry", "calibration")
        for n in range(count)
    ]
    _publish(port, "bench-calibration", login, messages)
    drained = bare.drain(count)
    assert drained.cpu_seconds is not None
    return drained.cpu_seconds / count * 1e6
