"""Sweeps: what a failed job leaves behind, the sweep's summary and exit code, resuming a
requeued job, and one GPU slot per job when a sweep runs jobs in parallel on one machine."""

from artmove.sweeps import devices  # noqa: F401  registers ${gpu_slots:N} used by hydra/launcher=local_gpus
