"""FrameRing: newest wins with exact drop counts, no torn or repeated frames, timeouts, close, CUDA uploads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from dcrn.engine.frames import Frame
from dcrn.engine.ring.frame_ring import FrameRing


def make_frame(seq: int, shape: tuple[int, int] = (24, 32), stream: str = "s") -> Frame:
    """A frame whose every pixel encodes its seq, so a reader can tell frames apart and spot a mix."""
    image = np.empty((*shape, 3), dtype=np.uint8)
    image[..., 0] = seq % 251
    image[..., 1] = (seq // 251) % 251
    image[..., 2] = (seq * 7) % 251
    return Frame(stream=stream, seq=seq, pts=seq / 30, image=image)


def expected_pixel(seq: int) -> np.ndarray:
    return np.array([seq % 251, (seq // 251) % 251, (seq * 7) % 251], dtype=np.uint8)


def test_frames_come_out_in_order_with_their_pixels():
    ring = FrameRing(capacity=4)
    for seq in range(3):
        ring.put(make_frame(seq))
    for seq in range(3):
        with ring.get(timeout=1) as item:
            assert item.frame.seq == seq
            assert item.tensor.shape == (24, 32, 3) and item.tensor.dtype == torch.uint8
            assert torch.equal(item.tensor, torch.from_numpy(make_frame(seq).image))
    assert ring.written == 3 and ring.dropped == 0


def test_slow_consumer_gets_the_newest_frames_and_exact_drop_count():
    ring = FrameRing(capacity=4)
    for seq in range(10):
        ring.put(make_frame(seq))
    assert ring.written == 10
    assert ring.dropped == 6  # frames 0..5 were overwritten unread
    seen = []
    while (item := ring.get(timeout=0)) is not None:
        seen.append(item.frame.seq)
        item.release()
    assert seen == [6, 7, 8, 9]


def test_drop_count_when_the_consumer_holds_slots():
    ring = FrameRing(capacity=3)
    ring.put(make_frame(0))
    held = ring.get(timeout=1)  # the consumer is still working on frame 0: its slot is not reusable
    for seq in range(1, 8):
        ring.put(make_frame(seq))
    # Two free slots for seven frames: 1..5 overwritten in turn, 6 and 7 remain.
    assert ring.dropped == 5
    assert held.frame.seq == 0 and torch.equal(held.tensor, torch.from_numpy(make_frame(0).image))
    second = ring.get(timeout=1)
    third = ring.get(timeout=1)
    assert (second.frame.seq, third.frame.seq) == (6, 7)
    # Every slot is held by the consumer now: a new frame has nowhere to go and is the one dropped.
    ring.put(make_frame(8))
    assert ring.dropped == 6 and ring.pending == 0
    for item in (held, second, third):
        item.release()
    ring.put(make_frame(9))
    assert ring.get(timeout=1).frame.seq == 9
    assert ring.written == 10 and ring.dropped == 6


def test_interleaved_slow_consumer_drop_count_is_exact():
    ring = FrameRing(capacity=2)
    seen, put = [], 0
    for _ in range(20):  # the consumer reads one frame for every five the producer writes
        for _ in range(5):
            ring.put(make_frame(put))
            put += 1
        with ring.get(timeout=1) as item:
            seen.append(item.frame.seq)
    while (item := ring.get(timeout=0)) is not None:
        seen.append(item.frame.seq)
        item.release()
    # Round 1: frames 0..4 into two slots, 0..2 overwritten, 3 read. Every later round: four of its
    # five frames (and the one left unread) compete for two slots: four overwritten, the 4th read.
    assert seen == [*range(3, 100, 5), 99]
    assert ring.written == 100
    assert ring.dropped == 3 + 19 * 4 == 100 - len(seen)


def test_release_is_idempotent_and_context_manager_releases():
    ring = FrameRing(capacity=1)
    ring.put(make_frame(0))
    item = ring.get(timeout=1)
    item.release()
    item.release()
    ring.put(make_frame(1))
    with ring.get(timeout=1) as item:
        assert item.frame.seq == 1
    ring.put(make_frame(2))
    assert ring.dropped == 0


def test_get_times_out_when_empty():
    ring = FrameRing(capacity=2)
    start = time.monotonic()
    assert ring.get(timeout=0.2) is None
    elapsed = time.monotonic() - start
    assert 0.18 <= elapsed < 1.0
    assert ring.get(timeout=0) is None


def test_get_wakes_up_when_a_frame_arrives():
    ring = FrameRing(capacity=2)
    timer = threading.Timer(0.1, ring.put, args=(make_frame(5),))
    timer.start()
    try:
        start = time.monotonic()
        item = ring.get(timeout=5)
        assert item is not None and item.frame.seq == 5
        assert time.monotonic() - start < 2
    finally:
        timer.join()


def test_close_drains_unread_frames_then_returns_none():
    ring = FrameRing(capacity=4)
    for seq in range(3):
        ring.put(make_frame(seq))
    ring.close()
    ring.put(make_frame(99))  # ignored after close
    assert [ring.get(timeout=1).frame.seq for _ in range(3)] == [0, 1, 2]
    start = time.monotonic()
    assert ring.get(timeout=5) is None  # closed and drained: at once, not after the timeout
    assert ring.get() is None
    assert time.monotonic() - start < 1
    assert ring.written == 3


def test_close_wakes_a_blocked_consumer():
    ring = FrameRing(capacity=2)
    result: list[object] = []
    consumer = threading.Thread(target=lambda: result.append(ring.get()))
    consumer.start()
    try:
        time.sleep(0.1)
        ring.close()
    finally:
        consumer.join(timeout=5)
    assert not consumer.is_alive()
    assert result == [None]


def test_notify_event_is_set_on_put_and_close():
    event = threading.Event()
    ring = FrameRing(capacity=2, notify=event)
    ring.put(make_frame(0))
    assert event.is_set()
    event.clear()
    ring.close()
    assert event.is_set()


def test_bad_images_and_arguments_are_rejected_with_the_actual_value():
    ring = FrameRing(capacity=2)
    bad = Frame(stream="s", seq=0, pts=0.0, image=np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"HxWx3 uint8, got \(4, 4\) float32"):
        ring.put(bad)
    with pytest.raises(ValueError, match="capacity"):
        FrameRing(capacity=0)
    with pytest.raises(ValueError, match="cpu or cuda"):
        FrameRing(device="meta")


def run_concurrently(ring: FrameRing, total: int, *, consumer_delay_every: int = 0) -> tuple[list[int], list[str]]:
    """A producer thread writes ``total`` frames as fast as it can while the consumer checks each one."""
    seen: list[int] = []
    errors: list[str] = []

    def produce() -> None:
        try:
            for seq in range(total):
                ring.put(make_frame(seq, shape=(48, 64)))
        finally:
            ring.close()

    producer = threading.Thread(target=produce, name="producer")
    producer.start()
    try:
        while (item := ring.get(timeout=10)) is not None:
            with item:
                seq = item.frame.seq
                image = item.tensor.cpu().numpy() if item.tensor.is_cuda else item.tensor.numpy()
                if not (image == expected_pixel(seq)).all():
                    errors.append(f"frame {seq}: pixels of another frame")
                if not np.array_equal(item.frame.image, make_frame(seq, shape=(48, 64)).image):
                    errors.append(f"frame {seq}: metadata and image disagree")
                seen.append(seq)
                if consumer_delay_every and len(seen) % consumer_delay_every == 0:
                    time.sleep(0.001)
    finally:
        producer.join(timeout=30)
    assert not producer.is_alive()
    return seen, errors


@pytest.mark.parametrize("delay_every", [0, 7])
def test_no_torn_or_repeated_frames_under_concurrent_write_and_read(delay_every):
    ring = FrameRing(capacity=3)
    seen, errors = run_concurrently(ring, total=20_000, consumer_delay_every=delay_every)
    assert errors == []
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # in order, never twice
    assert ring.written == 20_000
    assert ring.dropped == 20_000 - len(seen)  # every frame is either read once or counted as dropped
    assert seen[-1] == 19_999  # the newest frame always survives


def test_lossless_ring_put_waits_for_a_free_slot_and_drops_nothing():
    ring = FrameRing(capacity=2, overwrite=False)
    ring.put(make_frame(0))
    ring.put(make_frame(1))
    producer = threading.Thread(target=ring.put, args=(make_frame(2),))
    producer.start()
    try:
        time.sleep(0.1)
        assert producer.is_alive() and ring.written == 2  # waiting: both slots hold unread frames
        with ring.get(timeout=1) as item:
            assert item.frame.seq == 0
        producer.join(timeout=5)
        assert not producer.is_alive()
    finally:
        ring.close()
        producer.join(timeout=5)
    assert [ring.get(timeout=1).frame.seq for _ in range(2)] == [1, 2]
    assert ring.written == 3 and ring.dropped == 0


def test_close_releases_a_put_waiting_on_a_lossless_ring():
    ring = FrameRing(capacity=1, overwrite=False)
    ring.put(make_frame(0))
    producer = threading.Thread(target=ring.put, args=(make_frame(1),))
    producer.start()
    time.sleep(0.05)
    ring.close()
    producer.join(timeout=5)
    assert not producer.is_alive()
    assert ring.written == 1 and ring.dropped == 0
    assert ring.get(timeout=1).frame.seq == 0 and ring.get(timeout=1) is None


def test_lossless_ring_delivers_every_frame_under_concurrent_write_and_read():
    ring = FrameRing(capacity=3, overwrite=False)
    seen, errors = run_concurrently(ring, total=5_000, consumer_delay_every=50)
    assert errors == []
    assert seen == list(range(5_000)) and ring.dropped == 0


def test_cuda_ring_without_a_gpu_is_backend_unavailable():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from dcrn.engine.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="needs CUDA"):
        FrameRing(capacity=2, device="cuda")


# -- CUDA: device slots, pinned staging, side stream, per-slot events ---------------------------------


@pytest.mark.gpu
def test_cuda_uploads_are_correct_under_concurrent_write_and_read():
    ring = FrameRing(capacity=3, device="cuda")
    seen, errors = run_concurrently(ring, total=5_000, consumer_delay_every=5)
    assert errors == []
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert ring.dropped == 5_000 - len(seen)


@pytest.mark.gpu
def test_cuda_slots_are_device_uint8_and_match_the_host_image():
    ring = FrameRing(capacity=2, device="cuda")
    frame = make_frame(123, shape=(480, 640))
    ring.put(frame)
    with ring.get(timeout=1) as item:
        assert item.tensor.is_cuda and item.tensor.dtype == torch.uint8
        assert item.tensor.shape == (480, 640, 3)
        assert torch.equal(item.tensor.cpu(), torch.from_numpy(frame.image))
    ring.put(make_frame(7, shape=(240, 320)))  # a new frame size reallocates the slot
    with ring.get(timeout=1) as item:
        assert item.tensor.shape == (240, 320, 3)
        assert torch.equal(item.tensor.cpu(), torch.from_numpy(make_frame(7, shape=(240, 320)).image))


@pytest.mark.gpu
def test_cuda_put_returns_before_the_upload_finishes_and_get_orders_the_consumer_stream():
    ring = FrameRing(capacity=1, device="cuda")
    ring.put(make_frame(41, shape=(1080, 1920)))  # allocates the slot's device and pinned memory
    ring.get(timeout=1).release()
    torch.cuda.synchronize()
    frame = make_frame(42, shape=(1080, 1920))
    with torch.cuda.stream(ring.stream):
        torch.cuda._sleep(200_000_000)  # keep the upload stream busy for a long while (GPU cycles)
    start = time.perf_counter()
    ring.put(frame)
    put_s = time.perf_counter() - start
    item = ring.get(timeout=1)
    slot = item._slot.device_slot
    assert not slot.ready.query(), "the upload should still be queued behind the busy side stream"
    # The consumer's stream waits on the slot's event: work queued now sees the uploaded pixels.
    checksum = item.tensor.to(torch.int64).sum()
    torch.cuda.current_stream().synchronize()
    assert checksum.item() == int(frame.image.astype(np.int64).sum())
    assert put_s < 0.05, f"put() blocked for {put_s * 1000:.1f} ms"
    item.release()


@pytest.mark.gpu
def test_cuda_next_upload_waits_for_the_consumers_queued_work_on_a_released_slot():
    ring = FrameRing(capacity=1, device="cuda")
    ring.put(make_frame(1, shape=(256, 256)))
    consumer = torch.cuda.Stream()
    with torch.cuda.stream(consumer):
        item = ring.get(timeout=1)
        torch.cuda._sleep(100_000_000)  # the consumer's kernels are still running...
        copy = item.tensor.clone()  # ...and read the slot after the sleep
        item.release()  # released on the host long before the GPU is done with it
    ring.put(make_frame(2, shape=(256, 256)))  # must not overwrite the slot under the queued clone
    consumer.synchronize()
    assert torch.equal(copy.cpu(), torch.from_numpy(make_frame(1, shape=(256, 256)).image))
    with ring.get(timeout=1) as item:
        assert torch.equal(item.tensor.cpu(), torch.from_numpy(make_frame(2, shape=(256, 256)).image))
