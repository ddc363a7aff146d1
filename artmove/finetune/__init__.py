"""Fine-tuning policies (``finetune=`` config group): fraction, stages, gradual, discriminative."""

from artmove.finetune.settings import POLICIES, FinetuneSettings

__all__ = ["POLICIES", "FinetuneSettings"]
