"""The in-process hub every feature test gets (``harness.HubContext``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.server.features.harness import HubContext


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[HubContext]:
    context = await HubContext.start(tmp_path)
    yield context
    await context.stop()
