"""Student and teacher: a trainable copy of a registry backbone's timm ViT with the DINO and iBOT
heads and the learned mask token, and the EMA that makes the teacher.

The backbone runs through its family's own token embedding and block call (the ones the frozen
encoder uses), so positions (learned and resized, or RoPE) are computed exactly as they will be
when the weights serve a plugin trainer. iBOT masking replaces the patch embeddings of masked
patches by the mask token before positions are added (a forward hook on `patch_embed`, DINOv2's
`prepare_tokens_with_masks`).
"""
from __future__ import annotations

import copy
from typing import Dict, Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..backbones import BackboneSpec
from .heads import DinoHead


class PretrainNetwork(nn.Module):
    def __init__(self, spec: BackboneSpec, vit: nn.Module, pos_embed_resize: str, recipe,
                 gradient_checkpointing: bool = False):
        super().__init__()
        self.spec, self.family, self.pos_embed_resize = spec, spec.family_ops, pos_embed_resize
        self.gradient_checkpointing = gradient_checkpointing
        self.vit = vit
        dim = spec.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        head = dict(prototypes=recipe.prototypes, hidden=recipe.head_hidden, bottleneck=recipe.head_bottleneck,
                    layers=recipe.head_layers)
        self.dino_head = DinoHead(dim, **head)
        self.ibot_head = DinoHead(dim, **head)

    def encode(self, x: torch.Tensor, masks: Optional[torch.Tensor] = None):
        """(B, 3, H, W), masks (B, h, w) bool or None -> (class token (B, D), patch tokens (B, h*w, D)),
        after the final norm."""
        handle = None
        if masks is not None:
            token = self.mask_token

            def mask_patches(module, inputs, patches):  # patches: (B, h, w, D)
                return torch.where(masks[..., None], token.to(patches.dtype), patches)
            handle = self.vit.patch_embed.register_forward_hook(mask_patches)
        try:
            tokens, rope, _ = self.family.embed_tokens(self.vit, x, self.pos_embed_resize)
        finally:
            if handle is not None:
                handle.remove()
        for block in self.vit.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(self.family.run_block, block, tokens, rope, use_reentrant=False)
            else:
                tokens = self.family.run_block(block, tokens, rope)
        tokens = self.vit.norm(tokens)
        return tokens[:, 0], tokens[:, self.spec.num_prefix_tokens:]

    def forward(self, globals_: torch.Tensor, locals_: Optional[torch.Tensor] = None,
                masks: Optional[torch.Tensor] = None, mask_input: bool = True) -> Dict[str, torch.Tensor]:
        """cls, patches and DINO scores of the global crops; iBOT scores at `masks` (the input masked
        when `mask_input`: the student; the teacher sees the whole crop); DINO scores of the local crops."""
        cls, patches = self.encode(globals_, masks if mask_input else None)
        out = {"cls": cls, "patches": patches, "dino": self.dino_head(cls)}
        if masks is not None:
            out["ibot"] = self.ibot_head(patches[masks.flatten(1)])
        if locals_ is not None:
            out["dino_local"] = self.dino_head(self.encode(locals_)[0])
        return out


def make_teacher(student: PretrainNetwork) -> PretrainNetwork:
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    teacher.gradient_checkpointing = False
    return teacher


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter."""
    teacher_params = list(teacher.parameters())
    student_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(teacher_params, momentum)
    torch._foreach_add_(teacher_params, student_params, alpha=1 - momentum)
