"""Hydra configs, shipped inside the package as ``artmove.conf`` (see pyproject.toml)."""
