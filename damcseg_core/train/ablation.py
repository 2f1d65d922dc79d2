"""The paper's Table IV ablation: train and evaluate its rows under one budget (``damcseg-ablate``).

:func:`run_ablation` is the experiment; ``damcseg_core/cli/ablate.py`` only parses the command line.

The config (:class:`AblationConfig`) names a base training config, the four innovations as
*switches* (what to override when an innovation is off), the rows (which innovations each row
turns on; Table IV: the baseline with none, each innovation alone, the complete model with all)
and one budget (steps, batch, crop, threads, seed) that every row trains with. Per row:

1. **Train** with :class:`~damcseg_core.train.trainer.Trainer` in this process into
   ``OUT/<row>/`` (``last.pt``, ``config.yaml``, ``metrics.csv``, ``summary.json``). The rows see
   the same data order and augmentation (same seed); the training frames are rendered once and
   kept in memory for all rows (``budget.cache_train_frames``).
2. **Evaluate** ``last.pt`` with :class:`~damcseg_core.eval.evaluator.Evaluator` on the eval
   frames (``OUT/<row>/eval/metrics.json`` + ``report.html``), and again on each half of the
   frames (same predictions, no extra forward pass) for a sampling-noise estimate.
3. Write ``OUT/<row>/ablation_row.json``: with ``--resume`` a row whose file matches the current
   resolved training config is skipped; an interrupted row continues from its ``last.pt``.

Then FPS is measured for every finished row, interleaved (one forward per row in turn, rotating
the order, ``eval.fps_repeats`` rounds cycling through the first ``eval.fps_frames`` eval frames,
the Predictor's forward-pass time at its input size, on ``budget.threads`` threads), and ``OUT/table.md`` + ``OUT/table.json`` are written: one line per
row, deltas against ``baseline`` like the paper, the budget, wall times and the command line.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from damcseg_core.config import ConfigError, deep_merge, from_dict, load_yaml, to_dict

__all__ = [
    "COLUMNS",
    "AblationConfig",
    "BudgetConfig",
    "EvalConfig",
    "RowConfig",
    "SwitchConfig",
    "row_dir_name",
    "row_train_config",
    "run_ablation",
]

BASELINE = "baseline"
"""The row every delta is taken against."""

COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("miou", "mIoU (%)", 100.0),
    ("small_miou", "Small-obj mIoU (%)", 100.0),
    ("boundary_f", "Boundary F (%)", 100.0),
    ("occluded_recall", "Occluded recall (%)", 100.0),
    ("det_map_50", "Det mAP@50 (%)", 100.0),
    ("fps", "FPS", 1.0),
    ("params_m", "Params (M)", 1.0),
)
"""Table columns: (key in table.json, header, factor from the evaluator's value)."""

_METRIC_KEYS = ("miou", "small_miou", "boundary_f", "occluded_recall", "det_map_50")
_TABLE_ROW_KEYS = (
    "name", "label", "innovations", "seed", "values", "deltas", "halves", "condition_miou", "switch_state",
    "train_wall_s", "eval_wall_s", "mean_sec_per_step", "fps_timing",
)  # fmt: skip


@dataclasses.dataclass
class SwitchConfig:
    """One innovation: the overrides that turn it *off* (deep-merged into the row's config)."""

    model: dict[str, Any] = dataclasses.field(default_factory=dict)  # model_overrides when off
    train: dict[str, Any] = dataclasses.field(default_factory=dict)  # TrainConfig fields when off


def _default_switches() -> dict[str, SwitchConfig]:
    from damcseg_core.train.config import DEFAULT_GROUPS

    groups = {k: list(v) for k, v in DEFAULT_GROUPS.items()}
    groups["fusion"] = [p for p in groups["fusion"] if p != "completion"]
    return {
        "dsaf": SwitchConfig(model={"refinement": {"dsaf": {"adaptive": False}}}),
        "joint": SwitchConfig(train={"joint_training": False}),
        # Concat fusion has no MCN ("completion"), so the fusion group must not name it.
        "lmmf": SwitchConfig(
            model={"fusion": {"mode": "concat"}},
            train={"optim": {"groups": groups}},
        ),
        "targeted": SwitchConfig(
            train={"loss": {"segmentation": {"tiny_weight": 0.0, "occlusion_weight": 0.0}}}
        ),
    }


@dataclasses.dataclass
class RowConfig:
    """One table row."""

    innovations: list[str] = dataclasses.field(default_factory=list)  # switches turned on
    label: str = ""  # shown in table.md (default: the row name)
    seed: int | None = None  # None = budget.seed (a second seed of a row estimates training noise)


def _default_rows() -> dict[str, RowConfig]:
    return {
        BASELINE: RowConfig([], "Baseline (no innovative modules)"),
        "+dsaf": RowConfig(["dsaf"], "+ DSAF"),
        "+joint": RowConfig(["joint"], "+ End-to-end joint training"),
        "+lmmf": RowConfig(["lmmf"], "+ LMMF"),
        "+targeted": RowConfig(["targeted"], "+ Targeted losses"),
        "complete": RowConfig(["dsaf", "joint", "lmmf", "targeted"], "DAMCSeg (complete)"),
    }


@dataclasses.dataclass
class BudgetConfig:
    """What every row trains with (overrides the base config and the switches)."""

    total_steps: int = 160  # optimizer steps per row
    batch_size: int = 8
    crop: tuple[int, int] = (128, 256)  # training crop (augment.size), multiples of 32
    threads: int = 1  # torch threads for training, evaluation and the FPS timing
    seed: int = 0  # model init, data order, augmentation, modality dropout
    device: str = "cpu"
    cache_train_frames: bool = True  # render each training frame once and share it across rows


@dataclasses.dataclass
class EvalConfig:
    """How every row is evaluated and timed."""

    data: str = "synthetic:frames=48,size=256x512,seed=2001"  # dataset spec (disjoint from training)
    protocols: list[str] = dataclasses.field(default_factory=lambda: ["full"])  # first one fills the table
    limit: int | None = None  # evaluate only the first N frames
    seed: int = 0  # seed of the protocols' random choices
    boundary_tolerance_px: float | None = None  # None = 0.75 % of the image diagonal
    examples: int = 2  # overlays in each row's report.html
    fps_warmup: int = 2  # untimed forwards per row before timing
    fps_repeats: int = 15  # timed forwards per row (interleaved across rows)
    fps_frames: int = 5  # timing cycles through the first N eval frames (time depends on #detections)


@dataclasses.dataclass
class AblationConfig:
    """A whole ablation (``config/ablation/*.yaml``)."""

    base: str = "config/train/edge_synthetic_fast.yaml"  # training config every row starts from
    train: dict[str, Any] = dataclasses.field(default_factory=dict)  # TrainConfig overrides for all rows
    budget: BudgetConfig = dataclasses.field(default_factory=BudgetConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    # Switches given here replace the built-in ones of the same name; the others stay.
    switches: dict[str, SwitchConfig] = dataclasses.field(default_factory=_default_switches)
    rows: dict[str, RowConfig] = dataclasses.field(default_factory=_default_rows)  # replace the defaults

    def __post_init__(self) -> None:
        self.switches = {**_default_switches(), **self.switches}

    def validate(self) -> None:
        """Cross-field checks; raises :class:`ConfigError` naming the fix."""
        if BASELINE not in self.rows:
            raise ConfigError(
                f"rows must include '{BASELINE}' (the deltas are taken against it); rows: {list(self.rows)}"
            )
        for name, row in self.rows.items():
            unknown = [s for s in row.innovations if s not in self.switches]
            if unknown:
                raise ConfigError(
                    f"row '{name}' turns on unknown switch(es) {unknown}; switches: {', '.join(self.switches)}"
                )
        if not self.eval.protocols:
            raise ConfigError("eval.protocols must list at least one protocol, e.g. [full]")
        if self.eval.fps_frames < 1:
            raise ConfigError(f"eval.fps_frames must be >= 1, got {self.eval.fps_frames}")
        if self.eval.fps_repeats < 1:
            raise ConfigError(f"eval.fps_repeats must be >= 1, got {self.eval.fps_repeats}")
        if self.budget.threads < 1:
            raise ConfigError(f"budget.threads must be >= 1, got {self.budget.threads}")


# --------------------------------------------------------------------------- configs
def row_dir_name(name: str) -> str:
    """Folder of a row under the output folder (``+dsaf`` -> ``plus_dsaf``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("+", "plus_"))


def _read_base(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"base training config not found: {p} (set 'base' to an existing file, e.g. "
            "config/train/edge_synthetic_fast.yaml; relative paths are from the working directory)"
        )
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping at the top level")
    return data


def row_train_config(cfg: AblationConfig, name: str, out: Path, resume: bool = False) -> Any:
    """The resolved :class:`~damcseg_core.train.config.TrainConfig` of row ``name``.

    Merge order: base file, ``cfg.train``, the *off* overrides of every switch the row does not
    turn on, then the budget (steps, batch, crop, threads, seed, device) and the row's folder.

    Raises:
        ConfigError: a key is unknown (the message names the row and the closest valid key).
    """
    from damcseg_core.models.registry import get_config
    from damcseg_core.train.config import TrainConfig

    row = cfg.rows[name]
    data = deep_merge(_read_base(cfg.base), cfg.train)
    for switch, spec in cfg.switches.items():
        if switch in row.innovations:
            continue
        data = deep_merge(data, spec.train)
        data["model_overrides"] = deep_merge(data.get("model_overrides") or {}, spec.model)
    b = cfg.budget
    data.update(
        total_steps=b.total_steps, epochs=None, batch_size=b.batch_size, threads=b.threads,
        seed=b.seed if row.seed is None else row.seed, device=b.device, progress=False,
        out_dir=str(out / row_dir_name(name)), resume="auto" if resume else "never",
    )  # fmt: skip
    data["augment"] = deep_merge(data.get("augment") or {}, {"size": list(b.crop)})
    try:
        train = from_dict(TrainConfig, data)
        train.validate()
        get_config(train.model, **train.model_overrides)  # unknown model keys fail now, not mid-run
    except ConfigError as exc:
        raise ConfigError(f"row '{name}': {exc}") from exc
    except KeyError as exc:
        raise ConfigError(f"row '{name}': {exc.args[0]}") from exc
    return train


def _fingerprint(train: Any) -> dict[str, Any]:
    d = to_dict(train)
    d.pop("resume", None)
    return json.loads(json.dumps(d))


# --------------------------------------------------------------------------- data
class _FrameCache:
    """A dataset view that renders each frame once and keeps it in memory.

    RGB is stored as uint8 and labels as uint8 when that is exact (the synthetic world renders
    8-bit RGB), which halves the memory; every read returns fresh tensors of the original dtypes.
    """

    def __init__(self, base: Any) -> None:
        self.base = base
        self._store: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        if index not in self._store:
            sample = dict(self.base[index])
            packed: dict[str, Any] = {}
            for key, value in sample.items():
                if key == "rgb" and value.dtype == torch.float32:
                    u8 = (value * 255.0).round().clamp(0, 255).to(torch.uint8)
                    if torch.equal(u8.float() / 255.0, value):
                        value = ("u8rgb", u8)
                elif key == "semantic" and value.dtype == torch.int64 and value.numel():
                    if int(value.min()) >= 0 and int(value.max()) <= 255:
                        value = ("u8long", value.to(torch.uint8))
                packed[key] = value
            self._store[index] = packed
        out: dict[str, Any] = {}
        for key, value in self._store[index].items():
            if isinstance(value, tuple) and value and value[0] == "u8rgb":
                out[key] = value[1].float() / 255.0
            elif isinstance(value, tuple) and value and value[0] == "u8long":
                out[key] = value[1].long()
            elif hasattr(value, "clone"):
                out[key] = value.clone()
            else:
                out[key] = copy.deepcopy(value)
        return out


class _Recording:
    """Predictor wrapper that keeps every result (for the half-split re-scoring)."""

    def __init__(self, predictor: Any) -> None:
        self.predictor, self.model, self.device = predictor, predictor.model, predictor.device
        self.results: list[Any] = []

    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        result = self.predictor.predict(inputs)
        self.results.append(result)
        return result


class _Replay:
    """Predictor stand-in that returns recorded results in order (no forward pass)."""

    def __init__(self, model: Any, device: Any, results: list[Any]) -> None:
        self.model, self.device = model, device
        self._results = iter(results)

    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        return next(self._results)


# --------------------------------------------------------------------------- one row
def _table_values(all_metrics: dict[str, Any]) -> dict[str, float | None]:
    return {k: (None if all_metrics.get(k) is None else 100.0 * all_metrics[k]) for k in _METRIC_KEYS}


def _evaluate_row(cfg: AblationConfig, ckpt: Path, frames: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    from damcseg_core.eval.evaluator import Evaluator
    from damcseg_core.eval.metrics import MetricConfig
    from damcseg_core.eval.report import write_report
    from damcseg_core.inference import load_predictor

    e = cfg.eval
    metric_cfg = MetricConfig(boundary_tolerance_px=e.boundary_tolerance_px)
    recorder = _Recording(load_predictor(checkpoint=ckpt, device=cfg.budget.device))
    result = Evaluator(recorder, e.protocols, metric_cfg, e.seed, e.examples, progress=False).run(frames)
    write_report(result, out / "eval")
    first = result.metrics["protocols"][e.protocols[0]]
    n, p = len(frames), len(e.protocols)
    halves = {}
    for half, (lo, hi) in (("a", (0, n // 2)), ("b", (n // 2, n))):
        if hi - lo < 1:
            continue
        replay = _Replay(recorder.model, recorder.device, [recorder.results[i * p] for i in range(lo, hi)])
        part = Evaluator(replay, e.protocols[:1], metric_cfg, e.seed, 0, progress=False).run(frames[lo:hi])
        halves[half] = _table_values(part.metrics["protocols"][e.protocols[0]]["all"])
    return {
        "values": _table_values(first["all"]),
        "params_m": result.metrics["model"]["parameters"] / 1e6,
        "parameters": result.metrics["model"]["parameters"],
        "condition_miou": {
            c: (None if v.get("miou") is None else 100.0 * v["miou"]) for c, v in first["condition"].items()
        },
        "halves": halves,
        "robustness": result.metrics["robustness"],
        "num_frames": result.metrics["num_samples"],
    }


def _switch_state(ckpt_path: Path) -> dict[str, Any]:
    """The four switches as stored in the checkpoint (proof of what the row trained)."""
    from damcseg_core.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    m, t = ckpt["model_config"], ckpt.get("train_config") or {}
    seg = (t.get("loss") or {}).get("segmentation") or {}
    return {
        "fusion_mode": m["fusion"]["mode"],
        "dsaf_adaptive": m["refinement"]["dsaf"]["adaptive"],
        "joint_training": t.get("joint_training"),
        "tiny_weight": seg.get("tiny_weight"),
        "occlusion_weight": seg.get("occlusion_weight"),
        "step": int(ckpt["step"]),
    }


# --------------------------------------------------------------------------- table
def _measure_fps(
    cfg: AblationConfig, ckpts: dict[str, Path], frames: list[dict[str, Any]]
) -> dict[str, dict]:
    """Median forward time per row, interleaved across rows and cycling through ``frames``.

    The forward time depends on the number of detections (each one is a local-path ROI), so
    timing runs over several frames and the mean number of boxes is reported with it.
    """
    from damcseg_core.eval.evaluator import sample_to_inputs
    from damcseg_core.inference import load_predictor

    inputs = [sample_to_inputs(f) for f in frames]
    predictors = {n: load_predictor(checkpoint=p, device=cfg.budget.device) for n, p in ckpts.items()}
    names = list(predictors)
    for name in names:
        for i in range(cfg.eval.fps_warmup):
            predictors[name].predict(inputs[i % len(inputs)])
    times: dict[str, list[float]] = {n: [] for n in names}
    boxes: dict[str, list[int]] = {n: [] for n in names}
    for r in range(cfg.eval.fps_repeats):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate: no row always runs first
        for name in order:
            result = predictors[name].predict(inputs[r % len(inputs)])
            times[name].append(float(result.inference_ms))
            boxes[name].append(len(result.boxes))
    out = {}
    for name in names:
        med = float(np.median(times[name]))
        out[name] = {
            "fps": 1000.0 / med,
            "median_ms": med,
            "input_size": list(predictors[name].input_size),
            "repeats": len(times[name]),
            "frames": len(inputs),
            "mean_boxes": float(np.mean(boxes[name])),
        }
    return out


def _fmt(value: float | None, delta: float | None = None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    if delta is not None:
        text += f" ({delta:+.{digits}f})"
    return text


def _write_table(cfg: AblationConfig, config_path: str, out: Path, command: str, wall_s: float) -> dict:
    rows = []
    for name in cfg.rows:
        path = out / row_dir_name(name) / "ablation_row.json"
        if path.is_file():
            rows.append(json.loads(path.read_text()))
    if not rows:
        return {}
    import torch

    torch.set_num_threads(cfg.budget.threads)
    frames = _eval_frames(cfg)[: cfg.eval.fps_frames]
    fps = _measure_fps(cfg, {r["name"]: Path(r["checkpoint"]) for r in rows}, frames)
    for r in rows:
        r["values"]["fps"] = fps[r["name"]]["fps"]
        r["values"]["params_m"] = r["params_m"]
        r["fps_timing"] = fps[r["name"]]
    base = next((r for r in rows if r["name"] == BASELINE), None)
    for r in rows:
        r["deltas"] = {
            k: (
                None
                if base is None or r["values"].get(k) is None or base["values"].get(k) is None
                else r["values"][k] - base["values"][k]
            )
            for k, _, _ in COLUMNS
        }
    table = {
        "config": config_path,
        "command": command,
        "base": cfg.base,
        "budget": to_dict(cfg.budget),
        "eval": to_dict(cfg.eval),
        "switches": to_dict(cfg.switches),
        "columns": [{"key": k, "header": h} for k, h, _ in COLUMNS],
        "rows": [{k: r[k] for k in _TABLE_ROW_KEYS} for r in rows],
        "total_row_wall_s": sum(r["train_wall_s"] + r["eval_wall_s"] for r in rows),
        "invocation_wall_s": wall_s,
    }
    (out / "table.json").write_text(json.dumps(table, indent=2, allow_nan=False))
    (out / "table.md").write_text(_render_md(table))
    return table


def _render_md(table: dict[str, Any]) -> str:
    b = table["budget"]
    e = table["eval"]
    lines = [
        "# Table IV ablation (synthetic benchmark)",
        "",
        f"Command: `{table['command']}`  ",
        f"Config: `{table['config']}` (base `{table['base']}`)  ",
        f"Budget per row: {b['total_steps']} steps x batch {b['batch_size']}, crop {b['crop'][0]}x{b['crop'][1]}, "
        f"{b['threads']} thread(s), seed {b['seed']}, device {b['device']}  ",
        f"Evaluation: `{e['data']}`, protocol `{e['protocols'][0]}`; FPS = 1000 / median forward ms at the "
        f"model input size, {e['fps_repeats']} interleaved runs per row over the first {e['fps_frames']} eval "
        f"frames, {b['threads']} thread(s)  ",
        f"Wall time (train + eval, all rows): {table['total_row_wall_s'] / 60:.1f} min",
        "",
        "| Configuration | " + " | ".join(c["header"] for c in table["columns"]) + " |",
        "|---|" + "---|" * len(table["columns"]),
    ]
    for r in table["rows"]:
        cells = []
        for c in table["columns"]:
            k = c["key"]
            show_delta = r["name"] != BASELINE and k != "params_m"
            digits = 2 if k == "params_m" else 1
            cells.append(_fmt(r["values"].get(k), r["deltas"].get(k) if show_delta else None, digits))
        lines.append(f"| {r['label'] or r['name']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Deltas in brackets are row minus baseline (percentage points; FPS difference).",
        "",
        "## Noise: the same checkpoint on the two halves of the evaluation frames",
        "",
        "| Configuration | mIoU half A | mIoU half B | abs(A-B) | Small-obj A | Small-obj B | Occl. rec. A | Occl. rec. B |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        a, bb = r["halves"].get("a", {}), r["halves"].get("b", {})
        diff = None if a.get("miou") is None or bb.get("miou") is None else abs(a["miou"] - bb["miou"])
        lines.append(
            f"| {r['label'] or r['name']} | {_fmt(a.get('miou'))} | {_fmt(bb.get('miou'))} | {_fmt(diff)} | "
            f"{_fmt(a.get('small_miou'))} | {_fmt(bb.get('small_miou'))} | "
            f"{_fmt(a.get('occluded_recall'))} | {_fmt(bb.get('occluded_recall'))} |"
        )
    conditions = sorted({c for r in table["rows"] for c in r["condition_miou"]})
    lines += [
        "",
        "## mIoU (%) per condition",
        "",
        "| Configuration | " + " | ".join(conditions) + " |",
        "|---|" + "---|" * len(conditions),
    ]
    for r in table["rows"]:
        cells = [_fmt(r["condition_miou"].get(c)) for c in conditions]
        lines.append(f"| {r['label'] or r['name']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Runs",
        "",
        "| Configuration | innovations on | fusion.mode | dsaf.adaptive | joint_training | tiny / occl. weight "
        "| train s | s/step | eval s | forward ms | boxes/frame |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        s = r["switch_state"]
        lines.append(
            f"| {r['label'] or r['name']} | {', '.join(r['innovations']) or '-'} | {s['fusion_mode']} | {s['dsaf_adaptive']} | "
            f"{s['joint_training']} | {s['tiny_weight']} / {s['occlusion_weight']} | {r['train_wall_s']:.0f} | "
            f"{_fmt(r['mean_sec_per_step'], digits=2)} | {r['eval_wall_s']:.0f} | "
            f"{r['fps_timing']['median_ms']:.1f} | {r['fps_timing']['mean_boxes']:.1f} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- driver
_EVAL_FRAMES: dict[str, list[dict[str, Any]]] = {}


def _eval_frames(cfg: AblationConfig) -> list[dict[str, Any]]:
    from damcseg_core.data.registry import build_dataset

    key = f"{cfg.eval.data}|{cfg.eval.limit}"
    if key not in _EVAL_FRAMES:
        ds = build_dataset(cfg.eval.data)
        n = len(ds) if cfg.eval.limit is None else min(cfg.eval.limit, len(ds))
        if n < 1:
            raise ConfigError(f"eval.data '{cfg.eval.data}' yields no frame")
        _EVAL_FRAMES.clear()
        _EVAL_FRAMES[key] = [ds[i] for i in range(n)]
    return _EVAL_FRAMES[key]


def run_ablation(
    config_path: str | Path,
    out_dir: str | Path,
    rows: str | None = None,
    resume: bool = False,
    command: str = "",
) -> int:
    """Train, evaluate and time the rows of the ablation config ``config_path`` into ``out_dir``.

    Args:
        rows: comma-separated subset of the config's rows (default: all).
        resume: skip rows finished with the same config; continue interrupted ones from last.pt.
        command: the command line, recorded in ``table.json``.

    Returns:
        0 (progress is printed; ``out_dir/table.md`` and ``table.json`` are written).

    Raises:
        ConfigError / CheckpointError / FileNotFoundError: a bad config, row name or checkpoint.
    """
    import torch

    from damcseg_core.train.trainer import Trainer

    t_start = time.perf_counter()
    cfg = load_yaml(AblationConfig, str(config_path))
    cfg.validate()
    names = list(cfg.rows)
    if rows:
        wanted = [r.strip() for r in rows.split(",") if r.strip()]
        unknown = [r for r in wanted if r not in cfg.rows]
        if unknown or not wanted:
            raise ConfigError(
                f"unknown row(s) {unknown} in --rows; rows defined in {config_path}: {', '.join(cfg.rows)}"
            )
        names = [n for n in cfg.rows if n in wanted]
    out = Path(out_dir)
    trains = {n: row_train_config(cfg, n, out, resume=resume) for n in names}  # fail fast
    torch.set_num_threads(cfg.budget.threads)
    print(
        f"[damcseg-ablate] {len(names)} row(s) {names}; budget {cfg.budget.total_steps} steps x batch "
        f"{cfg.budget.batch_size}, crop {cfg.budget.crop}, {cfg.budget.threads} thread(s) -> {out}",
        flush=True,
    )
    out.mkdir(parents=True, exist_ok=True)
    shared: dict[str, Any] = {}
    for i, name in enumerate(names, 1):
        train = trains[name]
        row_dir = Path(train.out_dir)
        row_file = row_dir / "ablation_row.json"
        tag = f"[damcseg-ablate] row {i}/{len(names)} '{name}'"
        if resume and row_file.is_file():
            done = json.loads(row_file.read_text())
            if done.get("train_config") == _fingerprint(train) and Path(done["checkpoint"]).is_file():
                print(f"{tag}: finished earlier, skipping ({row_file})", flush=True)
                continue
            print(f"{tag}: finished earlier with another config; training it again", flush=True)
            train.resume = "never"
        print(
            f"{tag}: innovations on: {', '.join(cfg.rows[name].innovations) or 'none'}; training "
            f"{train.total_steps} steps -> {row_dir}",
            flush=True,
        )
        t0 = time.perf_counter()
        train_set = None
        if cfg.budget.cache_train_frames:
            from damcseg_core.data.registry import build_dataset

            if train.data.train not in shared:
                shared.clear()
                shared[train.data.train] = _FrameCache(build_dataset(train.data.train))
            train_set = shared[train.data.train]
        resumed = train.resume == "auto" and (row_dir / "last.pt").is_file()
        summary = Trainer(train, train_set=train_set).fit()
        train_wall = time.perf_counter() - t0
        per_step = summary["mean_sec_per_step"]
        print(
            f"{tag}: trained in {train_wall:.0f} s{' (resumed; this session only)' if resumed else ''}, "
            f"{_fmt(per_step, digits=2)} s/step; evaluating",
            flush=True,
        )
        t1 = time.perf_counter()
        ckpt = row_dir / "last.pt"
        evaluation = _evaluate_row(cfg, ckpt, _eval_frames(cfg), row_dir)
        eval_wall = time.perf_counter() - t1
        record = {
            "name": name,
            "label": cfg.rows[name].label,
            "innovations": list(cfg.rows[name].innovations),
            "seed": train.seed,
            "checkpoint": str(ckpt),
            "switch_state": _switch_state(ckpt),
            "train_config": _fingerprint(train),
            "train_wall_s": train_wall,
            "resumed": resumed,  # True: train_wall_s covers only the session that finished the row
            "mean_sec_per_step": per_step,
            "eval_wall_s": eval_wall,
            **evaluation,
        }
        row_file.write_text(json.dumps(record, indent=2, allow_nan=False))
        v = evaluation["values"]
        print(
            f"{tag}: mIoU {_fmt(v['miou'])}, small {_fmt(v['small_miou'])}, BF {_fmt(v['boundary_f'])}, "
            f"occluded recall {_fmt(v['occluded_recall'])} (eval {eval_wall:.0f} s)",
            flush=True,
        )
    print("[damcseg-ablate] timing forward passes (interleaved) and writing the table", flush=True)
    table = _write_table(cfg, str(config_path), out, command, time.perf_counter() - t_start)
    if table:
        print((out / "table.md").read_text())
        print(f"[damcseg-ablate] wrote {out / 'table.md'} and {out / 'table.json'}", flush=True)
    return 0
