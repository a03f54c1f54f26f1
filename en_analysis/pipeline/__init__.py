"""Running steps: one registered step on a run with its locking, settings and report
(``runner``), every step in order (``reproduce``), and seed replicates (``replicates``). It may
import ``core``, ``settings``, ``steps``, ``nn``, ``data``, ``training``, ``run``, ``analysis``
and ``figures``."""
