"""Fine-tuning policies (``finetune=`` config group) and the layer mechanics they share.

``layers``: weighted layers, timm blocks, heads and norm layers of a backbone (no policy in it);
``policies``: one class per policy; ``gradual``: the callback of gradual unfreezing.
"""

from artmove.finetune.policies import Discriminative, FinetunePolicy, Fraction, Gradual, Stages

__all__ = ["Discriminative", "FinetunePolicy", "Fraction", "Gradual", "Stages"]
