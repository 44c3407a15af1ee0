"""Hub ids that are not available give one clear UserError."""

import pytest

from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.hub import from_pretrained
from tests.fixtures_ip2p import offline  # noqa: F401  (fixture)


class _Loader:
    calls: list = []

    @classmethod
    def from_pretrained(cls, name, **kwargs):
        cls.calls.append(name)
        return name


def test_uncached_hub_id_offline_names_the_download_command(offline):  # noqa: F811
    from diffusers import StableDiffusionInstructPix2PixPipeline

    name = "ip2p-tests-nobody/never-uploaded-model-4f2a"
    with pytest.raises(UserError) as info:
        from_pretrained(StableDiffusionInstructPix2PixPipeline, name, what="InstructPix2Pix model")
    msg = str(info.value)
    assert name in msg and f"hf download {name}" in msg and "HF_HUB_OFFLINE" in msg and "\n" not in msg


def test_bad_names_and_folders(tmp_path):
    with pytest.raises(UserError, match="no model folder"):
        from_pretrained(_Loader, str(tmp_path / "missing") + "/")
    with pytest.raises(UserError, match="valid hub id"):
        from_pretrained(_Loader, "not a valid id!")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="model_index.json"):
        from_pretrained(_Loader, str(tmp_path / "empty"), required_file="model_index.json")
    assert from_pretrained(_Loader, str(tmp_path / "empty")) == str(tmp_path / "empty")
