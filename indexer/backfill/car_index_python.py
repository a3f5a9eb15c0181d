"""Pure-Python section index of a repo CAR: the fallback when `protocol._car_index` is not built.

It reads the CAR in one pass and keeps a small index: it frames the sections as they arrive,
remembering the position of only the blocks an `fm.plyr.*` MST walk can need: MST nodes (blocks
starting with the map head `{"e": ...`), the commit, and blocks containing the bytes `fm.plyr.`
(every valid plyr record carries its `$type`). Nothing is hashed or decoded here: per-section
work is a few byte reads. A block the index did not keep (a record under an `fm.plyr.` key whose
bytes do not say so, i.e. an invalid one) is found by `rescan`, one more framing pass over the
stored bytes.

CarStore (car_store.py) holds the bytes; `car_index.NativeCarIndex` is the C-speed twin.
"""

from __future__ import annotations

import re
from pathlib import Path

from indexer.backfill.car_store import DEFAULT_MEMORY_LIMIT, CarStore, parse_car_header
from protocol.car import MAX_SECTION, CarError, iter_car_file
from protocol.cid import BLESSED_CID_LEN, cid_to_str, verify_block
from protocol.wire import WireError, read_varint

PLYR_PREFIX = b"fm.plyr."

_LEN_BITS = 24  # packed index value: offset << 24 | length (sections are at most 4 MB)
_LEN_MASK = (1 << _LEN_BITS) - 1
_NODE_HEAD = 0xA2  # an MST node is the 2-entry map {"e": [...], "l": ...}
_NODE_KEY = 0x65  # "e", the first key of that map (third byte, after 0x61)
_PLYR_SEARCH = re.compile(re.escape(PLYR_PREFIX)).finditer


class PythonCarIndex(CarStore):
    """One pass over a CAR: frame its sections, index the blocks an fm.plyr.* walk needs."""

    def __init__(
        self,
        *,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        spill_dir: str | Path | None = None,
        max_section: int = MAX_SECTION,
    ) -> None:
        super().__init__(memory_limit=memory_limit, spill_dir=spill_dir, max_section=max_section)
        self._blocks: dict[bytes, int] = {}
        self._hits: list[int] = []  # absolute positions of "fm.plyr.", consumed from _hit_i
        self._hit_i = 0
        self._tail = b""
        self._carry = b""  # an incomplete section head (varint, CID, first block bytes)
        self._carry_at = 0
        self._skip_to = 0  # end of a block that runs past the data seen so far
        self._pending: tuple[bytes, int, int, bool] | None = None
        self._root = b""
        self._root_at = -1  # absolute offset of the commit CID in the stored bytes, once seen
        self._root_tail = b""

    # ---- input ----

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        start = self.size
        self._store(chunk)
        self.size += len(chunk)
        self._scan(chunk, start)

    def _index_whole(self, data: bytes) -> None:
        self._scan(data, 0)

    def finish(self) -> None:
        """End of input: a section cut short means a truncated CAR."""
        if self.roots is None:
            raise CarError("truncated CAR header")
        if self._carry or self._skip_to > self.size:
            raise CarError("truncated CAR: the last section is incomplete")
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        super().close()
        self._blocks.clear()

    @property
    def indexed_blocks(self) -> int:
        return len(self._blocks)

    def locations(self, cid: bytes) -> list[tuple[int, int]]:
        packed = self._blocks.get(cid)
        if packed is None:
            return []
        return [(packed >> _LEN_BITS, packed & _LEN_MASK)]

    # ---- framing ----

    def _scan(self, chunk: bytes, start: int) -> None:
        # Positions of "fm.plyr." (C-speed search); a match split across two chunks is found in
        # the small bridge of the previous chunk's tail and this chunk's head.
        hits = self._hits
        if self._hit_i > 4096:
            del hits[: self._hit_i]
            self._hit_i = 0
        tail = self._tail
        if tail:
            bridge = tail + chunk[: len(PLYR_PREFIX) - 1]
            j = bridge.find(PLYR_PREFIX)
            while 0 <= j < len(tail):
                hits.append(start - len(tail) + j)
                j = bridge.find(PLYR_PREFIX, j + 1)
        # A compiled literal pattern scans ~2x faster than a bytes.find loop here (bytes.find
        # restarts its setup on every call and skips poorly on text-heavy blocks).
        hits.extend([start + m.start() for m in _PLYR_SEARCH(chunk)])
        keep = len(PLYR_PREFIX) - 1
        self._tail = chunk[-keep:] if len(chunk) >= keep else (tail + chunk)[-keep:]

        off = 0  # where unframed bytes start in `chunk` (no slicing: chunks can be whole CARs)
        if self.roots is None:
            buf = self._carry + chunk if self._carry else chunk
            at = self._carry_at if self._carry else start
            parsed = parse_car_header(buf)
            if parsed is None:
                self._carry, self._carry_at = bytes(buf), at
                return
            self.roots, header_end = parsed
            self._root = self.roots[0]
            self._carry = b""
            if buf is not chunk:
                chunk = buf
                start = at
            off = header_end

        if self._root_at < 0 and self._root:
            # The commit: one C-speed search per chunk until found (cheaper than a check per
            # section); the section around it is recovered and verified when it is needed.
            root = self._root
            i = chunk.find(root, off)
            if i < 0 and self._root_tail:
                bridge = self._root_tail + chunk[: len(root) - 1]
                j = bridge.find(root)
                if 0 <= j < len(self._root_tail):
                    self._root_at = start - len(self._root_tail) + j
            elif i >= 0:
                self._root_at = start + i
            # Bytes before `off` are the header, which names the root too: never search them.
            self._root_tail = (self._root_tail + chunk[off:])[-(len(root) - 1) :]

        end = start + len(chunk)
        pos = start + off
        while pos < end:
            if self._skip_to > pos:
                if self._skip_to > end:
                    return  # still inside a long block
                self._finish_pending()
                pos = self._skip_to
                continue
            if self._carry:
                # Finish the section whose head was cut by the previous chunk, from a small
                # joined buffer (never carry + the whole chunk: that would copy every chunk).
                rel = pos - start
                head = self._carry + chunk[rel : rel + 64]
                r = self._frame(head, self._carry_at, 0, stop=len(self._carry))
                if r < 0:
                    if self._carry:
                        return  # (only when the chunk ended within those 64 bytes)
                    continue  # the block runs on: the pending check above takes over
                pos = r
                continue
            self._frame(chunk, start, pos - start)
            return

    def _frame(self, buf: bytes, base: int, p: int, stop: int | None = None) -> int:
        """Frame the sections of `buf` from `p` (`buf[0]` is at absolute offset `base`).

        Frames every section starting before `stop` (default: the end of `buf`) and returns the
        absolute position after the last one; returns -1 when the data ran out (the cut head is
        kept in `_carry`, or the block running past the end is `_pending`).
        """
        if stop is None:
            p = self._frame_fast(buf, base, p)
            if p < 0:
                self._carry = b""
                return base + len(buf)
        return self._frame_careful(buf, base, p, stop)

    def _frame_fast(self, buf: bytes, base: int, p: int) -> int:
        """The hot loop of a backfill: frame whole sections of `buf` from `p`.

        It runs once per block of every repo, so it does only byte reads, additions and
        comparisons: no bounds checks (the IndexError at the end of the data ends the loop), no
        per-section objects. Returns -1 when the sections end exactly at the end of `buf`, else
        the start of the section it could not finish (cut varint, block running past the end),
        which `_frame_careful` takes over.
        """
        n = len(buf)
        blocks = self._blocks
        hits = self._hits
        hi = self._hit_i
        nh = len(hits)
        far = 1 << 62
        rel_hit = hits[hi] - base if hi < nh else far
        max_section = self._max_section
        s = p
        try:
            while True:
                # The section length varint, unrolled: the definition is protocol.wire.read_varint,
                # but calling it here made extraction ~40% slower (bench_backfill_extract.py);
                # tests/unit/backfill/test_car_index_python.py checks the two agree. Lengths
                # need at most 4 bytes (MAX_SECTION < 2**28); longer varints are refused.
                b = buf[p]
                s = p
                if b < 0x80:
                    q = p + 1
                    p = q + b
                else:
                    b2 = buf[p + 1]
                    if b2 < 0x80:
                        q = p + 2
                        p = q + ((b & 0x7F) | (b2 << 7))
                    else:
                        b3 = buf[p + 2]
                        if b3 < 0x80:
                            q = p + 3
                            slen = (b & 0x7F) | ((b2 & 0x7F) << 7) | (b3 << 14)
                        else:
                            b4 = buf[p + 3]
                            if b4 >= 0x80:
                                raise CarError("CAR section length varint too long")
                            q = p + 4
                            slen = (
                                (b & 0x7F) | ((b2 & 0x7F) << 7) | ((b3 & 0x7F) << 14) | (b4 << 21)
                            )
                        if slen > max_section:
                            raise CarError(f"bad CAR section length {slen}")
                        p = q + slen
                # p is now the end of the section, possibly past the data (then the next read
                # fails and the careful loop takes over from s): index only complete blocks.
                # Literals, not the module constants: a global load per section costs ~5%.
                # 36 = BLESSED_CID_LEN, 0xA2/0x65 = _NODE_HEAD/_NODE_KEY, 24 = _LEN_BITS.
                if buf[q + 36] == 0xA2:
                    if buf[q + 38] == 0x65 and p <= n:
                        blocks[buf[q : q + 36]] = ((base + q + 36) << 24) | (p - q - 36)
                if rel_hit < p:
                    bs = q + 36
                    while rel_hit < bs:
                        hi += 1
                        rel_hit = hits[hi] - base if hi < nh else far
                    if rel_hit + 8 <= p <= n:  # 8 = len(PLYR_PREFIX)
                        blocks[buf[q:bs]] = ((base + bs) << 24) | (p - bs)
        except IndexError:
            pass
        self._hit_i = hi
        return -1 if p == n else s

    def _frame_careful(self, buf: bytes, base: int, p: int, stop: int | None = None) -> int:
        """`_frame` with every bound checked: chunk tails, carried heads, long blocks."""
        n = len(buf)
        limit = n if stop is None else min(n, stop)
        blocks = self._blocks
        hits = self._hits
        far = 1 << 62

        def next_hit() -> int:
            return hits[self._hit_i] - base if self._hit_i < len(hits) else far

        rel_hit = next_hit()
        e = p
        try:
            while p < limit:
                # Unrolled protocol.wire.read_varint, as in _frame_fast.
                b = buf[p]
                if b < 0x80:
                    q = p + 1
                    e = q + b
                else:
                    b2 = buf[p + 1]
                    if b2 < 0x80:
                        q = p + 2
                        e = q + ((b & 0x7F) | (b2 << 7))
                    else:
                        b3 = buf[p + 2]
                        if b3 >= 0x80:
                            b4 = buf[p + 3]
                            if b4 >= 0x80:
                                raise CarError("CAR section length varint too long")
                            q = p + 4
                            e = q + (
                                (b & 0x7F) | ((b2 & 0x7F) << 7) | ((b3 & 0x7F) << 14) | (b4 << 21)
                            )
                        else:
                            q = p + 3
                            e = q + ((b & 0x7F) | ((b2 & 0x7F) << 7) | (b3 << 14))
                if e > n:
                    break
                bs = q + BLESSED_CID_LEN
                # (bounded by the section: a tiny last section must not read past the data)
                if bs + 2 < e and buf[bs] == _NODE_HEAD and buf[bs + 2] == _NODE_KEY:
                    blocks[buf[q:bs]] = ((base + bs) << _LEN_BITS) | (e - bs)
                if rel_hit < e:
                    while self._hit_i < len(hits) and hits[self._hit_i] - base < bs:
                        self._hit_i += 1
                    rel_hit = next_hit()
                    if rel_hit + len(PLYR_PREFIX) <= e:
                        blocks[buf[q:bs]] = ((base + bs) << _LEN_BITS) | (e - bs)
                p = e
            else:
                self._carry = b""
                return base + p
        except IndexError:
            # A varint cut by the end of the data: keep it for the next chunk.
            self._carry, self._carry_at = buf[p:], base + p
            return -1
        # The section starting at p runs past the data we have.
        slen = e - q
        if slen == 0 or slen > self._max_section:
            raise CarError(f"bad CAR section length {slen}")
        bs = q + BLESSED_CID_LEN
        if bs + 3 > n:
            # Not even the CID and the first block bytes are here yet.
            self._carry, self._carry_at = buf[p:], base + p
            return -1
        keep = buf[bs] == _NODE_HEAD and buf[bs + 2] == _NODE_KEY
        self._pending = (buf[q:bs], base + bs, base + e, keep)
        self._skip_to = base + e
        self._carry = b""
        return -1

    def _finish_pending(self) -> None:
        assert self._pending is not None
        cid, bs, e, keep = self._pending
        self._pending = None
        hits = self._hits
        while self._hit_i < len(hits) and hits[self._hit_i] < bs:
            self._hit_i += 1
        if self._hit_i < len(hits) and hits[self._hit_i] + len(PLYR_PREFIX) <= e:
            keep = True
        if keep:
            self._blocks[cid] = (bs << _LEN_BITS) | (e - bs)

    # ---- reading ----

    def get_commit(self) -> bytes | None:
        """The verified root (commit) block, found where its CID was seen in the stream."""
        assert self.roots
        root = self._root
        raw = self.get_verified(root)
        if raw is not None or self._root_at < 0:
            return raw
        at = self._root_at
        before = self._read(max(0, at - 4), min(4, at))
        # The section length varint ends right before the CID: try each way of reading it.
        for k in range(1, len(before) + 1):
            head = before[-k:]
            try:
                slen, end = read_varint(head, 0)
            except WireError:
                continue
            if end != len(head):
                continue  # a shorter varint: its tail is not right before the CID
            size = slen - len(root)
            if 0 < size <= self._max_section:
                block = self._read(at + len(root), size)
                if len(block) == size and verify_block(root, block):
                    self._blocks[root] = ((at + len(root)) << _LEN_BITS) | size
                    return block
        return None

    def rescan(self, wanted: set[bytes]) -> int:
        """Frame the stored bytes again and index the blocks in `wanted`; returns how many."""
        found = 0
        reader = iter_car_file(self._open_stored(), verify=False, max_section=self._max_section)
        pos = 0
        header = reader.roots()
        del header
        for cid, block in reader:
            if cid in wanted:
                found += 1
                # Positions are recomputed from the stored bytes themselves.
                offset = self._locate(cid, block, pos)
                self._blocks[cid] = (offset << _LEN_BITS) | len(block)
                pos = offset + len(block)
                if found == len(wanted):
                    break
        return found

    def _locate(self, cid: bytes, block: bytes, hint: int) -> int:
        """Offset of `block` (preceded by `cid`) in the stored bytes, searching from `hint`."""
        needle = cid + block[:64]
        window = 1 << 20
        pos = hint
        while pos < self.size:
            data = self._read(pos, window + len(needle))
            i = data.find(needle)
            if i >= 0:
                return pos + i + len(cid)
            pos += window
        raise CarError(f"block {cid_to_str(cid)} vanished from the stored CAR")
