"""The GPU path end to end (all marked gpu: skipped without CUDA; `make gpu-check` runs them).

Val labels and images on one device; `mixtrain train` on the GPU with val and --resume;
`mixtrain preview --device auto`; the mixed decoder against the CPU decoder on unusual JPEGs;
batches on the right device, channels_last, not overwritten by later steps; no host sync per
step under torch.cuda.set_sync_debug_mode("error"); peak GPU memory of a full-size step;
NCCL DDP where there are two GPUs. Lines starting with "GPU-CHECK" are measurements that
`make gpu-check` copies into its report.
"""

import json
import os

import numpy as np
import pytest
import torch

from conftest import identify

pytestmark = pytest.mark.gpu

N = 21  # conftest.colour_folder


def _mix(k=4, fraction=0.8):
    from mixtrain_dali.config import MixConfig

    return MixConfig(enabled=True, k=k, fraction=fraction, selection="random", warmup_epochs=0,
                     final_full_fraction=0.0, gamma=1.0, self_correct=False)


def _report(**values):
    print("GPU-CHECK " + " ".join(f"{k}={v}" for k, v in values.items()), flush=True)


# -- placement ---------------------------------------------------------------------------------

def test_val_labels_and_images_on_one_device(colour_folder):
    from mixtrain_dali.loader import ValLoader

    loader = ValLoader(colour_folder, batch_size=4, image_size=32, threads=2, device="gpu")
    assert loader.torch_device == torch.device("cuda", torch.cuda.current_device())
    seen = []
    for images, labels in loader:
        assert images.device == labels.device == loader.torch_device
        assert labels.dtype == torch.int64
        seen.extend(identify(images, N).tolist())
        _ = (labels == labels).sum()  # the comparison evaluate() makes: same device, no error
    assert sorted(seen) == list(range(N))


@pytest.mark.parametrize("torch_device", ["cuda", "cpu"])
def test_train_batches_land_where_asked_and_survive_later_steps(colour_folder, torch_device):
    from mixtrain_dali.loader import TrainLoader

    dev = torch.device("cuda", torch.cuda.current_device()) if torch_device == "cuda" else torch.device("cpu")
    loader = TrainLoader(colour_folder, batch_size=3, image_size=32, mix=_mix(), seed=0, threads=2,
                         device="gpu", torch_device=dev)
    assert loader.device_id == torch.cuda.current_device()
    loader.losses[:-1] = 1.0  # every sample seen: the first epoch mixes
    kept, snapshots = [], []
    for batch in loader:
        assert batch.images.device == batch.sample_ids.device == dev
        assert batch.images.is_contiguous(memory_format=torch.channels_last)
        assert batch.images.untyped_storage().nbytes() == len(batch) * 3 * 32 * 32 * 4  # heads only
        kept.append(batch)
        snapshots.append(batch.images.cpu().clone())
    torch.cuda.synchronize()
    assert any(b.mask.sum(1).max() > 1 for b in kept)
    for batch, before in zip(kept, snapshots):
        torch.testing.assert_close(batch.images.cpu(), before, rtol=0, atol=0)
        ids, mask = batch.sample_ids.cpu().numpy(), batch.mask.cpu().numpy()
        images = batch.images.cpu()
        for b, j in zip(*np.nonzero(mask)):
            y, x, h, w = batch.boxes[b, j].int().tolist()
            assert identify(images[b:b + 1, :, y + 1:y + h - 1, x + 1:x + w - 1], N)[0] == ids[b, j]


def test_heads_to_torch_from_a_gpu_batch_to_every_device():
    from nvidia.dali.backend import TensorListGPU

    from mixtrain_dali.loader import heads_to_torch

    src = torch.arange(5 * 4 * 6 * 3, dtype=torch.float32, device="cuda").reshape(5, 4, 6, 3)
    out = TensorListGPU(src)
    for dev in (torch.device("cuda", src.device.index), torch.device("cpu")):
        got = heads_to_torch(out, 2, dev)
        assert got.device == dev and got.shape == (2, 3, 4, 6)
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got.cpu(), src[:2].permute(0, 3, 1, 2).cpu())
        if dev.type == "cuda":
            assert got.data_ptr() != src.data_ptr()  # a copy in torch's memory, not a view


# -- host syncs, memory ------------------------------------------------------------------------

@pytest.mark.parametrize("mixing", [True, False])
def test_no_host_sync_per_step(colour_folder, mixing):
    import torch.nn.functional as F

    from mixtrain_dali.loader import MixBatch, TrainLoader
    from mixtrain_dali.nn import mix_loss

    loader = TrainLoader(colour_folder, batch_size=2, image_size=32, mix=_mix() if mixing else None,
                         seed=0, threads=2, device="gpu")
    loader.losses[:-1] = 1.0
    weight = torch.randn(3, 3, device=loader.torch_device, requires_grad=True)
    it = iter(loader)
    next(it)  # the epoch's set-up (plan, rows uploaded once) is allowed to sync
    steps = 0
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in it:
            if isinstance(batch, MixBatch):
                feats = batch.images.mean((2, 3)) @ weight                     # (B, classes)
                logits = feats[:, None, :].expand(-1, batch.labels.shape[1], -1)  # (B, k, classes)
                loss, per = mix_loss(logits, batch.labels, batch.mask, batch.shares, 0.1)
                loss.backward()
                loader.record(batch, per)
            else:
                images, labels = batch
                F.cross_entropy(images.mean((2, 3)) @ weight, labels).backward()
            steps += 1
    finally:
        torch.cuda.set_sync_debug_mode(old)
    assert steps >= 4


def test_isolated_constituents_need_no_host_sync(colour_folder):
    """The default mixing path (MixConfig.isolate): tiles grouped from the host's box copy."""
    from mixtrain_dali.loader import TrainLoader
    from mixtrain_dali.nn import adapt_model, build_model, mix_loss

    loader = TrainLoader(colour_folder, batch_size=4, image_size=32, mix=_mix(), seed=0, threads=2,
                         device="gpu")
    loader.losses[:-1] = 1.0
    model = adapt_model(build_model("small_cnn", 3)).to(loader.torch_device)
    it = iter(loader)
    next(it)
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    steps = 0
    try:
        for batch in it:
            logits = model(batch.images, batch.boxes_host, isolate=True)
            loss, per = mix_loss(logits, batch.labels, batch.mask, batch.shares, 0.1)
            loss.backward()
            loader.record(batch, per)
            steps += 1
    finally:
        torch.cuda.set_sync_debug_mode(old)
    assert steps >= 2


def test_peak_gpu_memory_of_a_full_size_mixed_step(tmp_path):
    """B = 256 composites of k = 4 at 224 px: what DALI and the batch take on the GPU."""
    from mixtrain_dali.loader import TrainLoader
    from mixtrain_dali.synthetic import make_benchmark_jpegs

    root = make_benchmark_jpegs(tmp_path / "jpegs", n=2048, size_range=(400, 500), progress=False)
    torch.cuda.synchronize()
    free0, total = torch.cuda.mem_get_info()
    loader = TrainLoader(root, batch_size=256, image_size=224, mix=_mix(4, 1.0), seed=0, threads=8,
                         device="gpu")
    loader.losses[:-1] = 1.0
    torch.cuda.reset_peak_memory_stats()
    low = free0
    for i, batch in enumerate(loader):
        assert batch.images.shape[1:] == (3, 224, 224)
        torch.cuda.synchronize()
        low = min(low, torch.cuda.mem_get_info()[0])
        if i == 2:
            break
    used = (free0 - low) / 2**30
    torch_peak = torch.cuda.max_memory_allocated() / 2**30
    _report(peak_gpu_memory_gib=f"{used:.2f}", torch_peak_gib=f"{torch_peak:.2f}",
            batch="256x4@224", composites=len(batch))
    # one batch of float canvases is 0.15 GiB (heads) / 0.6 GiB (all B*k slots); DALI keeps
    # decoded images, tiles and a prefetch queue besides
    assert used < 12, f"{used:.1f} GiB for one loader"


# -- decoding ----------------------------------------------------------------------------------

def _photo(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, ((xx + yy) % 97) * 2], -1) * 0.8
    return (img + rng.integers(0, 40, (h, w, 3))).astype(np.uint8)


@pytest.fixture(scope="module")
def unusual_jpegs(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("jpegs")
    files = {}
    for name, (h, w), kw in (("large", (3000, 4000), {}), ("progressive", (375, 500), {"progressive": True}),
                             ("cmyk", (333, 500), {"cmyk": True}), ("tiny", (6, 8), {}),
                             ("subsampled_420", (301, 257), {"subsampling": 2})):
        img = Image.fromarray(_photo(h, w, len(files)))
        if kw.pop("cmyk", False):
            img = img.convert("CMYK")
        path = root / f"{name}.jpg"
        img.save(path, "JPEG", quality=90, **kw)
        files[name] = path
    return files


def _decode(paths, device):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=torch.cuda.current_device(), seed=0,
                  prefetch_queue_depth=1)
    def pipe():
        data, _ = fn.readers.file(files=[str(p) for p in paths])
        return fn.decoders.image(data, device=device, output_type=types.RGB, jpeg_fancy_upsampling=True)

    p = pipe()
    p.build()
    out = []
    for _ in paths:
        (images,) = p.run()
        out.append(np.array(images.as_cpu().as_array()[0]))
    return out


# mixed (nvJPEG, fancy upsampling) vs DALI's CPU decoder (libjpeg-turbo): the IDCTs differ by a
# level or two; stated bounds, the measured figures are printed
DECODE_MEAN_MAX = 1.0   # grey levels, mean abs difference per image
DECODE_P99_MAX = 4.0    # grey levels, 99th percentile of the abs difference


def test_mixed_decoder_matches_the_cpu_decoder(unusual_jpegs):
    names = list(unusual_jpegs)
    paths = [unusual_jpegs[n] for n in names]
    cpu, gpu = _decode(paths, "cpu"), _decode(paths, "mixed")
    for name, a, b in zip(names, cpu, gpu):
        assert a.shape == b.shape and a.shape[2] == 3, name
        d = np.abs(a.astype(np.int16) - b.astype(np.int16))
        mean, p99 = float(d.mean()), float(np.percentile(d, 99))
        _report(decode=name, shape="x".join(map(str, a.shape)), mean_abs=f"{mean:.3f}", p99_abs=f"{p99:.1f}",
                max_abs=int(d.max()))
        assert mean <= DECODE_MEAN_MAX and p99 <= DECODE_P99_MAX, (name, mean, p99)


# -- the command line on the GPU ---------------------------------------------------------------

def test_train_end_to_end_on_gpu_with_val_then_resume(small_data, tmp_path):
    from mixtrain_dali.cli import main

    out = tmp_path / "run"
    args = ["train", "--data", str(small_data), "--out", str(out), "--arch", "small_cnn", "--image-size", "32",
            "--batch-size", "16", "--threads", "2", "--no-progress", "--device", "gpu",
            "--mix-k", "2", "--mix-fraction", "0.5", "--mix-selection", "random"]
    assert main([*args, "--epochs", "2"]) == 0
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 2 and "cuda_rng" in ckpt
    assert main([*args, "--epochs", "3", "--resume"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(0 <= r["val_top1"] <= 100 and np.isfinite(r["train_loss"]) for r in rows)
    _report(train_e2e_val_top1=rows[-1]["val_top1"], images_per_s=rows[-1]["images_per_s"])


def test_preview_on_gpu_with_device_auto(small_data, tmp_path):
    from mixtrain_dali.cli import main

    png = tmp_path / "p.png"
    assert main(["preview", "--data", str(small_data / "train"), "--out", str(png), "--image-size", "64",
                 "--batch-size", "4", "--device", "auto"]) == 0
    assert png.stat().st_size > 1000


# -- two GPUs ----------------------------------------------------------------------------------

def _ddp_worker(rank, init_file, data, out_dir):
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.cuda.set_device(rank)
    torch.distributed.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=2)
    from mixtrain_dali.loader import TrainLoader

    loader = TrainLoader(data, batch_size=3, image_size=32, mix=_mix(2, 0.6), seed=11, threads=2,
                         device="gpu")
    assert loader.device_id == rank
    loader.losses[:-1] = 1.0
    ids = []
    for batch in loader:
        ids.extend(batch.sample_ids[batch.mask].tolist())
        loader.record(batch, batch.sample_ids.float() * batch.mask)
    loader.sync_losses()  # an all-reduce over NCCL
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"ids": ids, "losses": np.nan_to_num(loader.host_losses, nan=-1).tolist()}, f)
    torch.distributed.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs 2 GPUs")
def test_nccl_ddp_two_ranks_share_the_epoch_and_the_losses(colour_folder, tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(str(tmp_path / "init"), colour_folder, str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    r = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert sorted(r[0]["ids"] + r[1]["ids"]) == list(range(N))
    assert r[0]["losses"] == r[1]["losses"]
    assert r[0]["losses"] == [float(i) for i in range(N)]
