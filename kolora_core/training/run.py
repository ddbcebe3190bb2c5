"""The train stage: the seed's LoRA objective on a model directory and a training set, to LoRA files.

One loop (Lightning Fabric) drives both engines:

* `fast` (default): captions and latents encoded once (`cache.py`), the text encoder and VAE freed,
  then batched UNet steps (`fast_module.py`); on a GPU by default the UNet's layers compiled
  (`unet_compile.py`), the whole step replayed as a CUDA graph (`step.py`), fused AdamW, gradient
  checkpointing only when memory needs it (`memory.py`); DDP over `train.devices` GPUs with the global
  batch drawn once per step and split across ranks.
* `seed`: diffsynth's own `LightningModelForT2ILoRA.training_step` (ChatGLM + VAE every step), one device.

Both engines also embed every story prompt and negative prompt of `generate.prompts` with the ChatGLM they have
loaded (the `prompt-embeddings` output, `kolora_core.models.prompt_embeddings`), so generate need not load it.
The text encoder is loaded straight onto the training device (`loading.py`).

Every step's images and random draws are functions of (seed, step) (`sampling.py`); a resumable
state is written every `train.checkpoint_every` steps (`checkpoint.py`), and a rerun continues from
it to the same LoRA an uninterrupted run gives; SIGTERM checkpoints at the current step (`sigterm.py`).
Outputs: lora.safetensors (+ diffusers and kohya exports), train_log.csv (step, loss, lr, seconds,
images/s), train_summary.json, and with `train.seed_compat` the seed_compat.json proof; with the trainer
options (docs/training.md "Trainer options") also validation/ + validation_strip.png (`validation.py`) and
tensorboard/ (`progress.py`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffsynth import SDXLImagePipeline
from lightning.fabric import Fabric

from kolora_core.config import RunConfig, TrainConfig, auto
from kolora_core.data.layout import TRAIN_DIR, read_trainset, trainset_fingerprint
from kolora_core.device import resolve_device
from kolora_core.errors import KoloraError, Terminated
from kolora_core.lora.export import unet_layout, write_exports
from kolora_core.lora.format import LORA_FILE, is_adapter_param, load_lora, lora_state_from_model, save_lora
from kolora_core.models.attention import sdpa_context
from kolora_core.models.layout import ModelDir
from kolora_core.models.loading import load_model_manager
from kolora_core.models.prompt_embeddings import encode_texts, story_texts, write_prompt_embeddings
from kolora_core.models.unet_compile import CompileScope, compile_unet, use_compile_cache
from kolora_core.training import checkpoint as ckpt
from kolora_core.training import sigterm
from kolora_core.training.cache import TrainCache, build_cache
from kolora_core.training.captions import warn_cut_captions
from kolora_core.training.decoding import Undecodable, decoded, unreadable
from kolora_core.training.fast_module import (
    FastLoRAModule,
    add_noise,
    freeze_except_lora,
    inject_lora,
    kolors_train_scheduler,
    snr_weights,
)
from kolora_core.training.identity import training_identity, training_inputs
from kolora_core.training.memory import MemoryPlan, plan_memory
from kolora_core.training.optim import (
    GRAPH_BLOCKERS,
    LoRAEma,
    build_optimizer,
    learning_rate,
    schedule_varies,
    set_learning_rate,
)
from kolora_core.training.precision import (
    autocast_for,
    fabric_precision,
    fast_weights_dtype,
    generation_weights_dtype,
    is_full_precision,
    seed_weights_dtype,
    vae_dtype,
)
from kolora_core.training.progress import ProgressLog, TensorBoard
from kolora_core.training.sampling import (
    NUM_TRAIN_TIMESTEPS,
    caption_dropped,
    draw_bucketed,
    draw_images,
    offset_noise,
    random_crop_box,
    resized,
    step_generators,
    step_seed,
    training_tensor,
)
from kolora_core.training.seed_module import SeedLoRAModule
from kolora_core.training.step import TrainStep, to_device
from kolora_core.training.validation import VALIDATION_DIR, Validation, validation_requests, warn_cut_prompts

log = logging.getLogger("kolora.train")
CRASH_ENV = "KOLORA_TEST_CRASH_AT_STEP"  # test hook: fail right after this (1-based) step, as a kill would
COMPILE_BACKEND = "inductor"  # the CPU tests use "aot_eager": the same tracing, no C++ compilation
# Compiling pays from about this many training images on: on an H200 the first (cold) compilation takes ~85 s and
# saves 0.025 s a step at batch 1 and ~0.15 s at batch 8 (docs/benchmarks.md).
COMPILE_PAYS_IMAGES = 2000
SUMMARY_FILE = "train_summary.json"
LOG_FILE = "train_log.csv"


class SimulatedCrash(RuntimeError):
    """Raised by the KOLORA_TEST_CRASH_AT_STEP hook."""


def oom_message(train: TrainConfig) -> str:
    lower = [f"train.batch_size (now {train.batch_size})"]
    if train.gradient_checkpointing is not True:
        lower.append("set train.gradient_checkpointing true (about 1/3 slower, a fraction of the activation memory)")
    if is_full_precision(train.precision):
        lower.append("use train.precision bf16-mixed")
    lower.append(f"or lower train.resolution (now {train.resolution})")
    return f"GPU out of memory at train.resolution {train.resolution}, train.batch_size {train.batch_size}: lower " + ", ".join(
        lower
    )


@dataclass  # not frozen: Fabric's spawn launcher walks (and rebuilds) dataclass arguments
class TrainJob:
    """Everything a training process needs; picklable, so DDP ranks can be spawned with it."""

    config: RunConfig
    trainset: Path
    rows: list[tuple[str, str]]
    model_dir: Path
    out: Path
    checkpoints: Path
    dataset_sha256: str
    base_model_sha256: str
    prompt_embeddings: Path | None = None  # where the story prompts' embeddings go (None: not written)
    cut_captions: int = 0  # images whose caption the text encoder reads only in part (train_summary.json)

    @property
    def train(self) -> TrainConfig:
        return self.config.train


def _check_settings(train: TrainConfig, device: str) -> None:
    if device == "cpu" and (setting := train.gpu_only_setting()):
        raise KoloraError(f"{setting} needs a GPU; on CPU use 32-true or bf16-mixed")
    if train.engine == "seed" and train.devices > 1:
        raise KoloraError(
            "train.engine seed runs on one device (it is the reference); use train.engine fast for train.devices > 1"
        )
    if device == "cuda" and train.devices > torch.cuda.device_count():
        raise KoloraError(f"train.devices is {train.devices} but {torch.cuda.device_count()} GPU(s) are visible")
    if train.compile in (True, "whole") and train.engine == "seed":
        raise KoloraError("train.compile applies to the fast engine only")
    if train.cuda_graphs is True and (device != "cuda" or train.devices > 1 or train.engine == "seed"):
        raise KoloraError("train.cuda_graphs needs the fast engine on one CUDA GPU: set it to auto or false")


def make_fabric(train: TrainConfig, device: str) -> Fabric:
    return Fabric(
        accelerator="cuda" if device == "cuda" else "cpu",
        devices=train.devices,
        strategy="ddp_spawn" if train.devices > 1 else "auto",
        precision=fabric_precision(train.precision),
    )


def run_train(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    train = config.train
    trainset, out = inputs["trainset"], outputs["lora"]
    rows = read_trainset(trainset)  # an empty or broken set fails here, before any model is loaded
    model_dir = ModelDir(inputs["models"])
    device = resolve_device(config.device)
    _check_settings(train, device)
    job = TrainJob(
        config=config,
        trainset=trainset,
        rows=rows,
        model_dir=model_dir.root,
        out=out,
        checkpoints=ckpt.checkpoint_dir(train, outputs["checkpoints"]),
        dataset_sha256=trainset_fingerprint(trainset, rows),
        base_model_sha256=model_dir.fingerprint(config.models.verify),
        prompt_embeddings=outputs.get("prompt-embeddings"),
    )
    log.info(
        "training (%s engine) on %d images, %d steps of %d x %d images, rank %d alpha %s, %s, %s",
        train.engine,
        len(rows),
        train.steps,
        train.batch_size,
        train.devices,
        train.lora_rank,
        train.lora_alpha,
        train.precision,
        device,
    )
    # here, not in the engines: once per run, not once per DDP rank, before any model loads
    job.cut_captions = warn_cut_captions(trainset, rows)
    if train.validation_every:
        warn_cut_prompts(config)
    # A checkpoint from other settings is refused now, before minutes of model loading.
    ckpt.load_latest(job.checkpoints, ckpt.fingerprint(train, job.dataset_sha256, job.base_model_sha256), announce=False)
    if train.seed_compat:
        from kolora_core.training.seed_compat import seed_compat_check, write_report

        try:
            report = seed_compat_check(train, trainset, rows, model_dir, device)
        except torch.cuda.OutOfMemoryError:
            raise KoloraError("seed-compat check: " + oom_message(train)) from None
        write_report(out, report)
        if not report["passed"]:
            raise KoloraError(f"seed-compat check failed: {json.dumps(report)}")
        if device == "cuda":
            torch.cuda.empty_cache()  # the check's models are gone; DDP ranks need the memory
    fabric = make_fabric(train, device)
    try:
        if train.devices > 1:
            fabric.launch(train_worker, job)
        else:
            with sigterm.checkpoint_on_sigterm(train.sigterm_grace_s):
                train_worker(fabric, job)
    except torch.multiprocessing.ProcessRaisedException as exc:
        raise _from_rank(exc) from None


def _from_rank(exc: Exception) -> Exception:
    """A KoloraError raised in a DDP rank arrives as text; give the user its one line."""
    found = re.findall(r"KoloraError: (.+)", str(exc))
    return KoloraError(found[-1]) if found else exc


def train_worker(fabric: Fabric, job: TrainJob) -> None:
    """One training process (rank): load, cache, resume, loop, and on rank 0 write the outputs."""
    train = job.train
    try:
        engine = FastEngine(fabric, job) if train.engine == "fast" else SeedEngine(fabric, job)
        engine.run()
    except torch.cuda.OutOfMemoryError:
        raise KoloraError(oom_message(train)) from None


class _Engine:
    """The shared loop: resume, steps, checkpoints, progress, outputs."""

    def __init__(self, fabric: Fabric, job: TrainJob) -> None:
        self.fabric, self.job, self.train = fabric, job, job.train
        self.global_batch = self.train.batch_size * fabric.world_size  # images of one micro-batch, all ranks
        self.step_images = self.global_batch * self.train.gradient_accumulation  # images of one optimizer step
        self.ema: LoRAEma | None = None
        self.start_step = 0
        self.resumed_from: str | None = None
        self.timings: dict[str, float] = {}  # seconds of the phases before the loop (train_summary.json)
        fabric.seed_everything(self.train.seed, verbose=False)

    # engine-specific
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def unet(self) -> torch.nn.Module:
        raise NotImplementedError

    def step(self, step: int) -> torch.Tensor:
        """One optimizer step: [loss, grad norm (NaN when not computed)] on the device."""
        raise NotImplementedError

    def extra_summary(self) -> dict[str, Any]:
        return {}

    def validate(self, completed: int, progress: ProgressLog) -> None:
        """Render the validation prompts with the current LoRA (fast engine)."""

    def validation_files(self) -> list[Path]:
        return []

    # shared
    def load_models(self, dtype: torch.dtype) -> Any:
        """The model directory on the CPU, the text encoder straight onto the training device (it encodes there)."""
        started = time.perf_counter()
        manager = load_model_manager(ModelDir(self.job.model_dir), "cpu", dtype, text_encoder_device=str(self.fabric.device))
        self.timings["load_models"] = round(time.perf_counter() - started, 2)
        return manager

    def embed_story(self, prompter: Any) -> None:
        """Rank 0: the story's texts through the loaded text encoder, for generate (a no-op without the output)."""
        out, config = self.job.prompt_embeddings, self.job.config
        if out is None or self.fabric.global_rank != 0:
            return
        started = time.perf_counter()
        model_dir = ModelDir(self.job.model_dir)
        ours, theirs = next(prompter.text_encoder.parameters()).dtype, generation_weights_dtype(self.fabric.device.type)
        if ours != theirs:
            reason = f"the text encoder ran in {ours} (train.precision {self.train.precision}), generate runs it in {theirs}"
            write_prompt_embeddings(out, {}, model_dir.text_encoder_fingerprint(), skipped=reason)
            log.info("story prompts not embedded for generate: %s", reason)
            return
        embeddings = encode_texts(prompter, story_texts(config.generate), self.fabric.device)
        write_prompt_embeddings(out, embeddings, model_dir.text_encoder_fingerprint())
        self.timings["prompt_embeddings"] = round(time.perf_counter() - started, 2)
        log.info("%d story texts embedded for generate in %.1f s", len(embeddings), self.timings["prompt_embeddings"])

    def fingerprint(self) -> dict[str, Any]:
        return ckpt.fingerprint(self.train, self.job.dataset_sha256, self.job.base_model_sha256)

    def lora_parameters(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.unet().named_parameters() if p.requires_grad and is_adapter_param(n)}

    def resume(self) -> list[list[float]]:
        state = ckpt.load_latest(self.job.checkpoints, self.fingerprint())
        if state is None:
            return []
        params = self.lora_parameters()
        if set(params) != set(state["lora"]):
            raise KoloraError(
                f"checkpoint in {self.job.checkpoints} holds other LoRA layers than this model: delete it to start over"
            )
        with torch.no_grad():
            for name, value in state["lora"].items():
                params[name].copy_(value)
        own_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, lr in zip(self.optimizer.param_groups, own_lrs, strict=True):
            group["lr"] = lr  # keep this run's lr holder (a tensor under graphs); the schedule sets its value per step
        if self.ema is not None:
            if "ema" not in state:
                raise KoloraError(f"checkpoint in {self.job.checkpoints} has no EMA of the LoRA: delete it to start over")
            self.ema.load(state["ema"])
        self.fabric.strategy.precision.load_state_dict(state["precision"])
        ckpt.restore_rng_states(state["rng"])
        self.start_step = int(state["step"])
        self.resumed_from = f"step {self.start_step}"
        return state["history"]

    def save_checkpoint(self, completed: int, progress: ProgressLog) -> None:
        progress.flush()  # never checkpoint past a non-finite loss
        if self.fabric.global_rank == 0:
            state = {
                "lora": {n: p.detach().cpu().clone() for n, p in self.lora_parameters().items()},
                "optimizer": self.optimizer.state_dict(),
                "precision": self.fabric.strategy.precision.state_dict(),
                "history": progress.history,
                "fingerprint": self.fingerprint(),
            }
            if self.ema is not None:
                state["ema"] = self.ema.state()
            path = ckpt.save_checkpoint(self.job.checkpoints, completed, state)
            log.info("checkpoint %s written", path)
        self.fabric.barrier()

    def run(self) -> None:
        train, job = self.train, self.job
        history = self.resume()
        writer = self.fabric.global_rank == 0
        board = TensorBoard(job.out) if train.tensorboard and writer else None
        progress = ProgressLog(job.out / LOG_FILE, train.steps, self.step_images, train.log_every, history, writer, board)
        crash_at = int(os.environ.get(CRASH_ENV, "0") or 0)
        if torch.cuda.is_available() and self.fabric.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.fabric.device)
        varies = schedule_varies(train)
        if train.validation_every and self.start_step == 0:
            self.validate(0, progress)  # the untrained column of the progression strip
        for step in range(self.start_step, train.steps):
            lr = learning_rate(train, step)
            if varies:
                set_learning_rate(self.optimizer, lr)
            result = self.step(step)
            if self.fabric.world_size > 1:
                result = self.fabric.all_reduce(result, reduce_op="mean")  # the global batch's loss, no host sync
            completed = step + 1
            progress.record(completed, result, lr)
            if train.validation_every and (completed % train.validation_every == 0 or completed == train.steps):
                self.validate(completed, progress)
            stop = sigterm.requested() and completed < train.steps
            if stop or (train.checkpoint_every and completed % train.checkpoint_every == 0 and completed < train.steps):
                self.save_checkpoint(completed, progress)
            if stop:
                raise Terminated(f"SIGTERM: stopped after step {completed}, checkpoint in {job.checkpoints}; rerun to resume")
            if completed == crash_at:
                progress.flush()
                raise SimulatedCrash(f"{CRASH_ENV}={crash_at}: simulated crash after step {completed}")
        progress.flush()
        if train.keep_checkpoints and train.checkpoint_every and self.start_step < train.steps:
            self.save_checkpoint(train.steps, progress)  # a later run with more steps continues from here
        if self.fabric.global_rank == 0:
            self.write_outputs(progress)
        if board is not None:
            board.close()
        self.fabric.barrier()

    def write_outputs(self, progress: ProgressLog) -> None:
        train, job = self.train, self.job
        peak = (
            round(torch.cuda.max_memory_allocated(self.fabric.device) / 2**30, 2) if self.fabric.device.type == "cuda" else None
        )
        done = train.steps - self.start_step
        summary = {
            "steps": train.steps,
            "images": len(job.rows),
            "cut_captions": job.cut_captions,
            "seconds": round(progress.seconds, 2),
            "images_per_second": round(done * self.global_batch / progress.seconds, 3) if progress.seconds and done else None,
            "first_loss": progress.losses[0] if progress.losses else None,
            "final_loss": progress.losses[-1] if progress.losses else None,
            "device": self.fabric.device.type,
            "devices": self.fabric.world_size,
            "engine": train.engine,
            "global_batch": self.step_images,
            "precision": train.precision,
            "resumed_from": self.resumed_from,
            "peak_gpu_gib": peak,
            "training_identity": training_identity(job.config),  # what check-changes compares with the champion's
            "trainset_sha256": job.dataset_sha256,
            "training_inputs": training_inputs(job.config),
            "timings": self.timings,
        } | self.extra_summary()
        lora_path = job.out / LORA_FILE
        extra = {"variant": train.lora_variant} if train.lora_variant != "lora" else {}
        if self.ema is not None:
            extra["ema_decay"] = repr(train.ema_decay)  # the file holds the EMA, not the last step's weights
        save_lora(
            lora_path,
            self.ema.state() if self.ema is not None else lora_state_from_model(self.unet()),
            train.lora_rank,
            train.lora_alpha,
            extra
            | {
                "targets": train.lora_target_modules,
                "base_model_sha256": job.base_model_sha256,
                "dataset_sha256": job.dataset_sha256,
                "steps": train.steps,
                # what trained it, not the whole run config: the file must not change with evaluate/publish settings
                "training_identity": summary["training_identity"],
                "training_inputs": summary["training_inputs"],
            },
        )
        exports = write_exports(
            job.out,
            load_lora(lora_path),
            unet_layout(self.unet()),
            {"base_model_sha256": job.base_model_sha256, "dataset_sha256": job.dataset_sha256},
            train.export_formats,
            output_name=job.config.name,
        )
        summary["exports"] = [p.name for p in exports]
        summary["validation_files"] = [str(p.relative_to(job.out)) for p in self.validation_files()] or None
        progress.write_csv()
        (job.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        if not train.keep_checkpoints:
            ckpt.remove_checkpoints(job.checkpoints)
        log.info("%s written (final loss %s, %s images/s)", LORA_FILE, summary["final_loss"], summary["images_per_second"])


class FastEngine(_Engine):
    """Cached encodings, batched steps, DDP-ready."""

    def __init__(
        self, fabric: Fabric, job: TrainJob, unet: torch.nn.Module | None = None, cache: TrainCache | None = None
    ) -> None:
        """Loads the model directory and builds the cache, unless given a LoRA-injected `unet` and a `cache` (bench)."""
        super().__init__(fabric, job)
        train = self.train
        self.validation: Validation | None = None
        if unet is None or cache is None:
            pipe = SDXLImagePipeline.from_model_manager(self.load_models(fast_weights_dtype(train.precision)))
            # the manager is gone with the call: the pipeline holds the models, so freeing them frees them
            self.embed_story(pipe.prompter)  # before build_cache frees the text encoder
            prompts = validation_requests(job.config) if train.validation_every else []
            texts = [t for r in prompts for t in (r.prompt, r.negative_prompt)]
            started = time.perf_counter()
            cache = build_cache(
                pipe, job.trainset, job.rows, train, fabric.device, fabric.autocast, keep_decoder=bool(prompts),
                extra_texts=texts,
            )  # fmt: skip
            self.timings["cache"] = round(time.perf_counter() - started, 2)
            unet = pipe.unet
            if prompts:
                self.validation = Validation(
                    prompts, cache, unet, pipe.vae_decoder, fabric.device, vae_dtype(job.config.generate, fabric.device.type),
                    job.checkpoints / VALIDATION_DIR, autocast_for(train.precision, fabric.device),
                )  # fmt: skip
            del pipe
            inject_lora(unet, train)
        self.cache: TrainCache = cache
        freeze_except_lora(unet)
        self._unet = unet
        self.scheduler = kolors_train_scheduler()
        cuda = fabric.device.type == "cuda"
        images = train.steps * self.step_images
        self.compiled: CompileScope = auto(train.compile, cuda and images >= COMPILE_PAYS_IMAGES)
        if self.compiled:
            use_compile_cache(train.compile_cache_dir)
            compile_unet(unet, self.compiled, backend=COMPILE_BACKEND)
        module = FastLoRAModule(unet, gradient_checkpointing=False)
        single = fabric.world_size == 1
        # several devices: DDP-wrapped, with Fabric's autocast and backward
        module = module.to(fabric.device) if single else fabric.setup_module(module)
        self.memory = self._plan_memory(unet, bool(self.compiled))
        (module.module if not single else module).gradient_checkpointing = self.memory.gradient_checkpointing
        self.module = module
        self.cuda_graphs = self._graphs_wanted(single and auto(train.cuda_graphs, cuda))
        params = [p for p in unet.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(train, params, fabric.device, self.cuda_graphs)
        if train.ema_decay is not None:
            self.ema = LoRAEma(self.lora_parameters(), train.ema_decay)
        self.want_grad_norm = train.tensorboard or train.max_grad_norm is not None
        if single:
            self._step = TrainStep(
                module,
                self.optimizer,
                getattr(fabric.strategy.precision, "scaler", None),
                autocast_for(train.precision, fabric.device),
                graphs=self.cuda_graphs,
                max_grad_norm=train.max_grad_norm,
                want_grad_norm=self.want_grad_norm,
                after_step=self.ema.update if self.ema is not None else None,
            )
        else:
            self._fabric_optimizer = fabric.setup_optimizers(self.optimizer)
        log.info(
            "fast engine: %s, compile %s, CUDA graphs %s",
            self.memory.describe(),
            {True: "on (layer by layer)", "whole": "on (the whole UNet as one graph)"}.get(self.compiled, "off"),
            ("on, one graph per bucket" if train.buckets else "on") if self.cuda_graphs else "off",
        )

    def _graphs_wanted(self, wanted: bool) -> bool:
        """CUDA graphs unless an option cannot replay, said in one log line."""
        blocker = GRAPH_BLOCKERS.get(self.train.optimizer)
        if wanted and blocker:
            log.info("CUDA graphs off: %s", blocker)
            return False
        return wanted

    def _plan_memory(self, unet: torch.nn.Module, compiled: bool) -> MemoryPlan:
        """Checkpointing from free GPU memory (auto), or an error naming what to lower, before the first step."""
        requested = self.train.gradient_checkpointing
        if self.fabric.device.type != "cuda":
            return MemoryPlan(requested is True, 0.0, 0.0)
        free, _ = torch.cuda.mem_get_info(self.fabric.device)
        return plan_memory(self.train, sum(p.numel() for p in unet.parameters()), free, compiled)

    def unet(self) -> torch.nn.Module:
        return self._unet

    def batch(self, step: int) -> list[tuple[torch.Tensor, ...]]:
        """This rank's micro-batches of the step: (noisy, timesteps, embeddings, pooled, noise, add_time_id[, weights]).

        The whole step (every micro-batch of every rank) is drawn at once from (seed, step), one bucket for all of
        it, and sliced: micro-batch m of rank r takes images [(m x ranks + r) x batch_size, ...), so N micro-batches
        or N ranks see exactly the images, noise and timesteps of one batch of N x batch_size.
        """
        train, device, cache = self.train, self.fabric.device, self.cache
        total = self.step_images
        if train.buckets:
            group, draw = draw_bucketed(train.seed, step, cache.counts(), total, train.random_flip, cache.crops)
        else:
            group, draw = 0, draw_images(train.seed, step, cache.n_images, total, train.random_flip, cache.crops)
        dropped = caption_dropped(train.seed, step, total, train.caption_dropout) if train.caption_dropout else None
        latents_of = cache.groups[group].latents
        noise_gen, timestep_gen = step_generators(train.seed, step, device)
        noise = torch.randn((total, *latents_of.shape[2:]), generator=noise_gen, device=device, dtype=latents_of.dtype)
        per_sample = train.timestep_sampling == "per_sample"
        ids = torch.randint(0, NUM_TRAIN_TIMESTEPS, (total if per_sample else 1,), generator=timestep_gen)
        if train.noise_offset:
            noise = noise + train.noise_offset * offset_noise(train.seed, step, noise.shape, device, noise.dtype)
        micro = []
        for m in range(train.gradient_accumulation):
            start = (m * self.fabric.world_size + self.fabric.global_rank) * train.batch_size
            part = slice(start, start + train.batch_size)
            latents, embeddings, pooled, time_ids = cache.batch(
                group, draw.images[part], draw.flips[part], draw.crops[part], None if dropped is None else dropped[part], device
            )
            part_ids = ids[part] if per_sample else ids
            noisy, timesteps = add_noise(self.scheduler, latents, noise[part], part_ids)
            inputs = [noisy, timesteps, embeddings, pooled, noise[part], time_ids]
            if train.min_snr_gamma is not None:
                weights = snr_weights(self.scheduler, part_ids, train.min_snr_gamma, train.batch_size)
                inputs.append(to_device(weights, device))
            micro.append(tuple(inputs))
        return micro

    def step(self, step: int) -> torch.Tensor:
        if self.fabric.world_size == 1:
            return self._step(self.batch(step))
        micro = self.batch(step)
        n = len(micro)
        total: torch.Tensor | None = None
        for i, inputs in enumerate(micro):
            with self.fabric.no_backward_sync(self.module, enabled=i < n - 1), sdpa_context(self.fabric.device):
                loss = self.module(*inputs)
                self.fabric.backward(loss / n if n > 1 else loss)
            total = loss.detach() if total is None else total + loss.detach()
        assert total is not None
        norm = torch.full_like(total, float("nan"))
        if self.want_grad_norm:  # Fabric unscales first; an infinite max_norm clips nothing (a factor of 1)
            clip = self.train.max_grad_norm if self.train.max_grad_norm is not None else float("inf")
            norm = self.fabric.clip_gradients(self.module, self._fabric_optimizer, max_norm=clip)
        self._fabric_optimizer.step()
        if self.ema is not None:
            self.ema.update()
        self.optimizer.zero_grad(set_to_none=True)
        return torch.stack([total / n if n > 1 else total, norm.to(total.dtype)])

    def validate(self, completed: int, progress: ProgressLog) -> None:
        if self.validation is None or self.fabric.global_rank != 0:
            return
        images, seconds = self.validation.render(completed)
        progress.images(completed, images)
        log.info("validation at step %d: %d image(s), %.2f s each", completed, len(images), seconds)

    def validation_files(self) -> list[Path]:
        return self.validation.write_outputs(self.job.out) if self.validation is not None else []

    def extra_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "cache": self.cache.stats,
            "compile": self.compiled,
            "cuda_graphs": self.cuda_graphs,
            "gradient_checkpointing": self.memory.gradient_checkpointing,
        }
        if self.train.gradient_accumulation > 1:
            summary["gradient_accumulation"] = self.train.gradient_accumulation
        if self.train.buckets:
            summary["buckets"] = self.cache.stats["buckets"]
        if self.validation is not None:
            summary["validation"] = self.validation.summary()
        return summary


class _StepImages(torch.utils.data.Dataset):
    """The seed engine's data: step -> {"text", "image"} of that step's batch, decoded in workers."""

    def __init__(self, job: TrainJob) -> None:
        self.job = job

    def __len__(self) -> int:
        return self.job.train.steps

    def __getitem__(self, step: int) -> dict[str, Any]:
        train, rows = self.job.train, self.job.rows
        draw = draw_images(train.seed, step, len(rows), train.batch_size, train.random_flip, 1)
        crop_gen = torch.Generator().manual_seed(step_seed(train.seed, step, "crop"))
        images = []
        for index, flip in zip(draw.images.tolist(), draw.flips.tolist(), strict=True):
            path = self.job.trainset / TRAIN_DIR / rows[index][0]
            image = decoded(path, lambda path=path: resized(path, train.resolution))  # strictly, each step it is drawn
            box = None if train.center_crop else random_crop_box(image, train.resolution, crop_gen)
            images.append(training_tensor(image, train.resolution, box, flip))
        return {"text": [rows[i][1] for i in draw.images.tolist()], "image": torch.stack(images)}


class SeedEngine(_Engine):
    """diffsynth's training_step as the seed runs it (ChatGLM and VAE every step), in kolora's loop."""

    def __init__(self, fabric: Fabric, job: TrainJob) -> None:
        super().__init__(fabric, job)
        dtype = seed_weights_dtype(self.train.precision)
        self.module = SeedLoRAModule(self.load_models(dtype), self.train, dtype)
        self.module.to(fabric.device)
        self.embed_story(self.module.pipe.prompter)
        self.optimizer = fabric.setup_optimizers(self.module.configure_optimizers())
        self._batches: Any = None

    def unet(self) -> torch.nn.Module:
        return self.module.pipe.denoising_model()

    def step(self, step: int) -> torch.Tensor:
        if self._batches is None:
            sampler = range(self.start_step, self.train.steps)
            loader = torch.utils.data.DataLoader(
                _StepImages(self.job), batch_size=None, sampler=sampler, num_workers=self.train.num_workers
            )
            self._batches = iter(loader)
        try:
            batch = next(self._batches)
        except Undecodable as exc:
            raise unreadable(exc) from None
        self.module.current_step = step + 1
        torch.manual_seed(step_seed(self.train.seed, step, "noise"))  # the seed draws from the global RNGs
        with self.fabric.autocast():
            loss = self.module.training_step(batch, step)
        self.fabric.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return torch.stack([loss.detach(), torch.full_like(loss.detach(), float("nan"))])
