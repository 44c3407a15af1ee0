"""The editor: `InstructPix2PixEditor` and `ip2p edit` (§3.2.1, notebook 06_dual_guidance).

- `editor`: prepare / denoise step / decode, with Eq. 3 from `ip2p_lib.guidance`;
- `schedulers`: the samplers by short name; `imageprep`: reading and sizing input images;
- `cli`: the `ip2p edit` command.
"""

from ip2p_lib.editor.editor import EditResult, InstructPix2PixEditor, PreparedEdit, load_editor

__all__ = ["EditResult", "InstructPix2PixEditor", "PreparedEdit", "load_editor"]
