"""Bad files never stop training: the up-front check, mid-epoch recovery with mixing on, the
val loader, unusual formats, `mixtrain check-data`, and the one-line user errors.

Data: tests/bad_images.py plants every kind of broken file among solid-colour images, so
each output pixel (each tile of a composite) says which sample produced it.
"""

import json
import logging
import os

import numpy as np
import pytest
import torch

import bad_images as B
from conftest import identify
from mixtrain_dali.cli import main
from mixtrain_dali.config import MixConfig
from mixtrain_dali.errors import UserError
from mixtrain_dali.layout import layout_batch
from mixtrain_dali.loader import MixBatch, TrainLoader, ValLoader
from mixtrain_dali.plan import EpochPlan
from mixtrain_dali.robust import (OK, SUSPECT, BadFileLog, check_file, drop_samples, probe_files,
                                  validate_files)

DEVICES = ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)]
READS = ["graph", "ahead"]  # the files read in the DALI graph, or ahead on host threads (readahead.py)
SIZE = 32
UNUSUAL = ("rgb_jpeg", "rgb_png", "grey_jpeg", "cmyk_jpeg", "progressive_jpeg", "exif_rotated_jpeg",
           "png_named_jpeg", "rgba_png", "palette_png", "rgb_png16", "grey_png16", "tiny_jpeg",
           "jpeg_trailing_bytes")


def _mix(k: int, fraction: float = 0.75) -> MixConfig:
    return MixConfig(enabled=True, k=k, fraction=fraction, selection="random", warmup_epochs=0,
                     final_full_fraction=0.0, gamma=1.0, self_correct=False)


def _bad_lines(run) -> list[str]:
    path = run / "bad_files.txt"
    return [line.split("\t")[0] for line in path.read_text().splitlines()] if path.exists() else []


def _run_epoch(loader: TrainLoader, colours, after_batch=None) -> tuple[list[int], list[int]]:
    """One epoch with mixing: checks every tile's pixels against its sample id and that the
    tiles of each composite cover the canvas exactly; returns (sample ids seen, batch sizes)."""
    seen, sizes = [], []
    for i, batch in enumerate(loader):
        assert isinstance(batch, MixBatch)
        ids, mask = batch.sample_ids.cpu().numpy(), batch.mask.cpu().numpy()
        assert len(batch) >= 1 and mask[:, 0].all(), "an empty batch or a composite without a head"
        assert batch.n_samples == mask.sum()
        images, boxes = batch.images.float().cpu(), batch.boxes.cpu().int().numpy()
        for b in range(len(batch)):
            cover = np.zeros((SIZE, SIZE), int)
            for j in np.flatnonzero(mask[b]):
                y, x, h, w = boxes[b, j]
                cover[y:y + h, x:x + w] += 1
                tile = images[b:b + 1, :, y + 1:y + h - 1, x + 1:x + w - 1]
                assert identify(tile, len(colours), colours)[0] == ids[b, j]
            assert (cover == 1).all(), "tiles do not cover the canvas exactly once"
        np.testing.assert_array_equal(batch.labels.cpu().numpy()[mask], loader.index.labels[ids[mask]])
        seen.extend(ids[mask].tolist())
        sizes.append(len(batch))
        loader.record(batch, torch.rand(mask.shape, device=batch.mask.device))
        if after_batch is not None:
            after_batch(i)
    return seen, sizes


def _pick(plan: EpochPlan, batches, lo: int, n_members, taken: set) -> int:
    """A composite in batches[lo:] with `n_members` constituents (a set of counts), not yet taken."""
    counts = (plan.members >= 0).sum(1)
    for b in batches[lo:]:
        for c in b:
            if counts[c] in n_members and int(c) not in taken:
                taken.add(int(c))
                return int(c)
    raise AssertionError(f"no composite with {n_members} constituents in batches {lo}..")


# -- the up-front check --------------------------------------------------------------------

@pytest.fixture(scope="module")
def every_kind(tmp_path_factory):
    root = tmp_path_factory.mktemp("every_kind")
    kinds = tuple(k for k in B.GOOD_WRITERS if k != "huge_jpeg")
    return B.plant(str(root), good_per_class=-(-len(kinds) // 3), good_kinds=kinds)


def test_check_finds_bad_and_suspect_files_and_passes_unusual_good_ones(every_kind):
    for path, kind in every_kind.bad_kind.items():
        verdict = check_file(path)
        assert verdict != OK, kind
        if verdict == SUSPECT:  # truncated: only a decode can tell
            assert kind in ("truncated_jpeg", "jpeg_missing_eoi", "jpeg_header_only", "truncated_png",
                            "png_missing_iend"), kind
    for path, kind in every_kind.good_kind.items():
        assert check_file(path) == (SUSPECT if kind == "jpeg_trailing_bytes" else OK), kind
    paths = list(every_kind.bad_kind) + list(every_kind.good_kind)
    bad, watch = validate_files(paths)
    assert {paths[i] for i in bad} == set(every_kind.bad_kind)
    zero = next(p for p, k in every_kind.bad_kind.items() if k == "zero_bytes")
    assert bad[paths.index(zero)] == "empty (0 bytes)"
    assert watch.changed(range(len(paths))) == {}  # nothing changed since


def test_probe_decodes_with_dali_one_file_at_a_time(every_kind):
    paths = list(every_kind.good_kind) + list(every_kind.bad_kind) + ["/nonexistent/x.JPEG"]
    bad = probe_files(paths)
    assert {paths[i] for i in bad} == set(every_kind.bad_kind) | {"/nonexistent/x.JPEG"}
    assert bad[len(paths) - 1] == "missing"


def test_file_watch_sees_a_file_vanish_or_change(tmp_path):
    planted = B.plant(str(tmp_path / "d"), good_per_class=2, bad_kinds=())
    paths = sorted(planted.good_kind)
    bad, watch = validate_files(paths)
    assert bad == {} and watch.changed(range(len(paths))) == {}
    B.corrupt(paths[0], "delete")
    B.corrupt(paths[1], "garbage")
    B.corrupt(paths[2], "truncate")
    found = watch.changed(range(len(paths)))
    assert found == {0: "missing", 1: found[1], 2: SUSPECT} and found[1].startswith("not an image")
    # a change is reported once (the loader excludes the file); a missing file every time
    assert watch.changed(range(len(paths))) == {0: "missing"}


def test_bad_file_log_lists_each_file_once_across_restarts(tmp_path, caplog):
    log_path = tmp_path / "run" / "bad_files.txt"
    first = BadFileLog(log_path)
    with caplog.at_level(logging.WARNING, logger="mixtrain_dali.robust"):
        assert first.add("/a/x.JPEG", "empty (0 bytes)")
        assert not first.add("/a/x.JPEG", "empty (0 bytes)")
        second = BadFileLog(log_path)  # a resumed run reads the list first
        assert "/a/x.JPEG" in second and not second.add("/a/x.JPEG", "again")
        assert second.add("/a/y.JPEG", "missing")
    assert log_path.read_text().splitlines() == ["/a/x.JPEG\tempty (0 bytes)", "/a/y.JPEG\tmissing"]
    assert sum("/a/x.JPEG" in r.getMessage() for r in caplog.records) == 1


# -- plan surgery ---------------------------------------------------------------------------

def _toy_plan(canvas=(32, 32)) -> tuple[EpochPlan, list[np.ndarray]]:
    rows = [[0, 1, 2, 3], [4, 5, -1, -1], [6, 7, 8, 9], [10, -1, -1, -1], [11, -1, -1, -1], [12, 13, 14, -1]]
    members = np.array(rows, np.int64)
    valid = members >= 0
    shares = np.where(valid, np.array([[0.4, 0.3, 0.2, 0.1]] * len(rows)), 0.0)
    shares = (shares / shares.sum(1, keepdims=True)).astype(np.float32)
    boxes = np.zeros((len(rows), 4, 4), np.int32)
    for r, row in enumerate(rows):
        m = int(valid[r].sum())
        boxes[r, :m] = layout_batch(shares[r:r + 1, :m], *canvas, 4)[0]
    flips = (np.arange(24).reshape(6, 4) % 2 * valid).astype(np.uint8)
    batches = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5])]
    return EpochPlan(0, canvas, members, boxes, shares, flips), batches


def test_drop_samples_promotes_relayouts_unmixes_and_drops():
    plan, batches = _toy_plan()
    bad = np.zeros(15, bool)
    bad[[0, 5, 6, 7, 8, 9, 10, 13]] = True
    new, out, info = drop_samples(plan, batches, 0, bad, min_side=4)
    # composite 0 lost its head: 1 is the head now, 1..3 laid out on renormalised shares
    np.testing.assert_array_equal(new.members[0], [1, 2, 3, -1])
    shares = np.array([0.3, 0.2, 0.1]) / 0.6
    np.testing.assert_allclose(new.shares[0, :3], shares, rtol=1e-6)
    np.testing.assert_array_equal(new.boxes[0, :3], layout_batch(shares[None], 32, 32, 4)[0])
    np.testing.assert_array_equal(new.flips[0, :3], plan.flips[0, 1:4])
    # composite 1 kept one constituent: a full-canvas single
    np.testing.assert_array_equal(new.members[1], [4, -1, -1, -1])
    np.testing.assert_array_equal(new.boxes[1, 0], [0, 0, 32, 32])
    assert new.shares[1, 0] == 1.0
    # composites 2 (all bad) and 3 (a bad single) are gone; batch 1 was left empty and took
    # the last composite of the largest batch (5 from batch 2)
    assert [b.tolist() for b in out] == [[0, 1], [5], [4]]
    np.testing.assert_array_equal(new.members[5], [12, 14, -1, -1])
    assert info == {"changed": 3, "dropped": 2, "moved": 1, "repeated": 0, "removed_batches": 0}
    # the original plan is untouched (its digest is the epoch's record)
    assert plan.members[0, 0] == 0 and new is not plan


def test_drop_samples_leaves_batches_before_start_alone():
    plan, batches = _toy_plan()
    bad = np.zeros(15, bool)
    bad[[0, 11]] = True
    new, out, info = drop_samples(plan, batches, 2, bad, min_side=4)
    np.testing.assert_array_equal(new.members[0], plan.members[0])  # batch 0 was consumed
    assert [b.tolist() for b in out] == [[0, 1], [2, 3], [5]]
    assert info["dropped"] == 1


@pytest.mark.parametrize("allow_fewer_steps", [True, False])
def test_drop_samples_corner_case_no_composite_to_borrow(allow_fewer_steps):
    plan, _ = _toy_plan()
    batches = [np.array([3]), np.array([4]), np.array([1])]
    bad = np.zeros(15, bool)
    bad[11] = True  # batch 1's only composite
    new, out, info = drop_samples(plan, batches, 1, bad, min_side=4, allow_fewer_steps=allow_fewer_steps)
    if allow_fewer_steps:  # one process: the step is just skipped
        assert [b.tolist() for b in out] == [[3], [1]] and info["removed_batches"] == 1
    else:  # DDP: every rank must step; a composite seen before is repeated (documented)
        assert [b.tolist() for b in out] == [[3], [3], [1]] and info["repeated"] == 1


def test_drop_samples_with_nothing_left_is_a_user_error():
    plan, _ = _toy_plan()
    with pytest.raises(UserError, match="unreadable"):
        drop_samples(plan, [np.array([3])], 0, np.ones(15, bool), min_side=4)


# -- training through bad files, mixing on --------------------------------------------------

@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [2, 3, 4])
def test_training_through_bad_files_sees_every_good_sample_once(tmp_path, caplog, k, device, read):
    planted = B.plant(str(tmp_path / "data"), good_per_class=16, seed=k,
                      good_kinds=("rgb_jpeg", "rgb_png", "cmyk_jpeg", "grey_jpeg", "png_named_jpeg",
                                  "progressive_jpeg", "rgba_png", "rgb_png16"))
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        loader = TrainLoader(planted.root, batch_size=4, image_size=SIZE, mix=_mix(k), seed=k,
                             threads=2, device=device, bad_files=run / "bad_files.txt", read=read)
    index = loader.index
    colours = planted.colours(index)
    good, bad = planted.good_ids(index), planted.bad_ids(index)
    assert set(np.flatnonzero(loader.excluded)) == bad  # all planted bad files, found up front
    loader.losses[:-1] = 1.0  # every sample "seen": the first epoch mixes
    plan, batches = loader.plan(), loader.batches()
    n_steps = len(batches)
    assert (plan.members >= 0).sum(1).max() == k
    taken: set = set()
    victims: dict[int, str] = {}

    def kill(comp: int, which, how: str):
        for s in plan.members[comp][which]:
            victims[int(s)] = how

    # before the epoch: the head of a mixed composite turns to garbage (another one is promoted)
    kill(_pick(plan, batches, 1, {k}, taken), [0], "garbage")
    for s, how in victims.items():
        B.corrupt(index.paths[s], how)
    # during the epoch, after the first batch: beyond what DALI has prefetched by then
    during: dict[int, str] = {}
    comp = _pick(plan, batches, 4, {k}, taken)  # all but one constituent: a full-canvas single
    during.update({int(s): "delete" for s in plan.members[comp][1:k]})
    comp = _pick(plan, batches, 4, {1}, taken)  # an unmixed sample: dropped from its batch
    during[int(plan.members[comp][0])] = "truncate"
    if k >= 3:  # one of three or four: the rest laid out again
        comp = _pick(plan, batches, 4, {k}, taken)
        during[int(plan.members[comp][1])] = "empty"
    victims.update(during)

    def corrupt_during(i):
        if i == 0:
            for s, how in during.items():
                B.corrupt(index.paths[s], how)

    with caplog.at_level(logging.WARNING):
        seen, sizes = _run_epoch(loader, colours, corrupt_during)
    assert len(seen) == len(set(seen)), "a good sample was repeated"
    assert set(seen) == good - set(victims), "a good sample was dropped"
    assert len(sizes) == n_steps and min(sizes) >= 1  # same number of steps, none empty

    n_steps = len(loader.batches())  # epoch 1 plans without any of them
    seen, sizes = _run_epoch(loader, colours)
    assert sorted(seen) == sorted(good - set(victims)) and len(sizes) == n_steps

    gone = bad | set(victims)
    assert set(np.flatnonzero(loader.excluded)) == gone  # no good sample excluded
    lines = _bad_lines(run)
    assert sorted(lines) == sorted(index.paths[s] for s in gone), "each bad file listed exactly once"
    for s in gone:
        assert sum(index.paths[s] in r.getMessage() for r in caplog.records
                   if r.levelno == logging.WARNING) == 1, index.paths[s]


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("device", DEVICES)
def test_dali_errors_mid_epoch_are_recovered_without_the_upfront_check(tmp_path, device, read):
    """No up-front check and no watch: DALI itself raises (an empty file, a deleted one), the
    loader probes the batches DALI held, rewrites the rest of the epoch and goes on.
    (Only read errors here: a corrupt file that reaches DALI 2.4's CPU decoder in a batch can
    crash the process instead of raising; that is why the checks exist. See robust.py.)"""
    planted = B.plant(str(tmp_path / "data"), good_per_class=16, bad_kinds=("zero_bytes",), seed=5)
    loader = TrainLoader(planted.root, batch_size=4, image_size=SIZE, mix=_mix(3), seed=1, threads=2,
                         device=device, bad_files=tmp_path / "run" / "bad_files.txt",
                         validate=False, watch_files=False, read=read)
    index = loader.index
    colours = planted.colours(index)
    good, bad = planted.good_ids(index), planted.bad_ids(index)
    assert not loader.excluded.any()
    loader.losses[:-1] = 1.0
    plan, batches = loader.plan(), loader.batches()
    n_steps = len(batches)
    taken: set = set()
    # beyond what DALI has prefetched when batch 0 is out; read ahead, also beyond what has been
    # read (prefetch + 1 batches more): a file deleted after its read, with no watch, is decoded
    # from the bytes read then (good bytes; the next epoch's read finds it gone)
    lo = 4 if read == "graph" else 4 + loader.data.prefetch + 1
    head = int(plan.members[_pick(plan, batches, lo, {3}, taken)][0])
    single = int(plan.members[_pick(plan, batches, lo, {1}, taken)][0])

    def delete_during(i):
        if i == 0:
            B.corrupt(index.paths[head], "delete")
            B.corrupt(index.paths[single], "delete")

    seen, sizes = _run_epoch(loader, colours, delete_during)
    gone = bad | {head, single}
    assert len(seen) == len(set(seen)) and set(seen) == good - {head, single}
    assert len(sizes) == n_steps
    assert set(np.flatnonzero(loader.excluded)) == gone
    assert sorted(_bad_lines(tmp_path / "run")) == sorted(index.paths[s] for s in gone)
    seen, _ = _run_epoch(loader, colours)
    assert sorted(seen) == sorted(good - {head, single})


@pytest.mark.parametrize("read", READS)
def test_a_batch_emptied_by_bad_files_borrows_a_composite(tmp_path, read):
    planted = B.plant(str(tmp_path / "data"), good_per_class=12, bad_kinds=(), seed=3)
    loader = TrainLoader(planted.root, batch_size=3, image_size=SIZE, mix=_mix(2, 0.5), seed=2, threads=2,
                         device="cpu", bad_files=tmp_path / "run" / "bad_files.txt", read=read)
    index = loader.index
    colours = planted.colours(index)
    loader.losses[:-1] = 1.0
    plan, batches = loader.plan(), loader.batches()
    n_steps = len(batches)
    members = plan.members[batches[5]]
    victims = {int(s) for s in members[members >= 0]}  # every image of batch 5

    def delete_during(i):
        if i == 0:
            for s in victims:
                B.corrupt(index.paths[s], "delete")

    seen, sizes = _run_epoch(loader, colours, delete_during)
    assert sorted(seen) == sorted(planted.good_ids(index) - victims)
    assert len(sizes) == n_steps and min(sizes) >= 1


@pytest.mark.parametrize("read", READS)
def test_resumed_loader_keeps_exclusions_and_the_list(tmp_path, read):
    planted = B.plant(str(tmp_path / "data"), good_per_class=6, bad_kinds=("garbage", "zero_bytes"))
    run = tmp_path / "run"
    a = TrainLoader(planted.root, batch_size=4, image_size=SIZE, threads=1, device="cpu",
                    bad_files=run / "bad_files.txt", read=read)
    victim = sorted(planted.good_kind)[0]
    B.corrupt(victim, "delete")
    ids = [i for _, y in a for i in y.tolist()]  # an epoch finds the deleted file
    assert a.excluded[a.index.paths.index(victim)]
    state = a.state_dict()
    B.plant(str(tmp_path / "data"), good_per_class=6, bad_kinds=())  # the file is back, good
    b = TrainLoader(planted.root, batch_size=4, image_size=SIZE, threads=1, device="cpu",
                    bad_files=run / "bad_files.txt")
    b.load_state_dict(state)
    assert (b.excluded == a.excluded).all()  # checkpoint's exclusions | what is bad now
    assert len(_bad_lines(run)) == len(set(_bad_lines(run))) == 3
    assert len(ids) == len(planted.good_kind) - 1


# -- validation loader ----------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_val_loader_leaves_out_bad_files_and_lists_them(tmp_path, device):
    planted = B.plant(str(tmp_path / "val"), good_per_class=6)
    run = tmp_path / "run"
    loader = ValLoader(planted.root, batch_size=4, image_size=SIZE, threads=2, device=device,
                       bad_files=run / "bad_files.txt")
    index = loader.index
    colours = planted.colours(index)
    for _ in range(2):
        ids = np.concatenate([identify(x, len(colours), colours) for x, _ in loader])
        assert sorted(ids) == sorted(planted.good_ids(index))
    assert len(loader) == -(-len(planted.good_kind) // 4)
    assert sorted(_bad_lines(run)) == sorted(planted.bad_kind)
    # sharded: each rank its own slice, checked alone; together every good file once
    got = []
    for rank in range(3):
        shard = ValLoader(index, batch_size=4, image_size=SIZE, threads=1, device=device, rank=rank,
                          world_size=3, bad_files=run / "bad_files.txt")
        got.append(np.concatenate([identify(x, len(colours), colours) for x, _ in shard]))
    assert sorted(np.concatenate(got)) == sorted(planted.good_ids(index))
    assert len(_bad_lines(run)) == len(planted.bad_kind)


def test_val_file_vanishing_mid_pass_is_skipped(tmp_path):
    planted = B.plant(str(tmp_path / "val"), good_per_class=10, bad_kinds=())
    loader = ValLoader(planted.root, batch_size=2, image_size=SIZE, threads=1, device="cpu",
                       bad_files=tmp_path / "run" / "bad_files.txt")
    index = loader.index
    colours = planted.colours(index)
    victim = index.paths[20]
    ids = []
    for i, (x, _) in enumerate(loader):
        ids.extend(identify(x, len(colours), colours).tolist())
        if i == 0:
            os.remove(victim)
    assert sorted(ids) == sorted(set(range(len(index))) - {20})
    assert _bad_lines(tmp_path / "run") == [victim]
    ids = np.concatenate([identify(x, len(colours), colours) for x, _ in loader])  # next pass
    assert sorted(ids) == sorted(set(range(len(index))) - {20})


# -- unusual formats ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unusual(tmp_path_factory):
    root = tmp_path_factory.mktemp("unusual")
    kinds = tuple(B.GOOD_WRITERS)  # every good kind, with an 8000 x 6000 JPEG
    return B.plant(str(root), good_per_class=-(-len(kinds) // 3), good_kinds=kinds, bad_kinds=())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["train", "train_mixed", "val"])
def test_unusual_formats_load_as_rgb_at_the_expected_size(unusual, mode, device, tmp_path):
    run = tmp_path / "run"
    if mode == "val":
        loader = ValLoader(unusual.root, batch_size=5, image_size=SIZE, threads=2, device=device,
                           bad_files=run / "bad_files.txt")
    else:
        loader = TrainLoader(unusual.root, batch_size=5, image_size=SIZE, threads=2, device=device,
                             mix=_mix(3) if mode == "train_mixed" else None, bad_files=run / "bad_files.txt")
        loader.losses[:-1] = 1.0
    index = loader.index
    colours = unusual.colours(index)
    assert not (run / "bad_files.txt").exists()  # nothing good is mistaken for bad
    if mode == "train_mixed":
        seen, _ = _run_epoch(loader, colours)
    else:
        seen = []
        for images, labels in loader:
            assert images.shape[1:] == (3, SIZE, SIZE) and images.dtype == torch.float32
            assert torch.isfinite(images).all()
            ids = identify(images, len(colours), colours)
            np.testing.assert_array_equal(labels.cpu().numpy(), index.labels[ids])
            seen.extend(ids.tolist())
    assert sorted(seen) == list(range(len(index)))


def test_exif_orientation_is_applied_like_pil_exif_transpose(tmp_path):
    from PIL import Image, ImageOps

    top, bottom = (220, 40, 40), (40, 40, 220)
    stored = Image.new("RGB", (64, 32), top)
    stored.paste(bottom, (32, 0, 64, 32))  # right half: after a 90 degree clockwise turn, the bottom
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "val" / "a").mkdir(parents=True)
    path = tmp_path / "val" / "a" / "rot.JPEG"
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
    shown = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    assert shown.shape == (64, 32, 3) and shown[4, 16, 0] > 150 and shown[60, 16, 2] > 150
    x, _ = next(iter(ValLoader(tmp_path / "val", batch_size=1, image_size=SIZE, threads=1, device="cpu")))
    top_colour = identify(x[:, :, 2:12], 2, [top, bottom])[0]
    bottom_colour = identify(x[:, :, 20:30], 2, [top, bottom])[0]
    assert (top_colour, bottom_colour) == (0, 1)


# -- mixtrain check-data --------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset_with_bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    kinds = tuple(k for k in B.GOOD_WRITERS if k != "huge_jpeg")
    train = B.plant(str(root / "train"), good_per_class=-(-len(kinds) // 3), good_kinds=kinds)
    val = B.plant(str(root / "val"), good_per_class=2, bad_kinds=("truncated_jpeg", "zero_bytes"), seed=1)
    return root, train, val


def test_check_data_reports_bad_files_classes_and_formats(dataset_with_bad_files, tmp_path, capsys):
    root, train, val = dataset_with_bad_files
    out = tmp_path / "report.json"
    assert main(["check-data", str(root), "--workers", "2", "--json", str(out), "--no-progress"]) == 1
    report = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert report["bad_files"] == len(train.bad_kind) + len(val.bad_kind)
    for split, planted in (("train", train), ("val", val)):
        s = report["splits"][split]
        assert {b["path"] for b in s["bad"]} == set(planted.bad_kind)
        assert len(s["bad"]) == len(planted.bad_kind) and all(b["reason"] for b in s["bad"])
        assert sum(s["classes"].values()) == s["files"] == len(planted.bad_kind) + len(planted.good_kind)
        for b in s["bad"]:
            assert b["path"] in text
    s = report["splits"]["train"]
    assert set(s["classes"]) == {"ant", "bee", "cat"}
    assert s["width"]["min"] == 8 and s["height"]["min"] == 6 and s["width"]["max"] <= 90
    for mode in ("CMYK", "L", "RGBA", "P", "LA", "RGB 16-bit", "I;16"):
        assert mode in s["modes"], (mode, s["modes"])
    assert s["formats"]["PNG"] >= 5 and s["bit_depth_16"] == 2 and s["exif_rotated"] == 1
    assert s["extension_mismatch"] == 1  # the PNG named .JPEG
    assert "bad file(s)" in text.splitlines()[-1]


def test_check_data_clean_split_exits_0_and_quick_mode(tmp_path, capsys):
    planted = B.plant(str(tmp_path / "flat"), good_per_class=3, bad_kinds=())
    assert main(["check-data", planted.root, "--workers", "1", "--no-progress"]) == 0
    assert "no bad files" in capsys.readouterr().out
    B.plant(str(tmp_path / "flat"), good_per_class=0, bad_kinds=("zero_bytes", "jpeg_missing_eoi"))
    assert main(["check-data", planted.root, "--workers", "1", "--quick", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "zero_bytes" in out and "jpeg_missing_eoi" in out  # suspects are decoded even in --quick


# -- a user's mistakes: one line, exit 2 ----------------------------------------------------

FAST = ["--arch", "resnet18", "--image-size", "32", "--threads", "1", "--no-progress", "--epochs", "1",
        "--device", "cpu"]


def _layout(tmp_path, how: str) -> str:
    root = tmp_path / "data"
    if how == "empty_dir":
        root.mkdir()
    elif how == "no_class_folders":
        (root / "train").mkdir(parents=True)
        (root / "train" / "stray.JPEG").write_bytes(b"x")
    elif how == "class_without_images":
        B.plant(str(root / "train"), classes=("ant", "bee"), good_per_class=2, bad_kinds=())
        (root / "train" / "cat").mkdir()
        (root / "train" / "cat" / "notes.txt").write_text("no images here")
    elif how == "all_bad":
        B.plant(str(root / "train"), good_per_class=0)
    else:
        B.plant(str(root / "train"), good_per_class=2, bad_kinds=())
    return str(root)


BAD_USER_INPUT = [
    ("empty_dir", [], "has no train/ folder"),
    ("no_class_folders", [], "no class folders"),
    ("class_without_images", [], "hold no images"),
    ("all_bad", [], "no readable training images in"),
    ("ok", ["--mix-k", "0"], "k=0 is outside 1..4"),
    ("ok", ["--mix-k", "2", "--mix-fraction", "-0.5"], "fraction=-0.5 is outside [0, 1]"),
    ("ok", ["--mix-k", "4", "--mix-speedup", "0.5"], "cannot be reached with k=4"),
    ("ok", ["--batch-size", "-3"], "batch_size=-3 must be >= 1"),
    ("ok", ["--image-size", "8"], "image_size=8 is too small"),
    ("ok", ["--arch", "not_a_model"], "not_a_model"),
]


@pytest.mark.parametrize("layout,extra,message", BAD_USER_INPUT, ids=[m for _, _, m in BAD_USER_INPUT])
def test_more_bad_input_gives_one_line_and_exit_2(layout, extra, message, tmp_path, capsys):
    data = _layout(tmp_path, layout)
    assert main(["train", "--data", data, "--out", str(tmp_path / "run"), *FAST, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_every_train_file_going_bad_after_the_check_is_one_line(tmp_path, capsys, monkeypatch):
    """All files pass the up-front check, then all break: the epoch has no batch left."""
    import mixtrain_dali.train as t

    data = _layout(tmp_path, "ok")
    made = t.TrainLoader.from_config

    def then_corrupt_all(*a, **k):
        loader = made(*a, **k)
        for path in loader.index.paths:
            B.corrupt(path, "garbage")
        return loader

    monkeypatch.setattr(t.TrainLoader, "from_config", then_corrupt_all)
    assert main(["train", "--data", data, "--out", str(tmp_path / "run"), *FAST]) == 2
    err = capsys.readouterr().err.strip()  # after the start-up warnings (no val/ here)
    assert err.splitlines()[-1].startswith("mixtrain: error: no readable training images left in"), err
    assert "Traceback" not in err and err.count("error:") == 1, err


@pytest.mark.parametrize("body,message", [
    ("[data]\nbatch_size = 1.5\n", "batch_size = 1.5 has the wrong type"),
    ("[mix]\nk = true\n", "k = True has the wrong type"),
    ("[data]\nscale = 0.5\n", "scale = 0.5 has the wrong type"),
    ("[mix]\nfraction = 0.5\ntarget_speedup = 1.2\n", "not both"),
])
def test_more_bad_config_values_give_one_line_and_exit_2(body, message, tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    data = _layout(tmp_path, "ok")
    assert main(["train", "--data", data, "--config", str(cfg), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


@pytest.mark.parametrize("how", ["missing", "no_class_folders"])
def test_check_data_user_error_gives_one_line_and_exit_2(how, tmp_path, capsys):
    target = tmp_path / "nope"
    if how == "no_class_folders":
        target.mkdir()
    assert main(["check-data", str(target), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(target) in err, err
