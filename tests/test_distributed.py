"""Two real processes under torch.distributed (gloo): shards, batch counts, identical plans,
losses shared across ranks."""

import json
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2


def _worker(rank, init_file, data, out_dir, mixing):
    os.environ["OMP_NUM_THREADS"] = "1"
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import identify
    from mixtrain_dali.config import MixConfig
    from mixtrain_dali.loader import TrainLoader

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=WORLD)
    mix = None
    if mixing:
        mix = MixConfig(enabled=True, k=2, fraction=0.6, selection="random", warmup_epochs=1,
                        final_full_fraction=0.0, gamma=0.0, self_correct=False, keep_steps=False)
    loader = TrainLoader(data, batch_size=3, image_size=32, mix=mix, seed=11, threads=1, device="cpu")
    n = loader.num_samples
    epochs = []
    for _ in range(3):
        plan = loader.plan()
        ids, n_batches = [], 0
        for batch in loader:
            n_batches += 1
            if mixing:
                mask = batch.mask
                ids.extend(batch.sample_ids[mask].tolist())
                if plan.k_max == 1:  # an unmixed epoch: each image is its sample
                    assert identify(batch.images, n).tolist() == batch.sample_ids[:, 0].tolist()
                # each rank records a loss only for its own samples: the value is the id
                loader.record(batch, batch.sample_ids.float() * mask)
            else:
                images, _ = batch
                ids.extend(identify(images, n).tolist())
        epochs.append({"ids": ids, "batches": n_batches, "digest": plan.digest()})
    state = loader.state_dict()
    result = {"epochs": epochs, "losses": np.nan_to_num(state["losses"], nan=-1).tolist()}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    torch.distributed.destroy_process_group()


def _run(tmp_path, data, mixing):
    init_file = tmp_path / "init"
    mp.start_processes(_worker, args=(str(init_file), data, str(tmp_path), mixing), nprocs=WORLD,
                       join=True, start_method="spawn")
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.slow
def test_ddp_shards_disjoint_equal_batch_counts_and_cover(tmp_path, colour_folder):
    ranks = _run(tmp_path, colour_folder, mixing=False)
    n = 21
    for e in range(3):
        a, b = (set(r["epochs"][e]["ids"]) for r in ranks)
        assert not a & b, "shards overlap"
        assert sorted(a | b) == list(range(n)), "shards do not cover the dataset"
        assert len(ranks[0]["epochs"][e]["ids"]) + len(ranks[1]["epochs"][e]["ids"]) == n
        assert ranks[0]["epochs"][e]["batches"] == ranks[1]["epochs"][e]["batches"] == 4
    assert ranks[0]["epochs"][0]["ids"] != ranks[0]["epochs"][1]["ids"]  # new order each epoch


@pytest.mark.slow
def test_ddp_with_mixing_identical_plans_shared_losses(tmp_path, colour_folder):
    ranks = _run(tmp_path, colour_folder, mixing=True)
    n = 21
    for e in range(3):
        assert ranks[0]["epochs"][e]["digest"] == ranks[1]["epochs"][e]["digest"]
        a, b = ranks[0]["epochs"][e]["ids"], ranks[1]["epochs"][e]["ids"]
        assert not set(a) & set(b) and sorted(a + b) == list(range(n))
        assert ranks[0]["epochs"][e]["batches"] == ranks[1]["epochs"][e]["batches"]
    # epoch 1 and 2 mix (warm-up 1): fewer composites, so fewer batches than epoch 0
    assert ranks[0]["epochs"][1]["batches"] < ranks[0]["epochs"][0]["batches"]
    # every rank's table holds every sample's loss, also those the other rank measured
    for r in ranks:
        np.testing.assert_allclose(r["losses"], np.arange(n, dtype=float))
