"""Flywheel: user behaviour -> datasets -> LoRA adapters -> gated promotion -> serving."""

__version__ = "0.1.0"
