"""Feature models for the VBench-style metrics, loaded through `transformers` from the Hugging Face hub,
and VBench's frame preprocessing written in plain torch (this project has no torchvision).

| metric                  | model (hub id, default)                               | VBench preprocessing            |
|-------------------------|-------------------------------------------------------|---------------------------------|
| subject consistency     | DINO ViT-B/16 `facebook/dino-vitb16` (ViTModel)       | short side to 224, bilinear, no crop, ImageNet mean/std |
| background consistency  | CLIP ViT-B/32 `openai/clip-vit-base-patch32`          | short side to 224, bicubic, centre crop 224, CLIP mean/std |
| aesthetic quality       | CLIP ViT-L/14 `openai/clip-vit-large-patch14` + LAION's linear head | as CLIP above |

The LAION aesthetic head VBench uses is `sa_0_4_vit_l_14_linear.pth` from github.com/LAION-AI/aesthetic-predictor
(nn.Linear(768, 1) on L2-normalised CLIP ViT-L/14 image embeddings). On the hub the same head ships inside
`shunk031/aesthetics-predictor-v1-vit-large-patch14` (`model.safetensors`, the CLIP vision tower plus the head);
`load_aesthetic_head` reads only the [1, D] weight and its bias from that file.

Every loader raises `FeatureModelError` naming the model when it is neither cached nor downloadable.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class FeatureModelError(RuntimeError):
    """A feature model could not be loaded (offline and not cached, or a bad file)."""


@dataclass(frozen=True)
class FeatureModels:
    """Hub ids (or local folders) of the feature models; `cache_dir` None means the default hub cache."""

    dino: str = "facebook/dino-vitb16"
    clip: str = "openai/clip-vit-base-patch32"
    aesthetic_clip: str = "openai/clip-vit-large-patch14"
    aesthetic_head: str = "shunk031/aesthetics-predictor-v1-vit-large-patch14"
    aesthetic_head_file: str = "model.safetensors"
    cache_dir: str | None = None
    image_size: int = 224  # VBench's n_px


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def _load_error(name: str, purpose: str, err: BaseException) -> FeatureModelError:
    where = "offline (HF_HUB_OFFLINE=1) and not in the hub cache" if _offline() else "not downloadable"
    return FeatureModelError(
        f"cannot load feature model {name!r} for {purpose}: {where} ({type(err).__name__}: {err}). "
        f"Run once with network access so it is cached (HF_HUB_CACHE), or pass a local folder.")


def load_dino(models: FeatureModels, device: torch.device) -> torch.nn.Module:
    from transformers import ViTModel

    try:
        model = ViTModel.from_pretrained(models.dino, add_pooling_layer=False, cache_dir=models.cache_dir,
                                         local_files_only=_offline())
    except Exception as e:  # noqa: BLE001 - any hub/file failure becomes one clear error
        raise _load_error(models.dino, "subject consistency (DINO ViT-B/16)", e) from e
    return model.eval().to(device)


def load_clip_vision(name: str, models: FeatureModels, device: torch.device, purpose: str) -> torch.nn.Module:
    """The vision tower and projection of a CLIP checkpoint (the text tower is not loaded). A full
    CLIPModel config keeps `projection_dim` at the top level, so it is copied into the vision config."""
    from transformers import AutoConfig, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused text-tower weights are expected, not worth a warning
    try:
        config = AutoConfig.from_pretrained(name, cache_dir=models.cache_dir, local_files_only=_offline())
        if config.model_type == "clip":
            vision_config = config.vision_config
            vision_config.projection_dim = config.projection_dim
        else:
            vision_config = config
        model = CLIPVisionModelWithProjection.from_pretrained(name, config=vision_config, cache_dir=models.cache_dir,
                                                              local_files_only=_offline())
    except Exception as e:  # noqa: BLE001
        raise _load_error(name, purpose, e) from e
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval().to(device)


def load_aesthetic_head(models: FeatureModels, dim: int, device: torch.device) -> torch.nn.Linear:
    """LAION's aesthetic linear head: the one float tensor of shape [1, dim] in the file, and its bias."""
    from safetensors import safe_open

    path = models.aesthetic_head
    if not os.path.isfile(path):
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(models.aesthetic_head, models.aesthetic_head_file, cache_dir=models.cache_dir,
                                   local_files_only=_offline())
        except Exception as e:  # noqa: BLE001
            raise _load_error(f"{models.aesthetic_head}/{models.aesthetic_head_file}",
                              "aesthetic quality (LAION linear head)", e) from e
    with safe_open(path, framework="pt") as f:
        candidates = [k for k in f.keys() if k.endswith("weight") and f.get_slice(k).get_shape() == [1, dim]]
        if len(candidates) != 1:
            raise FeatureModelError(f"{path}: expected exactly one [1, {dim}] weight (the aesthetic head), "
                                    f"found {candidates or 'none'}")
        weight = f.get_tensor(candidates[0]).float()
        bias_key = candidates[0][: -len("weight")] + "bias"
        bias = f.get_tensor(bias_key).float() if bias_key in f.keys() else torch.zeros(1)
    head = torch.nn.Linear(dim, 1)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias.reshape(1))
    return head.eval().to(device)


def resize_short_side(frames: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """uint8 [T, 3, H, W] -> float [T, 3, h, w] in 0..255 with min(h, w) == size, like torchvision's
    Resize(size, antialias=False) on a uint8 tensor (the long side is truncated, values rounded and clamped)."""
    h, w = frames.shape[-2:]
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    x = frames.float()
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode=mode, align_corners=False, antialias=False)
    return x.round().clamp(0, 255)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top: top + size, left: left + size]


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std


def dino_preprocess(frames: torch.Tensor, size: int = 224) -> torch.Tensor:
    """VBench's dino_transform: uint8 [T, 3, H, W] -> normalised [T, 3, size, size*W/H]."""
    return _normalize(resize_short_side(frames, size, "bilinear"), IMAGENET_MEAN, IMAGENET_STD)


def clip_preprocess(frames: torch.Tensor, size: int = 224) -> torch.Tensor:
    """VBench's clip_transform: uint8 [T, 3, H, W] -> normalised [T, 3, size, size]."""
    return _normalize(center_crop(resize_short_side(frames, size, "bicubic"), size), CLIP_MEAN, CLIP_STD)


@torch.no_grad()
def dino_features(model, frames: torch.Tensor, size: int = 224, batch_size: int = 32) -> torch.Tensor:
    """DINO CLS features (after the final LayerNorm, as torch.hub's dino_vitb16 returns): [T, D], L2-normalised."""
    out = []
    for i in range(0, len(frames), batch_size):
        pixels = dino_preprocess(frames[i: i + batch_size], size).to(model.device)
        hidden = model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state  # [b, 1+N, D]
        out.append(hidden[:, 0].float().cpu())
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def clip_features(model, frames: torch.Tensor, size: int = 224, batch_size: int = 32) -> torch.Tensor:
    """CLIP image embeddings (projected, like clip's encode_image): [T, P], L2-normalised."""
    out = []
    for i in range(0, len(frames), batch_size):
        pixels = clip_preprocess(frames[i: i + batch_size], size).to(model.device)
        out.append(model(pixel_values=pixels).image_embeds.float().cpu())  # [b, P]
    return F.normalize(torch.cat(out), dim=-1)
