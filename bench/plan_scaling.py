"""Benchmark: wall time of `qpool plan` (a fresh process, as an operator runs it) for 1, 5 and 20 pairs.

Goal from the foundation issue: 1 pair <= 3 s, and 20 pairs <= 10x one pair.
Run: .venv/bin/python bench/plan_scaling.py [--repeat N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def stack_with_pairs(n: int) -> dict:
    doc = yaml.safe_load((REPO / "Pulumi.testnet.yaml").read_text())
    template = doc["config"]["quantapool:validatorPairs"][0]
    pairs = []
    for i in range(n):
        pair = copy.deepcopy(template)
        pair["name"] = f"p{i + 1}"
        pair["primary"]["privateIp"] = f"10.42.1.{30 + 2 * i}"
        pair["backup"]["privateIp"] = f"10.42.1.{31 + 2 * i}"
        pairs.append(pair)
    doc["config"]["quantapool:validatorPairs"] = pairs
    return doc


def time_plan(config_file: Path) -> float:
    qpool = Path(sys.executable).parent / "qpool"
    start = time.perf_counter()
    subprocess.run([str(qpool), "plan", "--stack", "testnet", "--config-file", str(config_file), "--json"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 5, 20):
            path = Path(tmp) / f"pairs-{n}.yaml"
            path.write_text(yaml.safe_dump(stack_with_pairs(n)))
            samples = [time_plan(path) for _ in range(args.repeat)]
            results[n] = statistics.median(samples)
            print(f"pairs={n:>2}  median={results[n]:.2f}s  samples={', '.join(f'{s:.2f}' for s in samples)}")
    ratio = results[20] / results[1]
    print(f"1 pair: {results[1]:.2f}s (goal <= 3 s)  20/1 ratio: {ratio:.1f}x (goal <= 10x)")


if __name__ == "__main__":
    main()
