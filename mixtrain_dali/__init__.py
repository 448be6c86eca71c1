"""MixTrain-DALI: a DALI ImageFolder pipeline for PyTorch with MixTrain input mixing.

(Submodules share names with some functions — `train`, `layout` — so those are not
re-exported here: use `mixtrain_dali.train.train`, `mixtrain_dali.layout.layout`.)

Public names are imported lazily (PEP 562), so `mixtrain --help` and a one-line error do
not pay for importing torch and DALI.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "config", "DataConfig": "config", "MixConfig": "config", "TrainConfig": "config",
    "load_config": "config",
    "ImageFolderIndex": "dataset", "scan_image_folder": "dataset",
    "make_synthetic": "synthetic",
    "layout_batch": "layout",
    "MixController": "controller",
    "EpochPlan": "plan", "shard_batches": "plan",
    "TrainLoader": "loader", "ValLoader": "loader", "MixBatch": "loader",
    "region_pool": "nn", "adapt_model": "nn", "build_model": "nn", "mix_loss": "nn",
    "RegionPoolModel": "nn", "SoftTargetModel": "nn",
    "Mixup": "mixup", "soft_cross_entropy": "mixup",
    "UserError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mixtrain_dali' has no attribute {name!r}")
