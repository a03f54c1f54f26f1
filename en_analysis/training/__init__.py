"""Training: the ``train`` command (per-epoch checkpoints, exact resume, torchrun/DDP), the
checkpoint files and a run's identity, and the helpers of torchrun's processes. It may import
``core``, ``settings``, ``steps``, ``nn`` and ``data``."""
