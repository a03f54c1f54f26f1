"""A run's settings, each declared once (type, default, bounds or choices, help, and what a change
to it redoes), their validation, the presets and every choice a setting can take. The CLI builds
its parser from here without importing torch, pandas or scikit-learn. It may import ``core``."""
