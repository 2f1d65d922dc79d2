"""The DAMCSeg training loop: stages, DSJL, validation, logs, checkpoints, resume and DDP.

One :class:`Trainer` runs a :class:`~damcseg_core.train.config.TrainConfig` end to end:

* **Data order** is a pure function of ``(seed, step)``: :class:`StepBatchSampler` maps the
  ``j``-th sample of rank ``r`` at step ``t`` to position ``(t * world + r) * batch + j`` of an
  endless sequence of seeded permutations of the dataset, and each sample's augmentation and
  each batch's modality subset are drawn from generators seeded by the same indices. A resumed
  run therefore sees exactly the batches the uninterrupted run would have seen, and DDP ranks
  see disjoint shards without a ``DistributedSampler``.
* **Resume**: ``resume: auto`` (the default) continues from ``out_dir/last.pt`` whenever it
  exists, so re-running the same command after a crash or a SIGKILL picks up where the last
  checkpoint left off; ``resume: <path.pt>`` (``--resume PATH``) continues from a given file;
  ``resume: never`` starts fresh. Model, optimizer, schedule step, RNG states and best metric
  are restored.
* **Logging** (rank 0 only): tqdm bar, ``metrics.csv``, TensorBoard under ``out_dir/tb``, the
  resolved config in ``out_dir/config.yaml``, ``summary.json`` at the end.
* **Checkpoints** (rank 0, between barriers): ``last.pt`` every ``ckpt_every`` steps and at the
  end, ``best.pt`` whenever validation mIoU improves.
* **AMP**: bfloat16 autocast on CUDA only; losses are computed in float32.
"""

from __future__ import annotations

import csv
import json
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from damcseg_core import MODALITIES
from damcseg_core.checkpoint import load_checkpoint, restore_rng_state, save_checkpoint
from damcseg_core.config import ConfigError, dump_yaml
from damcseg_core.data.targets import valid_objects
from damcseg_core.eval.detection_metrics import DetectionMAP
from damcseg_core.eval.segmentation_metrics import SegmentationIoU
from damcseg_core.losses.dsjl import DSJLoss
from damcseg_core.models.refinement import upgrade_state_dict
from damcseg_core.train.augment import Augmenter, generator_for, seed_for
from damcseg_core.train.config import DETECTION_ONLY_PREFIXES, TrainConfig
from damcseg_core.train.distributed import DistInfo, all_gather_floats, barrier, cleanup, init_distributed
from damcseg_core.train.hardware import machine_record
from damcseg_core.train.modality_dropout import sample_keep_mask
from damcseg_core.train.schedule import StageSchedule, build_optimizer

__all__ = ["StepBatchSampler", "Trainer", "eval_frozen_modules", "param_checksum"]

_DROPOUT_STREAM = 7_777  # separates the modality-dropout generator from the augmentation ones


class StepBatchSampler:
    """Yields, for steps ``start..total-1``, this rank's batch of ``(index, step, rank, j)`` keys.

    Args:
        num_samples: dataset length.
        batch_size: samples per rank and step.
        seed: base seed of the permutations.
        start_step: first step to yield (resume).
        total_steps: end of the schedule.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, start_step: int, total_steps: int, rank: int = 0,
        world_size: int = 1,
    ) -> None:  # fmt: skip
        if num_samples < 1:
            raise ConfigError("the training dataset is empty; check data.train")
        self.n, self.batch, self.seed = num_samples, batch_size, seed
        self.start, self.total, self.rank, self.world = start_step, total_steps, rank, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def index(self, step: int, rank: int, j: int) -> int:
        """Dataset index of sample ``j`` of ``rank`` at ``step``."""
        flat = (step * self.world + rank) * self.batch + j
        epoch, pos = divmod(flat, self.n)
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[epoch] = torch.randperm(self.n, generator=generator_for(self.seed, epoch))
        return int(self._perms[epoch][pos])

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        for step in range(self.start, self.total):
            yield [(self.index(step, self.rank, j), step, self.rank, j) for j in range(self.batch)]

    def __len__(self) -> int:
        return max(0, self.total - self.start)


class _Augmented(Dataset):
    """Dataset view whose items are keyed by ``(index, step, rank, j)`` and augmented with a
    generator seeded by those numbers (or just fitted to size when ``augmenter.train`` is False)."""

    def __init__(self, base: Any, augmenter: Augmenter, seed: int) -> None:
        self.base, self.augmenter, self.seed = base, augmenter, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        if isinstance(key, tuple):
            idx, step, rank, j = key
            g = generator_for(self.seed, step, rank, j)
        else:
            idx, g = key, generator_for(self.seed, -1, key)
        return self.augmenter(self.base[idx], g)


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    from damcseg_core.data.collate import collate

    return collate(samples)


class _LossStep(torch.nn.Module):
    """Model + loss as one module, so DDP sees only the losses as outputs.

    DDP with ``find_unused_parameters`` waits for a gradient of every parameter reachable from
    the forward outputs; the model's train output also carries tensors no loss uses (e.g.
    per-target DSAF weights), which would make it wait forever. Every returned loss is part of
    ``total``, so each reachable parameter receives a gradient.
    """

    def __init__(self, model: torch.nn.Module, loss: DSJLoss, amp: bool, device_type: str = "cuda") -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.amp = amp
        self.device_type = device_type

    def forward(
        self, inputs: dict[str, torch.Tensor], batch: dict[str, Any], **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(inputs, **kwargs)
        with torch.autocast(self.device_type, enabled=False):
            return self.loss(out, batch)  # float32 losses (DSJLoss casts the logits)


def build_train_set(spec: str) -> Dataset:
    """The dataset of ``spec``; specs joined by ``;`` give their concatenation (in that order)."""
    from damcseg_core.data.registry import build_dataset

    parts = [p.strip() for p in spec.split(";") if p.strip()]
    if not parts:
        raise ConfigError(f"data.train is empty ({spec!r}); give a dataset spec, e.g. synthetic:frames=200")
    if len(parts) == 1:
        return build_dataset(parts[0])
    return ConcatDataset([build_dataset(p) for p in parts])


def check_aspp_rates(model_cfg: Any, crop: tuple[int, int]) -> None:
    """Warn when an ASPP rate only sees padding at the training crop size (issue #17).

    On an ``n``-row stride-32 map, a 3x3 tap at rate ``r`` lands inside the map in a direction
    for every output row only if ``r <= n // 2``; larger rates train on zeros and switch on,
    untrained, at a larger inference size.
    """
    rates = tuple(model_cfg.segmentation.aspp_rates)
    limit = max(1, min(crop[0] // 32, crop[1] // 32) // 2)
    too_big = [r for r in rates if r > limit]
    if too_big:
        warnings.warn(
            f"segmentation.aspp_rates {too_big} exceed {limit}: at the {crop[0]}x{crop[1]} training crop "
            f"the stride-32 map is {crop[0] // 32}x{crop[1] // 32}, so these taps see only padding in "
            f"training; use rates <= {limit} or crops of at least {64 * max(too_big)} px per side",
            stacklevel=2,
        )


def eval_frozen_modules(model: torch.nn.Module) -> list[str]:
    """Put every module that has parameters, none of them trainable, in eval mode.

    Outermost first: a frozen module is switched as a whole (its parameter-free children, such as
    activations, follow it); a module with some trainable parameter stays in train mode and its
    children are visited. Returns the names of the modules switched (for logs and tests).
    """
    switched: list[str] = []

    def visit(name: str, module: torch.nn.Module) -> None:
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()
            switched.append(name)
            return
        for child_name, child in module.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", model)
    return switched


def param_checksum(model: torch.nn.Module) -> float:
    """Sum of all parameters in float64: a cheap fingerprint to compare DDP ranks."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum().item() for p in model.parameters()))


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, list) and v and torch.is_tensor(v[0]):
            out[k] = [x.to(device, non_blocking=True) for x in v]
        else:
            out[k] = v
    return out


class Trainer:
    """Runs one training configuration.

    Args:
        cfg: the (validated) training config.
        train_set: dataset to use instead of building ``cfg.data.train`` (tests, notebooks).
        val_set: dataset to use instead of building ``cfg.data.val``.
        collate_fn: batch collation (default ``damcseg_core.data.collate.collate``).
    """

    def __init__(
        self, cfg: TrainConfig, train_set: Any = None, val_set: Any = None, collate_fn: Any = None
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.collate_fn = collate_fn or _collate
        self.dist: DistInfo = init_distributed(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(seed_for(cfg.seed, 0))  # same initial weights on every rank
        np.random.seed(seed_for(cfg.seed, 1) % 2**32)  # noqa: NPY002 (seeds third-party global use)

        from damcseg_core.data.registry import build_dataset
        from damcseg_core.models import build_model

        self.model = build_model(cfg.model, **cfg.model_overrides).to(self.dist.device)
        size = tuple(cfg.augment.size) if cfg.augment.size else tuple(self.model.config.input_size)
        self.size = size
        check_aspp_rates(self.model.config, size)
        base_train = train_set if train_set is not None else build_train_set(cfg.data.train)
        self.train_set = _Augmented(base_train, Augmenter(cfg.augment, size, train=True), cfg.seed)
        base_val = val_set if val_set is not None else (build_dataset(cfg.data.val) if cfg.data.val else None)
        self.val_set = (
            # Validation at the model's inference size, not the training crop: the choice of best.pt
            # must see what users run (e.g. ASPP rates and ROI sizes at full resolution).
            _Augmented(
                base_val, Augmenter(cfg.augment, tuple(self.model.config.input_size), train=False), cfg.seed
            )
            if base_val
            else None
        )

        global_batch = cfg.batch_size * self.dist.world_size
        if cfg.epochs is not None:
            self.total_steps = max(1, math.ceil(cfg.epochs * len(base_train) / global_batch))
        else:
            self.total_steps = cfg.total_steps
        self.optimizer, self.groups = build_optimizer(
            self.model, cfg.optim.groups, cfg.optim.weight_decay, tuple(cfg.optim.betas)
        )
        self.schedule = StageSchedule(
            cfg.stages,
            self.total_steps,
            cfg.optim.warmup_steps,
            cfg.optim.warmup_start,
            cfg.optim.min_lr_ratio,
        )
        self.loss = DSJLoss(cfg.loss)
        self.machine = machine_record(self.dist.device)
        if self.dist.device.type == "cuda":
            self.use_amp = cfg.amp
        else:  # CPU bf16 autocast only where the CPU has bf16 instructions (and it was asked for)
            self.use_amp = cfg.cpu_amp == "on" or (
                cfg.cpu_amp == "auto" and bool(self.machine["bf16"]["fast"])
            )
        self.machine["bf16_autocast"] = self.use_amp
        self.out_dir = Path(cfg.out_dir)
        self.step = 0
        self.best_metric: float | None = None
        self._ddp: torch.nn.Module | None = None
        self._stage_name: str | None = None
        self._stage_index: int | None = None
        self._csv_fields: dict[str, list[str]] = {}
        self._tb = None
        if not cfg.joint_training and self.dist.distributed:
            raise ConfigError(
                "joint_training: false splits the backward pass in two, which DDP does not support; "
                "train it in one process (no torchrun) or set joint_training: true"
            )
        # joint_training: false -> L_det reaches only these parameters (see _backward).
        self._det_params = [
            p for n, p in self.model.named_parameters() if n.startswith(DETECTION_ONLY_PREFIXES)
        ]

    # ------------------------------------------------------------------ resume
    def _resume_path(self) -> Path | None:
        r = self.cfg.resume
        if r == "never":
            return None
        if r == "auto":
            p = self.out_dir / "last.pt"
            return p if p.is_file() else None
        p = Path(r)
        if not p.is_file():
            raise ConfigError(f"resume={r!r}: no such checkpoint; pass an existing .pt or resume=auto")
        return p

    def maybe_resume(self) -> bool:
        """Restore state from the resume checkpoint, if there is one. Returns whether it did."""
        path = self._resume_path()
        if path is None:
            return False
        ckpt = load_checkpoint(path, map_location=self.dist.device)
        if ckpt["model_name"] != self.model.config.name:
            raise ConfigError(
                f"cannot resume from {path}: it holds a '{ckpt['model_name']}' model but the config trains "
                f"'{self.model.config.name}'; use another out_dir or resume=never"
            )
        self.model.load_state_dict(ckpt["model"])
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler") is not None:
            self.schedule.load_state_dict(ckpt["scheduler"])
        self.step = int(ckpt["step"])
        self.best_metric = ckpt.get("best_metric")
        if ckpt.get("rng") is not None:
            restore_rng_state(ckpt["rng"])
        if self.dist.is_main:
            print(f"[damcseg-train] resumed from {path} at step {self.step}/{self.total_steps}", flush=True)
        return True

    def warm_start(self) -> dict[str, list[str]]:
        """Load ``init_from``'s weights where name and shape match (a fresh run, not a resume).

        Returns:
            ``loaded`` and ``skipped`` parameter/buffer names (skipped: absent from the
            checkpoint or of another shape, e.g. a detection head with another anchor count).
        """
        path = Path(self.cfg.init_from)
        if not path.is_file():
            raise ConfigError(f"init_from={str(path)!r}: no such checkpoint; pass an existing .pt file")
        ckpt = load_checkpoint(path, map_location=self.dist.device)
        src = upgrade_state_dict(dict(ckpt["model"]))  # older layouts: same names as load_state_dict sees
        own = self.model.state_dict()
        loaded = [k for k, v in src.items() if k in own and own[k].shape == v.shape]
        skipped = sorted(set(own) - set(loaded))
        self.model.load_state_dict({k: src[k] for k in loaded}, strict=False)
        if self.dist.is_main:
            print(
                f"[damcseg-train] warm start from {path}: {len(loaded)} tensors loaded, {len(skipped)} "
                f"kept at init ({', '.join(skipped[:6])}{' ...' if len(skipped) > 6 else ''})",
                flush=True,
            )
        return {"loaded": loaded, "skipped": skipped}

    # ------------------------------------------------------------------ helpers
    def _enter_stage(self, step: int) -> None:
        """Apply freezing and loss switches of the stage at ``step``; rewrap DDP on a change."""
        span = self.schedule.span_at(step)
        self.schedule.apply(self.optimizer, step)
        index = self.schedule.spans.index(span)
        if index == self._stage_index:
            return
        self._stage_index = index
        self._stage_name = span.stage.name
        self.loss.align_enabled = span.stage.align_loss and self.cfg.joint_training
        if self.dist.distributed:
            # DDP registers the trainable parameters when it is built, so each stage gets its own.
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            step_module = _LossStep(self.model, self.loss, self.use_amp, self.dist.device.type)
            self._ddp = DistributedDataParallel(step_module, device_ids=ids, find_unused_parameters=True)
        else:
            self._ddp = _LossStep(self.model, self.loss, self.use_amp, self.dist.device.type)

    def _log(self, step: int, row: dict[str, float], name: str = "metrics") -> None:
        """Append ``row`` to ``out_dir/<name>.csv`` (header from the first row) and TensorBoard."""
        if not self.dist.is_main:
            return
        path = self.out_dir / f"{name}.csv"
        if name not in self._csv_fields:
            if path.exists():  # resumed run: keep the existing header
                with open(path, newline="") as f:
                    self._csv_fields[name] = next(csv.reader(f), list(row))
            else:
                self._csv_fields[name] = list(row)
                with open(path, "w", newline="") as f:
                    csv.writer(f).writerow(self._csv_fields[name])
        with open(path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self._csv_fields[name]])
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(
                        k.replace("_", "/", 1) if k.startswith(("loss_", "lr_")) else k, v, step
                    )

    def _save(self, name: str) -> None:
        barrier(self.dist)
        if self.dist.is_main:
            save_checkpoint(
                self.out_dir / name, self.model, optimizer=self.optimizer, scheduler=self.schedule,
                step=self.step, best_metric=self.best_metric, train_config=self.cfg,
            )  # fmt: skip
        barrier(self.dist)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """mIoU, pixel accuracy and detection mAP@0.5 on the val set (rank 0 runs it; all wait).

        mAP uses the valid-object rule of ``loss.detection`` (the targets the detector is
        trained on) and the model's own post-processing settings.
        """
        if self.val_set is None:
            return {}
        result: dict[str, float] = {}
        if self.dist.is_main:
            loader = DataLoader(
                self.val_set, batch_size=self.cfg.batch_size, shuffle=False, collate_fn=self.collate_fn,
                num_workers=self.cfg.num_workers, generator=torch.Generator().manual_seed(0),
            )  # fmt: skip
            det_cfg = self.cfg.loss.detection
            seg = SegmentationIoU(self.model.config.num_classes)
            det = DetectionMAP(min_area=det_cfg.min_area, max_occlusion=det_cfg.max_occlusion)
            was_training = self.model.training
            self.model.eval()
            for i, batch in enumerate(loader):
                if self.cfg.data.val_max_batches and i >= self.cfg.data.val_max_batches:
                    break
                inputs = {m: batch[m].to(self.dist.device) for m in MODALITIES if m in batch}
                with torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                    out = self.model(inputs)
                seg.update(out.seg_logits.argmax(1).cpu().numpy(), batch["semantic"].numpy())
                for j in range(len(out.boxes)):
                    det.update(
                        out.boxes[j].cpu(), out.scores[j].cpu(), out.labels[j].cpu(), batch["boxes"][j],
                        batch["labels"][j], batch["areas"][j] if "areas" in batch else None,
                        batch["occlusion"][j] if "occlusion" in batch else None,
                    )  # fmt: skip
            self.model.train(was_training)
            res, dres = seg.compute(), det.compute()
            result = {
                "val_miou": res["miou"],
                "val_pixel_acc": res["pixel_accuracy"],
                "val_map_50": dres["map_50"],
                "val_boxes_to_gt": dres["boxes_to_gt"],
            }
            m, d = result["val_miou"], result["val_map_50"]
            result["val_joint"] = (m + d) / 2 if not math.isnan(d) else m
        # Every rank needs rank 0's metric to take the same best.pt decision (it holds barriers).
        key = self.cfg.select_metric
        metric = all_gather_floats(self.dist, result.get(key, float("nan")))[0]
        if not self.dist.is_main and not math.isnan(metric):
            result = {key: metric}
        return result

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimizer step on a collated batch; returns the losses as floats."""
        cfg = self.cfg
        step = self.step
        span = self.schedule.span_at(step)
        stage = span.stage
        batch = _to_device(batch, self.dist.device)
        present = tuple(m for m in MODALITIES if m in batch)
        inputs = {m: batch[m] for m in present}
        # Each sample draws its own kept subset (the rank is in the stream, so DDP ranks differ);
        # the mask is [B, 3] in MODALITIES order (see damcseg_core.train.modality_dropout).
        batch_size = next(iter(inputs.values())).shape[0]
        keep = sample_keep_mask(
            generator_for(cfg.seed, step, _DROPOUT_STREAM, self.dist.rank), batch_size, present, cfg.augment,
            step_in_stage=step - span.start, p=None if stage.modality_dropout else 0.0,
        )  # fmt: skip
        kwargs: dict[str, Any] = {"drop": keep.to(self.dist.device)}
        if cfg.loss.logit_distill_weight > 0:  # the teacher's global-path pass (DSJLoss, L_logit)
            kwargs["teacher_logits"] = True
        if cfg.roi_from_gt:
            # Teacher forcing with the objects the detector is asked to find: at inference the
            # local and depth-prior paths only ever see boxes of valid objects.
            det_cfg = cfg.loss.detection
            areas, occ = batch.get("areas"), batch.get("occlusion")
            valid = [
                valid_objects(
                    b, areas[i] if areas is not None else None, occ[i] if occ is not None else None,
                    det_cfg.min_area, det_cfg.max_occlusion,
                )
                for i, b in enumerate(batch["boxes"])
            ]  # fmt: skip
            kwargs["roi_boxes"] = [b[k] for b, k in zip(batch["boxes"], valid)]
            kwargs["roi_labels"] = [lab[k] for lab, k in zip(batch["labels"], valid)]
        self.model.train()
        if stage.frozen_eval:
            eval_frozen_modules(self.model)
        losses = self._ddp(inputs, batch, **kwargs)
        total = losses["total"]
        if not torch.isfinite(total):
            parts = {k: float(v) for k, v in losses.items()}
            raise FloatingPointError(
                f"non-finite total loss at step {step} (stage {stage.name}): {parts}; lower the learning "
                "rates or check the batch"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(losses)
        grad_norm = 0.0
        if cfg.optim.grad_clip > 0:
            params = [q for q in self.model.parameters() if q.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip))
        self.optimizer.step()
        row = {f"loss_{k}": float(v.detach()) for k, v in losses.items()}
        row["grad_norm"] = grad_norm
        row["kept_modalities"] = float(keep.sum(1).float().mean())
        return row

    def _backward(self, losses: dict[str, torch.Tensor]) -> None:
        """Back-propagate the step's losses into the parameter gradients.

        Joint training (the default): ``total`` reaches every parameter. Without it
        (``joint_training: false``, Table IV ablation) the detection loss ``det`` is
        back-propagated into the detection-only parameters alone (``inputs=``), and the rest of
        ``total`` into everything, so the shared backbone, encoders and fusion never see a
        detection gradient: the two tasks share features but are not trained jointly.
        """
        total = losses["total"]
        if self.cfg.joint_training:
            total.backward()
            return
        det = losses["det"]
        trainable = [p for p in self._det_params if p.requires_grad]
        if trainable and det.requires_grad:
            det.backward(inputs=trainable, retain_graph=True)
        rest = total - det
        if rest.requires_grad:
            rest.backward()

    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to the end of the schedule; returns the summary also written to ``summary.json``.

        Args:
            stop_at: stop (after saving ``last.pt``) once this step is reached, e.g. to fit a
                job into a cluster time slot; running again resumes the same schedule.
        """
        cfg = self.cfg
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.dist)
        if not self.maybe_resume() and cfg.init_from:
            self.warm_start()
        if self.dist.is_main:
            dump_yaml(cfg, self.out_dir / "config.yaml")
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tb"))
            except ImportError:  # TensorBoard is optional; the CSV log always exists
                self._tb = None
        sampler = StepBatchSampler(
            len(self.train_set), cfg.batch_size, cfg.seed, self.step, self.total_steps,
            self.dist.rank, self.dist.world_size,
        )  # fmt: skip
        loader = DataLoader(
            self.train_set, batch_sampler=sampler, collate_fn=self.collate_fn, num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed), persistent_workers=False,
        )  # fmt: skip
        bar = None
        if self.dist.is_main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", dynamic_ncols=True)
        last_val: dict[str, float] = {}
        if self.dist.is_main:
            machine = ", ".join(f"{k}={v}" for k, v in self.machine.items() if k != "bf16")
            print(f"[damcseg-train] machine: {machine}", flush=True)
        t0 = time.perf_counter()
        step_times: list[float] = []
        data_times: list[float] = []
        t_ready = time.perf_counter()
        for batch in loader:
            self._enter_stage(self.step)
            ts = time.perf_counter()
            data_times.append(ts - t_ready)  # waiting for the loader: generation, augmentation, collate
            row = self.train_step(batch)
            step_times.append(time.perf_counter() - ts)
            self.step += 1
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                lrs = {f"lr_{pg['name']}": pg["lr"] for pg in self.optimizer.param_groups}
                k = cfg.log_every
                sec, data = float(np.mean(step_times[-k:])), float(np.mean(data_times[-k:]))
                self._log(self.step, {"step": self.step, "stage": float(self._stage_index), **lrs, **row,
                                      "sec_per_step": sec, "data_sec_per_step": data,
                                      "steps_per_s": 1.0 / max(sec + data, 1e-9)})  # fmt: skip
            if bar is not None:
                bar.update(1)
                bar.set_postfix(stage=self._stage_name, loss=f"{row['loss_total']:.3f}")
            is_last = self.step == self.total_steps
            if (cfg.val_every and self.step % cfg.val_every == 0) or is_last:
                last_val = self.validate()
                if last_val and self.dist.is_main:
                    self._log(self.step, {"step": self.step, **last_val}, name="val")
                metric = last_val.get(cfg.select_metric)
                if (
                    metric is not None
                    and not math.isnan(metric)
                    and (self.best_metric is None or metric > self.best_metric)
                ):
                    self.best_metric = metric
                    self._save("best.pt")
            stopping = stop_at is not None and self.step >= stop_at
            if self.step % cfg.ckpt_every == 0 or is_last or stopping:
                self._save("last.pt")
            if stopping:
                break
            t_ready = time.perf_counter()
        if bar is not None:
            bar.close()
        checksums = all_gather_floats(self.dist, param_checksum(self.model))
        summary = {
            "step": self.step,
            "total_steps": self.total_steps,
            "best_metric": self.best_metric,
            "last_val": last_val,
            "mean_sec_per_step": float(np.mean(step_times)) if step_times else None,
            "mean_data_sec_per_step": float(np.mean(data_times)) if data_times else None,
            "steps_per_s": (len(step_times) / (sum(step_times) + sum(data_times))) if step_times else None,
            "machine": self.machine,
            "wall_s": time.perf_counter() - t0,
            "world_size": self.dist.world_size,
            "rank_param_checksums": checksums,
        }
        if self.dist.is_main:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            if self._tb is not None:
                self._tb.close()
        if len(set(checksums)) > 1:
            raise RuntimeError(f"DDP ranks ended with different weights (checksums {checksums})")
        cleanup(self.dist)
        return summary
