"""Three-stage schedule: stage spans, learning rates, freezing, parameter groups, config checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from damcseg_core.config import ConfigError, from_dict, load_yaml
from damcseg_core.train.config import DEFAULT_GROUPS, StageConfig, TrainConfig
from damcseg_core.train.schedule import StageSchedule, assign_groups, build_optimizer
from damcseg_core.train.trainer import StepBatchSampler

CONFIGS = Path(__file__).resolve().parents[2] / "config" / "train"

PAPER = TrainConfig().stages  # the default stages are the paper's


def _schedule(total: int = 450, **kw) -> StageSchedule:
    return StageSchedule(PAPER, total, min_lr_ratio=0.0, **kw)


def test_paper_stages_split_45_epochs_as_5_35_5():
    s = _schedule()
    assert [(sp.stage.name, sp.start, sp.end) for sp in s.spans] == [
        ("warmup", 0, 50), ("joint", 50, 400), ("finetune", 400, 450),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("step", "group", "expected"),
    [
        (0, "det_head", 3e-5 * 0.01),  # warm-up starts at 1 % of the lr
        (25, "det_head", 3e-5 * (0.01 + 0.99 * 0.5) * 0.5 * (1 + math.cos(math.pi * 0.5))),
        (10, "backbone", 0.0),  # frozen in warm-up
        (10, "fusion", 0.0),
        (50, "backbone", 3e-5),  # joint stage starts at its full rates
        (50, "det_head", 5e-5),
        (50, "seg_head", 1e-4),
        (50, "fusion", 5e-5),
        (225, "seg_head", 1e-4 * 0.5),  # cosine midway through the joint stage
        (400, "fusion", 1e-5),  # fine-tuning: fusion modules at 1e-5
        (400, "det_head", 1e-6),  # everything else 10x lower
    ],
)
def test_learning_rates(step, group, expected):
    assert _schedule().lr(group, step) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_last_stage_takes_rounding_remainder():
    s = StageSchedule([StageConfig("a", 1 / 3, {"x": 1.0}), StageConfig("b", 2 / 3, {"x": 1.0})], 10)
    assert [(sp.start, sp.end) for sp in s.spans] == [(0, 3), (3, 10)]


@pytest.fixture(scope="module")
def tiny():
    from damcseg_core.models import build_model

    torch.manual_seed(0)
    return build_model("damcseg_tiny").train()


def test_default_groups_cover_the_real_model_exactly(tiny):
    groups = assign_groups(tiny, DEFAULT_GROUPS)
    names = [n for n, _ in tiny.named_parameters()]
    assert sorted(n for group in groups.values() for n in group) == sorted(names)
    assert all(n.startswith(("backbone.input_proj", "backbone.shared")) for n in groups["backbone"])
    assert any(n.startswith("backbone.det_blocks") for n in groups["det_head"])
    assert any(n.startswith("backbone.seg_blocks") for n in groups["seg_head"])
    assert any(n.startswith("completion") for n in groups["fusion"])


def test_prefix_matching_nothing_is_a_clear_error(tiny):
    groups = {**DEFAULT_GROUPS, "fusion": [*DEFAULT_GROUPS["fusion"], "lmmf"]}
    with pytest.raises(ConfigError, match=r"optim.groups.fusion: prefix 'lmmf' matches no parameter"):
        assign_groups(tiny, groups)


@pytest.mark.parametrize("old", ["dsaf", "post_path", "crf"])
def test_a_prefix_from_before_the_refinement_head_names_its_new_place(tiny, old):
    groups = {k: [p for p in v if not p.endswith(old)] for k, v in DEFAULT_GROUPS.items()}
    groups["fusion"].append(old)  # an optim.groups section written before the refinement head
    with pytest.raises(ConfigError, match=rf"prefix '{old}' matches no parameter.*write 'refinement\.{old}'"):
        assign_groups(tiny, groups)


def test_uncovered_parameters_are_a_clear_error(tiny):
    groups = {k: v for k, v in DEFAULT_GROUPS.items() if k != "fusion"}
    with pytest.raises(ConfigError, match=r"belong to no group in optim.groups"):
        assign_groups(tiny, groups)


@pytest.mark.parametrize(
    ("step", "trainable"),
    [(0, {"det_head", "seg_head"}), (60, {"backbone", "det_head", "seg_head", "fusion"}),
     (420, {"backbone", "det_head", "seg_head", "fusion"})],
)  # fmt: skip
def test_stage_transitions_freeze_exactly_the_right_parameters(tiny, step, trainable):
    opt, groups = build_optimizer(tiny, DEFAULT_GROUPS, 1e-4, (0.9, 0.999))
    sched = _schedule()
    sched.apply(opt, step)
    params = dict(tiny.named_parameters())
    for group, names in groups.items():
        assert all(params[n].requires_grad == (group in trainable) for n in names), group
    lrs = {pg["name"]: pg["lr"] for pg in opt.param_groups}
    assert lrs == {g: pytest.approx(sched.lr(g, step)) for g in groups}


def test_frozen_parameters_do_not_change_in_a_step(tiny):
    opt, groups = build_optimizer(tiny, DEFAULT_GROUPS, 1e-4, (0.9, 0.999))
    sched = StageSchedule([StageConfig("warmup", 1.0, {"det_head": 1e-2, "seg_head": 1e-2})], 10)
    sched.apply(opt, 5)
    params = dict(tiny.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    loss = sum((p.float() ** 2).sum() for p in tiny.parameters() if p.requires_grad)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    for group, names in groups.items():
        changed = any(not torch.equal(before[n], params[n]) for n in names)
        assert changed == (group in ("det_head", "seg_head")), group


def test_schedule_state_rejects_a_different_length():
    s = _schedule(450)
    with pytest.raises(ConfigError, match=r"resume with the same total_steps"):
        s.load_state_dict({"step": 3, "total_steps": 900})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"stages": [{"name": "a", "fraction": 0.5, "lr": {"fusion": 1e-4}}]}, "sum to 1"),
        ({"stages": [{"name": "a", "fraction": 1.0, "lr": {"heads": 1e-4}}]}, "unknown group"),
        ({"stages": [{"name": "a", "fraction": 1.0, "lr": {"fusion": 0.0}}]}, "trains nothing"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"resume": "yes"}, "resume must be 'auto', 'never' or a path"),
    ],
)
def test_config_cross_checks(override, message):
    cfg = from_dict(TrainConfig, override)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_unknown_key_in_yaml_names_it(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("model: damcseg_tiny\nbatch_sise: 2\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'batch_sise'. Did you mean 'batch_size'"):
        load_yaml(TrainConfig, path)


@pytest.mark.parametrize("name", ["tiny_smoke", "edge_synthetic", "paper"])
def test_shipped_configs_load_and_validate(name):
    cfg = load_yaml(TrainConfig, CONFIGS / f"{name}.yaml")
    cfg.validate()


def test_paper_yaml_has_the_paper_values():
    cfg = load_yaml(TrainConfig, CONFIGS / "paper.yaml")
    assert [s.lr for s in cfg.stages] == [
        {"det_head": 3e-5, "seg_head": 3e-5},
        {"backbone": 3e-5, "det_head": 5e-5, "seg_head": 1e-4, "fusion": 5e-5},
        {"fusion": 1e-5, "backbone": 1e-6, "det_head": 1e-6, "seg_head": 1e-6},
    ]
    assert [round(s.fraction * 45) for s in cfg.stages] == [5, 35, 5]
    assert (cfg.epochs, cfg.optim.weight_decay, cfg.loss.lambda1, cfg.loss.lambda2) == (45, 1e-4, 1.0, 0.5)


def test_sampler_is_a_function_of_step_and_shards_ranks():
    full = StepBatchSampler(10, 2, seed=3, start_step=0, total_steps=8)
    resumed = StepBatchSampler(10, 2, seed=3, start_step=5, total_steps=8)
    assert list(full)[5:] == list(resumed)
    epoch0 = [k[0] for batch in list(full)[:5] for k in batch]
    assert sorted(epoch0) == list(range(10))  # each epoch is a permutation
    r0 = [k[0] for b in StepBatchSampler(10, 1, 3, 0, 5, rank=0, world_size=2) for k in b]
    r1 = [k[0] for b in StepBatchSampler(10, 1, 3, 0, 5, rank=1, world_size=2) for k in b]
    assert sorted(r0 + r1) == list(range(10))  # ranks split an epoch without overlap


def test_optimizer_is_fused_adamw_with_the_reference_update(tiny):
    """The fused kernel (much cheaper on CPU) must apply the same AdamW rule as the loop."""
    opt, _ = build_optimizer(tiny, DEFAULT_GROUPS, weight_decay=1e-2, betas=(0.9, 0.999))
    assert all(g["fused"] for g in opt.param_groups)
    params = [p for g in opt.param_groups for p in g["params"]]
    start = [p.detach().clone() for p in params]
    ref_params = [p.detach().clone().requires_grad_(True) for p in params]
    ref = torch.optim.AdamW(ref_params, lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2)
    for g in opt.param_groups:
        g["lr"] = 1e-3
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in zip(params, ref_params):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        opt.step()
        ref.step()
    for p, q in zip(params, ref_params):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    assert all(not torch.equal(p.detach(), p0) for p, p0 in zip(params, start))  # the step moved them


@pytest.mark.parametrize(
    ("rates", "crop", "warns"),
    [((1, 2), (128, 256), False), ((1, 6, 12, 18), (128, 256), True), ((1, 6), (512, 1024), False)],
)
def test_aspp_rates_that_see_only_padding_at_the_crop_warn(rates, crop, warns):
    import warnings

    from damcseg_core.models import get_config
    from damcseg_core.train.trainer import check_aspp_rates

    cfg = get_config("damcseg_edge", segmentation={"aspp_rates": rates})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_aspp_rates(cfg, crop)
    messages = [str(w.message) for w in caught]
    assert bool(messages) == warns
    if warns:
        assert "[6, 12, 18] exceed 2" in messages[0] and "4x8" in messages[0]


def test_shipped_edge_rates_fit_the_shipped_training_crop():
    from damcseg_core.models import get_config

    cfg = load_yaml(TrainConfig, Path("config/train/edge_v2.yaml"))
    h, w = cfg.augment.size
    assert max(get_config(cfg.model, **cfg.model_overrides).segmentation.aspp_rates) <= min(h, w) // 32 // 2


def test_train_specs_joined_by_semicolons_are_concatenated():
    from damcseg_core.train.trainer import build_train_set

    ds = build_train_set("synthetic:frames=2,size=64x128,seed=1 ; synthetic:frames=3,size=64x128,seed=2")
    assert len(ds) == 5
    second = build_train_set("synthetic:frames=3,size=64x128,seed=2")
    assert torch.equal(ds[2]["rgb"], second[0]["rgb"])
    with pytest.raises(ConfigError, match=r"data\.train is empty"):
        build_train_set(" ; ")
