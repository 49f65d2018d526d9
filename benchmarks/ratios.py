"""Per-query speedups of every stored 1M run, by median and by mean, side by side.

Reads ``benchmarks/results/scale_1000000*.json`` (the same-window A/B of each run that
has one) and prints, per run: Q5's speedup by the median execution and by the mean one,
the slowest query by each, and the geometric mean of the per-query speedups by each. It
shows how far the per-query figures depend on the statistic; no database needed:

    python3 benchmarks/ratios.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from scale import RESULTS, geomean, speedups  # standard library only at import


def _run_number(path: Path) -> int:
    m = re.search(r"_run(\d+)", path.name)
    return int(m[1]) if m else 10**6  # the latest run has no suffix


def main() -> None:
    print("run      Q5 median  Q5 mean  slowest (median)  slowest (mean)  geomean median/mean")
    for path in sorted(RESULTS.glob("scale_1000000*.json"), key=_run_number):
        ab = json.loads(path.read_text()).get("ab")
        if not ab or "mean_ms" not in ab["schema"]:
            continue
        a, b = ab["schema"], ab["opt5"]
        med, mean = speedups(a, b, "median_ms"), speedups(a, b, "mean_ms")
        slow_med, slow_mean = min(med, key=med.get), min(mean, key=mean.get)
        geo = [geomean(med), geomean(mean)]
        name = "latest" if _run_number(path) == 10**6 else f"run {_run_number(path)}"
        print(f"{name:8s} ×{med['Q5']:<8.2f}  ×{mean['Q5']:<6.2f}  {slow_med:>4s} ×{med[slow_med]:<10.2f}"
              f"  {slow_mean:>4s} ×{mean[slow_mean]:<8.2f}  ×{geo[0]:.2f} / ×{geo[1]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
