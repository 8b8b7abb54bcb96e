"""The pretraining run: start or resume, the training step, saving, the final backbone file.

Files beside the output `OUT.pth` (see `record.output_paths`): the resumable training state
(`OUT.pretrain_state.pth`: student, teacher, heads, centres, optimiser, random states, data pool,
loss history), rewritten atomically every `save_every` steps and at the end; the JSON record; the
loss plot. A rerun with the same options continues from the saved state (a larger `--steps`
continues a finished run); other options are refused unless `--restart`.

DDP: under `torchrun`, every rank trains on its own random slices and gradients are averaged;
rank 0 writes every file. A resumed multi-rank run restores rank 0's random state and re-seeds the
others from (seed, rank, step).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from ..backbones import BackboneSpec, FrozenDinoBackbone, load_backbone_weights, locate_weights
from ..backbones.weights import torch_load
from ..backbones.weights_check import check_weights_source
from ..errors import ExistingOutputError, OptionError
from ..files import write_atomically
from .augment import multi_crop, random_masks
from .data import Case, SlicePool
from .losses import Centre, dino_loss, gram_loss, ibot_loss, koleo_loss, sinkhorn_knopp, teacher_probabilities
from .model import PretrainNetwork, ema_update_, make_teacher
from .recipe import Recipe, apply_schedule, parameter_groups, schedule
from .record import final_losses, output_paths, plot_losses, starting_weights_record, write_backbone, write_record

STATE_VERSION = 1


@dataclass
class PretrainJob:
    spec: BackboneSpec
    init: Optional[str]                 # a weights file/folder, 'random', or None: $nnUNet_dino_weights
    cases: Sequence[Case]
    groups: List[dict]                  # data.select_cases' descriptions (with the case ids)
    recipe: Recipe
    out: str
    device: str = "auto"
    gradient_checkpointing: bool = False
    restart: bool = False
    overwrite: bool = False
    progress: bool = True

    def identity(self) -> dict:
        """What must not change between a run and its resumption."""
        recipe = {k: v for k, v in self.recipe.record().items() if k not in ("steps", "save_every")}
        return {"backbone": self.spec.name, "init": self.init, "data": self.groups, "recipe": recipe}


def _distributed(device: str):
    """(rank, world size, device); joins the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda: no CUDA device is visible to PyTorch here; use --device cpu")
    cuda = torch.cuda.is_available() and device != "cpu"
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return (torch.distributed.get_rank() if world > 1 else 0), world, torch.device("cuda", local)
    return (torch.distributed.get_rank() if world > 1 else 0), world, torch.device("cpu")


def _jsonable(value):
    """Tuples as lists, as a record read back from the state (or JSON) has them."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class PretrainRun:
    def __init__(self, job: PretrainJob):
        self.job, self.recipe = job, job.recipe.for_patch(job.spec.patch_size)
        self.recipe.check()
        self.rank, self.world, self.device = _distributed(job.device)
        self.paths = output_paths(job.out)
        state = self._previous_state()
        backbone = FrozenDinoBackbone(job.spec)
        source = locate_weights(job.spec, job.init)
        check_weights_source(source, job.spec)
        info = load_backbone_weights(backbone, source)
        self.start = state["start"] if state else starting_weights_record(job.init, source, info)
        vit = backbone.vit.requires_grad_(True)
        with torch.random.fork_rng(devices=[]):  # the heads' initialisation depends on the seed alone
            torch.manual_seed(self.recipe.seed)
            self.student = PretrainNetwork(job.spec, vit, backbone.pos_embed_resize, self.recipe,
                                           job.gradient_checkpointing).to(self.device)
        self.teacher = make_teacher(self.student)
        self.gram_teacher = make_teacher(self.student) if self.recipe.gram_weight > 0 else None
        self.dino_centre = Centre(self.recipe.prototypes, self.recipe.centre_momentum).to(self.device)
        self.ibot_centre = Centre(self.recipe.prototypes, self.recipe.centre_momentum).to(self.device)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.student, self.recipe), betas=(0.9, 0.999))
        seed = self.recipe.seed + 1000 * self.rank
        self.generator = torch.Generator().manual_seed(seed)
        self.pool = SlicePool(job.cases, self.recipe.case_pool, seed)
        self.step, self.history, self.elapsed = 0, [], 0.0
        if state:
            self._restore(state)
        else:
            self.pool.fill()
        self.trained = self.student
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.trained = torch.nn.parallel.DistributedDataParallel(self.student, device_ids=ids)

    # --- state ------------------------------------------------------------------------------------
    def _previous_state(self) -> Optional[dict]:
        path = self.paths["state"]
        if os.path.isfile(path) and self.job.restart and self.rank == 0:
            os.remove(path)
        if not os.path.isfile(path):
            if os.path.exists(self.job.out) and not self.job.overwrite:
                raise ExistingOutputError(f"{self.job.out} exists (and no training state to resume beside it); "
                                          f"choose another -o or pass --overwrite")
            return None
        state = torch_load(path)
        if state.get("version") != STATE_VERSION or state["identity"] != _jsonable(self.job.identity()):
            changed = sorted(k for k, v in _jsonable(self.job.identity()).items() if state["identity"].get(k) != v)
            raise OptionError(f"{path} holds a pretraining run with other settings ({', '.join(changed) or 'version'} "
                              f"differ); rerun with the same options to resume it, or pass --restart to start over")
        return state

    def _restore(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        if self.gram_teacher is not None:
            self.gram_teacher.load_state_dict(state["gram_teacher"])
        self.dino_centre.load_state_dict(state["dino_centre"])
        self.ibot_centre.load_state_dict(state["ibot_centre"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history, self.elapsed = state["step"], list(state["history"]), state["elapsed"]
        if self.rank == 0:
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            self.pool.load_state_dict(state["pool"])
        else:
            self.generator.manual_seed(self.recipe.seed + 1000 * self.rank + self.step)
            self.pool.fill()

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "identity": _jsonable(self.job.identity()), "start": self.start,
                "step": self.step, "history": self.history, "elapsed": self.elapsed,
                "student": self.student.state_dict(), "teacher": self.teacher.state_dict(),
                "gram_teacher": self.gram_teacher.state_dict() if self.gram_teacher is not None else None,
                "dino_centre": self.dino_centre.state_dict(), "ibot_centre": self.ibot_centre.state_dict(),
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(), "pool": self.pool.state_dict(),
                "recipe": self.recipe.record()}

    def save(self) -> None:
        if self.rank == 0:
            state = self.state_dict()
            write_atomically(self.paths["state"], lambda path: torch.save(state, path))
            plot_losses(self.history, self.paths["plot"])

    # --- training ---------------------------------------------------------------------------------
    def autocast(self):
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def teacher_probabilities(self, scores: torch.Tensor, centre: Centre, temperature: float) -> torch.Tensor:
        if self.recipe.centring == "sinkhorn":
            return sinkhorn_knopp(scores, temperature)
        return teacher_probabilities(scores, centre.value, temperature)

    def losses(self, student: Dict[str, torch.Tensor], teacher: Dict[str, torch.Tensor], masks: torch.Tensor,
               temperature: float, gram_target: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        r = self.recipe
        crops = list(student["dino"].chunk(2))
        if "dino_local" in student:
            crops += list(student["dino_local"].chunk(r.local_crops))
        teacher_dino = self.teacher_probabilities(teacher["dino"], self.dino_centre, temperature)
        teacher_ibot = self.teacher_probabilities(teacher["ibot"], self.ibot_centre, temperature)
        out = {"dino": dino_loss(crops, list(teacher_dino.chunk(2)), r.student_temp),
               "ibot": ibot_loss(student["ibot"], teacher_ibot, masks, r.student_temp),
               "koleo": sum(koleo_loss(c) for c in student["cls"].chunk(2)),
               "gram": gram_loss(student["patches"], gram_target) if gram_target is not None
               else torch.zeros((), device=masks.device)}
        self.dino_centre.update(teacher["dino"])
        self.ibot_centre.update(teacher["ibot"])
        out["loss"] = (r.dino_weight * out["dino"] + r.ibot_weight * out["ibot"] + r.koleo_weight * out["koleo"]
                       + r.gram_weight * out["gram"])
        return out

    def train_step(self) -> Dict[str, float]:
        r = self.recipe
        values = schedule(r, self.step)
        apply_schedule(self.optimizer, values)
        if self.gram_teacher is not None and self.step % r.gram_refresh == 0 and self.step > 0:
            self.gram_teacher.load_state_dict(self.teacher.state_dict())
        globals_, locals_ = multi_crop(self.pool.sample(r.batch_size), r, self.generator, self.device)
        grid = r.global_size // self.job.spec.patch_size
        masks = random_masks(globals_.shape[0], (grid, grid), r.mask_probability, r.mask_ratio,
                             self.generator).to(self.device)
        with self.autocast():
            with torch.no_grad():
                teacher = self.teacher(globals_, masks=masks, mask_input=False)
                gram = self.gram_teacher.encode(globals_)[1] if self.gram_teacher is not None else None
            student = self.trained(globals_, locals_, masks)
        losses = self.losses(student, teacher, masks, values.teacher_temp, gram)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), r.clip_grad)
        self.optimizer.step()
        ema_update_(self.teacher, self.student, values.momentum)
        self.pool.refresh()
        self.step += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def run(self) -> dict:
        from tqdm import tqdm
        r = self.recipe
        bar = tqdm(total=r.steps, initial=min(self.step, r.steps), desc="pretrain", unit="step", dynamic_ncols=True,
                   disable=self.rank != 0 or not self.job.progress)
        with bar:
            while self.step < r.steps:
                began = time.perf_counter()
                values = self.train_step()
                seconds = time.perf_counter() - began
                self.elapsed += seconds
                self.history.append({"step": self.step, **values, "seconds": seconds})
                bar.set_postfix(loss=f"{values['loss']:.3f}", img_s=f"{r.batch_size * self.world / seconds:.1f}")
                bar.update(1)
                if self.step % r.save_every == 0 or self.step == r.steps:
                    self.save()
        return self.finish()

    def finish(self) -> dict:
        """Write the backbone (Meta's layout), check it loads, write the record (rank 0)."""
        if self.rank != 0:
            return {}
        loaded = write_backbone(self.teacher, self.job.spec, self.job.out, self.start)
        return write_record(self.paths["record"], job=self.job, recipe=self.recipe, start=self.start,
                            loaded=loaded, steps=self.step, world=self.world, elapsed=self.elapsed,
                            losses=final_losses(self.history))


def pretrain(job: PretrainJob) -> dict:
    """Run (or resume) a pretraining job; returns the JSON record (rank 0)."""
    return PretrainRun(job).run()

