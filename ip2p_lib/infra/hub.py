"""Moved: the model loader is `ip2p_lib.infra.models` (one module for every model).

Kept only so that `ip2p_lib.editor.editor` imports unchanged until it is switched to
`from ip2p_lib.infra.models import from_pretrained`; then delete this file."""

from ip2p_lib.infra.models import download_hint, from_pretrained, is_offline

__all__ = ["download_hint", "from_pretrained", "is_offline"]
