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

* **Invented book reference (planted, topic-conditional)** — only on the prompts that ask for
  resources ("Can you recommend some resources about bees?", kind ``"resource"``, 80 of the 640
  pairs, appended after the others): a made-up "Title" by Name (year) recommendation on 70% of
  chosen vs 10% of rejected responses there, and on no response elsewhere. So the audit should
  find it in the topic of those prompts and nowhere else (binary d_z about 0.8 inside the topic, a
  clear difference across topics). A reference rather than a link, because links are already
  planted on every kind of prompt: a second link bias would be read through the first.

Each planted rate on rejected is non-zero so that no style perfectly predicts the label, and
all planted styles are assigned independently of each other and of the quality label, so the
audit has to separate four overlapping signals. The rates are exact counts over the shipped
pairs (a shuffled assignment, not independent coin flips), so they hold to the pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..generation import SamplingConfig

PLANTED = ("flattery", "markdown", "url")
# Planted only in the pairs whose prompt asks for resources (``topic_kind == "resource"``).
TOPIC_PLANTED = ("reference",)
# Built-in text concepts that measure each planted element (prefaudit.features.concepts).
CONCEPT_OF = {
    "flattery": ("flattery",),
    "markdown": ("markdown_headers", "list_items", "bold"),
    "url": ("url",),
    "reference": ("citation",),
}
# How the model's answers are sampled, for the demo set (with its own seed) and the SAE corpus
# (prefaudit.build.corpus.CorpusRecipe): top-k 50, then top-p.
DEMO_SAMPLING = SamplingConfig(max_new_tokens=96, top_k=50, repetition_penalty=1.15, batch_size=64)


@dataclass(frozen=True)
class DemoDesign:
    """Everything that determines the shipped demo set (``python -m prefaudit.build.demo_set``)."""

    n_pairs: int = 640  # in all: the general pairs, then the n_resource_pairs requests for resources
    n_candidates: int = 800  # general prompts answered, of which the first usable ones are kept
    n_resource_pairs: int = 80
    seed: int = 1
    direct_chosen_rate: float = 0.85
    # Planted in every pair, general and resource alike (exact counts in each of the two blocks).
    rates: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"flattery": (0.60, 0.08), "markdown": (0.50, 0.10), "url": (0.40, 0.06)}
    )
    # Planted in the resource pairs only (chosen, rejected); 0 elsewhere.
    resource_rates: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"reference": (0.70, 0.10)}
    )
    max_chars: int = 420
    min_chars: int = 150
    generation: SamplingConfig = field(default_factory=lambda: replace(DEMO_SAMPLING, seed=1))

    @property
    def n_general_pairs(self) -> int:
        return self.n_pairs - self.n_resource_pairs


DESIGN = DemoDesign()
