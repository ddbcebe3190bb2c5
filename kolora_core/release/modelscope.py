"""Optionally, the publish stage also uploads the release to a ModelScope model repo under `<version>/`.

Set by `publish.modelscope_repo`; the token comes from the environment variable MODELSCOPE_API_TOKEN only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kolora_core.errors import KoloraError
from kolora_core.release.assemble import RELEASE_MANIFEST

TOKEN_ENV = "MODELSCOPE_API_TOKEN"


def _without(secret: str, text: str) -> str:
    return " ".join(text.replace(secret, "***").split()) if secret else " ".join(text.split())


def upload_to_modelscope(release_dir: Path, repo_id: str, api: Any = None) -> str:
    """Upload the release under `<version>/` of a ModelScope model repo; returns what happened.

    The token comes only from the environment (never a flag, never logged, scrubbed from error messages).
    A version already in the repo is not uploaded again.
    """
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise KoloraError(f"publish.modelscope_repo is set but {TOKEN_ENV} is not: export the ModelScope access token")
    release = json.loads((release_dir / RELEASE_MANIFEST).read_text(encoding="utf-8"))
    version = release["version"]
    try:
        if api is None:
            from modelscope.hub.api import HubApi

            api = HubApi()
        api.login(token)
        if api.repo_exists(repo_id, repo_type="model", token=token):
            listed = api.get_model_files(repo_id, recursive=True)
            paths = {str(f.get("Path") or f.get("path") or "") for f in listed or [] if isinstance(f, dict)}
            if f"{version}/{RELEASE_MANIFEST}" in paths:
                return f"{repo_id}: version {version} already uploaded, left as it is"
        else:
            api.create_repo(repo_id, token=token, visibility="private", exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(release_dir),
            path_in_repo=version,
            commit_message=f"kolora {release['name']} {version}",
            token=token,
        )
    except KoloraError:
        raise
    except Exception as exc:  # noqa: BLE001 - the hub client raises many types; all mean "upload failed"
        raise KoloraError(
            f"upload to ModelScope repo {repo_id} failed: {type(exc).__name__}: {_without(token, str(exc))}"
        ) from None
    return f"{repo_id}: version {version} uploaded under {version}/"
