"""ImageNet-scale start-up: compact paths, the file-check manifest (changes between runs are
seen, a broken manifest is rebuilt) and the check split across ranks (each reads its share,
every rank ends with the same verdicts and the same plans)."""

import json
import logging
import os
import threading

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from torchvision.datasets import ImageFolder

from conftest import write_colour_folder
from mixtrain_dali import manifest as M
from mixtrain_dali import robust
from mixtrain_dali.config import MixConfig
from mixtrain_dali.dataset import PathList, scan_image_folder
from mixtrain_dali.loader import TrainLoader
from mixtrain_dali.robust import check_index


@pytest.fixture
def folder(tmp_path):
    return write_colour_folder(str(tmp_path / "data"), classes=("ant", "bee", "cat"), per_class=6, ext="jpg")


@pytest.fixture
def opened(monkeypatch):
    """Paths the file check opened, per thread name."""
    seen: dict[str, list[str]] = {}
    real = robust._check

    def counting(path):  # bytes from the check's loop, str from the file watch
        seen.setdefault(threading.current_thread().name, []).append(os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(robust, "_check", counting)
    return seen


def _all(opened) -> list[str]:
    return [p for ps in opened.values() for p in ps]


def _check(folder, manifest):
    return check_index(scan_image_folder(folder, stat=True), manifest=manifest)


def test_path_list_behaves_like_the_list_of_paths(folder):
    index = scan_image_folder(folder)
    theirs = [p for p, _ in ImageFolder(folder).samples]
    assert isinstance(index.paths, PathList)
    assert index.paths == theirs and list(index.paths) == theirs
    assert index.paths[3] == theirs[3] and index.paths[-1] == theirs[-1]
    assert index.paths[2:9:3] == theirs[2:9:3]
    assert index.paths.index(theirs[7]) == 7
    assert bytes(index.paths.encoded(5)) == theirs[5].encode()
    with pytest.raises(IndexError):
        index.paths[len(theirs)]
    # one buffer of relative paths, not a str per file
    assert index.paths.buf.nbytes == sum(len(p) - len(folder) - 1 for p in theirs)


def test_scan_with_stat_records_size_and_mtime(folder):
    index = scan_image_folder(folder, stat=True)
    for i in (0, 9, 17):
        st = os.stat(index.paths[i])
        assert (index.sizes[i], index.mtimes[i]) == (st.st_size, st.st_mtime_ns)
    assert scan_image_folder(folder).sizes is None


def test_second_start_reads_no_file_and_keeps_the_verdicts(folder, opened, tmp_path):
    bad_path = os.path.join(folder, "bee", "img002.jpg")
    with open(bad_path, "wb") as f:
        f.write(b"<html>not an image</html>")
    where = tmp_path / "cache" / "m.npz"
    bad1, _ = _check(folder, where)
    assert len(_all(opened)) == 18 and where.is_file()
    opened.clear()
    index = scan_image_folder(folder, stat=True)
    bad2, watch = check_index(index, manifest=where)
    assert _all(opened) == [], "the manifest vouches for every file"
    assert bad1 == bad2 and [index.paths[i] for i in bad2] == [bad_path]
    assert "not an image" in bad2[index.paths.index(bad_path)]
    assert (watch.sizes == index.sizes).all()


def test_changed_added_and_deleted_files_are_seen(folder, opened, tmp_path):
    where = tmp_path / "m.npz"
    _check(folder, where)
    changed = os.path.join(folder, "ant", "img001.jpg")    # good -> truncated: size changes
    touched = os.path.join(folder, "cat", "img004.jpg")    # same bytes, new mtime
    added = os.path.join(folder, "bee", "new.jpg")         # a new, bad file
    added_class = os.path.join(folder, "dog", "d.jpg")     # a new class folder
    deleted = os.path.join(folder, "bee", "img000.jpg")
    data = open(changed, "rb").read()
    with open(changed, "wb") as f:
        f.write(data[: len(data) // 3])
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    with open(added, "wb") as f:
        f.write(b"GIF89a" + b"\0" * 100)
    os.makedirs(os.path.dirname(added_class))
    with open(added_class, "wb") as f:
        f.write(open(touched, "rb").read())
    os.remove(deleted)
    opened.clear()
    index = scan_image_folder(folder, stat=True)
    bad, _ = check_index(index, manifest=where)
    assert sorted(_all(opened)) == sorted([changed, touched, added, added_class])
    assert deleted not in index.paths
    reasons = {index.paths[i]: r for i, r in bad.items()}
    assert set(reasons) == {changed, added}
    assert "GIF" in reasons[added] and "truncated" in reasons[changed]
    # and the manifest now holds the new state: a third start reads nothing
    opened.clear()
    bad3, _ = check_index(scan_image_folder(folder, stat=True), manifest=where)
    assert _all(opened) == [] and bad3 == bad


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "other_version"])
def test_broken_manifest_is_rebuilt_with_one_warning(folder, opened, tmp_path, caplog, damage):
    where = tmp_path / "m.npz"
    _check(folder, where)
    raw = where.read_bytes()
    if damage == "garbage":
        where.write_bytes(b"\x00junk" * 100)
    elif damage == "truncated":
        where.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        where.write_bytes(b"")
    else:
        m = M.Manifest.load(where)
        M.VERSION, old = M.VERSION + 1, M.VERSION
        try:
            m.save(where)
        finally:
            M.VERSION = old
    opened.clear()
    with caplog.at_level(logging.WARNING):
        bad, _ = _check(folder, where)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(where) in warnings[0].getMessage()
    assert len(_all(opened)) == 18 and bad == {}
    assert M.Manifest.load(where).sizes.shape == (18,), "rebuilt"


def test_manifest_location(folder, tmp_path, monkeypatch):
    assert M.manifest_path(folder) == M.Path(folder) / M.MANIFEST_NAME
    given = M.manifest_path(folder, tmp_path / "mine")
    assert given.parent == tmp_path / "mine" and given.name.startswith("data-")
    monkeypatch.setattr(M.os, "access", lambda *a: False)  # a read-only dataset
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cached = M.manifest_path(folder)
    assert cached.parent == tmp_path / "xdg" / "mixtrain" / "manifests"
    assert cached != M.manifest_path(tmp_path / "other" / "data"), "named after the absolute path"


def test_loader_flags_manifest_and_no_check(folder, opened, tmp_path):
    TrainLoader(folder, 4, 32, device="cpu", manifest=tmp_path / "m")
    assert len(_all(opened)) == 18 and len(list((tmp_path / "m").iterdir())) == 1
    assert not os.path.exists(os.path.join(folder, M.MANIFEST_NAME))
    opened.clear()
    TrainLoader(folder, 4, 32, device="cpu", manifest=tmp_path / "m")
    assert _all(opened) == []
    TrainLoader(folder, 4, 32, device="cpu", manifest=False)
    assert len(_all(opened)) == 18
    opened.clear()
    loader = TrainLoader(folder, 4, 32, device="cpu", validate=False)
    assert _all(opened) == [] and loader.index.sizes is None
    TrainLoader(folder, 4, 32, device="cpu")  # default: next to the data
    assert os.path.isfile(os.path.join(folder, M.MANIFEST_NAME))
    assert len(ImageFolder(folder)) == 18, "the manifest is not mistaken for a class or an image"


def test_check_split_across_two_ranks_injected_gather(folder, opened, tmp_path):
    bad_path = os.path.join(folder, "cat", "img003.jpg")
    with open(bad_path, "wb") as f:
        f.write(b"")
    barrier, box = threading.Barrier(2), [None, None]
    results = [None, None]

    def gather_for(rank):
        def gather(obj):
            box[rank] = obj
            barrier.wait()
            return list(box)
        return gather

    sizes = [None, None]

    def run(rank):
        index = scan_image_folder(folder, stat=True)
        results[rank] = check_index(index, rank=rank, world_size=2, gather=gather_for(rank),
                                    manifest=tmp_path / "m.npz")[0]
        sizes[rank] = index.hw

    threads = [threading.Thread(target=run, args=(r,), name=f"rank{r}") for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    index = scan_image_folder(folder)
    assert sorted(opened["rank0"]) == sorted(index.paths[0::2])
    assert sorted(opened["rank1"]) == sorted(index.paths[1::2])
    assert results[0] == results[1] and [index.paths[i] for i in results[0]] == [bad_path]
    # each rank read half the headers; both hold every image's size (the crop windows need them)
    want = np.array([Image.open(p).size[::-1] if p != bad_path else (-1, -1) for p in index.paths])
    np.testing.assert_array_equal(sizes[0], want)
    np.testing.assert_array_equal(sizes[1], want)


# -- two real processes (gloo) ------------------------------------------------------------

def _worker(rank, init_file, data, out_dir):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    opened = []
    real_open = os.open

    def counting_open(path, *args, **kwargs):
        if os.fsdecode(path).startswith(data):
            opened.append(os.fsdecode(path))
        return real_open(path, *args, **kwargs)

    os.open = counting_open
    loader = TrainLoader(data, 4, 32, mix=MixConfig(enabled=True, k=4, target_speedup=1.6, warmup_epochs=0),
                         device="cpu", seed=3)
    os.open = real_open
    plan = loader.plan()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"opened": opened, "digest": plan.digest(), "excluded": np.flatnonzero(loader.excluded).tolist(),
                   "samples": [list(s) for s in loader.index.samples]}, f)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_each_read_half_and_plan_identically(folder, tmp_path):
    bad_path = os.path.join(folder, "ant", "img005.jpg")
    with open(bad_path, "wb") as f:
        f.write(b"\xff\xd8\xff" + b"\0" * 10)  # a JPEG header, no end marker: suspect, then decode fails
    mp.start_processes(_worker, args=(str(tmp_path / "init"), folder, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    n = 18
    headers = [[p for p in r["opened"] if not p.endswith(M.MANIFEST_NAME)] for r in ranks]
    assert len(headers[0]) + len(headers[1]) == n and not set(headers[0]) & set(headers[1])
    assert set(headers[0]) | set(headers[1]) == {p for p, _ in ranks[0]["samples"]}
    assert all(abs(len(set(h)) - n / 2) <= 0.5 for h in headers), "each rank checks half"
    assert ranks[0]["samples"] == ranks[1]["samples"]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    bad_id = [p for p, _ in ranks[0]["samples"]].index(bad_path)
    assert ranks[0]["excluded"] == ranks[1]["excluded"] == [bad_id]


@pytest.mark.parametrize("slow", [False, True])
def test_adaptive_work_keeps_order_and_pools_only_slow_storage(monkeypatch, slow):
    """run_adaptive: the same results in order either way; a thread pool only when the first
    items were slower than POOL_ABOVE_S each (fast local files stay in the calling thread)."""
    import threading

    from mixtrain_dali import dataset

    monkeypatch.setattr(dataset, "POOL_ABOVE_S", 0.0 if slow else 10.0)
    monkeypatch.setattr(dataset, "PROBE_ITEMS", 10)
    threads_seen = set()

    def work(lo, hi):
        threads_seen.add(threading.get_ident())
        return [i * i for i in range(lo, hi)]

    out = dataset.run_adaptive(work, 1000, threads=4, chunk=50)
    assert out == [i * i for i in range(1000)]
    caller = threading.get_ident()
    assert (threads_seen - {caller} != set()) == slow


def test_cold_check_takes_sizes_from_its_own_reads(folder, tmp_path, opened):
    """A lone rank's cold start scans without stats and the check's fstats fill them: the
    manifest it writes then vouches for every file on the next start (nothing re-read)."""
    from mixtrain_dali.robust import check_index

    index = scan_image_folder(folder)
    assert index.sizes is None
    where = tmp_path / "m.npz"
    bad, _ = check_index(index, manifest=where)
    assert not bad and (index.sizes > 0).all() and (index.mtimes > 0).all()
    again = scan_image_folder(folder, stat=True)
    np.testing.assert_array_equal(again.sizes, index.sizes)
    np.testing.assert_array_equal(again.mtimes, index.mtimes)
    opened.clear()
    assert check_index(again, manifest=where)[0] == {} and _all(opened) == []


def test_loader_second_start_stats_nothing_and_finds_a_file_changed_since_at_its_batch(
        folder, opened, tmp_path, monkeypatch):
    """A loader's second start lists the tree and takes the manifest's word for every file
    there (no open, no stat); a file broken in place since then is found by the file watch
    when its batch comes, left out, and listed, and the epoch goes on."""
    TrainLoader(folder, 4, 32, device="cpu", manifest=tmp_path / "m")
    broken = os.path.join(folder, "bee", sorted(os.listdir(os.path.join(folder, "bee")))[2])
    with open(broken, "wb") as f:
        f.write(b"\xff\xd8 not a jpeg any more")
    stats = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: stats.append(p) or real_stat(p, *a, **k))
    opened.clear()
    loader = TrainLoader(folder, 4, 32, device="cpu", manifest=tmp_path / "m", seed=0, threads=1)
    assert _all(opened) == [] and [p for p in stats if str(p).endswith(".jpg")] == []
    assert not loader.excluded.any()
    seen = sum(len(labels) for _, labels in loader)
    assert broken in _all(opened)  # checked again when its batch was handed over
    assert loader.excluded.sum() == 1 and loader.excluded[loader.index.paths.index(broken)]
    assert seen == 17


def test_loader_without_file_watch_stats_every_file_against_the_manifest(folder, opened, tmp_path):
    """With watch_files=False nothing would look at a file later: the start compares each
    file's size and mtime with the manifest and checks the changed one again."""
    TrainLoader(folder, 4, 32, device="cpu", manifest=tmp_path / "m")
    changed = os.path.join(folder, "ant", sorted(os.listdir(os.path.join(folder, "ant")))[0])
    with open(changed, "ab") as f:
        f.write(b"\0")
    opened.clear()
    TrainLoader(folder, 4, 32, device="cpu", manifest=tmp_path / "m", watch_files=False)
    assert _all(opened) == [changed]
