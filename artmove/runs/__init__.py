"""Run and sweep folders: where a run's files live, results.json, which checkpoint a ``ckpt_path``
means, the folder lock and resuming."""
