"""The demo (README's main command): a synthetic drive through a live ROS graph, then a report.

1. writes a synthetic drive (day, dusk, night, fog; crowded and empty stretches; a thermal
   dropout window and a depth glitch) to a rosbag2;
2. starts the damcseg node (shipped checkpoint, ``use_sim_time``), a recorder of every output
   topic, and a replay of the bag with its recorded timing and ``/clock`` — all on loopback;
3. evaluates the recorded outputs against the ground truth in the input bag and writes a
   self-contained HTML report, then prints where everything is and a short summary.

Run: ``make demo`` or ``python -m damcseg_ros.demo [--seconds 60] [--out runs/demo]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from damcseg_core.inference import default_checkpoint
from damcseg_ros.fastdds import ensure_large_image_profile

__all__ = ["OUTPUT_TOPICS", "main", "run_demo"]

ROOT = Path(__file__).resolve().parents[1]
NODE_NAME = "damcseg"
OUTPUT_TOPICS = {
    f"/{NODE_NAME}/segmentation": "sensor_msgs/msg/Image",
    f"/{NODE_NAME}/detections": "vision_msgs/msg/Detection2DArray",
    f"/{NODE_NAME}/scene_complexity": "damcseg_ros/msg/SceneComplexity",
    f"/{NODE_NAME}/label_info": "vision_msgs/msg/LabelInfo",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}


def _step(i: int, n: int, text: str) -> None:
    print(f"[{i}/{n}] {text}", flush=True)


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    # Fast DDS: large shared-memory segment so best-effort camera-size images arrive (the one policy).
    ensure_large_image_profile(env)
    return env


def _stop(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def write_input_bag(out: Path, seconds: float, fps: float, size: tuple[int, int], seed: int) -> Path:
    """Generate the synthetic drive and write it to ``out/input_bag``; returns the bag path."""
    from damcseg_core.data.demo_drive import demo_drive_frames, demo_dropouts
    from damcseg_core.data.rosbag_io import write_drive_bag

    bag = out / "input_bag"
    frames = demo_drive_frames(seconds=seconds, fps=fps, size=size, seed=seed)
    write_drive_bag(bag, frames, dropouts=demo_dropouts(seconds))
    return bag


def run_demo(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = _env()
    n = 5
    size = tuple(int(v) for v in args.size.lower().split("x"))

    _step(
        1,
        n,
        f"writing a {args.seconds:.0f} s synthetic drive ({args.fps:g} Hz, {size[0]}x{size[1]}) to a rosbag2",
    )
    t0 = time.monotonic()
    bag = write_input_bag(out, args.seconds, args.fps, size, args.seed)
    print(f"      {bag} ({time.monotonic() - t0:.1f} s)", flush=True)

    if args.model:
        checkpoint, model_args = "", ["-p", f"model:={args.model}"]
        print(f"      using random-init {args.model} as asked (outputs meaningless)")
    else:
        default = default_checkpoint()
        checkpoint = args.checkpoint or (str(default) if default.is_file() else "")
        model_args = ["-p", f"checkpoint:={checkpoint}"] if checkpoint else ["-p", "model:=damcseg_edge"]
        if not checkpoint:
            print(
                "      WARNING: no trained checkpoint found; using random-init damcseg_edge (outputs meaningless)"
            )
    node_cmd = [
        sys.executable, "-m", "damcseg_ros.node", "--ros-args", "-r", f"__node:={NODE_NAME}",
        "--params-file", str(ROOT / "config" / "damcseg.yaml"), "-p", "use_sim_time:=true", *model_args,
        "-r", "rgb/image:=/camera/rgb/image_raw", "-r", "depth/image:=/camera/depth/image_raw",
        "-r", "thermal/image:=/camera/thermal/image_raw",
    ]  # fmt: skip
    rec_cmd = [sys.executable, "-m", "damcseg_ros.recorder", str(out / "output_bag")]
    for topic, msgtype in OUTPUT_TOPICS.items():
        rec_cmd += ["--topic", f"{topic}:{msgtype}"]
    rec_cmd += ["--latched", f"/{NODE_NAME}/label_info"]
    replay_cmd = [
        sys.executable, "-m", "damcseg_ros.replay", str(bag), "--rate", str(args.rate),
        "--start-delay", "0.5", "--publish-log", str(out / "publish_log.csv"),
        "--wait-for", "/camera/rgb/image_raw", "/camera/depth/image_raw", "/camera/thermal/image_raw",
    ]  # fmt: skip

    _step(2, n, "starting the damcseg node and the output recorder (loopback only)")
    logs = {name: open(out / f"{name}.log", "w") for name in ("node", "recorder", "replay")}
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["node"] = subprocess.Popen(node_cmd, env=env, stdout=logs["node"], stderr=subprocess.STDOUT)
        procs["recorder"] = subprocess.Popen(
            rec_cmd, env=env, stdout=logs["recorder"], stderr=subprocess.STDOUT
        )
        if not _wait_for_log(out / "node.log", "active", procs["node"], timeout=120):
            print(f"error: the node did not become active; see {out / 'node.log'}", file=sys.stderr)
            return 1

        _step(
            3, n, f"replaying the bag at x{args.rate:g} with /clock (about {args.seconds / args.rate:.0f} s)"
        )
        procs["replay"] = subprocess.Popen(
            replay_cmd, env=env, stdout=logs["replay"], stderr=subprocess.STDOUT
        )
        t0 = time.monotonic()
        while procs["replay"].poll() is None:
            time.sleep(5.0)
            elapsed = time.monotonic() - t0
            print(f"      {elapsed:5.0f} s / ~{args.seconds / args.rate:.0f} s replayed", flush=True)
            for name in ("node", "recorder"):
                if procs[name].poll() is not None:
                    print(f"error: {name} exited early; see {out / (name + '.log')}", file=sys.stderr)
                    return 1
        if procs["replay"].returncode != 0:
            print(f"error: replay failed; see {out / 'replay.log'}", file=sys.stderr)
            return 1
        time.sleep(2.0)  # the last frames leave the node
    finally:
        _stop(procs["recorder"], signal.SIGTERM) if "recorder" in procs else None
        for name in ("replay", "node"):
            if name in procs:
                _stop(procs[name])
        for f in logs.values():
            f.close()

    _step(4, n, "evaluating the recorded outputs against the ground truth")
    from damcseg_core.eval.drive_report import evaluate_drive
    from damcseg_ros.record_decoding import read_node_outputs

    summary = evaluate_drive(
        input_bag=bag,
        records=read_node_outputs(out / "output_bag", NODE_NAME),
        publish_log=out / "publish_log.csv",
        out_dir=out,
        model_label=checkpoint or f"{args.model or 'damcseg_edge'} (random init)",
    )

    _step(5, n, "done")
    print(f"      report:      {out / 'report.html'}")
    print(f"      input bag:   {bag}")
    print(f"      output bag:  {out / 'output_bag'}")
    for line in summary:
        print(f"      {line}")
    return 0


def _wait_for_log(path: Path, needle: str, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if needle in path.read_text(errors="replace"):
            return True
        time.sleep(0.2)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="damcseg-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "demo", help="output folder (replaced)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the synthetic drive")
    parser.add_argument("--fps", type=float, default=10.0, help="camera rate of the drive")
    parser.add_argument("--size", default="256x512", help="HxW of the cameras")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--checkpoint", default="", help="checkpoint (default: the shipped edge model)")
    parser.add_argument(
        "--model", default=None, help="use this variant with random weights instead (tests only)"
    )
    args = parser.parse_args(argv)
    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())
