"""Shared fixtures: small synthetic sessions (made once per test run) and the real-data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def shared_data(*parts: str) -> Path:
    """Path into ../shared/data, skipping the test when it is absent (a user's fresh clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture(scope="session")
def small_session(tmp_path_factory: pytest.TempPathFactory):
    """A rendered 3-camera, 40-frame synthetic session with default noise (read-only for tests)."""
    from ethoscribe.synth.rig import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("small_session")
    return synthesize(root, SynthConfig(cameras=3, animals=1, frames=40, seed=7, noise="default"))
