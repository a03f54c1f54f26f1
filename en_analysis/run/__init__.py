"""A run folder seen through one analysis (``RunFolder``): its settings, the files each step
wrote and what they were made from, readers for ratio files, embeddings, tables, checkpoints and
models, and the vocabulary of the long tables (``tables``). It may import ``core``,
``settings``, ``steps``, ``nn``, ``data`` and ``training``."""
