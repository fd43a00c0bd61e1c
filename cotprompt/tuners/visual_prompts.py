"""Learnable prompt tokens inside an open_clip ViT image encoder (VPT; Jia et al., ECCV 2022).

The image encoder is run block by block so that ``n`` prompt tokens can be inserted:

```
pixels [B, 3, H, W] --conv1--> patches [B, P, D] --cat CLS, + positional embedding,
    patch dropout--> [B, 1 + P, D] --append prompts_0 [B, n, D]--> [B, 1 + P + n, D] --ln_pre-->
block 0 --> replace the last n tokens by prompts_1 (deep) --> block 1 --> ... --> block L-1
    --drop the n prompt tokens--> [B, 1 + P, D] --open_clip's pooling, @ proj--> [B, E]
```

Shallow prompts (``depth`` 1) enter at the input only and travel through every block. Deep prompts
give the first ``depth`` blocks their own tokens, each replacing the previous block's outputs at
the prompt positions (VPT-deep). The input prompts are appended after the positional embedding and
before ``ln_pre``, as MaPLe and IVLP do for CLIP; the deeper ones go into the residual stream
directly. Prompts are appended at the end of the sequence and removed before pooling, so with
zero tokens the computation is open_clip's own forward, operation for operation.

Shapes: B images, P patches, D vision width, n prompt tokens, L transformer blocks, W text width,
E joint embedding dimension.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.utils import checkpoint as torch_checkpoint

from cotprompt.config import ComponentConfig
from cotprompt.errors import ConfigError

logger = logging.getLogger(__name__)

#: Prompt tokens per layer when ``n_tokens`` is unset and the prompts are not coupled.
DEFAULT_N_TOKENS = 8

_VIT_ATTRIBUTES = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "ln_post")


class VisualPromptConfig(ComponentConfig):
    """Options of the visual prompt tokens.

    Args:
        enabled: ``False`` leaves the image encoder frozen and untouched (no parameters).
        n_tokens: Prompt tokens per prompted layer; ``None`` takes 8, or, when the prompts are
            coupled to the text context (``multimodal`` with ``couple: true``), the number of
            text context vectors. ``0`` reproduces the frozen encoder exactly.
        mode: ``shallow``: tokens at the input only; ``deep``: new tokens at each of the first
            ``depth`` blocks, replacing the previous block's prompt outputs (VPT-deep).
        depth: How many blocks receive tokens in ``deep`` mode (``None``: all of them); must not
            exceed the backbone's number of ViT blocks. ``shallow`` is depth 1.
        init: ``uniform_xavier``: U(-v, v) with v = sqrt(6 / (3 * patch * patch + D)), VPT's
            initialisation; ``normal``: N(0, ``init_std``^2) (MaPLe / IVLP use std 0.02).
        init_std: Standard deviation of the ``normal`` initialisation.
        dropout: Dropout on the prompt tokens during training (VPT's prompt dropout).
        gradient_checkpointing: Recompute each ViT block's activations in the backward pass
            (``torch.utils.checkpoint``) instead of storing them: less memory, about one more
            forward pass of time.
    """

    enabled: bool = True
    n_tokens: int | None = Field(default=None, ge=0, le=1024)
    mode: Literal["shallow", "deep"] = "shallow"
    depth: int | None = Field(default=None, ge=1, le=256)
    init: Literal["uniform_xavier", "normal"] = "uniform_xavier"
    init_std: float = Field(default=0.02, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _check_depth(self) -> VisualPromptConfig:
        if self.mode == "shallow" and self.depth not in (None, 1):
            raise ValueError(
                f"mode='shallow' puts prompts at the input only (depth 1), but depth={self.depth}; "
                "use mode='deep' for prompts in several layers"
            )
        return self


@dataclass(frozen=True)
class ViTGeometry:
    """What the prompt parameters depend on.

    Attributes:
        width: D, the token width of the ViT.
        layers: L, the number of transformer blocks.
        patch_area: Pixels per patch (``patch_h * patch_w``), for VPT's initialisation.
    """

    width: int
    layers: int
    patch_area: int


def vit_tower(backbone: Any) -> nn.Module:
    """The open_clip ``VisionTransformer`` of ``backbone`` (``backbone.model.visual``).

    Raises:
        ConfigError: the backbone has no open_clip model, or its image tower is not a ViT (a
            ModifiedResNet of the RN50 family, a timm tower, ...).
    """
    model = getattr(backbone, "model", None)
    visual = getattr(model, "visual", None)
    if visual is None:
        raise ConfigError(
            "visual prompt tuning needs an open_clip backbone (an object with `model.visual`); "
            f"got a {type(backbone).__name__}"
        )
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if not all(hasattr(visual, attr) for attr in _VIT_ATTRIBUTES) or blocks is None:
        model_name = getattr(getattr(backbone, "config", None), "model_name", "the backbone")
        raise ConfigError(
            f"visual prompt tuning needs an open_clip VisionTransformer image encoder, but "
            f"{model_name} has a {type(visual).__name__} image tower, which has no token sequence "
            "to insert prompt tokens into. Use a ViT model (ViT-B-16, ViT-L-14, ...) or a "
            "text-side tuner (coop, cocoop, cotpt)"
        )
    if getattr(visual, "_pool", None) is None and getattr(visual, "_global_pool", None) is None:
        raise ConfigError(
            f"this open_clip version's {type(visual).__name__} has no pooling method "
            "(_pool/_global_pool); upgrade open_clip_torch"
        )
    return visual


def vit_geometry(visual: nn.Module) -> ViTGeometry:
    """Width, block count and patch area of an open_clip ViT."""
    conv: nn.Conv2d = visual.conv1  # type: ignore[assignment]
    kernel = conv.kernel_size
    return ViTGeometry(
        width=int(conv.out_channels),
        layers=len(visual.transformer.resblocks),  # type: ignore[union-attr, arg-type]
        patch_area=int(kernel[0]) * int(kernel[1]),
    )


def prompt_depth(config: VisualPromptConfig, geometry: ViTGeometry) -> int:
    """Number of blocks that receive prompt tokens.

    Raises:
        ConfigError: ``depth`` exceeds the number of ViT blocks.
    """
    if config.mode == "shallow":
        return 1
    if config.depth is None:
        return geometry.layers
    if config.depth > geometry.layers:
        raise ConfigError(
            f"visual prompts: depth={config.depth} asks for prompt tokens in {config.depth} "
            f"layers, but the backbone's ViT image encoder has {geometry.layers} layers; use "
            f"depth <= {geometry.layers}, or leave depth unset for every layer"
        )
    return config.depth


def _embed_patches(visual: Any, pixels: Tensor) -> Tensor:
    """``[B, 3, H, W]`` -> ``[B, 1 + P, D]``: patches, CLS, positional embedding, patch dropout
    (open_clip's ``VisionTransformer._embeds`` without ``ln_pre``)."""
    x = visual.conv1(pixels)  # [B, D, gh, gw]
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, P, D]
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1)
    x = x + visual.positional_embedding.to(x.dtype)
    return visual.patch_dropout(x)


def _pool(visual: Any, x: Tensor) -> Tensor:
    """open_clip's pooling of the final tokens ``[B, 1 + P, D]`` -> ``[B, D or E]``."""
    pool = getattr(visual, "_pool", None)
    if pool is not None:
        return pool(x)[0]
    return visual._global_pool(visual.ln_post(x))[0]


def _run_block(block: nn.Module, x: Tensor, batch_first: bool, use_checkpoint: bool) -> Tensor:
    """One transformer block on batch-first ``x`` ``[B, T, D]``."""
    if not batch_first:
        x = x.transpose(0, 1)
    x = torch_checkpoint.checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)
    return x.transpose(0, 1) if not batch_first else x


def encode_with_prompts(
    visual: Any,
    pixels: Tensor,
    prompts: Sequence[Tensor] = (),
    *,
    gradient_checkpointing: bool = False,
) -> Tensor:
    """Image features ``[B, E]`` (not normalised) with prompt tokens in the first blocks.

    Args:
        visual: An open_clip ``VisionTransformer`` (see :func:`vit_tower`).
        pixels: ``[B, 3, H, W]``.
        prompts: One ``[B, n, D]`` tensor per prompted block, block 0 first (the same ``n`` for
            all); empty for the plain, frozen forward.
        gradient_checkpointing: Checkpoint every block (only when gradients are being recorded).
    """
    dtype = visual.conv1.weight.dtype
    x = _embed_patches(visual, pixels.to(visual.conv1.weight.device, dtype))
    n = int(prompts[0].shape[1]) if prompts else 0
    if n:
        x = torch.cat([x, prompts[0].to(x.dtype)], dim=1)  # [B, 1 + P + n, D]
    x = visual.ln_pre(x)
    transformer = visual.transformer
    batch_first = bool(getattr(transformer, "batch_first", True))
    use_checkpoint = gradient_checkpointing and torch.is_grad_enabled()
    for index, block in enumerate(transformer.resblocks):
        if n and 0 < index < len(prompts):
            x = torch.cat([x[:, :-n], prompts[index].to(x.dtype)], dim=1)
        x = _run_block(block, x, batch_first, use_checkpoint)
    if n:
        x = x[:, :-n]
    pooled = _pool(visual, x)
    proj = getattr(visual, "proj", None)
    return pooled @ proj if proj is not None else pooled


class VisualPrompts(nn.Module):
    """The visual prompt tokens of a tuner: learned directly, or projected from text context.

    Uncoupled, the parameter is ``prompts`` ``[depth, n, D]``. Coupled (MaPLe), the tokens of
    block l are ``coupling[l](text_context)``, a learned ``Linear(W, D)`` of the text context
    ``[n, W]``; the text context and the projections are then the only parameters.

    Parameters are created on the first :meth:`bind`; later binds check that the backbone's ViT
    has the same geometry.

    Args:
        config: The prompt options.
        coupled: Project the prompts from text context given to :meth:`layer_prompts`.
    """

    def __init__(self, config: VisualPromptConfig, coupled: bool = False) -> None:
        super().__init__()
        self.config = config
        self.coupled = coupled
        self.prompts: nn.Parameter | None = None
        self.coupling: nn.ModuleList | None = None
        self.dropout = nn.Dropout(config.dropout)
        self.geometry: ViTGeometry | None = None
        self.depth: int | None = None
        self.n_tokens: int | None = None

    @property
    def active(self) -> bool:
        """True when prompt tokens change the image encoder (enabled, at least one token)."""
        cfg = self.config
        if not cfg.enabled:
            return False
        if self.n_tokens is not None:
            return self.n_tokens > 0
        return cfg.n_tokens is None or cfg.n_tokens > 0

    def bind(
        self, backbone: Any, text_tokens: int | None = None, text_width: int | None = None
    ) -> None:
        """Check the backbone's image tower and create the parameters on first use.

        Args:
            backbone: An open_clip backbone with a ViT image tower.
            text_tokens: Coupled only: n, the number of text context vectors.
            text_width: Coupled only: W, the width of the text context vectors.

        Raises:
            ConfigError: not a ViT, ``depth`` beyond its layers, a ViT of another geometry than
                the one the prompts were made for, or ``n_tokens`` disagreeing with the coupled
                text context.
        """
        cfg = self.config
        if not cfg.enabled:
            return
        geometry = vit_geometry(vit_tower(backbone))
        depth = prompt_depth(cfg, geometry)
        if self.geometry is not None:
            if geometry != self.geometry:
                raise ConfigError(
                    f"the visual prompts were made for a ViT of width {self.geometry.width} with "
                    f"{self.geometry.layers} layers, but this backbone's ViT has width "
                    f"{geometry.width} and {geometry.layers} layers"
                )
            return
        if self.coupled:
            if text_tokens is None or text_width is None:
                raise ConfigError("coupled visual prompts need the text context's size")
            if cfg.n_tokens is not None and cfg.n_tokens != text_tokens:
                raise ConfigError(
                    f"coupled visual prompts are projections of the {text_tokens} text context "
                    f"vectors, but visual.n_tokens={cfg.n_tokens}; leave n_tokens unset"
                )
            n_tokens = text_tokens
        else:
            n_tokens = DEFAULT_N_TOKENS if cfg.n_tokens is None else cfg.n_tokens
        device = backbone.device
        if n_tokens == 0:
            pass  # nothing to learn: the frozen encoder is used
        elif self.coupled:
            assert text_width is not None
            self.coupling = nn.ModuleList(
                nn.Linear(text_width, geometry.width) for _ in range(depth)
            ).to(device)
        else:
            # drawn on the CPU (then moved): the same values on every device for one seed
            value = torch.empty(depth, n_tokens, geometry.width)
            if cfg.init == "uniform_xavier":
                bound = math.sqrt(6.0 / float(3 * geometry.patch_area + geometry.width))
                nn.init.uniform_(value, -bound, bound)
            else:
                nn.init.normal_(value, std=cfg.init_std)
            self.prompts = nn.Parameter(value.to(device))
        self.geometry, self.depth, self.n_tokens = geometry, depth, n_tokens
        logger.debug(
            "visual prompts: %d tokens in %d of %d layers (width %d, coupled=%s)",
            n_tokens,
            depth,
            geometry.layers,
            geometry.width,
            self.coupled,
        )

    def layer_prompts(self, batch: int, text_context: Tensor | None = None) -> list[Tensor]:
        """Per prompted block, the tokens ``[B, n, D]`` (dropout applied in training mode).

        Args:
            batch: B.
            text_context: Coupled only: the text context ``[n, W]``.
        """
        if not self.active:
            return []
        if self.coupled:
            if self.coupling is None:
                raise ConfigError("the visual prompts are not bound; call bind() first")
            if text_context is None:
                raise ConfigError("coupled visual prompts need the text context")
            # bind() fills the coupling with nn.Linear layers
            layers = [proj(text_context.to(cast(nn.Linear, proj).weight.dtype))
                      for proj in self.coupling]
        else:
            if self.prompts is None:
                raise ConfigError("the visual prompts are not bound; call bind() first")
            layers = list(self.prompts.unbind(0))
        return [self.dropout(p.unsqueeze(0).expand(batch, -1, -1)) for p in layers]

    def encode(self, backbone: Any, pixels: Tensor, text_context: Tensor | None = None) -> Tensor:
        """Image features ``[B, E]`` (not normalised) of pixels ``[B, 3, H, W]``.

        Without active prompts this is the frozen ``backbone.encode_images`` (no gradients).
        """
        if not self.active:
            with torch.no_grad():
                return backbone.encode_images(pixels)
        visual = vit_tower(backbone)
        prompts = self.layer_prompts(pixels.shape[0], text_context)
        return encode_with_prompts(
            visual, pixels, prompts, gradient_checkpointing=self.config.gradient_checkpointing
        )
