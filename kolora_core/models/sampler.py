"""kolora's fast Kolors sampler: diffsynth 1.1.9's own modules, driven in batches.

What `SDXLImagePipeline.__call__` does for Kolors (diffsynth 1.1.9, `pipelines/sdxl_image.py`), per image:
noise from `torch.Generator(device).manual_seed(seed)` in the weights' dtype (`BasePipeline.generate_noise`),
`KolorsPrompter` encodes prompt and negative prompt separately (ChatGLM3, 256 tokens left-padded,
hidden_states[-2] and the last token of hidden_states[-1]), then for each of the
`EnhancedDDIMScheduler(beta_end=0.014, num_train_timesteps=1100)` timesteps it calls the UNet TWICE
(`lets_dance_xl`, which also splits every block's batch into single samples), mixes
`nega + cfg * (posi - nega)` and takes a DDIM step; finally the VAE decodes.

This module does the same arithmetic with the same modules, but:
* every prompt of the shard is encoded first (in batches), then the text encoder can be released
  (`release_text_encoder`): 12.5 GB of ChatGLM3 is not held while the UNet samples; texts embedded elsewhere
  (train's `prompt-embeddings`, `kolora_core.models.prompt_embeddings`) are taken as they are
  (`add_embeddings`), and with all of them at hand no text encoder is needed at all;
* conditional and unconditional halves go through ONE UNet call (batch 2), and several prompts share a
  batch (batch 2 x `batch_size`), each with its own generator seeded as the pipeline seeds it, so an
  image does not depend on its batch-mates beyond float rounding;
* each cross-attention's keys and values of the batch's text are made once, not at every step
  (`kolora_core.models.text_attention`);
* the DDIM coefficients are computed on the host up front (the scheduler's `step` reads the timestep back
  from the GPU every step, a device sync), the UNet runs in the weights' dtype (fp16 on GPU) with PyTorch
  SDPA attention (diffsynth's `Attention` calls `scaled_dot_product_attention`), optionally compiled
  (`kolora_core.models.unet_compile.compile_unet`: layer by layer, or the whole UNet as one graph; the VAE
  decoder then too), cuDNN attention on Hopper;
* the VAE decodes in bfloat16 on GPU / float32 on CPU (`training.precision.vae_dtype`; both have fp32's exponent range, so no
  overflow to NaN whatever VAE is used), one image at a time.

`tests/inference/test_sampler.py` proves on the tiny model that batch 1 reproduces `SDXLImagePipeline`
and that batching reproduces one-at-a-time rendering, up to float tolerance. No kolora config import here:
`bench/generate_bench.py` runs this module on a GPU machine that has no pydantic.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from diffsynth.prompters import KolorsPrompter
from diffsynth.schedulers import EnhancedDDIMScheduler
from PIL import Image

from kolora_core.errors import KoloraError
from kolora_core.models.attention import sdpa_context
from kolora_core.models.fp8 import calibration
from kolora_core.models.prompt_embeddings import Embedding, encode_texts
from kolora_core.models.text_attention import cache_text_attention, text_keys_values
from kolora_core.models.unet_compile import CompileScope, compile_unet, uncompile_unet

log = logging.getLogger("kolora.sampler")
TEXT_ENCODER, UNET, VAE_DECODER = "kolors_text_encoder", "sdxl_unet", "sdxl_vae_decoder"


class Request(Protocol):
    """What one image needs (kolora's `inference.story.Job` is one)."""

    prompt: str
    negative_prompt: str
    seed: int
    cfg_scale: float
    steps: int
    width: int
    height: int


@dataclass(frozen=True)
class Rendered:
    request: Any
    image: Image.Image
    seconds: float


def kolors_scheduler() -> EnhancedDDIMScheduler:
    """The scheduler `SDXLImagePipeline.fetch_models` installs when it finds the Kolors text encoder."""
    return EnhancedDDIMScheduler(beta_end=0.014, num_train_timesteps=1100)


def ddim_plan(scheduler: EnhancedDDIMScheduler, steps: int) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """Timesteps and (alpha_prod_t, alpha_prod_t_prev) per step, exactly as `EnhancedDDIMScheduler.step` picks them."""
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    alphas = scheduler.alphas_cumprod
    plan = []
    for i, t in enumerate(timesteps.tolist()):
        prev = alphas[int(timesteps[i + 1])] if i + 1 < len(timesteps) else 1.0
        plan.append((alphas[int(t)], prev))
    return timesteps.clone(), plan


def vae_output_to_image(decoded: torch.Tensor) -> Image.Image:
    """`BasePipeline.vae_output_to_image`: [-1, 1] float CHW -> uint8 RGB."""
    array = decoded[0].cpu().float().permute(1, 2, 0).numpy()
    return Image.fromarray(((array / 2 + 0.5).clip(0, 1) * 255).astype("uint8"))


def take_models(manager: Any, text_encoder: bool = True) -> dict[str, torch.nn.Module]:
    """Text encoder (unless not wanted: the prompts' embeddings are at hand), UNet and VAE decoder out of a diffsynth
    ModelManager, which then no longer holds the text encoder.

    The manager keeps a reference to every model it loaded; dropping the encoder's entry is what lets
    `release_text_encoder` actually free its memory.
    """
    names = (TEXT_ENCODER, UNET, VAE_DECODER) if text_encoder else (UNET, VAE_DECODER)
    models = {name: manager.fetch_model(name) for name in names}
    missing = [name for name, model in models.items() if model is None]
    if missing:
        raise KoloraError(f"the model manager holds no {', '.join(missing)}: not a Kolors model directory")
    for i in reversed(range(len(manager.model_name))):
        if manager.model_name[i] == TEXT_ENCODER:
            for column in (manager.model, manager.model_name, manager.model_path):
                column.pop(i)
    return models


class KolorsSampler:
    """Encode all prompts, release the text encoder, then render batches of images."""

    def __init__(
        self,
        text_encoder: torch.nn.Module | None,
        unet: torch.nn.Module,
        vae_decoder: torch.nn.Module,
        *,
        device: str,
        vae_dtype: torch.dtype | None = torch.float32,
        compile_scope: CompileScope = False,
        channels_last: bool = False,
        encode_batch: int = 16,
    ) -> None:
        self.device = device
        self.prompter = KolorsPrompter()
        if text_encoder is not None:  # None: every text comes embedded (`embeddings`), e.g. from train's artifact
            self.prompter.fetch_models(text_encoder.eval())
        self.unet = unet.eval()
        self.dtype = next(unet.parameters()).dtype
        self.vae_decoder = (vae_decoder if vae_dtype is None else vae_decoder.to(vae_dtype)).eval()
        self.scheduler = kolors_scheduler()
        self.encode_batch = encode_batch
        cache_text_attention(self.unet)  # before compilation: the layers' class is what dynamo traces
        self.configure_unet(scope=compile_scope, channels_last=channels_last)
        if compile_scope:  # else the decoder stays as given (a caller may have compiled it)
            self.configure_vae(compiled=True)
        self.embeddings: dict[str, Embedding] = {}

    def configure_unet(self, *, scope: CompileScope, channels_last: bool = False, mode: str | None = None) -> None:
        """channels_last weights (NHWC convolutions) and `torch.compile` with static shapes: `True` compiles each
        layer (few shared graphs, cached on disk), "whole" the UNet as one graph (`unet_compile.compile_unet`)."""
        self.unet.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        uncompile_unet(self.unet)
        compile_unet(self.unet, scope, mode=mode)

    def configure_vae(self, *, compiled: bool, backend: str = "inductor") -> None:
        """The VAE decoder compiled with static shapes (it decodes one image at a time: one shape per size), or
        eager. Eager, its GroupNorm statistics alone took ~0.045 s per 1024 px image on an H200; compiled, the
        8-image story ran 0.048 s/image faster (docs/benchmarks.md), for ~22 s of cold compilation (cached)."""
        self.vae_decoder._compiled_call_impl = None
        if compiled:
            self.vae_decoder.compile(backend=backend, dynamic=False)

    # --- text ---------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> None:
        """Embed every text not embedded yet (prompts and negative prompts alike), `encode_batch` at a time."""
        todo = list(dict.fromkeys(t for t in texts if t not in self.embeddings))
        if todo and self.prompter.text_encoder is None:
            raise KoloraError("the text encoder was released before every prompt was encoded: encode all prompts first")
        self.embeddings.update(encode_texts(self.prompter, todo, self.device, self.encode_batch))

    def add_embeddings(self, embeddings: dict[str, Embedding]) -> None:
        """Texts embedded elsewhere (train's `prompt-embeddings`), moved to this device."""
        self.embeddings.update({t: (e.to(self.device), p.to(self.device)) for t, (e, p) in embeddings.items()})

    def release_text_encoder(self) -> None:
        """Drop the text encoder (the caller must hold no other reference) and return its memory to the device."""
        self.prompter.text_encoder = None
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    # --- images -------------------------------------------------------------------------------------------------

    def _noise(self, requests: Sequence[Request], height: int, width: int) -> torch.Tensor:
        """One generator per image, seeded as `BasePipeline.generate_noise` seeds it for `seed=`."""
        shape = (1, 4, height // 8, width // 8)
        noise = [
            torch.randn(shape, generator=torch.Generator(self.device).manual_seed(r.seed), device=self.device, dtype=self.dtype)
            for r in requests
        ]
        return torch.cat(noise)

    @torch.no_grad()
    def sample(self, requests: Sequence[Request]) -> torch.Tensor:
        """Denoised latents of one batch; all requests must share steps, size and whether CFG is on."""
        first = requests[0]
        steps, height, width = first.steps, first.height, first.width
        cfg_on = first.cfg_scale != 1.0
        if any((r.steps, r.height, r.width, r.cfg_scale != 1.0) != (steps, height, width, cfg_on) for r in requests):
            raise ValueError("a batch must share steps, width, height and CFG on/off")
        timesteps, plan = ddim_plan(self.scheduler, steps)
        latents = self._noise(requests, height, width)
        text = torch.cat([self.embeddings[r.prompt][0] for r in requests])
        pooled = torch.cat([self.embeddings[r.prompt][1] for r in requests])
        if cfg_on:
            text = torch.cat([text, *[self.embeddings[r.negative_prompt][0] for r in requests]])
            pooled = torch.cat([pooled, *[self.embeddings[r.negative_prompt][1] for r in requests]])
        scales = [r.cfg_scale for r in requests]
        cfg: float | torch.Tensor = (
            scales[0] if len(set(scales)) == 1 else torch.tensor(scales, device=self.device, dtype=self.dtype).view(-1, 1, 1, 1)
        )
        add_time_id = torch.tensor([height, width, 0, 0, height, width], device=self.device).repeat(text.shape[0])
        timesteps = timesteps.to(self.device)
        with sdpa_context(self.device), text_keys_values(self.unet, text):
            return self._denoise(latents, timesteps, plan, text, pooled, add_time_id, cfg, cfg_on)

    def _denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        plan: list[tuple[float, float]],
        text: torch.Tensor,
        pooled: torch.Tensor,
        add_time_id: torch.Tensor,
        cfg: float | torch.Tensor,
        cfg_on: bool,
    ) -> torch.Tensor:
        for i, (alpha_t, alpha_prev) in enumerate(plan):
            model_in = torch.cat([latents, latents]) if cfg_on else latents
            with calibration(self.unet) if i == 0 else contextlib.nullcontext():  # FP8 layers' first scales
                out = self.unet(
                    sample=model_in,
                    timestep=timesteps[i : i + 1],
                    encoder_hidden_states=text,
                    add_time_id=add_time_id,
                    add_text_embeds=pooled,
                )
            if cfg_on:
                posi, nega = out.chunk(2)
                out = nega + cfg * (posi - nega)
            latents = self.scheduler.denoise(out, latents, alpha_t, alpha_prev)
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[torch.Tensor]:
        """VAE decode, one image at a time (1024 px in fp32 needs several GB each); refuses NaN/inf output."""
        decoded = []
        channels_last = next(self.vae_decoder.parameters()).is_contiguous(memory_format=torch.channels_last)
        for i in range(latents.shape[0]):
            latent = latents[i : i + 1]
            pixels = self.vae_decoder(latent.to(memory_format=torch.channels_last) if channels_last else latent)
            if not torch.isfinite(pixels).all():
                raise KoloraError(
                    "the VAE decoded NaN/inf: decode in float32/bfloat16 (generate.vae_dtype) or use the fp16-fix VAE"
                )
            decoded.append(pixels.float().cpu())
        return decoded

    def render(self, requests: Sequence[Request], batch_size: int) -> Iterator[Rendered]:
        """Images for `requests`: batches of up to `batch_size` that share settings, in order of first appearance."""
        self.encode([r.prompt for r in requests] + [r.negative_prompt for r in requests if r.cfg_scale != 1.0])
        groups: dict[tuple[int, int, int, bool], list[Request]] = {}
        for r in requests:
            groups.setdefault((r.steps, r.height, r.width, r.cfg_scale != 1.0), []).append(r)
        for group in groups.values():
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                started = time.perf_counter()
                images = [vae_output_to_image(x) for x in self.decode(self.sample(batch))]
                seconds = (time.perf_counter() - started) / len(batch)
                for request, image in zip(batch, images, strict=True):
                    yield Rendered(request, image, seconds)
