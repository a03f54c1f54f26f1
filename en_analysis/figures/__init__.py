"""Every picture of a run: the static figures (``plotting``), the interactive explorer page
(``explorer``), and ``Run``, the run folder a notebook opens, which can show its explorer. It may
import ``core``, ``settings``, ``steps``, ``nn``, ``data``, ``training``, ``run`` and
``analysis``."""
