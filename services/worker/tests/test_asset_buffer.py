"""The asset buffer: fetched once per host, verified before use, evicted by size (least recent first)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from backend_worker.asset_buffer import AssetBuffer, AssetKind
from backend_worker.task_directory import TaskDirectory, link_file, link_tree


def writer(data: bytes, calls: list[str]):  # type: ignore[no-untyped-def]
    def fetch(destination: Path) -> None:
        calls.append(destination.name)
        time.sleep(0.05)
        destination.write_bytes(data)

    return fetch


def test_an_entry_is_fetched_once_even_concurrently(tmp_path: Path) -> None:
    buffer = AssetBuffer(tmp_path / "buffer", max_bytes=10**6)
    calls: list[str] = []
    results: list[Path] = []

    def use() -> None:
        with buffer.in_use():
            results.append(buffer.get(AssetKind.MODEL, "model-1", writer(b"weights", calls)))

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert {path.read_bytes() for path in results} == {b"weights"}
    # Entries are read-only: a task holding a hard link cannot change them.
    assert not os.stat(results[0]).st_mode & 0o222


def test_a_failed_fetch_leaves_nothing(tmp_path: Path) -> None:
    buffer = AssetBuffer(tmp_path / "buffer", max_bytes=10**6)

    def broken(destination: Path) -> None:
        destination.write_bytes(b"partial")
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError), buffer.in_use():
        buffer.get(AssetKind.MODEL, "model", broken)
    assert not buffer.contains(AssetKind.MODEL, "model")
    assert not buffer.path(AssetKind.MODEL, "model").exists()
    assert list((tmp_path / "buffer" / "tmp").iterdir()) == []


def test_eviction_by_size_least_recently_used_first(tmp_path: Path) -> None:
    buffer = AssetBuffer(tmp_path / "buffer", max_bytes=250)
    calls: list[str] = []
    for index in range(3):
        with buffer.in_use():
            buffer.get(AssetKind.MODEL, f"m{index}", writer(b"x" * 100, calls))
        time.sleep(0.02)
    # m0 is used again: m1 is now the least recently used.
    with buffer.in_use():
        kept = buffer.get(AssetKind.MODEL, "m0", writer(b"", calls))
    task = TaskDirectory(tmp_path / "task")
    task.create()
    link_file(kept, task.model("m0"))
    removed = buffer.evict()
    assert [entry.key for entry in removed] == ["m1"]
    assert buffer.size() == 200
    # Eviction waits for no one: it is skipped while tasks are staging.
    with buffer.in_use():
        assert buffer.evict(max_bytes=0) == []
    assert len(buffer.evict(max_bytes=0)) == 2
    # Hard links of a task survive the eviction of their entry.
    assert task.model("m0").read_bytes() == b"x" * 100
    assert len(calls) == 3


def test_data_sample_folders_and_produced_models(tmp_path: Path) -> None:
    buffer = AssetBuffer(tmp_path / "buffer", max_bytes=10**6)

    def sample(destination: Path) -> None:
        (destination / "nested").mkdir(parents=True)
        (destination / "a.csv").write_text("1,2")
        (destination / "nested" / "b.csv").write_text("3,4")

    with buffer.in_use():
        folder = buffer.get(AssetKind.DATA_SAMPLE, "sample-key", sample)
    task = TaskDirectory(tmp_path / "task")
    task.create()
    link_tree(folder, task.data_sample("sample-key"))
    assert (task.data_sample("sample-key") / "nested" / "b.csv").read_text() == "3,4"
    assert task.data_sample("sample-key").name == "sample-key"
    produced = tmp_path / "produced"
    produced.write_bytes(b"model")
    assert buffer.add_file(AssetKind.MODEL, "new-model", produced).read_bytes() == b"model"
    assert buffer.size() == 3 + 3 + 5
    buffer.discard(AssetKind.MODEL, "new-model")
    assert not buffer.contains(AssetKind.MODEL, "new-model")
    buffer.clear()
    assert buffer.entries() == []
