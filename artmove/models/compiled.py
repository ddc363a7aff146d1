"""``model.compile=true``: the backbone's forward through torch.compile, eager when compilation fails."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from artmove.errors import ConfigError

log = logging.getLogger(__name__)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompiledForward:
    """Calls ``forward`` (the backbone and its head) compiled by torch.compile; the first failure
    (compilation happens at the first call of each new input shape or mode) says one line and runs
    eager from then on.

    Not an ``nn.Module`` on purpose: the compiled function is no submodule, so the owner's state
    dict (checkpoints) keeps the backbone's own keys, without torch.compile's ``_orig_mod.``, and
    loads into a model that is not compiled.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], mode: str = "default"):
        if mode not in COMPILE_MODES:
            raise ConfigError(f"model.compile_mode={mode!r}: use one of {', '.join(COMPILE_MODES)}.")
        self.forward, self.mode = forward, mode
        self.compiled: Callable[..., torch.Tensor] | None = torch.compile(forward, mode=mode)  # None: eager from now on

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(*inputs)
            except Exception as error:  # noqa: BLE001 - any backend failure (inductor, missing compiler…) means eager
                first_line = (str(error).strip().splitlines() or [""])[0][:300]
                log.warning(
                    "model.compile: torch.compile failed (%s: %s); the model runs eager from here.", type(error).__name__, first_line
                )
                self.compiled = None
                torch._dynamo.reset()
        return self.forward(*inputs)
