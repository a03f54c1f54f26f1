"""The analysis steps and their statistics: extraction of the ratios, t-SNE, clustering
metrics, the WordNet comparison, the verdict, the exported tables, and what they compute with
(feature spaces, controls, resampling, tests, calibration). Each step takes a run folder and
returns a ``StepResult``. It may import ``core``, ``settings``, ``steps``, ``nn``, ``data``,
``training`` and ``run``."""
