"""Node overhead: end-to-end latency through the ROS node minus the Predictor's time.

Starts the node (``python -m damcseg_ros.node`` with ``config/damcseg.yaml``, the shipped
checkpoint) in a subprocess whose ``Predictor.predict`` and ``DamcsegNode._process`` are wrapped
to log, per frame, the wall clock (``time.time_ns``, the clock the node stamps with) at:

* ``opened``: the first message of the group reached the synchroniser (the node's own field),
* ``process_start``: the worker took the group from the mailbox,
* ``predict_start`` / ``predict_end``: around ``Predictor.predict`` (its ``inference_ms``, the
  model forward alone, is logged too),
* ``process_end``: every output published (mask, colour overlay, detections, scene).

This process replays a stream of synthetic rgb8 / 16UC1 / mono16 frames (a fixed set of
``damcseg_core.data.synthetic`` scenes, cycled, each set stamped with the current time) at
``--rate`` Hz, slow enough that the node is idle when a set arrives, and records when each mask
arrives on ``/damcseg/segmentation``. Per frame:

    e2e      = mask received - stamp
    overhead = e2e - (predict_end - predict_start)          (goal: <= 5 % of the predictor time)

broken down into transport in (stamp -> opened), grouping + hand-off to the worker (opened ->
process_start), conversion of the messages to arrays (process_start -> predict_start), the
Predictor's own pre/post-processing (predictor - inference_ms) and mask out (predict_end -> mask
received: mask message, publish, DDS, subscriber callback). Run::

    . tools/env.sh
    python benchmarks/node_overhead.py --rate 2 --frames 40 --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks._common import REPO, cpu_model, stop_node
from damcseg_core.inference import default_checkpoint
from damcseg_ros.fastdds import ensure_large_image_profile

DEFAULT_CHECKPOINT = default_checkpoint()

__all__ = ["main", "summarise"]

NS = 1_000_000_000
ENCODINGS = {"rgb": "rgb8", "depth": "16UC1", "thermal": "mono16"}
COMPONENTS = (
    ("transport_in_ms", "stamp -> last of the three messages in the node's callback (publish + DDS in)"),
    ("publish_calls_ms", "  of it: the stream's three publish() calls (serialisation)"),
    ("sync_handoff_ms", "last message in -> worker takes the group (synchroniser, mailbox, thread)"),
    ("convert_in_ms", "messages -> numpy arrays (+ depth value checks)"),
    ("mask_out_ms", "predict returns -> mask received (mask message, publish, DDS, callback)"),
)


# ---------------------------------------------------------------------- node side
def node_child(trace_path: str, ros_args: list[str]) -> int:
    """Run the node with timing wrappers that append one JSON line per processed frame."""
    from damcseg_core.inference import Predictor
    from damcseg_ros import node as node_mod

    trace = open(trace_path, "w", buffering=1)  # line-buffered, open for the node's lifetime
    local = threading.local()
    arrivals: dict[tuple[int, str], int] = {}  # (stamp, modality) -> wall clock ns at the callback
    predict, process = Predictor.predict, node_mod.DamcsegNode._process
    on_image = node_mod.DamcsegNode._on_image

    def timed_on_image(self, modality, msg):
        stamp = int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec)
        arrivals[(stamp, modality)] = time.time_ns()
        if len(arrivals) > 300:  # frames the worker never took (dropped): forget the oldest
            for key in sorted(arrivals)[:100]:
                arrivals.pop(key, None)
        on_image(self, modality, msg)

    def timed_predict(self, inputs):
        local.predict_start = time.time_ns()
        result = predict(self, inputs)
        local.predict_end = time.time_ns()
        local.inference_ms = result.inference_ms
        return result

    def timed_process(self, group):
        start = time.time_ns()
        local.predict_start = None
        process(self, group)
        end = time.time_ns()
        if local.predict_start is not None:
            header = group.items[group.reference].header
            stamp = int(header.stamp.sec) * NS + int(header.stamp.nanosec)
            arrived = [arrivals.pop((s, m), None) for m, s in group.stamps.items()]
            record = {
                "stamp": stamp,
                "opened": group.opened_ns,
                "last_in": max((a for a in arrived if a is not None), default=group.opened_ns),
                "process_start": start,
                "predict_start": local.predict_start,
                "predict_end": local.predict_end,
                "process_end": end,
                "inference_ms": local.inference_ms,
                "present": list(group.present),
            }
            trace.write(json.dumps(record) + "\n")

    Predictor.predict = timed_predict
    node_mod.DamcsegNode._on_image = timed_on_image
    node_mod.DamcsegNode._process = timed_process
    return node_mod.main(["damcseg_node_overhead", *ros_args])


# ---------------------------------------------------------------------- feeder side
def stream_frames(size: tuple[int, int], n: int) -> list[dict[str, np.ndarray]]:
    """``n`` synthetic scenes as sensor arrays: rgb8, depth 16UC1 mm, thermal mono16 counts."""
    from benchmarks.models import frame_set

    out = []
    for f in frame_set("mixed", size, n):
        out.append(
            {
                "rgb": (f["rgb"].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8),
                "depth": (f["depth"][0].numpy() * 1000.0).round().clip(0, 65535).astype(np.uint16),
                "thermal": (f["thermal"][0].numpy() * 65535.0).round().astype(np.uint16),
            }
        )
    return out


def run(args: argparse.Namespace) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.time import Time
    from sensor_msgs.msg import Image

    from damcseg_ros.conversions import array_to_image

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Working files: the per-frame trace ends up in the JSON result, the node log only matters on failure.
    work = Path(tempfile.mkdtemp(prefix="damcseg_node_overhead_"))
    trace_path, log_path = work / "trace.jsonl", work / "node.log"
    if args.checkpoint:
        source, label = ["-p", f"checkpoint:={args.checkpoint}"], Path(args.checkpoint).name
    elif DEFAULT_CHECKPOINT.is_file():
        source, label = [], f"{DEFAULT_CHECKPOINT.name} (shipped checkpoint)"
    else:
        source, label = ["-p", "model:=damcseg_edge"], "damcseg_edge (RANDOM init: no checkpoint)"
    ros_args = ["--ros-args", "--params-file", str(REPO / "config" / "damcseg.yaml"), *source,
                "-p", "diagnostics_period:=1.0", "-p", f"qos_reliability:={args.qos}"]  # fmt: skip
    cmd = [sys.executable, "-m", "benchmarks.node_overhead", "--node-child", str(trace_path), "--", *ros_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env["OMP_NUM_THREADS"] = str(args.threads)
    env.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    ensure_large_image_profile(env)  # the node's outputs
    ensure_large_image_profile()  # this process publishes the camera frames: its segment counts
    frames = stream_frames((args.height, args.width), args.stream_frames)
    loadavg_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("damcseg_node_overhead_feeder", context=context)
    reliability = ReliabilityPolicy.RELIABLE if args.qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
    sensor_qos = QoSProfile(depth=1, reliability=reliability, durability=DurabilityPolicy.VOLATILE)
    pubs = {m: node.create_publisher(Image, f"/{m}/image", sensor_qos) for m in ENCODINGS}
    lock = threading.Lock()
    received: dict[int, int] = {}  # stamp -> wall clock ns when the mask arrived

    def on_mask(msg: Image) -> None:
        now = time.time_ns()
        with lock:
            received[int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec)] = now

    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "/damcseg/segmentation", on_mask, reliable)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    msgs = [{m: array_to_image(f[m], ENCODINGS[m]) for m in ENCODINGS} for f in frames]
    for group in msgs:
        for msg in group.values():
            msg.header.frame_id = "camera_optical"
    sent: list[int] = []
    published: dict[int, int] = {}  # stamp -> wall clock ns when the three publish() calls returned

    def publish(k: int) -> int:
        stamp_ns = time.time_ns()
        stamp = Time(nanoseconds=stamp_ns).to_msg()
        for m, pub in pubs.items():
            msgs[k % len(msgs)][m].header.stamp = stamp
            pub.publish(msgs[k % len(msgs)][m])
        published[stamp_ns] = time.time_ns()
        return stamp_ns

    t_wall = time.perf_counter()
    try:
        start = time.monotonic()
        while not received:  # start-up: the model loads, discovery settles
            if proc.poll() is not None:
                raise RuntimeError(f"node exited with {proc.returncode}; log: {log_path}")
            if time.monotonic() - start > args.startup_timeout:
                raise RuntimeError(f"no mask within {args.startup_timeout} s; log: {log_path}")
            publish(0)
            time.sleep(1.0)
        startup_s = time.monotonic() - start
        time.sleep(1.0)
        total = args.warmup_frames + args.frames
        t0 = time.monotonic()
        for k in range(total):
            stamp = publish(k)
            if k >= args.warmup_frames:
                sent.append(stamp)
            delay = t0 + (k + 1) / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        time.sleep(2.0)  # the last mask
    finally:
        stop_node(proc, log, executor, node, context)
    trace = {}
    for line in trace_path.read_text().splitlines():
        rec = json.loads(line)
        trace[rec["stamp"]] = rec
    with lock:
        got = dict(received)
    per_frame = [
        dict(trace[s], received=got[s], published=published[s]) for s in sent if s in trace and s in got
    ]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": args.command,
        "machine": {"cpu": cpu_model(), "cores_nproc": os.cpu_count(), "threads": args.threads},
        "model": label,
        "size": f"{args.height}x{args.width}",
        "rate_hz": args.rate,
        "qos": args.qos,
        "sent": len(sent),
        "matched": len(per_frame),
        "startup_s": startup_s,
        "loadavg_start": loadavg_start,
        "loadavg_end": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "wall_s": time.perf_counter() - t_wall,
        "frames": per_frame,
        "summary": summarise(per_frame),
        "node_log": str(log_path),
    }


def summarise(frames: list[dict]) -> dict:
    """Medians (ms) of every component and of the overhead, per-frame differences first."""
    if not frames:
        return {}
    ms = 1e-6
    cols = {
        "e2e_ms": [(f["received"] - f["stamp"]) * ms for f in frames],
        "predictor_ms": [(f["predict_end"] - f["predict_start"]) * ms for f in frames],
        "inference_ms": [f["inference_ms"] for f in frames],
        "transport_in_ms": [(f["last_in"] - f["stamp"]) * ms for f in frames],
        "publish_calls_ms": [(f["published"] - f["stamp"]) * ms for f in frames],
        "sync_handoff_ms": [(f["process_start"] - f["last_in"]) * ms for f in frames],
        "convert_in_ms": [(f["predict_start"] - f["process_start"]) * ms for f in frames],
        "predictor_prepost_ms": [
            (f["predict_end"] - f["predict_start"]) * ms - f["inference_ms"] for f in frames
        ],
        "mask_out_ms": [(f["received"] - f["predict_end"]) * ms for f in frames],
        "publish_all_ms": [(f["process_end"] - f["predict_end"]) * ms for f in frames],
    }
    cols["overhead_ms"] = [e - p for e, p in zip(cols["e2e_ms"], cols["predictor_ms"])]
    cols["overhead_vs_forward_ms"] = [e - p for e, p in zip(cols["e2e_ms"], cols["inference_ms"])]
    # Inside the node only: from the last input message's callback to the mask, minus predict.
    cols["node_internal_overhead_ms"] = [
        (f["received"] - f["last_in"]) * ms - p for f, p in zip(frames, cols["predictor_ms"])
    ]
    summary = {
        k: {"median": float(np.median(v)), "p90": float(np.percentile(v, 90))} for k, v in cols.items()
    }
    med = {k: v["median"] for k, v in summary.items()}
    summary["overhead_pct_of_predictor"] = 100.0 * med["overhead_ms"] / med["predictor_ms"]
    summary["overhead_pct_of_forward"] = 100.0 * med["overhead_vs_forward_ms"] / med["inference_ms"]
    summary["node_internal_overhead_pct_of_predictor"] = (
        100.0 * med["node_internal_overhead_ms"] / med["predictor_ms"]
    )
    summary["all_three_present"] = sum(len(f["present"]) == 3 for f in frames)
    return summary


def report(r: dict) -> str:
    s = r["summary"]
    lines = [
        f"# damcseg node overhead, {r['date']}",
        "",
        f"Command: `{r['command']}`",
        "",
        f"- machine: {r['machine']['cpu']}, {r['machine']['cores_nproc']} cores; node OMP_NUM_THREADS="
        f"{r['machine']['threads']}",
        f"- model: {r['model']}; frames {r['size']} (H x W) rgb8 / 16UC1 / mono16 at {r['rate_hz']:g} Hz, "
        f"input QoS {r['qos']}",
        f"- frames measured: {r['matched']} of {r['sent']} sent (after warm-up), "
        f"{s.get('all_three_present', 0)} with all three sensors; node start-up {r['startup_s']:.1f} s",
        f"- load average at start: {r['loadavg_start']}; at end: {r['loadavg_end']}",
        "",
    ]
    if not s:
        return "\n".join([*lines, "No frame was matched; see the node log.", ""])
    lines += [
        "| per frame | median ms | p90 ms |",
        "|---|---|---|",
        f"| end to end (stamp -> mask received) | {s['e2e_ms']['median']:.1f} | {s['e2e_ms']['p90']:.1f} |",
        f"| Predictor.predict | {s['predictor_ms']['median']:.1f} | {s['predictor_ms']['p90']:.1f} |",
        f"| of it the model forward (`inference_ms`) | {s['inference_ms']['median']:.1f} "
        f"| {s['inference_ms']['p90']:.1f} |",
        f"| **overhead = e2e - Predictor.predict** | **{s['overhead_ms']['median']:.1f}** "
        f"| {s['overhead_ms']['p90']:.1f} |",
        *(f"| - {text} | {s[k]['median']:.2f} | {s[k]['p90']:.2f} |" for k, text in COMPONENTS),
        f"| overhead inside the node (last message in -> mask received, minus Predictor.predict) "
        f"| {s['node_internal_overhead_ms']['median']:.1f} | {s['node_internal_overhead_ms']['p90']:.1f} |",
        f"| (Predictor pre/post-processing, inside Predictor.predict) | {s['predictor_prepost_ms']['median']:.1f} "
        f"| {s['predictor_prepost_ms']['p90']:.1f} |",
        f"| (all outputs published, after predict; mask first) | {s['publish_all_ms']['median']:.1f} "
        f"| {s['publish_all_ms']['p90']:.1f} |",
        "",
        f"Node overhead: **{s['overhead_pct_of_predictor']:.1f}%** of the Predictor time "
        f"(median overhead / median Predictor.predict; goal <= 5%). Counting the Predictor's own "
        f"pre/post-processing as overhead too (e2e - model forward): {s['overhead_pct_of_forward']:.1f}% "
        "of the model forward. Inside the node only (transport of the inputs excluded): "
        f"{s['node_internal_overhead_pct_of_predictor']:.1f}% of the Predictor time.",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="", help="trained .pt (default: the shipped damcseg_edge.pt)")
    ap.add_argument("--height", type=int, default=256, help="frame height (px)")
    ap.add_argument("--width", type=int, default=512, help="frame width (px)")
    ap.add_argument("--rate", type=float, default=2.0, help="frame sets per second (the node must keep up)")
    ap.add_argument("--frames", type=int, default=40, help="measured frame sets")
    ap.add_argument("--warmup-frames", type=int, default=5, help="frame sets sent before measuring")
    ap.add_argument("--stream-frames", type=int, default=8, help="distinct synthetic scenes, cycled")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the node")
    ap.add_argument(
        "--qos",
        choices=("reliable", "best_effort"),
        default="best_effort",
        help="input QoS of the stream and the node (qos_reliability); best_effort is the node's default",
    )
    ap.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the first mask")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="results folder")
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    ap.add_argument("--node-child", default="", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:  # node child: everything after -- goes to ROS
        cut = argv.index("--")
        argv, ros = argv[:cut], argv[cut + 1 :]
    else:
        ros = []
    args = ap.parse_args(argv)
    args.ros_args = ros
    args.command = shlex.join(["python", "benchmarks/node_overhead.py", *argv])
    if min(args.rate, args.frames, args.height, args.width, args.threads, args.stream_frames) <= 0:
        ap.error("--rate, --frames, --height, --width, --threads and --stream-frames must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.node_child:
        return node_child(args.node_child, args.ros_args)
    r = run(args)
    text = report(r)
    stem = Path(args.out) / f"node_overhead_{r['date'][:10]}{args.tag}"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(r, indent=1))
    print(text)
    print(f"wrote {stem}.md and {stem}.json")
    return 0 if r["matched"] else 1


if __name__ == "__main__":
    sys.exit(main())
