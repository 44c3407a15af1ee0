"""Load a model from a local folder or a Hugging Face hub id, with one clear error if it is
not available.

Everything goes through the library's own `from_pretrained(name)`; this module only decides
what a name means and turns "not cached and offline" (or "no such folder") into a
`UserError` that says what to download and how, instead of a stack trace from inside
huggingface_hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ip2p_lib.infra.errors import UserError


def download_hint(repo_id: str) -> str:
    """The one-line instruction for fetching `repo_id` into the local cache."""
    return (
        f"download it once with `hf download {repo_id}` (older huggingface_hub: "
        f"`huggingface-cli download {repo_id}`) on a machine with network access and "
        "HF_HUB_OFFLINE unset, then run again"
    )


def _looks_like_path(name: str) -> bool:
    """True for names a user meant as a folder: absolute, ./ ../ ~ or ending in a separator."""
    return name.startswith(("/", "./", "../", "~", "\\")) or name.endswith(("/", os.sep)) or name.count("/") > 1


def from_pretrained(cls: Any, name_or_path: str, what: str = "model", required_file: str | None = None, **kwargs: Any) -> Any:
    """`cls.from_pretrained(name_or_path, **kwargs)` for a local folder or a hub id.

    `what` names the model in error messages; `required_file` (e.g. "model_index.json" for a
    pipeline) must exist in a local folder. Raises `UserError` when the folder is missing or
    incomplete, the name is not a valid hub id, or the hub id is neither cached nor
    downloadable (offline).
    """
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        if required_file and not (local / required_file).exists():
            raise UserError(f"{local} is not a {what} folder: it has no {required_file}")
        return cls.from_pretrained(str(local), **kwargs)
    if local.exists():
        raise UserError(f"{name_or_path} is a file, not a {what} folder or a hub id")
    if _looks_like_path(name_or_path):
        raise UserError(f"no {what} folder at {name_or_path}")

    from huggingface_hub.errors import HFValidationError, HfHubHTTPError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        raise UserError(f"{name_or_path!r} is neither a local {what} folder nor a valid hub id (owner/name)") from None
    try:
        return cls.from_pretrained(name_or_path, **kwargs)
    except (OSError, HfHubHTTPError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
        where = "is not in the local Hugging Face cache (offline mode)" if offline else "could not be loaded from the hub"
        raise UserError(f"{what} {name_or_path!r} {where}: {download_hint(name_or_path)}") from err
