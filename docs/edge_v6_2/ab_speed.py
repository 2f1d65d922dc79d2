# v6.1 vs v6.2 model forward, interleaved in one process (docs/edge_v6_2/README.md); run from the repo root
# after `source tools/env.sh`, with runs/edge_v6_1_shipped.pt (docs/edge_v6_2/post_train.sh writes it).
import statistics
import sys
import time

import torch

sys.path.insert(0, ".")
from benchmarks import models as bm
from damcseg_core.checkpoint import load_model

torch.set_num_threads(2)
ms = {
    n: load_model(p, "cpu", expected_name="damcseg_edge").eval()
    for n, p in [("v6.1", "runs/edge_v6_1_shipped.pt"), ("v6.2", "damcseg_core/weights/damcseg_edge.pt")]
}
b = {n: bm._ours_forward_bench(m, (256, 512), "mixed", bm.MODALITIES, False, n, 8) for n, m in ms.items()}
t = {n: [] for n in ms}
with torch.inference_mode():
    for n in b:
        b[n].step(0)
    for r in range(30):
        for n in list(b) if r % 2 else list(b)[::-1]:
            t0 = time.perf_counter()
            b[n].step(r)
            t[n].append(time.perf_counter() - t0)
for n in t:
    print(n, f"median {1000 * statistics.median(t[n]):.1f} ms")
print("ratio v6.2/v6.1", statistics.median(t["v6.2"]) / statistics.median(t["v6.1"]))
