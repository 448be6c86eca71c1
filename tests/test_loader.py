"""The loaders through the real DALI pipelines (CPU path): coverage, order, val numerics,
mixing bookkeeping, resume. Images are solid colours (conftest.colour_of), so every output
pixel says which sample produced it."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import colour_of, identify
from mixtrain_dali.config import MixConfig
from mixtrain_dali.errors import UserError
from mixtrain_dali.loader import MixBatch, TrainLoader, ValLoader

N = 21  # conftest.colour_folder: 3 classes x 7
DEVICES = ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)]  # gpu: DALI's mixed decoder


def _epoch_ids(loader):
    ids, labels, sizes = [], [], []
    for images, y in loader:
        ids.append(identify(images, N))
        labels.append(y.cpu().numpy())
        sizes.append(len(y))
    return np.concatenate(ids), np.concatenate(labels), sizes


@pytest.mark.parametrize("device", DEVICES)
def test_every_sample_exactly_once_per_epoch_with_its_label(colour_folder, device):
    loader = TrainLoader(colour_folder, batch_size=4, image_size=32, seed=3, threads=2, device=device)
    for _ in range(2):
        expected_batches = len(loader)
        ids, labels, sizes = _epoch_ids(loader)
        assert sorted(ids) == list(range(N))
        np.testing.assert_array_equal(labels, loader.index.labels[ids])
        assert len(sizes) == expected_batches == 6
        assert sizes == [4, 4, 4, 4, 3, 2]  # remainder kept, never a batch of one


def test_new_order_each_epoch_same_order_for_same_seed(colour_folder):
    a = TrainLoader(colour_folder, batch_size=8, image_size=32, seed=7, threads=2, device="cpu")
    b = TrainLoader(colour_folder, batch_size=8, image_size=32, seed=7, threads=2, device="cpu")
    c = TrainLoader(colour_folder, batch_size=8, image_size=32, seed=8, threads=2, device="cpu")
    a0, a1 = _epoch_ids(a)[0], _epoch_ids(a)[0]
    b0, b1 = _epoch_ids(b)[0], _epoch_ids(b)[0]
    c0 = _epoch_ids(c)[0]
    assert not np.array_equal(a0, a1)
    np.testing.assert_array_equal(a0, b0)
    np.testing.assert_array_equal(a1, b1)
    assert not np.array_equal(a0, c0)


def test_drop_last_gives_only_full_batches(colour_folder):
    loader = TrainLoader(colour_folder, batch_size=4, image_size=32, drop_last=True, threads=2, device="cpu")
    ids, _, sizes = _epoch_ids(loader)
    assert sizes == [4] * 5 and len(set(ids)) == 20


def test_outputs_are_float_nchw_channels_last(colour_folder):
    loader = TrainLoader(colour_folder, batch_size=4, image_size=40, threads=2, device="cpu")
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 40, 40) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert labels.dtype == torch.int64


def test_leaving_an_epoch_early_does_not_leak_into_the_next(colour_folder):
    loader = TrainLoader(colour_folder, batch_size=4, image_size=32, seed=1, threads=2, device="cpu")
    for i, _ in enumerate(loader):
        if i == 1:
            break
    ids, _, _ = _epoch_ids(loader)
    assert sorted(ids) == list(range(N))
    assert loader.epoch == 2


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_epoch_covers_every_sample_once_and_tiles_show_their_sample(colour_folder, device):
    mix = MixConfig(enabled=True, k=3, fraction=0.6, selection="random", warmup_epochs=0,
                    final_full_fraction=0.0, gamma=0.0, self_correct=False)
    loader = TrainLoader(colour_folder, batch_size=4, image_size=48, mix=mix, seed=0, threads=2,
                         device=device)
    loader.losses[:-1] = 1.0  # every sample "seen", so the first epoch mixes
    seen = []
    for batch in loader:
        assert isinstance(batch, MixBatch)
        assert batch.images.device == batch.sample_ids.device == loader.torch_device
        ids, mask = batch.sample_ids.cpu().numpy(), batch.mask.cpu().numpy()
        seen.extend(ids[mask].tolist())
        assert batch.n_samples == mask.sum()
        np.testing.assert_array_equal(batch.labels.cpu().numpy()[mask], loader.index.labels[ids[mask]])
        images = batch.images.cpu().numpy()
        for b, j in zip(*np.nonzero(mask)):
            y, x, h, w = batch.boxes[b, j].int().tolist()
            tile = torch.from_numpy(images[b:b + 1, :, y + 1:y + h - 1, x + 1:x + w - 1])
            assert identify(tile, N)[0] == ids[b, j]
        loader.record(batch, torch.rand(mask.shape, device=loader.torch_device))
    assert sorted(seen) == list(range(N))
    plan_stats = loader.controller.plan(0, np.ones(N, np.float32)).stats
    assert plan_stats["mixed_samples"] == 12  # round(0.6 * 21) -> groups of 3


def test_recorded_losses_reach_the_table_and_the_next_plan(colour_folder):
    mix = MixConfig(enabled=True, k=2, fraction=0.5, warmup_epochs=1, final_full_fraction=0.0,
                    selection="loss")
    loader = TrainLoader(colour_folder, batch_size=4, image_size=32, mix=mix, seed=0, threads=2, device="cpu")
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 2, N).astype(np.float32)
    for batch in loader:  # epoch 0: warm-up, unmixed
        loss = torch.from_numpy(truth)[batch.sample_ids.clamp(min=0)] * batch.mask
        loader.record(batch, loss)
    plan = loader.plan()  # epoch 1 plans from the recorded table
    np.testing.assert_allclose(loader.host_losses, truth)
    mixed = plan.members[(plan.members >= 0).sum(1) > 1]
    mixed = mixed[mixed >= 0]
    assert len(mixed) > 0 and (truth[mixed] <= truth.mean()).all()


def test_resume_gives_the_same_next_epoch_plan_and_order(colour_folder):
    mix = MixConfig(enabled=True, k=2, fraction=0.5, warmup_epochs=1, final_full_fraction=0.0)

    def make():
        return TrainLoader(colour_folder, batch_size=4, image_size=32, mix=mix, seed=5, threads=2,
                           device="cpu")

    def run_epoch(loader):
        for batch in loader:
            loader.record(batch, batch.sample_ids.float() * 0.1 * batch.mask)

    uninterrupted = make()
    run_epoch(uninterrupted)  # warm-up
    run_epoch(uninterrupted)  # a mixing epoch: the table now holds mixed losses
    state = uninterrupted.state_dict()  # what a checkpoint after epoch 2 holds
    expected = uninterrupted.plan()

    resumed = make()
    resumed.load_state_dict(state)
    got = resumed.plan()
    assert got.epoch == expected.epoch == 2
    assert got.digest() == expected.digest()


def test_resume_refuses_a_checkpoint_from_another_dataset(colour_folder, tmp_path):
    from conftest import write_colour_folder

    other = write_colour_folder(str(tmp_path / "other"), classes=("x", "y"), per_class=3)
    state = TrainLoader(colour_folder, batch_size=4, image_size=32, threads=1, device="cpu").state_dict()
    with pytest.raises(UserError, match="another dataset"):
        TrainLoader(other, batch_size=4, image_size=32, threads=1, device="cpu").load_state_dict(state)


@pytest.fixture(scope="module")
def photo_like_jpegs(tmp_path_factory):
    """JPEGs of smooth content plus texture, in sizes that exercise rounding (odd sides,
    portrait and landscape, exact 256)."""
    root = tmp_path_factory.mktemp("val")
    rng = np.random.default_rng(0)
    sizes = [(300, 400), (375, 500), (500, 333), (256, 256), (301, 257), (480, 640)]
    for i, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx * 255 // w, yy * 255 // h, ((xx + yy) % 64) * 4], -1) * 0.7
        img = (img + rng.integers(0, 60, (h, w, 3))).astype(np.uint8)
        (root / "a").mkdir(exist_ok=True)
        Image.fromarray(img).save(root / "a" / f"{i}.jpg", quality=90)
    return root


# DALI's antialiased linear resize vs PIL's bilinear, after torchvision's exact sizes and
# crop offsets: rounding-level differences only.
VAL_MAX_ABS = 2.0 / 255 / 0.225   # at most 2 grey levels on any pixel (normalised units)
VAL_MEAN_ABS = 0.5 / 255 / 0.225  # and half a grey level on average
# GPU: nvJPEG's IDCT differs from libjpeg-turbo's (which PIL uses) by a level or two; its chroma
# upsampling is libjpeg's too (val_pipeline's jpeg_fancy_upsampling). Stated, not yet measured:
# at most 4 grey levels on any pixel, 0.75 on average.
VAL_TOLERANCE = {"cpu": (VAL_MAX_ABS, VAL_MEAN_ABS), "gpu": (4.0 / 255 / 0.225, 0.75 / 255 / 0.225)}


@pytest.mark.parametrize("device", DEVICES)
def test_val_pipeline_matches_torchvision_resize_centercrop(photo_like_jpegs, device):
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    ref_ds = ImageFolder(str(photo_like_jpegs), T.Compose([
        T.Resize(256), T.CenterCrop(224), T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]))
    loader = ValLoader(photo_like_jpegs, batch_size=4, image_size=224, threads=2, device=device)
    got = torch.cat([x.cpu() for x, _ in loader])
    ref = torch.stack([ref_ds[i][0] for i in range(len(ref_ds))])
    diff = (got - ref).abs()
    print(f"{device} val vs torchvision: max {diff.max() * 255 * 0.225:.2f}, "
          f"mean {diff.mean() * 255 * 0.225:.3f} grey levels")
    max_abs, mean_abs = VAL_TOLERANCE[device]
    assert diff.max() <= max_abs, f"max abs diff {diff.max():.4f}"
    assert diff.mean() <= mean_abs, f"mean abs diff {diff.mean():.4f}"


def test_val_sizes_scale_with_image_size(photo_like_jpegs):
    loader = ValLoader(photo_like_jpegs, batch_size=4, image_size=112, threads=1, device="cpu")
    assert loader.data.val_resize == 128
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 112, 112) and y.dtype == torch.int64


def test_val_shards_are_disjoint_and_cover(colour_folder):
    ids = []
    for rank in range(3):
        loader = ValLoader(colour_folder, batch_size=4, image_size=32, rank=rank, world_size=3, threads=1,
                           device="cpu")
        got = np.concatenate([identify(x, N) for x, _ in loader])
        assert len(got) == loader.shard_size == 7
        ids.append(got)
    assert sorted(np.concatenate(ids)) == list(range(N))


def test_colour_identity_helper_is_unambiguous():
    cols = np.array([colour_of(i) for i in range(N)])
    d = np.abs(cols[:, None] - cols[None]).max(-1) + np.eye(N) * 999
    assert d.min() >= 10


@pytest.mark.parametrize("mix,said", [
    (dict(selection="loss", fraction=0.5), "nothing can be mixed"),
    (dict(fraction=0.5), "self-correction never unmixes a sample"),
    (dict(fraction=0.5, gamma=1.0), "area shares stay equal (gamma=1 has no loss to weigh), self-correction"),
    ({}, None),  # the defaults (random groups, equal shares, resize schedule) need no loss
])
def test_a_loop_that_never_records_is_told_once_what_it_loses(mix, said, colour_folder, caplog):
    mix = MixConfig(enabled=True, k=2, **mix)
    loader = TrainLoader(colour_folder, 4, 32, mix=mix, epochs=4, device="cpu", threads=1)
    with caplog.at_level("WARNING", logger="mixtrain_dali.losses"):
        for _ in range(3):
            for _batch in loader:
                pass
    told = [r.getMessage() for r in caplog.records if "no loss was ever recorded" in r.getMessage()]
    if said is None:
        assert told == [] and loader.controller.is_mixing_epoch(1)
    else:
        assert len(told) == 1 and said in told[0] and "loader.record(batch" in told[0]


def test_pipeline_is_reused_across_epochs_and_decodes_what_a_new_one_would(colour_folder):
    """Building a pipeline costs seconds with the GPU decoder, so a clean epoch end keeps it
    (reset, not rebuilt); the graph draws nothing at random, so epoch 2 of a reused pipeline
    equals epoch 2 of a fresh loader, pixel for pixel. A broken-off epoch drops it."""
    kw = dict(batch_size=4, image_size=32, seed=5, threads=1, device="cpu", scale=(0.3, 1.0))
    loader = TrainLoader(colour_folder, **kw)
    for _ in loader:
        pass
    first = loader._pipe
    for _ in loader:
        pass
    assert loader._pipe is first
    reused = [x.clone() for x, _ in loader]
    assert loader._pipe is first
    fresh = TrainLoader(colour_folder, **kw)
    fresh.set_epoch(2)
    for a, (b, _) in zip(reused, fresh):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for _ in loader:
        break
    assert loader._pipe is None
    assert len([y for _, y in loader]) == len(loader)


# ------------------------------------------------------------------ drop-in behaviour (issue 10)

def _val_ids(loader):
    return np.concatenate([identify(images, N) for images, _ in loader])


def test_val_pass_after_a_broken_off_one_is_whole(colour_folder):
    val = ValLoader(colour_folder, batch_size=4, image_size=32, resize=32, threads=1, device="cpu")
    full = _val_ids(val)
    assert sorted(full) == list(range(N))
    for _ in val:  # a quick look at one batch
        break
    np.testing.assert_array_equal(_val_ids(val), full)
    with pytest.raises(ZeroDivisionError):  # an exception mid-pass, its iterator never closed
        it = iter(val)
        next(it)
        1 / 0
    np.testing.assert_array_equal(_val_ids(val), full)


@pytest.mark.parametrize("make", ["train", "val"])
def test_two_passes_at_once_over_one_loader_are_refused(colour_folder, make):
    if make == "train":
        loader = TrainLoader(colour_folder, batch_size=4, image_size=32, threads=1, device="cpu")
    else:
        loader = ValLoader(colour_folder, batch_size=4, image_size=32, resize=32, threads=1, device="cpu")
    with pytest.raises(UserError, match="superseded"):
        for _ in zip(loader, loader):
            pass
    # the newer pass was not hurt, and the loader still gives whole passes
    ids = _val_ids(loader) if make == "val" else _epoch_ids(loader)[0]
    assert sorted(ids) == list(range(N))


def test_train_iter_after_an_abandoned_pass_starts_the_next_epoch_whole(colour_folder):
    loader = TrainLoader(colour_folder, batch_size=4, image_size=32, seed=2, threads=1, device="cpu")
    kept = iter(loader)
    next(kept)  # epoch 0 abandoned, its iterator still alive
    ids, _, _ = _epoch_ids(loader)
    assert sorted(ids) == list(range(N))
    assert loader.epoch == 2 and loader.epochs_completed == 1  # epoch 0 did not complete
    with pytest.raises(UserError, match="superseded"):
        next(kept)


def test_loader_attributes_a_dataloader_user_reaches_for(colour_folder):
    train = TrainLoader(colour_folder, batch_size=4, image_size=32, threads=1, device="cpu")
    val = ValLoader(colour_folder, batch_size=5, image_size=32, resize=32, threads=1, device="cpu",
                    classes=train)
    assert train.classes == val.classes == ["ant", "bee", "cat"]
    assert train.class_to_idx == val.class_to_idx == {"ant": 0, "bee": 1, "cat": 2}
    assert (train.batch_size, val.batch_size) == (4, 5)
    assert train.num_samples == val.num_samples == N and len(val) == 5


def test_shuffle_false_gives_sample_order_every_epoch(colour_folder):
    loader = TrainLoader(colour_folder, batch_size=4, image_size=32, threads=1, device="cpu", shuffle=False)
    for _ in range(2):
        ids, labels, _ = _epoch_ids(loader)
        np.testing.assert_array_equal(ids, np.arange(N))
        np.testing.assert_array_equal(labels, loader.index.labels)
    with pytest.raises(UserError, match="shuffle=False"):
        TrainLoader(colour_folder, batch_size=4, image_size=32, device="cpu", shuffle=False,
                    mix=MixConfig(enabled=True, k=2, fraction=0.5))


def test_val_split_missing_a_class_keeps_the_train_labels(tmp_path):
    from conftest import write_colour_folder

    train_root = write_colour_folder(str(tmp_path / "train"), classes=("ant", "bee", "cat"), per_class=2)
    val_root = write_colour_folder(str(tmp_path / "val"), classes=("bee", "cat"), per_class=2)
    val = ValLoader(val_root, batch_size=4, image_size=32, resize=32, threads=1, device="cpu",
                    classes=TrainLoader(train_root, 4, 32, device="cpu").classes)
    labels = torch.cat([y for _, y in val]).tolist()
    assert sorted(labels) == [1, 1, 2, 2]  # bee and cat, as in training; not 0 and 1
    extra = write_colour_folder(str(tmp_path / "val2"), classes=("ant", "dog"), per_class=1)
    with pytest.raises(UserError, match="dog"):
        ValLoader(extra, 4, 32, device="cpu", classes=["ant", "bee", "cat"])


def test_mixing_run_keeps_batch_shapes_in_unmixed_epochs(colour_folder):
    mix = MixConfig(enabled=True, k=3, fraction=0.6, selection="random", warmup_epochs=1,
                    final_full_fraction=0.0)
    loader = TrainLoader(colour_folder, batch_size=4, image_size=32, mix=mix, epochs=3, threads=1,
                         device="cpu")
    shapes = set()
    for epoch in range(2):  # warm-up (unmixed) and a mixing epoch
        for batch in loader:
            assert batch.sample_ids.shape[1] == batch.boxes.shape[1] == batch.shares.shape[1] == 3
            assert isinstance(batch.boxes_host, np.ndarray)  # for model(..., isolate=True), no sync
            np.testing.assert_array_equal(batch.boxes_host, batch.boxes.cpu().numpy())
            shapes.add(batch.labels.shape[1])
            loader.record(batch, torch.ones(batch.labels.shape))
    assert shapes == {3}


def test_keep_steps_gives_a_mixing_epoch_the_unmixed_step_count(colour_folder):
    def loader(keep_steps):
        mix = MixConfig(enabled=True, k=4, fraction=1.0, selection="random", warmup_epochs=1,
                        final_full_fraction=0.0, schedule="flat", keep_steps=keep_steps)
        out = TrainLoader(colour_folder, batch_size=4, image_size=32, mix=mix, epochs=3, threads=1,
                          device="cpu")
        unmixed_steps = len(out)
        out.set_epoch(1)  # a mixing epoch, every sample's loss known
        out.losses[:-1] = 1.0  # synced into the host table when the epoch is planned
        return out, unmixed_steps

    kept, unmixed_steps = loader(True)
    plain, _ = loader(False)
    assert kept.plan().n_mixed_samples == plain.plan().n_mixed_samples == 20
    assert kept.epoch_batch_size(kept.plan()) == 1 and plain.epoch_batch_size(plain.plan()) == 4
    assert len(plain) == 2 and len(kept) == unmixed_steps == 6
    batches = list(kept)
    assert len(batches) == 6 and sum(b.n_samples for b in batches) == N


@pytest.mark.parametrize("mix", [None, MixConfig(enabled=True, k=4, fraction=0.5, selection="random",
                                                 warmup_epochs=0, final_full_fraction=0.0)])
def test_crop_tries_keeps_every_sample_once_and_draws_the_same_first_candidate(colour_folder, mix):
    """crop_tries=10 (torchvision's rule) changes only which window is cut, never the order."""
    loaders = [TrainLoader(colour_folder, batch_size=4, image_size=32, seed=3, threads=2, device="cpu",
                           mix=mix, crop_tries=t) for t in (1, 10)]
    for loader in loaders:
        loader.losses[:-1] = 1.0  # every sample "seen": the first epoch can mix
    (ids1, labels1, _), (ids10, labels10, _) = (_epoch_ids(x) if mix is None else
                                                (np.sort(np.concatenate([b.sample_ids[b.mask].cpu().numpy()
                                                                         for b in x])), None, None)
                                                for x in loaders)
    assert sorted(ids10) == sorted(ids1) == list(range(N))
    assert loaders[1]._source.crops.tries == 10 and loaders[0]._source.crops.tries == 1


@pytest.mark.parametrize("bad", [0, 101, 2.5, True, "10"])
def test_crop_tries_out_of_range_is_a_one_line_user_error(colour_folder, bad):
    with pytest.raises(UserError, match=r"crop_tries=.* must be an integer from 1 to 100"):
        TrainLoader(colour_folder, batch_size=4, image_size=32, device="cpu", crop_tries=bad)
