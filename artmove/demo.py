"""`python -m artmove.demo ckpt_path=… [port=7860]`: a local web page to try a trained model on paintings."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from artmove.errors import ConfigError
from artmove.models.calibration import check_threshold
from artmove.models.ensemble import TrainedEnsemble
from artmove.runs.checkpoints import ensemble_size, open_run
from artmove.utils.cli import exit_on_user_error
from artmove.utils.config import is_number, require_settings

log = logging.getLogger("artmove.demo")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_app(cfg: DictConfig):
    """The page's app for ``cfg.ckpt_path``: the model loads once, here."""
    require_settings(cfg)
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
    except ModuleNotFoundError as error:
        raise ConfigError(f"the demo page needs {error.name}: pip install 'artmove[demo]' (fastapi, uvicorn, python-multipart).") from None
    from artmove.runs.facts import RunFacts
    from artmove.serving.demo_app import create_app, headline_numbers
    from artmove.serving.predictor import Predictor

    check_demo_settings(cfg)
    opened = open_run(cfg.ckpt_path, cfg.get("ensemble"))
    trained = opened.load(cfg.device)
    checkpoints = list(opened.checkpoints)
    facts = RunFacts.of_ensemble(checkpoints, trained) if isinstance(trained, TrainedEnsemble) else RunFacts.of(checkpoints[0], trained)
    headline = headline_numbers(facts)
    predictor = Predictor.from_trained(trained)
    if trained.calibration:  # an ensemble's: its own, fitted when it was opened
        headline["Calibrated"] = f"temperature {trained.calibration['temperature']:.2f}, fitted on validation"
    if cfg.get("uncertain_below") is not None:
        predictor.threshold = float(cfg.uncertain_below)
    if predictor.threshold is not None:
        headline["Not sure below"] = f"{predictor.threshold:.0%}" + (
            "" if cfg.get("uncertain_below") is not None else " (chosen on validation)"
        )
    return create_app(
        predictor,
        headline,
        cfg.top_k,
        int(cfg.max_upload_mb * 1e6),
        int(cfg.max_megapixels * 1e6),
        cfg.max_parallel,
        cfg.max_waiting,
        float(cfg.upload_timeout_s),
    )


def check_demo_settings(cfg: DictConfig) -> None:
    """The page's numbers, one line each, before the model loads."""
    port = cfg.port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"port={port!r}: give a TCP port from 1 to 65535, e.g. port=7860.")
    for key, example, ceiling in (("max_upload_mb", 20, 1000), ("max_megapixels", 50, 500), ("upload_timeout_s", 30, 3600)):
        if not is_number(cfg[key]) or not 0 < cfg[key] <= ceiling:
            raise ConfigError(f"{key}={cfg[key]!r}: give a limit > 0 and at most {ceiling}, e.g. {key}={example}.")
    for key, ceiling in (("top_k", 1000), ("max_parallel", 64), ("max_waiting", 1024)):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or not 1 <= cfg[key] <= ceiling:
            raise ConfigError(f"{key}={cfg[key]!r}: give a whole number from 1 to {ceiling}.")
    check_threshold("uncertain_below", cfg.get("uncertain_below"))
    if cfg.get("ensemble") is not None:
        ensemble_size(cfg.ensemble)  # before the model loads


@hydra.main(version_base="1.3", config_path="pkg://artmove.conf", config_name="demo")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    app = build_app(cfg)
    import uvicorn

    if cfg.host not in LOOPBACK:
        log.warning("host=%s: the page is reachable from other machines, with no login.", cfg.host)
    print(f"Demo page: http://{cfg.host}:{cfg.port}/ (Ctrl+C stops it)", flush=True)
    uvicorn.run(app, host=cfg.host, port=int(cfg.port), log_level="warning")


if __name__ == "__main__":
    main()
