"""Shared fixtures: a tiny random InstructPix2Pix folder built offline (see
`ip2p_lib.infra.random_models.build_tiny_ip2p`). Test modules import the fixtures they use by name."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_ip2p_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved `StableDiffusionInstructPix2PixPipeline` folder with tiny random weights."""
    from ip2p_lib.infra.random_models import build_tiny_ip2p

    return build_tiny_ip2p(tmp_path_factory.mktemp("tiny_ip2p") / "model", seed=0)


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force offline hub behaviour for this test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
