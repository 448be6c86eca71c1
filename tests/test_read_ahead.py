"""The read-ahead path (`read="ahead"`, readahead.py): the same pixels as the graph's own file
read, stale work dropped on a restart, at most `depth` batches waiting, the file watch's
verdicts on files read before they vanished or changed, and no thread left behind."""

import gc
import os
import re
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from mixtrain_dali.config import DataConfig, MixConfig
from mixtrain_dali.crops import CropPlanner
from mixtrain_dali.errors import UserError
from mixtrain_dali.loader import MixBatch, TrainLoader
from mixtrain_dali.plan import single_plan
from mixtrain_dali.readahead import THREAD_PREFIX, ReadAhead, read_file
from mixtrain_dali.robust import BadFilesFound, CheckedPlanSource, validate_files
from mixtrain_dali.source import FilesNotRead, PlanSource, SlotBatch, slot_samples

SIZE = 32
DEVICES = ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def noise_jpegs(tmp_path_factory):
    """3 classes x 14 JPEGs of random noise and varied sizes: every window and flip shows."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for c in range(3):
        os.makedirs(root / f"c{c}")
        for j in range(14):
            h, w = (int(v) for v in rng.integers(40, 110, 2))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{j}.jpg",
                                                                                 quality=90)
    return str(root)


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def _no_readers_left(timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while _readers() and time.monotonic() < end:
        time.sleep(0.02)
    return not _readers()


def _mix4() -> MixConfig:
    return MixConfig(enabled=True, k=4, fraction=0.75, selection="random", warmup_epochs=0,
                     final_full_fraction=0.0, self_correct=False)


def _epochs(loader, n: int = 2) -> list:
    out = []
    for _ in range(n):
        for batch in loader:
            if isinstance(batch, MixBatch):
                out.append((batch.images.clone(), batch.sample_ids.clone()))
            else:
                out.append((batch[0].clone(), batch[1].clone()))
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mix", [None, "k4"], ids=["mixing_off", "k4"])
def test_read_ahead_decodes_the_same_pixels_as_the_graph_read(noise_jpegs, mix, device):
    runs = {}
    for read in ("graph", "ahead"):
        loader = TrainLoader(noise_jpegs, batch_size=4, image_size=SIZE, threads=2, device=device, seed=3,
                             read=read, mix=_mix4() if mix else None, manifest=False)
        if mix:
            assert (loader.plan().members >= 0).sum(1).max() == 4  # composites of four are in it
        runs[read] = _epochs(loader)
    assert len(runs["graph"]) == len(runs["ahead"]) > 0
    for (a, ids_a), (b, ids_b) in zip(runs["graph"], runs["ahead"]):
        assert torch.equal(ids_a, ids_b)
        assert torch.equal(a, b), "read ahead, the decoded pixels differ"


def test_read_is_a_data_setting_with_a_one_line_error():
    assert DataConfig().read == "ahead"  # the default (1.06x "graph" on 2 CPU cores)
    with pytest.raises(UserError, match=r"read='later'; valid: graph, ahead"):
        DataConfig(read="later")


def test_reader_reads_in_order_drops_stale_work_and_keeps_depth(tmp_path):
    paths = []
    for i in range(12):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(bytes([i]) * (i + 1))
        paths.append(os.fsencode(p))
    reader = ReadAhead(paths.__getitem__, depth=2, threads=2)
    a = [np.arange(0, 4), np.arange(4, 8), np.arange(8, 12)]
    reader.start(lambda j: a[j], len(a))
    assert sorted(reader._pending) == [0, 1]  # `depth` batches waiting, no more
    first = reader.take(0)
    assert [bytes(x) for x in first.arrays] == [bytes([i]) * (i + 1) for i in range(4)]
    assert (first.seen[0] == np.arange(1, 5)).all() and not first.errors
    assert sorted(reader._pending) == [1, 2]
    # a restart (a re-plan after a bad file, a resume) at batch 1 with other files: the queued
    # reads of the first plan are dropped, never handed out
    b = [np.arange(0, 4), np.array([11, 10]), np.array([9])]
    reader.start(lambda j: b[j], len(b), position=1)
    assert [bytes(x) for x in reader.take(1).arrays] == [bytes([11]) * 12, bytes([10]) * 11]
    assert [bytes(x) for x in reader.take(2).arrays] == [bytes([9]) * 10]
    assert not reader._pending  # nothing past the last batch
    reader.stop()
    assert not reader.running and _no_readers_left()


def test_read_file_reports_missing_and_empty_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    data, size, _, why = read_file(os.fsencode(tmp_path / "empty.jpg"))
    assert (len(data), size, why) == (0, 0, "empty (0 bytes)")
    data, size, mtime, why = read_file(os.fsencode(tmp_path / "gone.jpg"))
    assert (len(data), size, mtime, why) == (0, -1, -1, "missing")


def test_slot_samples_is_the_slot_batch_order(noise_jpegs):
    loader = TrainLoader(noise_jpegs, batch_size=4, image_size=SIZE, threads=1, device="cpu",
                         mix=_mix4(), manifest=False)
    plan = loader.plan()
    for b in loader.batches():
        np.testing.assert_array_equal(slot_samples(plan, b), SlotBatch(plan, b).slot_samples)


# -- bad files, at the source --------------------------------------------------------------------

def _source(root, checked: bool, depth: int = 3):
    """A read-ahead source over `root`'s JPEGs (sorted), batches of 4 in file order."""
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    crops = CropPlanner((0.5, 1.0), (3 / 4, 4 / 3))
    if checked:
        bad, watch = validate_files(paths)
        assert not bad
        src = CheckedPlanSource(paths, mixing=False, crops=crops, watch=watch, read="ahead", depth=depth)
    else:
        src = PlanSource(paths, mixing=False, crops=crops, read="ahead", depth=depth)
    plan = single_plan(0, np.arange(len(paths)), (SIZE, SIZE), np.zeros(len(paths), np.uint8))
    return src, plan, plan.batches(4), paths


def _copy_tree(src, dst):
    os.makedirs(dst)
    for c in sorted(os.listdir(src)):
        os.makedirs(os.path.join(dst, c))
        for f in sorted(os.listdir(os.path.join(src, c)))[:4]:
            with open(os.path.join(src, c, f), "rb") as a, open(os.path.join(dst, c, f), "wb") as b:
                b.write(a.read())
    return dst


def _wait_read(src, j: int) -> None:
    """Until batch `j`'s files have been read ahead."""
    for f in src._reader._pending[j]:
        f.result()


def test_watch_excludes_a_file_that_vanished_before_or_after_its_read(noise_jpegs, tmp_path):
    root = _copy_tree(noise_jpegs, str(tmp_path / "d"))
    src, plan, batches, paths = _source(root, checked=True)
    os.remove(paths[1])  # before its read: the reader finds it missing
    src.start(plan, batches)
    with pytest.raises(BadFilesFound) as err:
        src()
    assert err.value.found == {1: "missing"}
    src.start(plan, batches, position=1)  # batch 1 read ahead, then its file goes
    _wait_read(src, 1)
    os.remove(paths[5])
    with pytest.raises(BadFilesFound) as err:
        src()
    assert err.value.found == {5: "missing"}
    src.start(None, [])
    assert _no_readers_left()


def test_a_file_changed_after_its_read_is_read_again(noise_jpegs, tmp_path):
    root = _copy_tree(noise_jpegs, str(tmp_path / "d"))
    src, plan, batches, paths = _source(root, checked=True)
    src.start(plan, batches)
    src()
    _wait_read(src, 1)
    Image.fromarray(np.full((50, 60, 3), 99, np.uint8)).save(paths[6], quality=90)  # still good
    files = src()[0]
    with open(paths[6], "rb") as f:
        assert bytes(files[2]) == f.read(), "DALI got the bytes of a version the watch did not check"
    src.start(None, [])


def test_without_the_watch_a_file_not_read_raises_for_the_loader_to_probe(noise_jpegs, tmp_path):
    root = _copy_tree(noise_jpegs, str(tmp_path / "d"))
    src, plan, batches, paths = _source(root, checked=False)
    open(paths[2], "wb").close()  # emptied
    src.start(plan, batches)
    with pytest.raises(FilesNotRead, match=rf"1 file\(s\) could not be read ahead: {re.escape(paths[2])}: empty"):
        src()
    assert len(src.fed) == 1  # the batch is among those DALI holds, so the loader probes its files
    src.start(None, [])


# -- no thread left behind -----------------------------------------------------------------------

def test_reading_threads_end_with_the_epoch_a_break_and_the_loader(noise_jpegs):
    loader = TrainLoader(noise_jpegs, batch_size=4, image_size=SIZE, threads=1, device="cpu",
                         read="ahead", manifest=False)
    for _ in loader:  # a whole epoch
        assert _readers()
    assert _no_readers_left()
    for i, _ in enumerate(loader):  # broken off
        if i == 1:
            break
    assert _no_readers_left()
    it = iter(loader)
    next(it)
    assert _readers()
    del it, loader  # dropped mid-epoch, never closed
    gc.collect()
    assert _no_readers_left()
    # a source dropped without `start(None, [])`: its pool's threads exit when it is collected
    src, plan, batches, _ = _source(noise_jpegs, checked=False)
    src.start(plan, batches)
    assert _readers()
    del src
    gc.collect()
    assert _no_readers_left()
