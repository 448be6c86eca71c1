"""Scripts written for torch's DataLoader run on our loaders: `loader.dataset` (ImageFolder's
attributes), `loader.sampler` (`set_epoch`, DistributedSampler's attributes), `drop_last`,
`batch_size`. The loops below are written the way torchvision's reference classification
script (references/classification/train.py) and timm's train.py drive their loaders; the
dataset is checked against `torchvision.datasets.ImageFolder` on the same folder."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

from conftest import identify
from mixtrain_dali.config import MixConfig
from mixtrain_dali.loader import MixBatch, TrainLoader, ValLoader

N = 21  # conftest.colour_folder: 3 classes x 7
FAST = dict(image_size=32, threads=1, device="cpu")
MIX = dict(mix=MixConfig(enabled=True, k=4), epochs=4)


def _train(root, **kw):
    return TrainLoader(root, batch_size=4, seed=5, **FAST, **kw)


def _val(root, **kw):
    return ValLoader(root, batch_size=5, resize=32, **FAST, **kw)


def _tiny_model(num_classes: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(3, num_classes))


def _epoch_order(loader) -> list[int]:
    """The samples one pass yields, in order (sample ids of a MixBatch's constituents)."""
    order = []
    for batch in loader:
        if isinstance(batch, MixBatch):
            order.extend(batch.sample_ids[batch.mask].tolist())
        else:
            order.extend(identify(batch[0], N).tolist())
    return order


@pytest.mark.parametrize("make", [_train, _val], ids=["train", "val"])
def test_dataset_matches_torchvision_imagefolder(colour_folder, make):
    ref = torchvision.datasets.ImageFolder(colour_folder)
    dataset = make(colour_folder).dataset
    assert len(dataset) == len(ref) == N
    assert dataset.classes == ref.classes
    assert dataset.class_to_idx == ref.class_to_idx
    assert dataset.samples == ref.samples == dataset.imgs
    assert dataset.targets == ref.targets
    assert dataset.root == ref.root


def test_dataset_lists_no_paths_until_asked(colour_folder):
    loader = _train(colour_folder)
    assert "_dataset" not in loader.__dict__  # nothing made with the loader
    dataset = loader.dataset
    assert loader.dataset is dataset and len(dataset) == N and dataset._built_for is None
    assert len(dataset.samples) == N and dataset._built_for is not None


def test_train_dataset_leaves_out_the_files_the_loader_left_out(colour_folder):
    loader = _train(colour_folder)
    assert len(loader.dataset.samples) == N
    loader.excluded[[2, 9]] = True  # as a bad file found mid-run would be
    ref = torchvision.datasets.ImageFolder(colour_folder)
    kept = [s for i, s in enumerate(ref.samples) if i not in (2, 9)]
    assert len(loader.dataset) == N - 2
    assert loader.dataset.samples == kept
    assert loader.dataset.targets == [t for _, t in kept]


@pytest.mark.parametrize("world", [1, 2])
def test_sampler_has_distributed_samplers_attributes(colour_folder, world):
    train_shards, val_shards = [], []
    for rank in range(world):
        train = _train(colour_folder, rank=rank, world_size=world, drop_last=True)
        val = _val(colour_folder, rank=rank, world_size=world)
        for loader, shuffle, drop_last in ((train, True, True), (val, False, False)):
            s = loader.sampler
            assert loader.sampler is s
            assert (s.num_replicas, s.rank, s.epoch) == (world, rank, 0)
            assert (s.shuffle, s.drop_last, loader.drop_last) == (shuffle, drop_last, drop_last)
            assert s.seed == (5 if loader is train else 0)
        train_shards.append(len(train.sampler))
        val_shards.append(len(val.sampler))
        assert len(train.dataset) == len(val.dataset) == N  # the whole split on every rank
    assert sum(val_shards) == N
    assert len(set(train_shards)) == 1 and sum(train_shards) <= N  # drop_last: equal full batches
    assert train_shards[0] % 4 == 0


@pytest.mark.parametrize("mix", [{}, MIX], ids=["plain", "mixing"])
def test_set_epoch_through_the_sampler_orders_as_the_loaders_own(colour_folder, mix):
    by_sampler, by_loader, first = (_train(colour_folder, **mix) for _ in range(3))
    by_sampler.sampler.set_epoch(3)
    by_loader.set_epoch(3)
    assert by_sampler.epoch == by_sampler.sampler.epoch == 3
    if mix:
        assert isinstance(next(iter(by_sampler)), MixBatch)
        by_sampler.sampler.set_epoch(3)  # that look broke off epoch 3: plan it again
    order = _epoch_order(by_sampler)
    assert sorted(order) == list(range(N))
    assert order == _epoch_order(by_loader)
    assert order != _epoch_order(first)  # epoch 0
    assert by_sampler.sampler.epoch == 4  # the loader moved on by itself, as it does without set_epoch


def test_a_torchvision_reference_style_script_runs_unchanged(colour_folder):
    """references/classification/train.py: main() reads `len(dataset.classes)`, calls
    `train_sampler.set_epoch(epoch)` each epoch; evaluate() counts the images it saw and
    compares them with `len(data_loader.dataset)` (it warns when they differ)."""
    data_loader = _train(colour_folder)
    data_loader_test = _val(colour_folder, classes=data_loader)
    train_sampler = data_loader.sampler
    dataset = data_loader.dataset
    model = _tiny_model(len(dataset.classes))
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def train_one_epoch():
        model.train()
        seen = []
        for image, target in data_loader:
            loss = criterion(model(image), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen.extend(identify(image, N).tolist())
        return seen

    def evaluate():
        model.eval()
        num_processed_samples = 0
        with torch.inference_mode():
            for image, target in data_loader_test:
                model(image)
                num_processed_samples += image.shape[0]
        assert len(data_loader_test.dataset) == num_processed_samples  # no warning
        return num_processed_samples

    orders = []
    for epoch in range(0, 2):
        train_sampler.set_epoch(epoch)
        orders.append(train_one_epoch())
        assert evaluate() == N
    assert [sorted(o) for o in orders] == [list(range(N))] * 2 and orders[0] != orders[1]
    assert data_loader_test.dataset.classes == dataset.classes == ["ant", "bee", "cat"]


@pytest.mark.parametrize("mix", [{}, MIX], ids=["plain", "mixing"])
def test_a_timm_style_script_runs_unchanged(colour_folder, mix):
    """timm's train.py: `loader.sampler.set_epoch(epoch)` where the sampler has one,
    `len(loader)` for the updates per epoch and the last batch, `loader.batch_size`, and the
    number of classes from `loader.dataset`."""
    loader_train = _train(colour_folder, **mix)
    loader_eval = _val(colour_folder, classes=loader_train.dataset.classes)
    model = _tiny_model(len(loader_train.dataset.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(2):
        if hasattr(loader_train.sampler, "set_epoch"):
            loader_train.sampler.set_epoch(epoch)
        updates_per_epoch = len(loader_train)
        last_idx = updates_per_epoch - 1
        batch_idx, samples = -1, 0
        for batch_idx, batch in enumerate(loader_train):
            if mix:
                assert isinstance(batch, MixBatch)
                input, target = batch.images, batch.labels[:, 0]  # a loop that knows MixBatch
                loader_train.record(batch, torch.rand(batch.mask.shape))
                samples += batch.n_samples
            else:
                input, target = batch
                samples += len(target)
            assert input.shape[0] <= loader_train.batch_size
            loss = F.cross_entropy(model(input), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert batch_idx == last_idx
        assert samples == len(loader_train.sampler) == len(loader_train.dataset) == N
        seen = sum(input.size(0) for input, _ in loader_eval)
        assert seen == len(loader_eval.dataset) == N
