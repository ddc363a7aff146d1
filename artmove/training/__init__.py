"""The Lightning plug-ins a training run is wired with from ``conf/``, one module per config group:
``callbacks`` (conf/callbacks), ``trainer`` (conf/trainer: precision, checkpoint files, sync batch
norm), ``logger`` (conf/logger: W&B), ``tune`` (conf/tune: the learning-rate finder), and
``interrupts`` (how a run stops on a signal)."""
