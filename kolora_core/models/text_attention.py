"""Cross-attention keys and values made once per batch of images instead of at every denoising step.

Why: while a batch is sampled its text embeddings do not change, and neither do the keys and values every
transformer layer's cross-attention makes of them (`to_k`, `to_v` of the 256 text tokens, after the UNet's
`text_intermediate_proj`). diffsynth's `Attention` recomputes them at each of the 50 steps: 140 products per UNet
call, ~4% of the transformer layers' matrix FLOPs at 1024 px. `text_keys_values` computes them once, with the same
modules on the same inputs (the same arithmetic: tests/models/test_text_attention.py), and the layers read them
for the batch's steps. The keys and values live in buffers updated in place, so a compiled UNet keeps its graph
from one batch to the next (a new batch shape is a new graph anyway).

Outside the context every layer is diffsynth's own: a UNet call with other text (a pipeline, training) computes
its keys and values as before. ~1.3 GiB at batch 16 (8 prompts with CFG) for the full Kolors UNet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from diffsynth.models.attention import Attention
from diffsynth.models.sd_unet import BasicTransformerBlock


class TextAttention(Attention):
    """A transformer layer's cross-attention (`attn2`) that, while `held`, reads its keys and values from buffers."""

    held = False
    text_keys: torch.Tensor
    text_values: torch.Tensor

    @torch.no_grad()
    def hold(self, text: torch.Tensor) -> None:
        """Keys and values of `text` ([batch, tokens, width]) in head layout, kept for the calls until `release`."""
        keys, values = (self._heads(projection(text)) for projection in (self.to_k, self.to_v))
        for name, value in (("text_keys", keys), ("text_values", values)):
            kept = self._buffers.get(name)
            if kept is not None and kept.shape == value.shape and kept.dtype == value.dtype:
                kept.copy_(value)  # in place: compiled graphs read this buffer
            else:
                self.register_buffer(name, value, persistent=False)
        self.held = True

    def release(self) -> None:
        self.held = False

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, tokens, heads x head_dim] -> [batch, heads, tokens, head_dim], as diffsynth's forward views it."""
        return x.view(x.shape[0], -1, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        ipadapter_kwargs: dict | None = None,
        qkv_preprocessor: object = None,
    ) -> torch.Tensor:
        if not self.held or attn_mask is not None or ipadapter_kwargs is not None or qkv_preprocessor is not None:
            return super().forward(hidden_states, encoder_hidden_states, attn_mask, ipadapter_kwargs, qkv_preprocessor)
        batch = hidden_states.shape[0]
        q = self._heads(self.to_q(hidden_states))
        out = torch.nn.functional.scaled_dot_product_attention(q, self.text_keys, self.text_values)
        return self.to_out(out.transpose(1, 2).reshape(batch, -1, self.num_heads * self.head_dim).to(q.dtype))


def cache_text_attention(unet: torch.nn.Module) -> int:
    """Turn every transformer layer's cross-attention into a `TextAttention` in place (same parameters, same module
    paths: LoRA merges and files see the layers they know); returns how many. Before compilation."""
    layers = [block.attn2 for block in unet.modules() if isinstance(block, BasicTransformerBlock)]
    for attention in layers:
        if type(attention) is Attention:
            attention.__class__ = TextAttention
    return len(layers)


@contextlib.contextmanager
def text_keys_values(unet: torch.nn.Module, encoder_hidden_states: torch.Tensor) -> Iterator[None]:
    """Around the UNet calls of one batch whose text embeddings are `encoder_hidden_states` (what the calls pass):
    every `TextAttention` holds the keys and values of that text; made after any LoRA merge, they see its weights."""
    layers = [module for module in unet.modules() if isinstance(module, TextAttention)]
    project = getattr(unet, "text_intermediate_proj", None)  # Kolors: ChatGLM3's 4096 wide -> 2048, in the UNet
    with torch.no_grad():
        text = encoder_hidden_states if project is None else project(encoder_hidden_states)
    for layer in layers:
        layer.hold(text)
    try:
        yield
    finally:
        for layer in layers:
            layer.release()
