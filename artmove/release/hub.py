"""Pushing an export folder to the Hugging Face Hub (private by default; token from the environment)."""

from __future__ import annotations

from pathlib import Path

from artmove.errors import ConfigError


def check_hub_target(repo_id: str) -> None:
    """Before any export work: a ``user/repo`` id and a token (``HF_TOKEN`` or a saved login)."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ConfigError(f"hub={repo_id}: not a Hub repository id ({error}). Give hub=user/repo.") from None
    if "/" not in repo_id:
        raise ConfigError(f"hub={repo_id}: give the owner too, hub=user/{repo_id} (or an organisation).")
    if not get_token():
        raise ConfigError(f"hub={repo_id} needs a Hugging Face token: set HF_TOKEN or run `hf auth login`.")


def push(folder: Path, repo_id: str, private: bool = True) -> str:
    """Create the repository if needed and upload ``folder`` as one commit; the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    api = HfApi()
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo.repo_id, folder_path=str(folder), commit_message="Upload model exported by artmove")
    except OfflineModeIsEnabled:
        raise ConfigError(
            f"hub={repo_id}: offline (HF_HUB_OFFLINE is set), nothing pushed; the export is complete in {folder}. "
            f"Push it later with: hf upload {repo_id} {folder}"
        ) from None
    except Exception as error:  # noqa: BLE001 - HTTP errors, and the transport's own (httpx, httpx2, requests)
        first_line = next(iter(str(error).splitlines()), type(error).__name__)
        raise ConfigError(
            f"hub={repo_id}: push failed ({first_line}); the export is complete in {folder}. "
            f"Push it later with: hf upload {repo_id} {folder}"
        ) from None
    return commit.commit_url
