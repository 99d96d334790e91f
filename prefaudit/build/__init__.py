"""Builders of the shipped artefacts: run by maintainers, never imported by the runtime.

Each writes into ``prefaudit/data`` (or ``docs``) from the embedded SmolLM2, caching what it
generates and reads under the prefaudit cache root (``~/.cache/prefaudit`` unless
``$PREFAUDIT_CACHE`` is set):

* ``python -m prefaudit.build.sae_training`` — the default SAE, ``prefaudit/data/default_sae``
  (:mod:`prefaudit.build.sae_training`, trained on the corpus of :mod:`prefaudit.build.corpus`);
* ``python -m prefaudit.build.demo_set`` — the demo preference set,
  ``prefaudit/data/demo_pairs.jsonl.gz`` (:mod:`prefaudit.build.demo_set`; its rates are
  :mod:`prefaudit.demo.design`);
* ``python -m prefaudit.build.gallery`` — the feature gallery, ``docs/gallery.md`` and the
  model card's gallery section (``docs/MODEL_CARD.md``) (:mod:`prefaudit.build.gallery`).

Shared parts: :mod:`~prefaudit.build.prompts` (the prompt templates and the demo/SAE topic
split), :mod:`~prefaudit.build.styles` (the planted styles and the corpus's praise),
:mod:`~prefaudit.build.trim` (cutting generated answers) and :mod:`~prefaudit.build.corpus`
(cached generation through :mod:`prefaudit.generation`).
"""
