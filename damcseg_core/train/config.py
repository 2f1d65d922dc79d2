"""Typed training configuration (``config/train/*.yaml`` -> :class:`TrainConfig`).

Load with ``load_yaml(TrainConfig, path, overrides)`` from :mod:`damcseg_core.config`; unknown
keys and wrong types fail at load time with the valid keys listed. :meth:`TrainConfig.validate`
checks the cross-field rules (stage fractions, group names) once the whole config is known.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from damcseg_core.config import ConfigError
from damcseg_core.losses.dsjl import LossConfig

__all__ = [
    "DEFAULT_GROUPS",
    "DETECTION_ONLY_PREFIXES",
    "AugmentConfig",
    "DataConfig",
    "OptimConfig",
    "StageConfig",
    "TrainConfig",
]

DEFAULT_GROUPS: dict[str, list[str]] = {
    # Paper "shared backbone": the 80 % shared EfficientNetV2 blocks (+ their input projection).
    "backbone": ["backbone.input_proj", "backbone.shared"],
    # Detection head: BiFPN + class/box nets, plus the detection copy of the last 20 % of blocks.
    "det_head": ["backbone.det_blocks", "det_head"],
    # Segmentation head: three paths, plus the segmentation copy of the last 20 % of blocks.
    "seg_head": ["backbone.seg_blocks", "global_path", "local_path", "refinement.post_path"],
    # Fusion modules: LMMF (encoders, MCN, modal attention), DSAF and the CRF.
    "fusion": ["encoders", "completion", "attention", "refinement.dsaf", "refinement.crf"],
}
"""Parameter groups by module-name prefix of :class:`~damcseg_core.models.damcseg.DAMCSeg`."""

DETECTION_ONLY_PREFIXES: tuple[str, ...] = ("backbone.det_blocks", "det_head")
"""Parameters used by the detection task alone (its 20 % backbone copy, BiFPN and heads). With
``joint_training: false`` L_det back-propagates into these only."""


@dataclasses.dataclass
class DataConfig:
    """Where the training and validation frames come from."""

    # Dataset spec (damcseg_core.data.registry); several specs joined by " ; " are concatenated,
    # e.g. ideal and realistic sensor models in one training set.
    train: str = "synthetic:frames=200,size=256x512,seed=1"
    val: str | None = "synthetic:frames=16,size=256x512,seed=1001"  # val spec; None skips validation
    val_max_batches: int = 0  # validate on at most this many batches (0 = the whole val set)


@dataclasses.dataclass
class AugmentConfig:
    """Paired augmentations (paper Sec. IV.A.4) and modality dropout; probabilities in [0, 1]."""

    size: tuple[int, int] | None = None  # training crop (H, W), multiples of 32; None = model input_size
    hflip: float = 0.5  # probability of a horizontal flip
    scale_min: float = 0.5  # random scale range (paper 0.5-2.0), relative to fitting the frame to `size`
    scale_max: float = 2.0
    color_jitter: float = 0.8  # probability of colour jitter (RGB only)
    brightness: float = 0.3  # jitter strengths (torchvision ColorJitter semantics)
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.03
    occlusion: float = 0.3  # probability of random occlusion (cutout on every modality)
    occlusion_max_rects: int = 2  # up to this many rectangles
    occlusion_max_frac: float = 0.25  # each rectangle's side is at most this fraction of the image side
    # probability that one present sensor becomes an all-zero frame still marked present (a dead
    # camera the driver does not report); 0 = off
    sensor_fault: float = 0.0
    tiny_zoom: float = 0.2  # probability of tiny-target zoom ("super-resolution enhancement")
    tiny_zoom_factor: float = 2.0  # magnification of the crop around a tiny object
    tiny_zoom_area: int = 1024  # objects below this visible area (px) are zoom candidates
    # Modality dropout (damcseg_core.train.modality_dropout): with probability modality_dropout a
    # sample trains on a proper modality subset drawn with modality_dropout_subsets' weights;
    # p_full = 1 - modality_dropout keeps every sensor.
    modality_dropout: float = 0.5  # probability that a sample drops at least one present modality
    # "sample": every sample of a batch draws its own subset; "batch": one draw for the whole batch
    modality_dropout_mode: str = "sample"
    # subset kept -> relative weight, over the 6 proper subsets ("rgb", "rgb+depth", ...); missing
    # names weigh 0, an empty dict = uniform
    modality_dropout_subsets: dict[str, float] = dataclasses.field(default_factory=dict)
    # linear ramp of the drop probability from modality_dropout_start to modality_dropout over
    # the first ramp steps of every stage that drops modalities (0 = no ramp)
    modality_dropout_ramp_steps: int = 0
    modality_dropout_start: float = 0.0

    def __post_init__(self) -> None:
        probabilities = (
            "hflip",
            "color_jitter",
            "occlusion",
            "sensor_fault",
            "tiny_zoom",
            "modality_dropout",
        )
        for name in (*probabilities, "modality_dropout_start"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augment.{name} is a probability and must be in [0, 1], got {value}")
        if self.modality_dropout_mode not in ("sample", "batch"):
            raise ValueError(
                f"augment.modality_dropout_mode must be 'sample' or 'batch', got {self.modality_dropout_mode!r}"
            )
        if self.modality_dropout_ramp_steps < 0:
            raise ValueError(
                f"augment.modality_dropout_ramp_steps must be >= 0 (0 = no ramp), "
                f"got {self.modality_dropout_ramp_steps}"
            )
        from damcseg_core.train.modality_dropout import subset_weights

        subset_weights(self.modality_dropout_subsets)  # raises naming the field
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(
                f"need 0 < augment.scale_min <= scale_max, got {self.scale_min}, {self.scale_max}"
            )
        if self.size is not None and (self.size[0] % 32 or self.size[1] % 32):
            raise ValueError(f"augment.size must be multiples of 32, got {self.size}")
        if self.tiny_zoom_factor < 1.0:
            raise ValueError(f"augment.tiny_zoom_factor must be >= 1, got {self.tiny_zoom_factor}")


@dataclasses.dataclass
class StageConfig:
    """One training stage (paper Sec. IV.A.4: warm-up, joint, fine-tuning)."""

    name: str = "joint"  # shown in logs
    fraction: float = 1.0  # share of the total steps (the stages' fractions must sum to 1)
    lr: dict[str, float] = dataclasses.field(default_factory=dict)  # group -> lr; absent or 0 = frozen
    align_loss: bool = True  # include L_align (the paper enables the full DSJL after warm-up)
    modality_dropout: bool = True  # apply modality dropout in this stage
    # Modules whose parameters are all frozen in this stage run in eval mode: BatchNorm uses and
    # keeps its running statistics, the branch gate thresholds as at inference. For a stage that
    # trains one module inside a finished network (the MCN: it then learns to complete features
    # for the network users run, and the all-sensor outputs stay bit-identical).
    frozen_eval: bool = False


@dataclasses.dataclass
class OptimConfig:
    """AdamW, the learning-rate shape and the parameter groups."""

    weight_decay: float = 1e-4  # paper: AdamW weight decay 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int | None = None  # linear LR warm-up; None = the first stage's length
    warmup_start: float = 0.01  # warm-up starts at this fraction of each group's lr
    min_lr_ratio: float = 0.01  # cosine annealing ends each stage at this fraction of its lr
    grad_clip: float = 10.0  # clip the global gradient norm (0 disables)
    groups: dict[str, list[str]] = dataclasses.field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_GROUPS.items()}
    )


def _paper_stages() -> list[StageConfig]:
    return [
        StageConfig(
            "warmup", 5 / 45, {"det_head": 3e-5, "seg_head": 3e-5}, align_loss=False, modality_dropout=False
        ),
        StageConfig("joint", 35 / 45, {"backbone": 3e-5, "det_head": 5e-5, "seg_head": 1e-4, "fusion": 5e-5}),
        StageConfig(
            "finetune", 5 / 45, {"fusion": 1e-5, "backbone": 1e-6, "det_head": 1e-6, "seg_head": 1e-6}
        ),
    ]


@dataclasses.dataclass
class TrainConfig:
    """A whole training run."""

    model: str = "damcseg_edge"  # registered variant (damcseg_tiny / damcseg_edge / damcseg_paper)
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # ModelConfig overrides
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    batch_size: int = 4  # per process (the global batch is batch_size * world size)
    total_steps: int = 1000  # optimizer steps of the whole schedule (used when epochs is None)
    epochs: float | None = None  # if set, total_steps = ceil(epochs * len(train) / global batch)
    stages: list[StageConfig] = dataclasses.field(default_factory=_paper_stages)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    roi_from_gt: bool = True  # local/post paths use ground-truth boxes in training (teacher forcing)
    # End-to-end joint detection + segmentation training (Table IV ablation switch). False: no
    # L_align in any stage and L_det updates only the detection-specific parameters
    # (DETECTION_ONLY_PREFIXES), so shared backbone, encoders and fusion learn from segmentation alone.
    joint_training: bool = True
    init_from: str | None = None  # warm start: load the matching weights of this checkpoint (not a resume)
    # Val metric that picks best.pt: val_miou | val_map_50 | val_joint (their mean).
    select_metric: str = "val_miou"
    log_every: int = 10  # steps between log rows (CSV / TensorBoard)
    val_every: int = 200  # steps between validations (0 = only at the end)
    ckpt_every: int = 100  # steps between last.pt checkpoints (always also at the end)
    seed: int = 0  # seeds model init, data order, augmentation and modality dropout
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun, cuda means cuda:LOCAL_RANK)
    amp: bool = True  # mixed precision (bfloat16 autocast) on CUDA
    # bfloat16 autocast on the CPU: off | auto (only where the CPU has AMX or AVX512-BF16, see
    # damcseg_core.train.hardware) | on. Measure before turning it on: see benchmarks/profile_train.py.
    cpu_amp: str = "off"
    num_workers: int = 0  # DataLoader worker processes
    threads: int = 0  # torch.set_num_threads for this process (0 = leave as is)
    out_dir: str = "runs/edge_synthetic"  # where logs, config.yaml and checkpoints go
    resume: str = "auto"  # auto: resume from out_dir/last.pt if present | never | path to a checkpoint
    progress: bool = True  # tqdm progress bar (rank 0)

    def validate(self) -> None:
        """Cross-field checks; raises :class:`ConfigError` naming the fix."""
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.cpu_amp not in ("off", "auto", "on"):
            raise ConfigError(f"cpu_amp must be 'off', 'auto' or 'on', got {self.cpu_amp!r}")
        if self.epochs is None and self.total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1 (or set epochs), got {self.total_steps}")
        if not self.stages:
            raise ConfigError("stages must list at least one stage (e.g. the paper's warmup/joint/finetune)")
        total = sum(s.fraction for s in self.stages)
        if abs(total - 1.0) > 1e-6 or any(s.fraction < 0 for s in self.stages):
            raise ConfigError(
                f"stage fractions must be >= 0 and sum to 1, got {[s.fraction for s in self.stages]} (sum {total:.4f})"
            )
        for stage in self.stages:
            unknown = sorted(set(stage.lr) - set(self.optim.groups))
            if unknown:
                raise ConfigError(
                    f"stage '{stage.name}' sets lr for unknown group(s) {unknown}; "
                    f"groups defined in optim.groups: {sorted(self.optim.groups)}"
                )
            if any(v < 0 for v in stage.lr.values()):
                raise ConfigError(f"stage '{stage.name}': learning rates must be >= 0, got {stage.lr}")
            if not any(v > 0 for v in stage.lr.values()):
                raise ConfigError(f"stage '{stage.name}' trains nothing; give at least one group an lr > 0")
        if self.resume not in ("auto", "never") and not self.resume.endswith(".pt"):
            raise ConfigError(
                f"resume must be 'auto', 'never' or a path to a .pt checkpoint, got {self.resume!r}"
            )
        if self.select_metric not in ("val_miou", "val_map_50", "val_joint"):
            raise ConfigError(
                f"select_metric must be val_miou, val_map_50 or val_joint, got {self.select_metric!r}"
            )
        if self.init_from is not None and not self.init_from.endswith(".pt"):
            raise ConfigError(f"init_from must be a path to a .pt checkpoint, got {self.init_from!r}")
        for name in ("log_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
