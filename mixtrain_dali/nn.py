"""Region pooling, model adapters and the MixTrain loss.

A composite image holds k constituents, each in a box ``(y, x, h, w)`` of INPUT pixels of the
H x W input (padded constituents have ``h = w = 0``). Instead of pooling the final feature map
globally, :func:`region_pool` averages it over each box, so every constituent keeps its own
prediction: ``(B, k, classes)`` logits. :class:`RegionPoolModel` does this for the torchvision
families whose head reads a globally pooled vector, and for timm's ResNet, ConvNeXt,
EfficientNet and average-pooled ViT (timm is optional: its classes are looked up only for a model
whose class comes from timm); any other torchvision model, and a timm ViT read out by its class
token, is wrapped in :class:`SoftTargetModel`, which predicts one ``(B, classes)`` vector per
composite and is trained against an area-weighted soft target (see :func:`mix_loss`).

Nothing here calls ``.item()`` or indexes with boolean masks, so a training step never waits on
the device.
"""

from __future__ import annotations

import difflib
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import (ConvNeXt, EfficientNet, MobileNetV2, MobileNetV3, RegNet, ResNet,
                                VisionTransformer)

from mixtrain_dali.errors import UserError

__all__ = [
    "REGION_FAMILIES",
    "RegionPoolModel",
    "SoftTargetModel",
    "TIMM_PREFIX",
    "adapt_model",
    "build_model",
    "mix_loss",
    "model_family",
    "region_masks",
    "region_pool",
]


# --------------------------------------------------------------------------- region pooling

def region_masks(boxes: torch.Tensor, feat_hw: tuple[int, int],
                 input_hw: tuple[int, int]) -> torch.Tensor:
    """Fraction of each feature cell covered by each box: ``(B, k, fh, fw)`` float32.

    ``M[b, j, u, v]`` = area(box j ∩ cell (u, v)) / area(cell), where cell (u, v) covers input
    rows ``[u*H/fh, (u+1)*H/fh)`` and columns ``[v*W/fw, (v+1)*W/fw)``. Boxes are
    ``(B, k, 4)`` ``(y, x, h, w)`` in input pixels (float or int); an empty box gives zeros.
    """
    fh, fw = int(feat_hw[0]), int(feat_hw[1])
    in_h, in_w = float(input_hw[0]), float(input_hw[1])
    boxes = boxes.to(torch.float32)
    y0, x0 = boxes[..., 0], boxes[..., 1]
    # Overlaps factor into rows x columns, so two 1-D overlaps and an outer product suffice.
    rows = _overlap_1d(y0, y0 + boxes[..., 2], fh, in_h)
    cols = _overlap_1d(x0, x0 + boxes[..., 3], fw, in_w)
    return rows[..., :, None] * cols[..., None, :]


def _overlap_1d(start: torch.Tensor, stop: torch.Tensor, cells: int, length: float) -> torch.Tensor:
    """Fraction of each of ``cells`` equal cells of ``[0, length)`` covered by [start, stop)."""
    size = length / cells
    edges = torch.arange(cells + 1, device=start.device, dtype=torch.float32) * size
    lo = torch.maximum(start[..., None], edges[:-1])
    hi = torch.minimum(stop[..., None], edges[1:])
    return (hi - lo).clamp_min(0.0) / size


def region_pool(features: torch.Tensor, boxes: torch.Tensor,
                input_hw: tuple[int, int]) -> torch.Tensor:
    """Average ``features`` ``(B, C, fh, fw)`` over each box: ``(B, k, C)`` in features' dtype.

    ``P[b, j] = sum_uv M[b, j, u, v] F[b, :, u, v] / sum_uv M[b, j, u, v]`` with ``M`` from
    :func:`region_masks`. A box covering the whole input gives ``features.mean((2, 3))``; a box on
    cell boundaries gives the mean of the cells inside it; an empty (padded) box gives 0.
    Differentiable in ``features``; works for channels_last and under autocast (the weighted
    sum runs in float32 and the result is cast back).
    """
    if features.dim() != 4:
        raise ValueError(f"features must be (B, C, fh, fw), got shape {tuple(features.shape)}")
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
        raise ValueError(f"boxes must be (B={features.shape[0]}, k, 4), got {tuple(boxes.shape)}")
    masks = region_masks(boxes.to(features.device, non_blocking=True), features.shape[-2:],
                         input_hw)
    # Autocast would run the einsum in half precision; the region sums want float32.
    with torch.autocast(device_type=features.device.type, enabled=False):
        sums = torch.einsum("bkuv,bcuv->bkc", masks, features.float())
    weight = masks.sum(dim=(2, 3))
    # Empty boxes have zero sums and zero weight: divide by 1 there (gives 0, no NaN, no sync).
    pooled = sums / torch.where(weight > 0, weight, torch.ones_like(weight))[..., None]
    return pooled.to(features.dtype)


# --------------------------------------------------------------------------- small CNN

class SmallCNN(nn.Module):
    """`small_cnn`: four 3x3 conv-BN-ReLU blocks (32-64-96-128 channels, three 2x2
    max-pools), global average pooling, one linear layer. Not a torchvision model: the
    demo's and tests' model, fast on a CPU, and its stride of 8 keeps an 8x8 feature map at
    64 px, so k = 4 tiles of a composite stay apart under region pooling."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        widths = [width, 2 * width, 3 * width, 4 * width]
        layers, cin = [], 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --------------------------------------------------------------------------- model adapters

def _resnet_features(m: ResNet, x: torch.Tensor) -> torch.Tensor:
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return m.layer4(m.layer3(m.layer2(m.layer1(x))))


def _features_attr(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m.features(x)


def _regnet_features(m: RegNet, x: torch.Tensor) -> torch.Tensor:
    return m.trunk_output(m.stem(x))


def _vit_features(m: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Final-LayerNorm'd patch tokens as a ``(B, C, gh, gw)`` grid (class token dropped)."""
    n, _, h, w = x.shape
    tokens = m._process_input(x)
    # The class token still takes part in attention, as in the unmodified model.
    tokens = torch.cat([m.class_token.expand(n, -1, -1), tokens], dim=1)
    patches = m.encoder(tokens)[:, 1:]  # torchvision's encoder ends with the final LayerNorm
    gh, gw = h // m.patch_size, w // m.patch_size
    return patches.transpose(1, 2).reshape(n, m.hidden_dim, gh, gw)


def _fc_head(m: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    return m.fc(pooled)


def _classifier_head(m: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    return m.classifier(pooled)


def _convnext_head(m: ConvNeXt, pooled: torch.Tensor) -> torch.Tensor:
    # ConvNeXt's classifier starts with LayerNorm2d, which expects (N, C, 1, 1).
    return m.classifier(pooled[:, :, None, None])


def _vit_head(m: VisionTransformer, pooled: torch.Tensor) -> torch.Tensor:
    return m.heads(pooled)


_Features = Callable[[nn.Module, torch.Tensor], torch.Tensor]
_Head = Callable[[nn.Module, torch.Tensor], torch.Tensor]

# family name -> (torchvision class, feature map before global pooling, head on pooled vectors)
_ADAPTERS: dict[str, tuple[type, _Features, _Head]] = {
    "resnet": (ResNet, _resnet_features, _fc_head),  # also ResNeXt and Wide-ResNet
    "mobilenet_v2": (MobileNetV2, _features_attr, _classifier_head),
    "mobilenet_v3": (MobileNetV3, _features_attr, _classifier_head),
    "efficientnet": (EfficientNet, _features_attr, _classifier_head),  # V1 and V2
    "regnet": (RegNet, _regnet_features, _fc_head),
    "convnext": (ConvNeXt, _features_attr, _convnext_head),
    "vit": (VisionTransformer, _vit_features, _vit_head),
    "small_cnn": (SmallCNN, _features_attr, _classifier_head),
}


# --------------------------------------------------------------------------- timm adapters

def _timm_cnn_features(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    features = m.forward_features(x)
    if features.dim() != 4:
        raise ValueError(f"{type(m).__name__}.forward_features gave shape {tuple(features.shape)}, "
                         "not an NCHW feature map")
    return features


def _timm_cnn_head(m: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    # The head's only spatial step is its average pool (checked in _timm_family): on a 1 x 1 map
    # it is the identity, so the head's own norm, dropout and classifier see the pooled vector.
    return m.forward_head(pooled[:, :, None, None])


def _timm_vit_features(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Final-normed patch tokens of a timm ViT as a ``(B, C, gh, gw)`` grid (prefix tokens,
    class or register, take part in attention but are dropped here, as its average pool drops them)."""
    tokens = m.forward_features(x)[:, m.num_prefix_tokens:]
    gh, gw = (m.patch_embed.dynamic_feat_size(tuple(x.shape[-2:])) if m.dynamic_img_size
              else m.patch_embed.grid_size)
    n, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(n, c, gh, gw)


def _timm_vit_head(m: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    # forward_head after its token average: fc_norm, head dropout, classifier
    return m.head(m.head_drop(m.fc_norm(pooled)))


# family name -> (timm module, class name, feature map, head on pooled vectors)
_TIMM_ADAPTERS: dict[str, tuple[str, str, _Features, _Head]] = {
    "timm_resnet": ("timm.models.resnet", "ResNet", _timm_cnn_features, _timm_cnn_head),
    "timm_convnext": ("timm.models.convnext", "ConvNeXt", _timm_cnn_features, _timm_cnn_head),
    # also EfficientNet-V2, MixNet, MNASNet and the other models built on timm's EfficientNet
    "timm_efficientnet": ("timm.models.efficientnet", "EfficientNet", _timm_cnn_features,
                          _timm_cnn_head),
    "timm_vit": ("timm.models.vision_transformer", "VisionTransformer", _timm_vit_features,
                 _timm_vit_head),  # also DeiT (same class), average-pooled only
}
_TIMM_SUPPORTED = ("ResNet, ConvNeXt, EfficientNet (average pooled), ViT/DeiT (global_pool='avg' "
                   "region-pooled; a class-token ViT trains on soft targets)")

#: Families :class:`RegionPoolModel` supports; :func:`model_family` returns "other" for the rest.
REGION_FAMILIES: tuple[str, ...] = tuple(_ADAPTERS) + tuple(_TIMM_ADAPTERS)
# Families whose tiles cannot run through the network apart (a tile need not hold whole patches).
_NO_ISOLATE = ("vit", "timm_vit")


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.")


def _timm_family(model: nn.Module) -> tuple[str, str]:
    """``(family, why)`` of a timm model: a key of ``_TIMM_ADAPTERS`` and ``""``;
    ``"timm_vit_token"`` for a ViT read out by its class token (or a distilled one by two);
    or ``"other"`` and why it has no adapter."""
    import importlib

    def cls(module: str, name: str) -> type:
        return getattr(importlib.import_module(module), name)

    for family, (module, name, _, _) in _TIMM_ADAPTERS.items():
        if not isinstance(model, cls(module, name)):
            continue
        if family == "timm_vit":
            if isinstance(model, cls("timm.models.deit", "VisionTransformerDistilled")):
                return "timm_vit_token", "a distilled DeiT reads out its class and distillation tokens"
            if model.global_pool == "token":
                return "timm_vit_token", "a class-token ViT has one readout per image, not one per box"
            if model.global_pool != "avg" or model.attn_pool is not None or model.pool_include_prefix:
                pool = "attention" if model.attn_pool is not None else repr(model.global_pool)
                return "other", f"its {pool} pooling is not an average of patch tokens"
            return family, ""
        pool = (model.head if family == "timm_convnext" else model).global_pool.pool_type.lower()
        if pool not in ("avg", "fast", "fastavg"):
            return "other", f"its global_pool={pool!r} is not an average (region pooling averages)"
        return family, ""
    return "other", f"{type(model).__name__} is not one of timm's supported families"


def model_family(model: nn.Module) -> str:
    """Name of ``model``'s adapter family (one of :data:`REGION_FAMILIES`), else ``"other"``."""
    if isinstance(model, (RegionPoolModel, SoftTargetModel)):
        return model.family
    for name, (cls, _, _) in _ADAPTERS.items():
        if isinstance(model, cls):
            return name
    if _is_timm(model):
        family, _ = _timm_family(model)
        return family if family in _TIMM_ADAPTERS else "other"
    return "other"


class RegionPoolModel(nn.Module):
    """A torchvision classifier that also predicts one logit vector per box.

    ``forward(x, boxes)`` with ``boxes`` ``(B, k, 4)`` ``(y, x, h, w)`` in pixels of ``x``
    returns ``(B, k, classes)``: the backbone's last feature map is region-pooled
    (:func:`region_pool`) per box and fed to the model's own head. ``forward(x, boxes,
    isolate=True)`` runs each box through the network apart instead (CNN families; see
    ``_forward_isolated``). Boxes may be a tensor or the loader's numpy ``boxes_host``. ``forward(x)`` returns
    ``(B, classes)``: for the CNN families exactly the unmodified model's output (their global
    average pooling equals a full box).

    ViT: the class token takes part in attention but is not read out. Boxes pool the final
    LayerNorm'd patch tokens, reshaped to their ``(C, gh, gw)`` grid, and ``model.heads`` is
    applied to the pooled vector. A full box therefore gives ``heads(mean of patch tokens)``,
    not the unmodified class-token output, and ``forward(x)`` without boxes uses that same
    patch-mean readout, so training and evaluation read out the same way.

    timm models: CNNs (ResNet, ConvNeXt, EfficientNet) region-pool ``forward_features``' NCHW
    map and pass each pooled vector through the model's own ``forward_head`` (as a 1 x 1 map,
    which its average pool leaves unchanged), so a full box gives the unmodified logits; their
    tiles can run apart (isolate). A timm ViT/DeiT with ``global_pool='avg'`` pools the patch
    tokens of ``forward_features`` inside each box and applies ``fc_norm`` and ``head``: a full
    box is the model's own token average, so its logits are the unmodified model's too; like
    torchvision's ViT it cannot isolate. (A class-token timm ViT is adapted to
    :class:`SoftTargetModel` instead: see :func:`adapt_model`.)

    The wrapped model is kept as ``self.model``; ``state_dict()`` keys are ``model.*``.
    """

    pools_regions = True

    def __init__(self, model: nn.Module):
        super().__init__()
        family = model_family(model)
        if family not in REGION_FAMILIES:
            why = f" ({_timm_family(model)[1]})" if _is_timm(model) else ""
            raise UserError(f"{type(model).__name__} has no region-pooling adapter{why}; supported "
                            f"families: {', '.join(REGION_FAMILIES)} (use SoftTargetModel or "
                            "adapt_model for others)")
        self.model = model
        self.family = family
        self._features, self._head = (_ADAPTERS[family][1:] if family in _ADAPTERS
                                      else _TIMM_ADAPTERS[family][2:])
        #: whether ``forward(..., isolate=True)`` can run its constituents apart
        self.can_isolate = family not in _NO_ISOLATE

    def forward(self, x: torch.Tensor, boxes: torch.Tensor | None = None,
                isolate: bool = False) -> torch.Tensor:
        if isolate and boxes is not None:
            return self._forward_isolated(x, boxes)
        if boxes is not None and not isinstance(boxes, torch.Tensor):  # MixBatch.boxes_host
            boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.float32).to(x.device, non_blocking=True)
        if boxes is None:
            if self.family != "vit":
                return self.model(x)
            # Same readout as a full box, without the mask arithmetic.
            return self._head(self.model, self._features(self.model, x).mean(dim=(2, 3)))
        pooled = region_pool(self._features(self.model, x), boxes, tuple(x.shape[-2:]))
        b, k, c = pooled.shape
        return self._head(self.model, pooled.reshape(b * k, c)).reshape(b, k, -1)


    def _forward_isolated(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``(B, k, classes)`` logits with every constituent run through the network apart.

        Each non-empty box is cut out of its composite and passed through the backbone as an
        image of its own (zero padding at its borders, as for a plain image of that size), its
        final feature map averaged and fed to the head, so no feature of one constituent sees
        another's pixels. Tiles of one size go through the network together, one forward pass
        per distinct tile size (with equal area shares: one for the unmixed composites and one
        or two for the tiles; BatchNorm normalises each pass by its own statistics). Reading
        the boxes on the host: pass the loader's numpy copy (``MixBatch.boxes_host``) and nothing
        waits on the device; boxes in a GPU tensor cost one device-to-host copy. Padded
        constituents get zero logits.
        """
        if not self.can_isolate:
            raise UserError("isolate: the ViT adapter cannot run tiles apart (a tile need not hold "
                            "whole patches); use a CNN family or isolate = false")
        if isinstance(boxes, torch.Tensor):
            host = boxes.detach().to("cpu", torch.float32).round().to(torch.int64)  # a sync if on a GPU
        else:  # numpy (MixBatch.boxes_host): DDP does not move it to the GPU, as it would a tensor
            host = torch.as_tensor(np.asarray(boxes), dtype=torch.int64)
        if host.dim() != 3 or host.shape[-1] != 4 or host.shape[0] != x.shape[0]:
            raise ValueError(f"boxes must be (B={x.shape[0]}, k, 4), got {tuple(host.shape)}")
        n, k = host.shape[:2]
        hh, ww = host[..., 2], host[..., 3]
        bi, ji = ((hh > 0) & (ww > 0)).nonzero(as_tuple=True)
        sizes = torch.stack([hh[bi, ji], ww[bi, ji]], dim=1)
        if len(sizes) == 0:
            raise ValueError("isolate: every box is empty")
        uniq, inverse = torch.unique(sizes, dim=0, return_inverse=True)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        out = None
        for g, (th, tw) in enumerate(uniq.tolist()):
            sel = (inverse == g).nonzero().flatten()
            b_sel, j_sel = bi[sel], ji[sel]
            dev = x.device
            # host index tensors go up without a stream sync (non_blocking: pageable memory is
            # staged by the driver, so this is safe), then (m, th, tw, C) by one gather, then
            # back to (m, C, th, tw)
            b_dev, j_dev = b_sel.to(dev, non_blocking=True), j_sel.to(dev, non_blocking=True)
            if (th, tw) == tuple(x.shape[-2:]):  # whole canvases (unmixed samples): no gather
                tiles = x if len(b_sel) == n else x.index_select(0, b_dev)
            else:
                ys, xs = host[b_sel, j_sel, 0], host[b_sel, j_sel, 1]
                rows = (ys[:, None] + torch.arange(th))[:, :, None]
                cols = (xs[:, None] + torch.arange(tw))[:, None, :]
                tiles = x.permute(0, 2, 3, 1)[b_dev[:, None, None], rows.to(dev, non_blocking=True),
                                              cols.to(dev, non_blocking=True)]
                tiles = tiles.permute(0, 3, 1, 2)
            tiles = tiles.contiguous(memory_format=torch.channels_last if channels_last
                                     else torch.contiguous_format)
            logits = self._head(self.model, self._features(self.model, tiles).mean(dim=(2, 3)))
            if out is None:
                out = logits.new_zeros(n, k, logits.shape[-1])
            out = out.index_put((b_dev, j_dev), logits)
        return out


class SoftTargetModel(nn.Module):
    """Fallback for any classifier: ``forward(x, boxes=None)`` ignores boxes and returns the
    model's global ``(B, classes)`` logits, trained against the area-weighted soft target of
    :func:`mix_loss`. The wrapped model is kept as ``self.model``; ``why`` says why it has
    no per-box readout (said at start-up when mixing asks to isolate constituents)."""

    pools_regions = False
    can_isolate = False
    family = "other"

    def __init__(self, model: nn.Module, why: str = "it has no region-pooling adapter"):
        super().__init__()
        self.model = model
        self.why = why

    def forward(self, x: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(x)
        # GoogLeNet/Inception return a namedtuple with auxiliary logits in training mode.
        return out.logits if hasattr(out, "logits") else out


def adapt_model(model: nn.Module) -> nn.Module:
    """Wrap ``model``: :class:`RegionPoolModel` for the supported torchvision and timm families,
    :class:`SoftTargetModel` for other torchvision models. An already wrapped model is returned
    unchanged.

    timm: ResNet, ConvNeXt and EfficientNet (average pooled), and ViT/DeiT with
    ``global_pool='avg'``, pool regions. A ViT read out by its class token (timm's default for
    ViT and DeiT; or a distilled DeiT) is wrapped in :class:`SoftTargetModel`: one readout per
    image cannot give one per box, so a composite is trained against the area-weighted soft
    target of its constituents, through the unmodified forward (a full box gives exactly the
    model's logits). Any other timm model is refused with a :class:`UserError` saying why:
    wrap it in :class:`SoftTargetModel` yourself (``train.region_pooling = false``) to train
    it on soft targets.
    """
    if isinstance(model, (RegionPoolModel, SoftTargetModel)):
        return model
    if _is_timm(model):
        family, why = _timm_family(model)
        if family == "timm_vit_token":
            return SoftTargetModel(model, why=why)
        if family == "other":
            raise UserError(f"timm model {type(model).__name__} cannot pool regions: {why}; "
                            f"supported timm families: {_TIMM_SUPPORTED} (set train.region_pooling "
                            "= false, or wrap it in SoftTargetModel, to train it on soft targets)")
        return RegionPoolModel(model)
    if model_family(model) in _ADAPTERS:
        return RegionPoolModel(model)
    return SoftTargetModel(model)


def build_model(arch: str, num_classes: int, image_size: int | None = None,
                stem: str = "imagenet") -> nn.Module:
    """A randomly initialised torchvision classifier ``arch`` with ``num_classes`` outputs.

    ``arch`` is any name in ``torchvision.models.list_models(module=torchvision.models)``
    (case-insensitive). ``image_size`` sets the input size of ViT (``image_size``) and MaxViT
    (``input_size``), which fix it at construction; CNNs ignore it. ``stem="cifar"`` (ResNet
    family only) swaps the 7x7/2 convolution and max-pool for one 3x3/1 convolution, the
    usual CIFAR ResNet: 32 px inputs then keep a 4x4 final feature map for region pooling.

    ``arch="timm/<name>"`` builds ``timm.create_model(name, num_classes=num_classes,
    pretrained=False)`` instead (timm is the optional extra ``mixtrain-dali[timm]``), with
    ``img_size=image_size`` for the models that take it (ViT, DeiT).
    """
    if stem not in ("imagenet", "cifar"):
        raise UserError(f"stem={stem!r}; valid: imagenet, cifar")
    if str(arch).strip().startswith(TIMM_PREFIX):
        return _build_timm(str(arch).strip()[len(TIMM_PREFIX):], num_classes, image_size, stem)
    if str(arch).strip().lower() == "small_cnn":
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"num_classes={num_classes!r} is invalid; it must be an integer >= 1")
        return SmallCNN(num_classes)
    names = torchvision.models.list_models(module=torchvision.models)
    key = str(arch).strip().lower()
    if key not in names:
        close = difflib.get_close_matches(key, names + ["small_cnn"], n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}; " if close else ""
        raise UserError(f"unknown model architecture {arch!r}; {hint}list all with: python -c "
                        "'import torchvision; print(torchvision.models.list_models("
                        "module=torchvision.models))'")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes={num_classes!r} is invalid; it must be an integer >= 1")
    kwargs: dict = {"weights": None, "num_classes": num_classes}
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise UserError(f"image_size={image_size!r} is invalid; it must be an integer >= 1")
        if key.startswith("vit_"):
            patch = int(key.rsplit("_", 1)[1])
            if image_size % patch:
                raise UserError(f"image_size={image_size} is invalid for {key}: it must be a "
                                f"multiple of the patch size {patch}")
            kwargs["image_size"] = image_size
        elif key.startswith("maxvit"):
            kwargs["input_size"] = (image_size, image_size)
    if key in ("googlenet", "inception_v3"):
        # One logits tensor in training mode too, and no init-weights deprecation warning.
        kwargs.update(aux_logits=False, init_weights=True)
    model = torchvision.models.get_model(key, **kwargs)
    if stem == "cifar":
        if not isinstance(model, ResNet):
            raise UserError(f"stem='cifar' is for the ResNet family (resnet*, resnext*, wide_resnet*), not {arch!r}")
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    return model


#: ``arch`` prefix of timm models in :func:`build_model` and ``mixtrain train --arch``.
TIMM_PREFIX = "timm/"


def _build_timm(name: str, num_classes: int, image_size: int | None, stem: str) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise UserError(f"--arch {TIMM_PREFIX}{name}: needs timm (pip install 'mixtrain-dali[timm]')") from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}; " if close else ""
        raise UserError(f"unknown timm model {name!r}; {hint}list all with: python -c 'import timm; "
                        "print(timm.list_models())'")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes={num_classes!r} is invalid; it must be an integer >= 1")
    if stem != "imagenet":
        raise UserError(f"stem={stem!r} is for torchvision's ResNet family, not {TIMM_PREFIX}{name}; "
                        "valid for timm models: imagenet")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise UserError(f"image_size={image_size!r} is invalid; it must be an integer >= 1")
    kwargs = {"num_classes": num_classes, "pretrained": False}
    try:  # models with a fixed input size (ViT, DeiT) take it at construction, CNNs do not
        model = timm.create_model(name, **kwargs, **({} if image_size is None else {"img_size": image_size}))
    except TypeError as e:
        if image_size is None or "img_size" not in str(e):
            raise
        model = timm.create_model(name, **kwargs)
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if image_size is not None and patch is not None and image_size % max(patch):
        raise UserError(f"image_size={image_size} is invalid for {TIMM_PREFIX}{name}: it must be a "
                        f"multiple of the patch size {max(patch)}")
    return model


# --------------------------------------------------------------------------- loss

def mix_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, areas: torch.Tensor,
             label_smoothing: float = 0.0, weights: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """MixTrain loss for a batch of composites.

    Args:
        logits: ``(B, k, C)`` per-constituent logits (:class:`RegionPoolModel`) or ``(B, C)``
            per-composite logits (:class:`SoftTargetModel`).
        labels: ``(B, k)`` int64 class ids, -1 for padded constituents.
        mask: ``(B, k)`` bool, True for real constituents.
        areas: ``(B, k)`` float area shares, summing to 1 over the valid constituents.
        label_smoothing: as in ``F.cross_entropy``, in [0, 1].
        weights: optional ``(B, k)`` per-constituent factors on the batch loss (e.g. the
            loss rescaling of kept samples under loss-based pruning); 1 when omitted.

    Returns:
        ``(loss, per_constituent)``: the scalar float32 batch loss to minimise and a detached
        ``(B, k)`` float32 cross entropy of each constituent (0 where masked), for logging.

    ``(B, k, C)``: per-constituent cross entropy with label smoothing; the loss is its mean over
    valid constituents, so each constituent image counts once, as a sample of a plain batch.
    ``(B, C)``: the loss is the mean over composites of the soft-target cross entropy with target
    ``sum_j a_j * smooth(onehot(label_j))``, ``a`` = ``areas`` masked and renormalised to sum 1
    (a no-op for valid input); per-constituent values are ``CE(logits, label_j)``.
    For an unmixed batch (k = 1, full boxes, areas 1) both equal
    ``F.cross_entropy(logits, labels[:, 0], label_smoothing=...)``.
    """
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise UserError(f"label_smoothing={label_smoothing!r} is invalid; valid: 0.0 to 1.0")
    if logits.dim() not in (2, 3):
        raise ValueError(f"logits must be (B, k, C) or (B, C), got {tuple(logits.shape)}")
    bk = tuple(labels.shape)
    if len(bk) != 2 or tuple(mask.shape) != bk or tuple(areas.shape) != bk:
        raise ValueError(f"labels, mask and areas must share one (B, k) shape; got "
                         f"{tuple(labels.shape)}, {tuple(mask.shape)}, {tuple(areas.shape)}")
    if logits.dim() == 3 and tuple(logits.shape[:2]) != bk:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels (B, k) = {bk}")
    if logits.dim() == 2 and logits.shape[0] != bk[0]:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels batch size {bk[0]}")

    eps = float(label_smoothing)
    weight = mask.to(torch.float32)
    logp = F.log_softmax(logits.float(), dim=-1)
    safe = labels.long().clamp_min(0)  # -1 padding would break gather; masked out below
    # Cross entropy against (1 - eps) * onehot + eps / C is this blend of NLL and mean -log p.
    if logits.dim() == 3:
        nll = -logp.gather(-1, safe[..., None]).squeeze(-1)
        smooth = -logp.mean(dim=-1)
    else:
        nll = -logp.gather(-1, safe)
        smooth = -logp.mean(dim=-1, keepdim=True)
    per = ((1.0 - eps) * nll + eps * smooth) * weight
    scaled = per if weights is None else per * weights.to(torch.float32)

    if logits.dim() == 3:
        loss = scaled.sum() / weight.sum().clamp_min(1.0)
    else:
        # Cross entropy is linear in the target, so the soft-target CE is the area-weighted
        # sum of the per-label CEs; no dense (B, C) target is needed.
        share = areas.to(torch.float32) * weight
        total = share.sum(dim=1, keepdim=True)
        share = share / torch.where(total > 0, total, torch.ones_like(total))
        per_composite = (share * scaled).sum(dim=1)
        loss = per_composite.mean()
    return loss, per.detach()
