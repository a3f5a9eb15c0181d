"""The section index of a streamed repo CAR: which one this installation uses.

`CarIndex` frames a CAR as it streams in and finds any of its blocks by CID afterwards. Two
implementations give the same answers:

- `NativeCarIndex` (used when the C extension `protocol._car_index` was built at install): every
  section is framed and filed in C; its index takes 23-46 bytes a section (16-byte slots).
- `PythonCarIndex` (car_index_python.py, the fallback on machines without a C compiler): frames
  in Python and keeps only the blocks an fm.plyr.* walk can need, with a rescan for the rest.

`NATIVE_FRAMING` says which one `CarIndex` is; PLYR_CAR_INDEX=python forces the fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from indexer.backfill.car_index_python import PythonCarIndex
from indexer.backfill.car_store import DEFAULT_MEMORY_LIMIT, CarStore, parse_car_header
from indexer.settings import BackfillSettings
from protocol.car import MAX_SECTION, CarError

if TYPE_CHECKING:  # mypy reads the extension's stub, _car_index.pyi
    from protocol._car_index import SectionIndex
else:
    try:
        from protocol._car_index import SectionIndex
    except ImportError:  # built without a C compiler: the pure-Python index is used
        SectionIndex = None


class NativeCarIndex(CarStore):
    """A CarStore whose sections are framed and filed by the C `SectionIndex`."""

    def __init__(
        self,
        *,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        spill_dir: str | Path | None = None,
        max_section: int = MAX_SECTION,
    ) -> None:
        if SectionIndex is None:
            raise RuntimeError("protocol._car_index was not built (no C compiler at install)")
        super().__init__(memory_limit=memory_limit, spill_dir=spill_dir, max_section=max_section)
        self._sections: SectionIndex | None = None
        self._header = bytearray()  # the header's bytes until it is complete

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._store(chunk)
        self.size += len(chunk)
        if self._sections is None:
            self._header += chunk
            parsed = parse_car_header(self._header)
            if parsed is None:
                return
            self.roots, start = parsed
            self._sections = SectionIndex(start, self._max_section)
            with memoryview(self._header) as header:
                self._frame(header[start:])
            self._header = bytearray()
            return
        self._frame(chunk)

    def _index_whole(self, data: bytes) -> None:
        parsed = parse_car_header(data)
        if parsed is None:
            raise CarError("truncated CAR header")
        self.roots, start = parsed
        self._sections = SectionIndex(start, self._max_section)
        with memoryview(data) as view:
            self._frame(view[start:])

    def _frame(self, data: bytes | memoryview) -> None:
        assert self._sections is not None
        try:
            self._sections.feed(data)
        except ValueError as exc:
            raise CarError(str(exc)) from None

    def finish(self) -> None:
        if self._sections is None:
            raise CarError("truncated CAR header")
        try:
            self._sections.finish()
        except ValueError as exc:
            raise CarError(str(exc)) from None
        if self._file is not None:
            self._file.flush()

    def locations(self, cid: bytes) -> list[tuple[int, int]]:
        return self._sections.find(cid) if self._sections is not None else []

    @property
    def indexed_blocks(self) -> int:
        return self._sections.sections if self._sections is not None else 0

    @property
    def index_memory(self) -> int:
        """Bytes held by the C index (the stored CAR bytes not included)."""
        return self._sections.memory if self._sections is not None else 0


NATIVE_FRAMING = SectionIndex is not None and BackfillSettings.from_env().car_index != "python"
CarIndex: type[CarStore] = NativeCarIndex if NATIVE_FRAMING else PythonCarIndex

__all__ = ["NATIVE_FRAMING", "CarIndex", "NativeCarIndex", "PythonCarIndex"]
