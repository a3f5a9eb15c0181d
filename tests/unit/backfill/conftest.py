"""Both CAR section indexes (the C one and its pure-Python fallback) run the extraction tests."""

from __future__ import annotations

import pytest

from indexer.backfill import car_index, extract
from indexer.backfill.car_store import CarStore
from tests.conftest import skip_unless_required


@pytest.fixture(params=["native", "python"])
def index_cls(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type[CarStore]:
    """The index class under test; `extract_from_bytes` uses it too while the test runs."""
    if request.param == "native":
        if car_index.SectionIndex is None:
            skip_unless_required("protocol._car_index was not built (no C compiler?)")
        cls: type[CarStore] = car_index.NativeCarIndex
    else:
        cls = car_index.PythonCarIndex
    monkeypatch.setattr(extract, "CarIndex", cls)
    return cls
