"""The analysis steps as data: each step declared once (``registry``: name, help, the settings it
reads, the files it reads and writes, its options, its functions by import path), the one shape
every step returns (``results.StepResult``), and from those declarations and the settings'
the one place that decides what a changed setting redoes (``changes``). Cheap to import (no
numpy, torch or pandas): the CLI builds its parser from it. It may import ``core`` and
``settings``."""
