"""How long diffing two RunReports and rendering the PR comment take as the fixture set grows.

    PYTHONPATH=$PWD python benchmarks/diff_render.py [--sizes 1000,10000,100000]

Builds a real RunReport from a small project (real tokenizer), then scales it to N fixtures by
cloning records (ids made unique); the head changes every 10th fixture's tokens and cost. Prints
one row per size: diff time, comment render time (template + size limit), DiffReport JSON size.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from costguard import api  # noqa: E402
from costguard.diff import Baseline, diff_reports  # noqa: E402
from costguard.github import compose_body, gh_len  # noqa: E402
from costguard.render.markdown import render_comment  # noqa: E402
from costguard.report import RunReport  # noqa: E402
from tests.conftest import CHAT_TEMPLATE, FIXTURES_YAML, STACK_YAML, minilm_dir  # noqa: E402


def _seed_report() -> RunReport:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "chat.jinja").write_text(CHAT_TEMPLATE)
        (root / "costguard.yaml").write_text(STACK_YAML.format(tok=minilm_dir()))
        (root / "fixtures").mkdir()
        (root / "fixtures" / "support.yaml").write_text(FIXTURES_YAML)
        return api.run(api.load_project(root / "costguard.yaml"))


def _scaled(seed: RunReport, n: int, *, changed_every: int = 0) -> RunReport:
    data = copy.deepcopy({k: v for k, v in seed.data.items() if k != "records"})
    records = []
    for i in range(n):
        r = copy.copy(seed.records[i % len(seed.records)])
        r["id"] = f"{r['id']}-{i:06d}"
        if changed_every and i % changed_every == 0:
            r["input_tokens"] += 7
            r["cost_usd"] *= 1.1
            r["cost_per_month"] *= 1.1
            r["content_hash"] = "changed"
        records.append(r)
    data["records"] = records
    return RunReport(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    seed = _seed_report()
    print(f"{'fixtures':>9} {'changed':>8} {'diff s':>8} {'render s':>9} {'comment chars':>14} {'diff JSON MB':>13}")
    for n in (int(s) for s in args.sizes.split(",")):
        base, head = _scaled(seed, n), _scaled(seed, n, changed_every=10)
        t0 = time.perf_counter()
        diff = diff_reports(Baseline(base, "base"), head)
        t1 = time.perf_counter()
        body = compose_body(render_comment(diff.data))
        t2 = time.perf_counter()
        size_mb = len(diff.to_json().encode()) / 1e6
        print(f"{n:>9,} {diff.data['fixtures']['changed']:>8,} {t1 - t0:>8.3f} {t2 - t1:>9.3f} "
              f"{gh_len(body):>14,} {size_mb:>13.1f}")


if __name__ == "__main__":
    main()
