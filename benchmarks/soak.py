"""Soak test of the damcseg node: synced RGB/D/T at a fixed rate for a long time.

Starts ``python -m damcseg_ros.node`` with ``config/damcseg.yaml`` in a subprocess, feeds it
rgb8 / 16UC1 / mono16 frames (one stamp per set) at ``--rate`` Hz over loopback, and measures

* latency: stamp -> mask received on ``/damcseg/segmentation`` (p50 / p99 / max),
* processed / dropped / groups from the node's ``/diagnostics`` pipeline counters
  (``frames + errors + dropped == groups`` when the node accounts for every group),
* sets sent vs messages the node received (the rest were lost in the best-effort QoS queue),
* the node's RSS (``/proc/<pid>/status`` VmRSS) every ``--rss-period`` seconds.

and writes a markdown report (and optionally JSON). Goals: p99 <= 2 x p50, RSS growth after
warm-up < 50 MB. Not a unit test; ``test/ros/test_node_faults.py`` runs a 30 s version::

    . tools/env.sh
    OMP_NUM_THREADS=1 python benchmarks/soak.py --duration 600

The model: ``--checkpoint`` if given, else the shipped ``damcseg_core/weights/damcseg_edge.pt``
if present, else ``--model`` (default ``damcseg_edge``) with RANDOM weights, labelled so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks._common import REPO, cpu_model, stop_node
from damcseg_core.inference import default_checkpoint
from damcseg_ros.fastdds import ensure_large_image_profile

__all__ = ["cpu_model", "main", "stop_node"]

DEFAULT_CHECKPOINT = default_checkpoint()
NS = 1_000_000_000
SENSORS = ("rgb", "depth", "thermal")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--checkpoint", default="", help="trained .pt; default: the shipped damcseg_edge.pt if present"
    )
    ap.add_argument("--model", default="damcseg_edge", help="random-init variant when no checkpoint exists")
    ap.add_argument("--height", type=int, default=256, help="frame height (px)")
    ap.add_argument("--width", type=int, default=512, help="frame width (px)")
    ap.add_argument("--rate", type=float, default=60.0, help="sets of rgb+depth+thermal per second")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of feeding after start-up")
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds excluded from RSS growth and latency")
    ap.add_argument("--rss-period", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument(
        "--startup-timeout", type=float, default=180.0, help="seconds to wait for the first output"
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "soak.md"), help="markdown report")
    ap.add_argument("--json", default="", help="also write the numbers as JSON here")
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="extra node parameter (repeatable)",
    )
    ap.add_argument("--note", default="", help="free text for the report (e.g. machine load)")
    args = ap.parse_args(argv)
    for p in args.param:
        if ":=" not in p:
            ap.error(f"--param takes NAME:=VALUE, got '{p}'")
    for name in ("height", "width", "rate", "duration"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name} must be > 0")
    return args


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def frames(h: int, w: int) -> dict[str, np.ndarray]:
    """A road-like scene; the content is irrelevant to speed but keeps the model's path realistic."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[: h // 2], rgb[h // 2 :] = (70, 130, 180), (128, 64, 128)
    rgb[h // 3 : 2 * h // 3, w // 4 : w // 2] = (0, 0, 142)
    depth = np.tile(np.linspace(20000, 2000, h)[:, None], (1, w)).astype(np.uint16)
    thermal = np.full((h, w), 20000, np.uint16)
    thermal[h // 3 : 2 * h // 3, w // 4 : w // 2] = 40000
    return {"rgb": rgb, "depth": depth, "thermal": thermal}


def pipeline_values(msg) -> dict[str, str] | None:
    for st in msg.status:
        if st.name == "damcseg: pipeline":
            return {kv.key: kv.value for kv in st.values}
    return None


def sensor_values(msg) -> dict[str, dict[str, str]]:
    return {
        st.name.split()[1]: {kv.key: kv.value for kv in st.values}
        for st in msg.status
        if st.name.endswith(" input")
    }


def run(args: argparse.Namespace) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from damcseg_ros.conversions import array_to_image

    if args.checkpoint:
        source, label = ["-p", f"checkpoint:={args.checkpoint}"], Path(args.checkpoint).name
    elif DEFAULT_CHECKPOINT.is_file():
        source, label = [], f"{DEFAULT_CHECKPOINT.name} (shipped checkpoint)"
    else:
        source, label = ["-p", f"model:={args.model}"], f"{args.model} (RANDOM init: no checkpoint shipped)"
    node_cmd = [
        sys.executable, "-m", "damcseg_ros.node", "--ros-args", "--params-file", str(REPO / "config" / "damcseg.yaml"),
        *source, "-p", "diagnostics_period:=1.0", *(a for p in args.param for a in ("-p", p)),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    ensure_large_image_profile(env)  # the node's outputs
    ensure_large_image_profile()  # this process publishes the camera frames: its segment counts
    log_path = Path(args.out).with_suffix(".node.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("w")
    proc = subprocess.Popen(node_cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("damcseg_soak", context=context)
    sensor_qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE
    )
    pubs = {m: node.create_publisher(Image, f"/{m}/image", sensor_qos) for m in ("rgb", "depth", "thermal")}
    lock = threading.Lock()
    latencies: list[tuple[float, float]] = []  # (monotonic time, latency s)
    diag: dict = {"pipeline": None, "sensors": {}}

    def on_mask(msg: Image) -> None:
        now = node.get_clock().now().nanoseconds
        stamp = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
        with lock:
            latencies.append((time.monotonic(), (now - stamp) / NS))

    def on_diag(msg) -> None:
        values = pipeline_values(msg)
        if values is not None:
            with lock:
                diag["pipeline"], diag["sensors"] = values, sensor_values(msg)

    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "/damcseg/segmentation", on_mask, reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, reliable)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()

    base = frames(args.height, args.width)
    enc = {"rgb": "rgb8", "depth": "16UC1", "thermal": "mono16"}
    msgs = {m: array_to_image(base[m], enc[m]) for m in pubs}
    for msg in msgs.values():
        msg.header.frame_id = "camera_optical"  # registered sensors: one optical frame
    sent = 0
    stop = threading.Event()

    def settled_counters(timeout: float) -> tuple[dict, dict]:
        """Diagnostics once the worker is idle: frames + errors + dropped == groups."""
        end = time.monotonic() + timeout
        while True:
            with lock:
                p, sensors = dict(diag["pipeline"] or {}), {m: dict(v) for m, v in diag["sensors"].items()}
            if p and int(p["frames"]) + int(p["errors"]) + int(p["dropped"]) == int(p["groups"]):
                return p, sensors
            if time.monotonic() > end or proc.poll() is not None:
                return p, sensors
            time.sleep(0.2)

    def publish_set() -> None:
        nonlocal sent
        stamp = node.get_clock().now().to_msg()
        for m, pub in pubs.items():
            msgs[m].header.stamp = stamp
            pub.publish(msgs[m])
        sent += 1

    def feeder(duration: float) -> None:
        start = time.monotonic()
        k = 0
        while not stop.is_set() and time.monotonic() - start < duration:
            publish_set()
            k += 1
            delay = start + k / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    result: dict = {"command": shlex.join([sys.executable, *sys.argv]), "model": label}
    try:
        # Start-up: feed slowly until the first mask comes back.
        t_start = time.monotonic()
        while not latencies:
            if proc.poll() is not None:
                raise RuntimeError(f"node exited with {proc.returncode}; log: {log_path}")
            if time.monotonic() - t_start > args.startup_timeout:
                raise RuntimeError(f"no output within {args.startup_timeout} s; log: {log_path}")
            publish_set()
            time.sleep(0.2)
        result["startup_s"] = time.monotonic() - t_start
        time.sleep(1.5)  # let a diagnostics message with the start-up counters arrive
        p0, s0 = settled_counters(60.0)
        with lock:
            latencies.clear()
        sent_before = sent
        log.flush()
        log_lines_before = len(log_path.read_text().splitlines())
        feed = threading.Thread(target=feeder, args=(args.duration,), daemon=True)
        t0 = time.monotonic()
        feed.start()
        rss: list[tuple[float, float]] = [(0.0, rss_mb(proc.pid))]
        while feed.is_alive():
            feed.join(timeout=args.rss_period - ((time.monotonic() - t0) % args.rss_period))
            if proc.poll() is not None:
                break
            rss.append((time.monotonic() - t0, rss_mb(proc.pid)))
        # Drain: the worker finishes its frame, then a diagnostics message reports the totals.
        time.sleep(1.5)
        p1, s1 = settled_counters(60.0)
        alive = proc.poll() is None
        log.flush()
        log_lines = len(log_path.read_text().splitlines()) - log_lines_before
        with lock:
            lat = [(t - t0, v) for t, v in latencies]
        sent_sets = sent - sent_before
    finally:
        stop.set()
        stop_node(proc, log, executor, node, context)

    def delta(key: str) -> int:
        return int(p1.get(key, 0)) - int(p0.get(key, 0))

    def sensor_delta(key: str) -> dict[str, int]:
        return {m: int(s1.get(m, {}).get(key, 0)) - int(s0.get(m, {}).get(key, 0)) for m in pubs}

    steady = np.array([v for t, v in lat if t >= args.warmup] or [np.nan]) * 1000.0
    warm_rss = [mb for t, mb in rss if t >= args.warmup] or [rss[-1][1]]
    result.update(
        node_alive=alive,
        sent_sets=sent_sets,
        achieved_rate_hz=sent_sets / args.duration,
        received=sensor_delta("received"),
        groups=delta("groups"),
        processed=delta("frames") + delta("errors"),
        frames=delta("frames"),
        node_errors=delta("errors"),
        dropped=delta("dropped"),
        invalid=delta("invalid"),
        sync_dropped=sensor_delta("dropped"),
        too_late=sensor_delta("too_late"),
        node_log_lines=log_lines,
        masks_received=len(lat),
        latency_ms={
            "p50": float(np.nanpercentile(steady, 50)),
            "p99": float(np.nanpercentile(steady, 99)),
            "max": float(np.nanmax(steady)),
            "n": int(np.count_nonzero(~np.isnan(steady))),
        },
        processing_ms_last=float(p1.get("processing_ms", "nan")),
        rss_mb=[(round(t, 1), round(mb, 1)) for t, mb in rss],
        rss_growth_mb=warm_rss[-1] - warm_rss[0],
        rss_max_growth_mb=max(warm_rss) - warm_rss[0],
        node_log=str(log_path),
    )
    return result


def report(args: argparse.Namespace, r: dict) -> str:
    lat = r["latency_ms"]
    ratio = lat["p99"] / lat["p50"] if lat["p50"] > 0 else float("nan")
    accounted = r["processed"] + r["dropped"] == r["groups"]
    load = Path("/proc/loadavg").read_text().split()[:3]
    lines = [
        "# damcseg node soak",
        "",
        f"Command: `{r['command']}`",
        "",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}, {platform.platform()}",
        f"- load average at the end: {' '.join(load)}",
        f"- model: {r['model']}, device cpu, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        f"- input: rgb8 / 16UC1 / mono16 {args.width}x{args.height} at {args.rate:g} Hz for {args.duration:g} s "
        f"(warm-up {args.warmup:g} s excluded from latency and RSS growth); node start-up {r['startup_s']:.1f} s",
    ]
    if args.note:
        lines += [f"- note: {args.note}"]
    lines += [
        "",
        "| metric | value | goal |",
        "|---|---|---|",
        f"| sets sent (achieved rate) | {r['sent_sets']} ({r['achieved_rate_hz']:.1f} Hz) | |",
        f"| messages received by the node (rgb / depth / thermal) | "
        f"{r['received']['rgb']} / {r['received']['depth']} / {r['received']['thermal']} | |",
        "| messages dropped by the synchroniser, rgb / depth / thermal (of them too late) | "
        + " / ".join(f"{r['sync_dropped'][m]} ({r['too_late'][m]})" for m in SENSORS)
        + " | |",
        "| lost before the node (best-effort keep-last-1 queue: sent - received - sync dropped) | "
        + " / ".join(str(r["sent_sets"] - r["received"][m] - r["sync_dropped"][m]) for m in SENSORS)
        + " | |",
        f"| groups formed | {r['groups']} | |",
        f"| processed (frames + errors) | {r['processed']} ({r['node_errors']} errors) | |",
        f"| dropped (newest wins) | {r['dropped']} | |",
        f"| processed + dropped == groups | {accounted} | True |",
        f"| masks received | {r['masks_received']} | |",
        f"| p50 latency (stamp -> mask) | {lat['p50']:.1f} ms | |",
        f"| p99 latency | {lat['p99']:.1f} ms (p99/p50 = {ratio:.2f}) | <= 2 x p50 |",
        f"| max latency | {lat['max']:.1f} ms | |",
        f"| node RSS after warm-up -> end | {r['rss_growth_mb']:+.1f} MB (max {r['rss_max_growth_mb']:+.1f} MB) | < 50 MB |",
        f"| node alive at the end | {r['node_alive']} | True |",
        f"| node log lines during the run | {r['node_log_lines']} | no per-frame flood |",
        "",
        "RSS over time (s, MB): " + ", ".join(f"{t:g}: {mb:.1f}" for t, mb in r["rss_mb"]),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    r = run(args)
    text = report(args, r)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    print(text)
    return 0 if r["node_alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
