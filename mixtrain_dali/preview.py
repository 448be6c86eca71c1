"""`mixtrain preview`: one mixed batch as the model sees it, each tile outlined and labelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import IMAGENET_MEAN, IMAGENET_STD, MixConfig
from .dataset import train_split
from .loader import TrainLoader
from .report import pyplot, save_figure


def preview(data_root, out, k: int = 4, fraction: float = 0.75, batch_size: int = 16,
            image_size: int = 224, gamma: float = 1.0, seed: int = 0, device: str = "auto",
            threads: int = 0) -> Path:
    """Save a grid of the first mixed batch of an epoch of `data_root`: a dataset root with
    train/ (its train/ is shown) or one split (a folder of class folders).

    The controller needs every sample's loss before it mixes; a preview has none, so it
    draws stand-in losses (uniform in [0, 2]) to show uneven, loss-driven area shares.
    """
    import matplotlib.patches as patches
    import torch

    plt = pyplot()

    mix = MixConfig(enabled=True, k=k, fraction=fraction, selection="random", warmup_epochs=0,
                    final_full_fraction=0.0, gamma=gamma, self_correct=False)
    loader = TrainLoader(train_split(data_root), batch_size, image_size, mix=mix, seed=seed, device=device,
                         threads=threads, torch_device="cpu")
    rng = np.random.default_rng(seed)
    loader.losses[:-1] = torch.from_numpy(rng.uniform(0, 2, loader.num_samples).astype(np.float32))
    batch = next(iter(loader))
    images = batch.images.float().cpu().numpy().transpose(0, 2, 3, 1)
    images = np.clip(images * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN), 0, 1)
    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    classes = loader.classes
    for ax in axes.flat:
        ax.axis("off")
    for b, ax in enumerate(axes.flat[:len(images)]):
        ax.imshow(images[b])
        for j in np.flatnonzero(batch.mask[b].cpu().numpy()):
            y, x, h, w = batch.boxes[b, j].cpu().numpy()
            ax.add_patch(patches.Rectangle((x - 0.5, y - 0.5), w, h, fill=False, lw=2,
                                           edgecolor=f"C{j}"))
            name = classes[int(batch.labels[b, j])]
            ax.text(x + 2, y + 2, f"{name}\n{100 * float(batch.shares[b, j]):.0f}%", va="top",
                    fontsize=7, color="white", bbox=dict(facecolor=f"C{j}", alpha=0.75, pad=1, lw=0))
    fig.suptitle(f"one MixTrain batch: k <= {k}, {100 * fraction:.0f}% of samples mixed, "
                 f"{batch.n_samples} samples in {len(images)} inputs", fontsize=11)
    return save_figure(fig, out, dpi=100)
