"""The DALI graphs (docs/architecture.md, "Data flow of one epoch", step 3): read, decode,
augment, paste, output.

Train: external source (the host's plan and crop windows: finished where every image's size
is known from the file check, else finished in the graph from each file's header) -> file
read (with `read="ahead"` the source hands the files' bytes, read ahead on the host) ->
decode the slot's window (`mixed` on a GPU, `cpu` without) -> resize each slot to its tile -> the slot's
augmentations, if any (augment.py: policy, colour jitter, the user's hook) -> per-tile flip
and normalise (one crop_mirror_normalize) -> random erasing, if asked -> multi_paste the
tiles onto their composites.
Without mixing every tile is the whole canvas and the paste is left out of the graph.
Val: sharded file reader -> decode -> resize the shorter side -> center crop -> normalise,
with torchvision's exact sizes and crop offsets.

Outputs are HWC float: a batch viewed as NCHW in torch is then channels_last in memory,
the layout convolutions want.
"""

from __future__ import annotations

import logging
import os

from nvidia.dali import fn, pipeline_def, types
from nvidia.dali import math as dmath

from . import augment as _augment
from .config import IMAGENET_MEAN, IMAGENET_STD
from .errors import UserError

_MEAN = [255 * m for m in IMAGENET_MEAN]
_STD = [255 * s for s in IMAGENET_STD]

log = logging.getLogger(__name__)
_said: set[str] = set()  # warnings said by this process (each loader resolves the device)


def resolve_device(device: str = "auto") -> tuple[str, int | None]:
    """('gpu', cuda index) or ('cpu', None) for 'auto' | 'gpu' | 'cpu'.

    The CUDA index is torch's current device: under torchrun, call
    `torch.cuda.set_device(...)` first (`mixtrain train` does). LOCAL_RANK is not used as the
    ordinal, since where each rank sees only its own GPU (CUDA_VISIBLE_DEVICES per rank)
    LOCAL_RANK=3 names a device that does not exist."""
    import torch

    if device_kind(device) == "cpu":
        return "cpu", None
    index = torch.cuda.current_device()
    hint = forgot_set_device(index, os.environ.get("LOCAL_RANK"), torch.cuda.device_count())
    if hint and hint not in _said:
        _said.add(hint)
        log.warning(hint)
    return "gpu", index


def device_kind(device: str = "auto") -> str:
    """'gpu' or 'cpu' for 'auto' | 'gpu' | 'cpu' (no CUDA index: safe before set_device)."""
    import torch

    if device not in ("auto", "gpu", "cpu"):
        raise UserError(f"device={device!r}; valid: auto, cpu, gpu")
    has_cuda = torch.cuda.is_available()
    if device == "gpu" and not has_cuda:
        raise UserError("device='gpu' but CUDA is not available here; use --device cpu or auto")
    return "gpu" if device != "cpu" and has_cuda else "cpu"


def forgot_set_device(current: int, local_rank: str | None, count: int) -> str | None:
    """A warning when this process looks like rank LOCAL_RANK of a multi-GPU job that did not
    call torch.cuda.set_device (every rank would then decode on the same GPU), else None."""
    if local_rank is None or count <= 1 or int(local_rank) >= count or int(local_rank) == current:
        return None
    return (f"LOCAL_RANK={local_rank} but torch's current CUDA device is {current} of {count}: "
            f"call torch.cuda.set_device({local_rank}) before making loaders, or every rank "
            f"decodes on GPU {current}")


# the GPU decoder's buffers sized up front, as NVIDIA's ResNet-50 example does (no reallocation
# when a larger image comes); DALI ignores them on the CPU
_GPU_DECODER_HINTS = dict(device_memory_padding=211025920, host_memory_padding=140544512,
                          preallocate_width_hint=5980, preallocate_height_hint=6430)


@pipeline_def(enable_conditionals=False)
def train_pipeline(source, device: str, image_size: int, mixing: bool, fancy_upsampling: bool = False,
                   decoder_hints: bool = True, augment: _augment.Augment | None = None,
                   host_windows: bool = False, crop_tries: int | None = None, read: str = "graph"):
    """`augment` (augment.Augment): per-slot augmentations at the tile's size; its policy needs
    the pipeline made with `enable_conditionals=augment.conditionals`. `host_windows`: the
    source hands each slot's finished relative (start, shape) (every image's size known, see
    source.py), else the window's candidates, which `crop_window` finishes from the header
    (`crop_tries`: how many there are, None if not known). `read`: "graph", the source hands
    each slot's path and `fn.io.file.read` reads it here (in the pipeline's thread pool, when
    the iteration runs: on the critical path, beside the decode); "ahead", the source hands
    the encoded bytes it read ahead on threads of its own (source.py, readahead.py)."""
    window_types = [types.FLOAT, types.FLOAT] if host_windows else [types.FLOAT]
    types_ = [types.UINT8, types.INT32, *window_types]
    if mixing:
        types_ += [types.FLOAT, types.INT32, types.INT32]
    outs = fn.external_source(source=source, num_outputs=len(types_), batch=True, parallel=False, dtype=types_)
    files, flips = outs[:2]
    windows = outs[2:2 + len(window_types)]
    tile_hw = outs[2 + len(window_types)] if mixing else [image_size, image_size]
    encoded = fn.io.file.read(files) if read == "graph" else files
    start, shape = windows if host_windows else crop_window(encoded, windows[0], crop_tries)
    hints = _GPU_DECODER_HINTS if device == "gpu" and decoder_hints else {}
    # fancy_upsampling: libjpeg's (PIL's) chroma upsampling; val uses it, to match torchvision
    images = fn.decoders.image_slice(
        encoded, start, shape, axis_names="HW", device="mixed" if device == "gpu" else "cpu",
        output_type=types.RGB, jpeg_fancy_upsampling=fancy_upsampling, **hints)
    images = fn.resize(images, size=tile_hw, antialias=True, interp_type=types.INTERP_LINEAR)
    if augment is not None:
        images = _augment.before_normalise(images, augment, tile_hw)
    images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC",
                                      mean=_MEAN, std=_STD, mirror=flips)
    if augment is not None:
        images = _augment.after_normalise(images, augment, tile_hw)
    if mixing:
        paste_ids, anchors = outs[-2:]
        images = fn.multi_paste(images, in_ids=paste_ids, out_anchors=anchors,
                                output_size=[image_size, image_size])
    return images


def crop_window(encoded, rows, tries: int | None = None):
    """Relative (start, shape), (y, x) each, of the host's crop windows on each file's image,
    from its header (CPU arithmetic only). `rows`: crops.window_rows, per slot one row per
    candidate window [sqrt(area / ratio), sqrt(area * ratio), index] and a last row
    [u_y, u_x, 0]. The first candidate that fits is kept (torchvision's rule); when none
    does, the first keeps its aspect ratio and shrinks until it fits (with one candidate,
    always that). `tries=1` (one candidate, known when the graph is made): 9 operators
    instead of some twenty, the same numbers. crops.relative_window is the numpy twin."""
    hw = fn.peek_image_shape(encoded, dtype=types.FLOAT)  # (H, W, C), EXIF-adjusted
    if tries == 1:
        rel = rows[0, 0:2] * dmath.sqrt(hw[1::-1] / hw[0:2])  # the candidate's (h, w)
        shape = rel / dmath.max(fn.reductions.max(rel), 1.0)  # shrunk to fit, if it does not
        return rows[1, 0:2] * (1.0 - shape), shape
    rel = rows[:-1, 0:2] * dmath.sqrt(hw[1::-1] / hw[0:2])  # (tries, 2): each candidate's (h, w)
    # the first fitting candidate: the lowest index among those that fit, +1000 if it does not
    score = rows[:-1, 2] + 1000.0 * fn.cast(fn.reductions.max(rel, axes=1) > 1.0, dtype=types.FLOAT)
    chosen = fn.cast(score == fn.reductions.min(score), dtype=types.FLOAT)  # one-hot over candidates
    rh, rw = fn.reductions.sum(rel[:, 0] * chosen), fn.reductions.sum(rel[:, 1] * chosen)
    fit = dmath.max(dmath.max(rh, rw), 1.0)
    shape = fn.stack(rh / fit, rw / fit)
    return rows[-1, 0:2] * (1.0 - shape), shape


@pipeline_def(enable_conditionals=False)
def val_pipeline(files, labels, device: str, image_size: int, resize: int,
                 shard_id: int = 0, num_shards: int = 1):
    encoded, label = fn.readers.file(files=files, labels=labels, shard_id=shard_id,
                                     num_shards=num_shards, random_shuffle=False,
                                     pad_last_batch=True, name="Reader")
    resized_hw, crop_yx = _torchvision_val_geometry(encoded, resize, image_size)
    gpu = device == "gpu"
    # jpeg_fancy_upsampling: nvJPEG's chroma upsampling as libjpeg-turbo's (PIL's), so GPU val
    # matches torchvision (it only affects the `mixed` backend)
    images = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB,
                               jpeg_fancy_upsampling=True)
    images = fn.resize(images, size=resized_hw, antialias=True, interp_type=types.INTERP_LINEAR,
                       subpixel_scale=False)  # scale = rounded size / input size, as torchvision
    # start and shape as named arguments: argument inputs always live on the CPU. (Positional
    # anchor/shape inputs of a GPU slice would make the list constant a GPU node, and DALI
    # then copies it back to the host with a sync every iteration.)
    images = fn.slice(images, start=crop_yx, shape=[image_size, image_size], axes=[0, 1])
    images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC",
                                      mean=_MEAN, std=_STD)
    if gpu:
        label = label.gpu()  # batches come out with images and labels on one device
    return images, label


def _torchvision_val_geometry(encoded, resize: int, crop: int):
    """torchvision's Resize(resize) + CenterCrop(crop) sizes, from the encoded header:
    the shorter side becomes `resize`, the longer int(resize * long / short); the crop's
    corner is round((size - crop) / 2) with Python's round-half-to-even."""
    shape = fn.peek_image_shape(encoded, dtype=types.INT32)  # (H, W, C), EXIF-adjusted
    h, w = shape[0], shape[1]
    wide = fn.cast(h <= w, dtype=types.INT32)
    new_h = wide * resize + (1 - wide) * ((resize * h) // w)
    new_w = wide * ((resize * w) // h) + (1 - wide) * resize
    resized_hw = fn.stack(fn.cast(new_h, dtype=types.FLOAT), fn.cast(new_w, dtype=types.FLOAT))
    return resized_hw, fn.stack(_half_to_even(new_h - crop), _half_to_even(new_w - crop))


def _half_to_even(d):
    half = d // 2
    odd = d - 2 * half
    return half + odd * (half - 2 * (half // 2))
