"""Device handling that can be checked without a GPU: which device each tensor lands on, what
is copied out of DALI, the process group's backend, the CUDA ordinal, RNG state in
checkpoints, and the val graph's GPU placement (read from the graph, not run). The GPU runs
of the same paths are in test_gpu_path.py."""

import numpy as np
import pytest
import torch
from nvidia.dali.backend import TensorListCPU

from conftest import identify
from mixtrain_dali import feed as F
from mixtrain_dali.config import MixConfig
from mixtrain_dali.loader import TrainLoader, ValLoader, heads_to_torch
from mixtrain_dali.pipelines import forgot_set_device, val_pipeline
from mixtrain_dali.train import cuda_ordinal, dist_backend, restore_rng, rng_state

N = 21  # conftest.colour_folder


# -- copying DALI outputs out -----------------------------------------------------------------

def test_heads_to_torch_copies_only_the_heads_into_torch_memory_as_channels_last():
    batch = np.arange(6 * 5 * 4 * 3, dtype=np.float32).reshape(6, 5, 4, 3)  # 6 slots, NHWC
    out = TensorListCPU(batch.copy())
    got = heads_to_torch(out, 2, torch.device("cpu"))
    assert got.shape == (2, 3, 5, 4)
    assert got.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(got.numpy(), batch[:2].transpose(0, 3, 1, 2))
    assert got.untyped_storage().nbytes() == 2 * 5 * 4 * 3 * 4  # the heads, not all 6 slots
    np.asarray(out.as_tensor())[...] = -1  # DALI reusing its buffer must not reach the batch
    np.testing.assert_array_equal(got.numpy(), batch[:2].transpose(0, 3, 1, 2))


def test_zero_copy_shares_dalis_buffer_only_when_every_sample_is_a_head():
    batch = np.arange(4 * 5 * 4 * 3, dtype=np.float32).reshape(4, 5, 4, 3)
    out = TensorListCPU(batch.copy())
    shared = heads_to_torch(out, 4, torch.device("cpu"), zero_copy=True)
    assert shared.data_ptr() == out.as_tensor().data_ptr()
    assert shared.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(shared.numpy(), batch.transpose(0, 3, 1, 2))
    heads = heads_to_torch(out, 2, torch.device("cpu"), zero_copy=True)  # composites: copied
    assert heads.data_ptr() != out.as_tensor().data_ptr()
    assert heads.untyped_storage().nbytes() == 2 * 5 * 4 * 3 * 4


def test_unmixed_batches_are_dalis_memory_and_survive_later_steps_and_epochs(colour_folder):
    """Without mixing the CPU loader hands out DALI's output buffers (no copy, as DALI's own
    iterator does on its dynamic executor): a batch kept by the caller must not change
    while DALI runs later iterations and later epochs."""
    loader = TrainLoader(colour_folder, batch_size=4, image_size=32, seed=0, threads=1, device="cpu")
    kept, first_seen = [], []
    for _ in range(2):
        for images, labels in loader:
            kept.append(images)
            first_seen.append(images.clone())
    assert loader._pipe.exec_dynamic
    assert len({int(t.data_ptr()) for t in kept}) == len(kept)  # a buffer of its own each
    for images, before in zip(kept, first_seen):
        torch.testing.assert_close(images, before, rtol=0, atol=0)


def test_mixed_batches_hold_only_their_composites_and_survive_later_steps(colour_folder):
    mix = MixConfig(enabled=True, k=4, fraction=0.8, selection="random", warmup_epochs=0,
                    final_full_fraction=0.0, gamma=0.0, self_correct=False)
    loader = TrainLoader(colour_folder, batch_size=3, image_size=32, mix=mix, seed=0, threads=1,
                         device="cpu")
    loader.losses[:-1] = 1.0  # every sample seen: the first epoch mixes
    kept, first_seen = [], []
    for batch in loader:
        assert batch.images.untyped_storage().nbytes() == len(batch) * 3 * 32 * 32 * 4
        kept.append(batch)
        first_seen.append(batch.images.clone())
    assert any(b.mask.sum(1).max() > 1 for b in kept)
    for batch, before in zip(kept, first_seen):  # after every later step of the epoch
        torch.testing.assert_close(batch.images, before, rtol=0, atol=0)


def test_val_images_and_labels_land_on_the_loader_device(colour_folder):
    loader = ValLoader(colour_folder, batch_size=4, image_size=32, threads=1, device="cpu")
    for images, labels in loader:
        assert images.device == labels.device == loader.torch_device
        assert labels.dtype == torch.int64
        assert len(identify(images, N)) == len(labels)


# -- the val graph on a GPU, read without running it --------------------------------------------

def _graph(device):
    pipe = val_pipeline(files=["x.jpg"], labels=[0], device=device, image_size=224, resize=256,
                        batch_size=2, num_threads=1, device_id=0 if device == "gpu" else None)
    pipe._build_graph()  # the Python graph only: no backend, no CUDA
    return pipe


def _op(pipe, name):
    (op,) = [op for op in pipe._ops if str(op.spec).startswith(f"OpSpec for {name}:")]
    return op


def test_gpu_val_slice_gets_its_crop_on_the_cpu_and_labels_come_out_on_the_gpu():
    pipe = _graph("gpu")
    slice_op = _op(pipe, "Slice")
    data, *args = slice_op.inputs
    assert data.device == "gpu"
    # only CPU argument inputs: no GPU constant that DALI would copy back with a sync
    assert args and all(a.device == "cpu" for a in args)
    assert not any(str(op.spec).startswith("OpSpec for Constant:") and "device: gpu" in str(op.spec)
                   for op in pipe._ops)
    assert "jpeg_fancy_upsampling: True" in str(_op(pipe, "decoders__Image").spec)
    assert [o.device for o in pipe._graph_outputs] == ["gpu", "gpu"]  # images, labels
    assert [o.device for o in _graph("cpu")._graph_outputs] == ["cpu", "cpu"]


# -- distributed set-up, CUDA ordinal, RNG ------------------------------------------------------

def test_backend_follows_the_resolved_device_not_the_machine():
    assert dist_backend("gpu") == "nccl"
    assert dist_backend("cpu") == "gloo"  # --device cpu on a CUDA machine included


@pytest.mark.parametrize("local_rank,count,expected", [(0, 1, 0), (3, 1, 0), (3, 8, 3), (0, 8, 0)])
def test_cuda_ordinal_is_the_rank_s_own_or_the_only_visible_device(local_rank, count, expected):
    assert cuda_ordinal(local_rank, count) == expected


def test_cuda_ordinal_refuses_a_rank_beyond_the_visible_devices():
    from mixtrain_dali.errors import UserError

    with pytest.raises(UserError, match="LOCAL_RANK=3"):
        cuda_ordinal(3, 2)


def test_forgetting_set_device_under_torchrun_is_warned_about():
    assert forgot_set_device(0, "2", 4) is not None  # rank 2 of 4 GPUs still on GPU 0
    assert forgot_set_device(2, "2", 4) is None
    assert forgot_set_device(0, "3", 1) is None       # one visible device per rank
    assert forgot_set_device(0, None, 8) is None      # not under torchrun


def test_the_set_device_hint_is_said_once_per_process_not_per_loader(monkeypatch, caplog):
    from mixtrain_dali import pipelines as P

    monkeypatch.setattr(P, "device_kind", lambda device: "gpu")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(P, "_said", set(), raising=False)  # a fresh process
    monkeypatch.setenv("LOCAL_RANK", "2")
    with caplog.at_level("WARNING", logger="mixtrain_dali.pipelines"):
        for _ in range(3):  # the train loader, the val loader, ...
            assert P.resolve_device("auto") == ("gpu", 0)
    assert [r.getMessage() for r in caplog.records].count(forgot_set_device(0, "2", 4)) == 1


def test_rng_state_round_trips_through_a_cpu_loaded_checkpoint(tmp_path):
    state = rng_state(on_gpu=False)
    assert "cuda_rng" not in state
    expected = torch.rand(4)
    torch.save(state, tmp_path / "c.pt")
    torch.rand(10)
    restore_rng(torch.load(tmp_path / "c.pt", map_location="cpu"), on_gpu=False)
    torch.testing.assert_close(torch.rand(4), expected)


# -- bad-file probes -----------------------------------------------------------------------------

def test_probe_judges_with_the_cpu_decoder_and_asks_the_gpu_decoder_only_second(monkeypatch):
    calls = []

    def fake(paths, decoder="cpu", device_id=None, checked=False):
        calls.append((decoder, device_id))
        return {} if decoder == "cpu" else {0: "cannot be decoded by DALI (x)"}

    monkeypatch.setattr(F, "probe_files", fake)
    assert F.probe(["a"], "cpu", None) == {} and calls == [("cpu", None)]
    calls.clear()
    bad = F.probe(["a"], "gpu", 1)
    assert calls == [("cpu", None), ("mixed", 1)]
    assert "GPU decoder" in bad[0]


def test_only_the_launch_rank_0_clears_an_earlier_run(monkeypatch):
    from mixtrain_dali.train import _launch_rank

    monkeypatch.delenv("RANK", raising=False)
    assert _launch_rank() == 0
    monkeypatch.setenv("RANK", "3")  # torchrun's, before train() makes the process group
    assert _launch_rank() == 3
