"""Pipelines: one served endpoint made of steps (models, ensembles, switches,
feature lookups, tokenizers), loaded from a version's ``pipeline.toml``.

A pipeline is a model like any other (``runtime = "pipeline"`` in its
``model.toml``), so versions, canaries, shadows, A/B tests and drift apply to
it unchanged. Its model steps are answered by the step models' own batchers,
through the data plane, so a pipeline's requests batch with direct requests
to the same model.

- ``definition``: the schema of ``pipeline.toml``
- ``graph``: the checks made at load (pure): wiring, cycles, datatypes, shapes
- ``steps``: what each kind of step does when run
- ``executor``: runs a checked graph for one request
- ``runtime``: the ``pipeline`` runtime the model catalog serves
"""
