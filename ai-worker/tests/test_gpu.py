"""The GPU bookkeeping of a GPU worker (:mod:`trainyard_worker.gpu`), driven through the
same nvidia-smi queries the worker makes. No GPU here: the answers come from a table this
test controls, in nvidia-smi's own ``csv,noheader,nounits`` format; the real cards are
checked by ``bench/gpu_check.py`` on a GPU machine."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from trainyard_worker.gpu import GpuSet, GpuUnavailable, parse_csv_rows


class Board:
    """Two H200-like cards whose memory and processes a test changes."""

    def __init__(self) -> None:
        self.used = {"GPU-a": 0, "GPU-b": 0}
        self.apps: list[tuple[int, str]] = []
        self.calls = 0

    def query(self, args: Sequence[str]) -> str:
        self.calls += 1
        if args[0].startswith("--query-gpu=index"):
            return "0, GPU-a, NVIDIA H200, 143771\n1, GPU-b, NVIDIA H200, 143771\n"
        if args[0] == "--query-gpu=uuid,memory.used":
            return "".join(f"{u}, {m}\n" for u, m in self.used.items())
        if args[0] == "--query-compute-apps=pid,gpu_uuid":
            return "".join(f"{p}, {u}\n" for p, u in self.apps)
        raise AssertionError(f"unexpected query {args}")


def test_discovers_all_cards_or_the_chosen_ones() -> None:
    board = Board()
    gpus = GpuSet.discover(board.query)
    assert [g.index for g in gpus.gpus] == ["0", "1"]
    assert gpus.visible_devices() == "GPU-a,GPU-b"
    assert gpus.gpus[0].memory_total_mb == 143771 and gpus.gpus[0].name == "NVIDIA H200"
    only = GpuSet.discover(board.query, devices="1")
    assert only.visible_devices() == "GPU-b"
    with pytest.raises(GpuUnavailable, match="does not have: 7"):
        GpuSet.discover(board.query, devices="0,7")
    with pytest.raises(GpuUnavailable, match="lists no GPU"):
        GpuSet.discover(lambda args: "")


def test_a_clean_job_leaves_every_card_in_service() -> None:
    board = Board()
    gpus = GpuSet.discover(board.query)
    board.used["GPU-a"] = 500  # the inference process's models, there before the job
    before = gpus.snapshot()
    board.used["GPU-a"] = 9000  # the job runs...
    board.apps.append((4242, "GPU-a"))
    board.used["GPU-a"] = 600  # ...and ends: within tolerance of the 500 before
    board.apps.clear()
    assert gpus.check_clean(before, tolerance_mb=256, timeout_s=1) == []
    assert len(gpus.in_service) == 2


def test_a_card_with_a_stray_process_leaves_service() -> None:
    board = Board()
    gpus = GpuSet.discover(board.query)
    before = gpus.snapshot()
    board.apps.append((4242, "GPU-b"))  # a grandchild that escaped the kill
    dirty = gpus.check_clean(before, tolerance_mb=256, timeout_s=0.3, poll_s=0.1)
    assert [g.uuid for g in dirty] == ["GPU-b"]
    assert "4242" in str(dirty[0].problem) and gpus.visible_devices() == "GPU-a"
    assert board.calls > 4  # it waited (polled) before the verdict
    described = {d["uuid"]: d for d in gpus.describe()}
    assert described["GPU-b"]["in_service"] is False and described["GPU-a"]["in_service"]


def test_memory_that_is_not_freed_takes_the_card_out() -> None:
    board = Board()
    gpus = GpuSet.discover(board.query)
    before = gpus.snapshot()
    board.used["GPU-a"] = 3000
    dirty = gpus.check_clean(before, tolerance_mb=256, timeout_s=0.2, poll_s=0.1)
    assert [g.uuid for g in dirty] == ["GPU-a"] and "3000 MiB" in str(dirty[0].problem)


def test_memory_freed_late_but_within_the_wait_is_clean() -> None:
    board = Board()
    gpus = GpuSet.discover(board.query)
    before = gpus.snapshot()
    board.used["GPU-a"] = 3000
    original = board.query

    def freeing(args: Sequence[str]) -> str:
        if board.calls >= 4:
            board.used["GPU-a"] = 0  # the driver frees it a little later
        return original(args)

    gpus._query = freeing  # the same board, answering later
    assert gpus.check_clean(before, tolerance_mb=256, timeout_s=5, poll_s=0.05) == []


def test_a_failing_nvidia_smi_takes_every_card_out() -> None:
    board = Board()
    gpus = GpuSet.discover(board.query)
    before = gpus.snapshot()

    def broken(args: Sequence[str]) -> str:
        raise GpuUnavailable("nvidia-smi failed (exit 15): GPU is lost")

    gpus._query = broken
    dirty = gpus.verify_clean(before, tolerance_mb=256, timeout_s=1)
    assert len(dirty) == 2 and gpus.in_service == [] and gpus.visible_devices() == ""
    assert "GPU is lost" in str(dirty[0].problem)


def test_parse_refuses_lines_it_does_not_understand() -> None:
    assert parse_csv_rows("0, a\n\n1, b\n", 2) == [["0", "a"], ["1", "b"]]
    with pytest.raises(GpuUnavailable, match="unexpected"):
        parse_csv_rows("0, a, extra\n", 2)
