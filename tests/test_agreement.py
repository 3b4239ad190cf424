"""Small-vs-large agreement from recorded answers (real MiniLM embeddings)."""

from __future__ import annotations

from costguard.engine.quality.agreement import agreement_section
from costguard.model.config import StackConfig
from costguard.model.fixtures import Expect, Fixture, Sampling
from costguard.policy.engine import MetricContext, Rule
from costguard.report.run_report import RunReport
from costguard.text.embeddings import Embedder, EmbeddingCache

CONFIG = StackConfig.model_validate(
    {
        "tiers": [
            {
                "name": n,
                "model": f"m/{n}",
                "tokenizer": {"hf": "unused"},
                "pricing": {"input_per_mtok": 1, "output_per_mtok": 1},
            }
            for n in ("small", "quantized", "large")
        ],
        "traffic": {"requests_per_month": 1000},
    }
)


def fx(fid: str) -> Fixture:
    return Fixture(
        id=fid,
        suite="s",
        weight=1.0,
        messages=[{"role": "user", "content": fid}],
        sampling=Sampling(),
        expect=Expect(),
        file="f.yaml",
        line=1,
    )


ANSWERS = {
    ("refund", "large"): "Refunds reach your card 5-7 business days after we inspect the return.",
    ("refund", "small"): "Once we inspect the return, your refund arrives in 5-7 business days.",
    (
        "refund",
        "quantized",
    ): "Refunds reach your card 5-7 business days after we inspect the return.",
    ("capital", "large"): "The capital of France is Paris.",
    ("capital", "small"): "Our store opens at 9am on weekdays.",  # drifted
    ("only-small", "small"): "no large answer to compare with",
}


def test_agreement_compares_each_tier_with_the_largest() -> None:
    fixtures = [fx("refund"), fx("capital"), fx("only-small")]
    embedder = Embedder(cache=EmbeddingCache.memory())
    section = agreement_section(
        fixtures, CONFIG, lambda f, t: ANSWERS.get((f.id, t.name)), lambda: embedder
    )
    assert section is not None and section["reference_tier"] == "large"
    small, quantized = section["tiers"]["small"], section["tiers"]["quantized"]
    assert small["fixtures"] == 2 and quantized["fixtures"] == 1
    assert quantized["mean"] > 0.99  # the same answer
    assert small["min"] < 0.3 < small["mean"]
    assert section["lowest"][0] == {
        "id": "capital",
        "tier": "small",
        "similarity": round(small["min"], 6),
    }

    from costguard.policy.metrics.quality import (
        _tier_agreement,  # the policy metric reads the section
    )

    report = RunReport({"complete": True, "agreement": section})
    value = _tier_agreement(MetricContext(report=report), Rule(metric="tier_agreement", min=0.9))
    assert value.value == small["mean"] and value.note.startswith(
        "lowest: tier small over 2 fixtures"
    )
    assert agreement_section(fixtures, CONFIG, lambda f, t: None, lambda: embedder) is None
