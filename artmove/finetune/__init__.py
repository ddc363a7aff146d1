"""Fine-tuning policies (``finetune=`` config group) and the layer mechanics they share.

``layers``: weighted layers, timm blocks, the head and norm layers of a network (no policy in it);
``policies``: one class per policy, and the :class:`Finetuning` that binds one to a network.
"""

from artmove.finetune.policies import POLICIES, Discriminative, FinetunePolicy, Finetuning, Fraction, Gradual, Stages, create_policy

__all__ = ["POLICIES", "Discriminative", "FinetunePolicy", "Finetuning", "Fraction", "Gradual", "Stages", "create_policy"]
