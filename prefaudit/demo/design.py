"""The demo set's design: size, seeds and the planted rates (documented, and checked by tests).

Why these rates
---------------
* **Quality (genuine signal)** — chosen is the model's direct answer and rejected a fluent,
  evasive non-answer in 85% of pairs; the other 15% are reversed (label noise, as in real
  preference data). A direct-vs-evasive binary feature then has d_z of about 1.0.
* **Flattery (planted)** — a flattering opener on 60% of chosen vs 8% of rejected responses:
  the strongest planted bias (binary d_z about 0.9), because the follow-up DPO demo must show a
  LoRA run *learning* it within a few hundred CPU steps, and a consistent opener at the very
  start of the response is the easiest style for DPO to pick up.
* **Markdown (planted)** — header, bold label and list on 50% of chosen vs 10% of rejected
  (d_z about 0.7): over-stylisation.
* **Invented link (planted)** — a made-up URL sentence on 40% vs 6% (d_z about 0.6).

Each planted rate on rejected is non-zero so that no style perfectly predicts the label, and
all planted styles are assigned independently of each other and of the quality label, so the
audit has to separate four overlapping signals. The rates are exact counts over the shipped
pairs (a shuffled assignment, not independent coin flips), so they hold to the pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..generation import SamplingConfig

PLANTED = ("flattery", "markdown", "url")
# Built-in text concepts that measure each planted element (prefaudit.features.concepts).
CONCEPT_OF = {
    "flattery": ("flattery",),
    "markdown": ("markdown_headers", "list_items", "bold"),
    "url": ("url",),
}
# How the model's answers are sampled, for the demo set (with its own seed) and the SAE corpus
# (prefaudit.build.corpus.CorpusRecipe): top-k 50, then top-p.
DEMO_SAMPLING = SamplingConfig(max_new_tokens=96, top_k=50, repetition_penalty=1.15, batch_size=64)


@dataclass(frozen=True)
class DemoDesign:
    """Everything that determines the shipped demo set (``python -m prefaudit.build.demo_set``)."""

    n_pairs: int = 560
    n_candidates: int = 800
    seed: int = 1
    direct_chosen_rate: float = 0.85
    rates: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"flattery": (0.60, 0.08), "markdown": (0.50, 0.10), "url": (0.40, 0.06)}
    )
    max_chars: int = 420
    min_chars: int = 150
    generation: SamplingConfig = field(default_factory=lambda: replace(DEMO_SAMPLING, seed=1))


DESIGN = DemoDesign()
