"""Fixtures of the fault suite: a rig per helpdesk, on each store (see fault_rig.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_rig import HELPDESKS, FaultRig, RigFactory, start_rig, stop_rig

from escbridge.sandbox.driver import available_drivers


@pytest.fixture(params=HELPDESKS)
def helpdesk(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if not available_drivers(only=[name]):
        pytest.skip(f"the {name} connector is not installed")
    return name


@pytest.fixture
def rig(helpdesk: str, store_url: str, tmp_path: Path) -> Iterator[RigFactory]:
    """Start the helpdesk's emulator, a receiver and workers on the store under test."""
    started: list[FaultRig] = []

    def make(fault_seed: int = 0) -> FaultRig:
        made = start_rig(helpdesk, store_url, tmp_path, fault_seed=fault_seed)
        started.append(made)
        return made

    yield make
    for made in started:
        stop_rig(made)
