"""How long diffing two RunReports and rendering the PR comment take as the fixture set grows.

    PYTHONPATH=$PWD python benchmarks/diff_render.py [--sizes 1000,10000,100000]

Builds a real RunReport from a small project (real tokenizer), then scales it to N fixtures by
cloning records (ids made unique); the head changes every 10th fixture's tokens and cost (and, in
the last row, every fixture: a price change). Prints one row per case: diff time, DiffReport JSON
serialisation time and size, comment render time (template + size limit) and length.
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
from costguard.compare.diff import Baseline, diff_reports  # noqa: E402
from costguard.integrations.github import compose_body, gh_len  # noqa: E402
from costguard.render.markdown import render_comment  # noqa: E402
from costguard.report.run_report import RunReport  # noqa: E402
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
    render_comment(diff_reports(Baseline(seed, "base"), seed))  # compile the template once
    sizes = [int(s) for s in args.sizes.split(",")]
    cases = [(n, 10) for n in sizes] + [(sizes[-1], 1)]
    print(
        f"{'fixtures':>9} {'changed':>8} {'diff s':>7} {'json s':>7} {'json MB':>8} {'render s':>9} {'comment chars':>14}"
    )
    for n, every in cases:
        base, head = _scaled(seed, n), _scaled(seed, n, changed_every=every)
        t0 = time.perf_counter()
        diff = diff_reports(Baseline(base, "base"), head)
        t1 = time.perf_counter()
        text = diff.to_json()
        t2 = time.perf_counter()
        body = compose_body(render_comment(diff))
        t3 = time.perf_counter()
        print(
            f"{n:>9,} {diff.data['fixtures']['changed']:>8,} {t1 - t0:>7.2f} {t2 - t1:>7.2f} "
            f"{len(text.encode()) / 1e6:>8.1f} {t3 - t2:>9.3f} {gh_len(body):>14,}"
        )


if __name__ == "__main__":
    main()
