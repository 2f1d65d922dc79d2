"""Large camera images over Fast DDS on one machine: sent vs received, with and without our profile.

A publisher process and a subscriber process (plain rclpy, no model, ``sensor_msgs/Image``), both
on loopback (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``). Every configuration

    size {256x512, 480x640, 720x1280} x encoding {rgb8, 16UC1} x rate {10, 30} Hz

gets its own topic and is published for ``--duration`` seconds, one after the other; the subscriber
counts what arrives. That runs once per input QoS {best_effort, reliable} (keep last 1, volatile:
the node's sensor-data QoS) and once per Fast DDS setting:

* ``off``: no XML profile (``FASTDDS_DEFAULT_PROFILES_FILE`` / ``FASTRTPS_DEFAULT_PROFILES_FILE``
  unset, ``SKIP_DEFAULT_XML=1``): what a stock ROS 2 install does,
* ``on``: ``config/fastdds_large_images.xml`` (the repository default, see ``tools/env.sh``).

Run (about 2.5 min)::

    . tools/env.sh
    python benchmarks/dds_large_images.py --out benchmarks/results/dds_large_images.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import REPO, cpu_model

PROFILE = REPO / "config" / "fastdds_large_images.xml"
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
SIZES = ((256, 512), (480, 640), (720, 1280))
ENCODINGS = {"rgb8": 3, "16UC1": 2}  # bytes per pixel
RATES = (10.0, 30.0)
QOS = ("best_effort", "reliable")
DONE_TOPIC = "/dds_bench/done"


def topic(h: int, w: int, enc: str, rate: float) -> str:
    return f"/dds_bench/img_{h}x{w}_{enc}_{int(rate)}hz"


def configs(args: argparse.Namespace) -> list[dict]:
    return [
        {"h": h, "w": w, "enc": enc, "rate": rate, "topic": topic(h, w, enc, rate)}
        for (h, w) in args.sizes
        for enc in args.encodings
        for rate in args.rates
    ]


def qos_profile(reliability: str):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    rel = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=1, reliability=rel, durability=DurabilityPolicy.VOLATILE
    )


def fastdds_env(fix: bool, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ROS process with (``fix``) or without our Fast DDS profile."""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["RMW_IMPLEMENTATION"] = env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    for var in PROFILE_VARS:
        env.pop(var, None)
    if fix:  # FASTRTPS_DEFAULT_PROFILES_FILE is the Fast DDS 2.x name (Humble/Jazzy); kilted warns on it
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
        env.pop("SKIP_DEFAULT_XML", None)
    else:
        env["SKIP_DEFAULT_XML"] = "1"  # no DEFAULT_FASTDDS_PROFILES.xml from the working directory either
    return env


# ---------------------------------------------------------------------- child processes
def subscriber(args: argparse.Namespace) -> int:
    """Count messages per topic until the publisher says it is done; print the counts as JSON."""
    import rclpy
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    rclpy.init()
    node = rclpy.create_node("dds_bench_sub")
    counts: dict[str, int] = {}
    done: list[str] = []
    qos = qos_profile(args.qos)
    for c in configs(args):
        counts[c["topic"]] = 0

        def cb(msg, t=c["topic"]) -> None:
            counts[t] += 1

        node.create_subscription(Image, c["topic"], cb, qos)
    node.create_subscription(String, DONE_TOPIC, lambda m: done.append(m.data), QoSProfile(depth=10))
    deadline = time.monotonic() + args.child_timeout
    while not done and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({"received": counts, "done": bool(done)}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def publisher(args: argparse.Namespace) -> int:
    """Publish every configuration in turn; print what was sent as JSON."""
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from damcseg_ros.conversions import array_to_image

    rclpy.init()
    node = rclpy.create_node("dds_bench_pub")
    qos = qos_profile(args.qos)
    cfgs = configs(args)
    pubs = {c["topic"]: node.create_publisher(Image, c["topic"], qos) for c in cfgs}
    done_pub = node.create_publisher(String, DONE_TOPIC, QoSProfile(depth=10))
    deadline = time.monotonic() + 30.0
    while (
        any(p.get_subscription_count() == 0 for p in pubs.values()) or done_pub.get_subscription_count() == 0
    ):
        if time.monotonic() > deadline:
            print(json.dumps({"error": "subscriber not matched within 30 s"}), flush=True)
            return 1
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(0.5)  # let the matching settle on both sides
    rng = np.random.default_rng(0)
    sent: dict[str, int] = {}
    for c in cfgs:
        shape = (c["h"], c["w"], 3) if c["enc"] == "rgb8" else (c["h"], c["w"])
        dtype = np.uint8 if c["enc"] == "rgb8" else np.uint16
        arr = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
        msg = array_to_image(arr, c["enc"])
        msg.header.frame_id = "camera_optical"
        pub, n = pubs[c["topic"]], round(args.duration * c["rate"])
        t0 = time.monotonic()
        for k in range(n):
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            delay = t0 + (k + 1) / c["rate"] - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sent[c["topic"]] = n
        time.sleep(args.gap)  # the last sample drains before the next configuration starts
    for _ in range(5):
        done_pub.publish(String(data="done"))
        time.sleep(0.1)
    print(json.dumps({"sent": sent}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# ---------------------------------------------------------------------- orchestration
def run_pair(args: argparse.Namespace, fix: bool, qos: str, domain: int) -> dict[str, dict]:
    env = fastdds_env(fix and args.fix_side in ("both", "sub"))
    env.update(ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    pub_env = fastdds_env(fix and args.fix_side in ("both", "pub"), env)
    common = [
        "--qos", qos, "--duration", str(args.duration), "--gap", str(args.gap),
        "--sizes", *[f"{h}x{w}" for h, w in args.sizes], "--encodings", *args.encodings,
        "--rates", *[f"{r:g}" for r in args.rates],
    ]  # fmt: skip
    me = [sys.executable, "-m", "benchmarks.dds_large_images"]
    sub = subprocess.Popen(
        [*me, "--role", "sub", *common], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    pub = subprocess.Popen(
        [*me, "--role", "pub", *common], cwd=REPO, env=pub_env, stdout=subprocess.PIPE, text=True
    )
    pub_out, _ = pub.communicate(timeout=args.child_timeout + 30)
    try:
        sub_out, _ = sub.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        sub.kill()
        sub_out, _ = sub.communicate()
    sent = _last_json(pub_out).get("sent", {})
    received = _last_json(sub_out).get("received", {})
    return {
        c["topic"]: dict(c, sent=sent.get(c["topic"], 0), received=received.get(c["topic"], 0))
        for c in configs(args)
    }


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return {}


def table(results: dict[tuple[str, str], dict[str, dict]], args: argparse.Namespace) -> str:
    cols = [(fix, qos) for qos in args.qos_list for fix in args.fix_list]
    head = "| size (HxW) | encoding | MB | Hz | " + " | ".join(f"{q}, profile {f}" for f, q in cols) + " |"
    lines = [head, "|" + "---|" * (4 + len(cols))]
    for c in configs(args):
        mb = c["h"] * c["w"] * ENCODINGS[c["enc"]] / 1e6
        cells = []
        for col in cols:
            r = results[col][c["topic"]]
            pct = 100.0 * r["received"] / r["sent"] if r["sent"] else 0.0
            cells.append(f"{r['received']}/{r['sent']} ({pct:.0f}%)")
        lines.append(
            f"| {c['h']}x{c['w']} | {c['enc']} | {mb:.2f} | {c['rate']:g} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = cpu_model()

    def sysctl(name: str) -> str:
        p = Path("/proc/sys") / name.replace(".", "/")
        return p.read_text().strip() if p.exists() else "?"

    shm = os.statvfs("/dev/shm") if Path("/dev/shm").exists() else None
    shm_gb = f"{shm.f_frsize * shm.f_blocks / 2**30:.0f} GiB" if shm else "none"
    try:
        from importlib.metadata import version

        fastdds = version("ros-fastdds")
        rmw = version("ros-rmw-fastrtps-cpp")
    except Exception:  # a normal ROS install has no such dists
        fastdds = rmw = "?"
    return (
        f"{cpu}, {os.cpu_count()} cores; Fast DDS {fastdds}, rmw_fastrtps_cpp {rmw}; "
        f"net.core.rmem_max={sysctl('net.core.rmem_max')}, rmem_default={sysctl('net.core.rmem_default')}, "
        f"wmem_max={sysctl('net.core.wmem_max')}; /dev/shm {shm_gb}; "
        f"load average at start {' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=("main", "pub", "sub"), default="main", help=argparse.SUPPRESS)
    ap.add_argument("--qos", default="best_effort", help=argparse.SUPPRESS)
    ap.add_argument(
        "--fix", choices=("off", "on", "both"), default="both", help="with/without the XML profile"
    )
    ap.add_argument(
        "--fix-side", choices=("both", "pub", "sub"), default="both", help="which process gets the profile"
    )
    ap.add_argument("--qos-list", nargs="+", choices=QOS, default=list(QOS), help="input QoS reliabilities")
    ap.add_argument("--sizes", nargs="+", default=[f"{h}x{w}" for h, w in SIZES], help="HxW sizes")
    ap.add_argument("--encodings", nargs="+", choices=tuple(ENCODINGS), default=list(ENCODINGS))
    ap.add_argument("--rates", nargs="+", type=float, default=list(RATES), help="publish rates (Hz)")
    ap.add_argument("--duration", type=float, default=2.5, help="seconds per configuration")
    ap.add_argument("--gap", type=float, default=0.3, help="seconds between configurations")
    ap.add_argument("--child-timeout", type=float, default=240.0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help="also write the Markdown report here")
    args = ap.parse_args(argv)
    args.sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    args.fix_list = {"off": ["off"], "on": ["on"], "both": ["off", "on"]}[args.fix]
    args.command = shlex.join(
        ["python", "benchmarks/dds_large_images.py", *(sys.argv[1:] if argv is None else argv)]
    )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "sub":
        return subscriber(args)
    if args.role == "pub":
        return publisher(args)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    t0 = time.monotonic()
    results = {}
    base_domain = 100 + os.getpid() % 50
    for i, (fix, qos) in enumerate((f, q) for q in args.qos_list for f in args.fix_list):
        results[(fix, qos)] = run_pair(args, fix == "on", qos, base_domain + i)
        print(f"done: profile {fix}, {qos} ({time.monotonic() - t0:.0f} s)", flush=True)
    text = "\n".join(
        [
            f"# Large images over Fast DDS (loopback), {date}",
            "",
            f"Command: `{args.command}`",
            "",
            f"- machine: {info}",
            f"- publisher process -> subscriber process (plain rclpy), keep last 1, volatile; "
            f"{args.duration:g} s per configuration; `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`",
            f"- profile on: `{PROFILE.relative_to(REPO)}` via FASTDDS_DEFAULT_PROFILES_FILE; "
            "profile off: no XML (SKIP_DEFAULT_XML=1)",
            f"- wall time {time.monotonic() - t0:.0f} s",
            "",
            "received / sent (%):",
            "",
            table(results, args),
            "",
        ]
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
