"""What a file is, decided from its first bytes (never from its name or the client's Content-Type).

`sniff(head)` looks at the first few KB of an upload and names the container: ID3/MPEG audio
frames, ADTS AAC, RIFF/WAVE, FORM/AIFF and AIFC, fLaC, ISO-BMFF (m4a), Ogg (Opus, Vorbis, FLAC),
WebM/Matroska, and the images JPEG, PNG, WebP and GIF. The codec inside an m4a (AAC or ALAC) is
settled later by probing the whole file (media/probe.py). `check_declared_size` catches the
truncation that the RIFF and FORM headers make visible for free.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEAD_BYTES = 64 * 1024  # enough for every signature below, including an Ogg first page


@dataclass(frozen=True)
class Sniffed:
    kind: str    # audio | image
    format: str  # mp3, aac, wav, aiff, flac, m4a, ogg-opus, ogg-vorbis, ogg-flac, webm, jpeg, ...
    mime_type: str
    ext: str


class SniffError(ValueError):
    """The bytes are not a format we accept; the message says what was found."""


_MP3 = Sniffed("audio", "mp3", "audio/mpeg", "mp3")
_AAC = Sniffed("audio", "aac", "audio/aac", "aac")
_WAV = Sniffed("audio", "wav", "audio/wav", "wav")
_AIFF = Sniffed("audio", "aiff", "audio/aiff", "aiff")
_FLAC = Sniffed("audio", "flac", "audio/flac", "flac")
_M4A = Sniffed("audio", "m4a", "audio/mp4", "m4a")
_OGG_OPUS = Sniffed("audio", "ogg-opus", "audio/ogg", "opus")
_OGG_VORBIS = Sniffed("audio", "ogg-vorbis", "audio/ogg", "ogg")
_OGG_FLAC = Sniffed("audio", "ogg-flac", "audio/ogg", "oga")
_WEBM = Sniffed("audio", "webm", "audio/webm", "webm")
_MKA = Sniffed("audio", "matroska", "audio/x-matroska", "mka")
_JPEG = Sniffed("image", "jpeg", "image/jpeg", "jpg")
_PNG = Sniffed("image", "png", "image/png", "png")
_WEBP = Sniffed("image", "webp", "image/webp", "webp")
_GIF = Sniffed("image", "gif", "image/gif", "gif")

# ISO-BMFF major brands of audio files (and the generic ones m4a writers use).
_M4A_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"mp42", b"mp41", b"isom", b"iso2", b"iso5", b"dash", b"3gp4", b"3gp5", b"3gp6"}

_MPEG_BITRATE_BAD = (0x0, 0xF)


def _mpeg_frame_length(header: bytes) -> int | None:
    """Length in bytes of the MPEG audio frame whose 4-byte header this is, else None."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 0x3   # 0: 2.5, 2: 2, 3: 1, 1: reserved
    layer = (header[1] >> 1) & 0x3     # 1: layer III, 2: II, 3: I, 0: reserved
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 0x3
    padding = (header[2] >> 1) & 0x1
    if version == 1 or layer == 0 or bitrate_index in _MPEG_BITRATE_BAD or rate_index == 3:
        return None
    if layer != 1:
        return None  # we take MPEG layer III (MP3) only
    v1 = version == 3
    table = (
        [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320]
        if v1
        else [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160]
    )
    rates = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}[version]
    bitrate = table[bitrate_index] * 1000
    sample_rate = rates[rate_index]
    samples = 1152 if v1 else 576
    return samples // 8 * bitrate // sample_rate + padding


def _is_mpeg_audio(head: bytes) -> bool:
    """Two MPEG layer III frames in a row: one sync word alone is too easy to hit by chance."""
    for start in range(min(len(head) - 4, 4096)):
        if head[start] != 0xFF:
            continue
        length = _mpeg_frame_length(head[start : start + 4])
        if not length:
            continue
        nxt = start + length
        if nxt + 4 > len(head):
            return start == 0 and len(head) >= 4  # a lone frame that fills what we have
        if _mpeg_frame_length(head[nxt : nxt + 4]):
            return True
    return False


def _is_adts(head: bytes) -> bool:
    if len(head) < 7 or head[0] != 0xFF or head[1] & 0xF6 != 0xF0:
        return False
    length = ((head[3] & 0x3) << 11) | (head[4] << 3) | (head[5] >> 5)
    if length < 7:
        return False
    if length + 2 > len(head):
        return True
    return head[length] == 0xFF and head[length + 1] & 0xF6 == 0xF0


def _id3_size(head: bytes) -> int | None:
    """Total size of a leading ID3v2 tag, or None when the tag header is malformed."""
    if len(head) < 10 or head[3] not in (2, 3, 4) or head[4] == 0xFF:
        return None
    size_bytes = head[6:10]
    if any(b & 0x80 for b in size_bytes):
        return None
    size = 0
    for b in size_bytes:
        size = (size << 7) | b
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def _ebml_doctype(head: bytes) -> bytes | None:
    # The DocType element (id 0x4282) sits inside the EBML header, in the first few dozen bytes.
    at = head.find(b"\x42\x82", 4, 64)
    if at < 0 or at + 3 > len(head):
        return None
    size_byte = head[at + 2]
    if not size_byte & 0x80:
        return None
    size = size_byte & 0x7F
    return head[at + 3 : at + 3 + size]


def sniff(head: bytes) -> Sniffed:
    """The format of a file whose first bytes are `head` (HEAD_BYTES of them, or the whole file)."""
    if not head:
        raise SniffError("the file is empty")
    if head.startswith(b"ID3"):
        tag = _id3_size(head)
        if tag is None:
            raise SniffError("the file starts with a malformed ID3 tag")
        after = head[tag:]
        # A tag larger than what we read (big cover art): the frames are checked by probing.
        if tag >= len(head) or _is_mpeg_audio(after):
            return _MP3
        if _is_adts(after):
            return _AAC
        raise SniffError("the file has an ID3 tag but no MPEG audio frames after it")
    if head.startswith(b"RIFF") and len(head) >= 12:
        if head[8:12] == b"WAVE":
            return _WAV
        if head[8:12] == b"WEBP":
            return _WEBP
        raise SniffError(f"RIFF file of type {head[8:12]!r}, not WAVE or WEBP")
    if head.startswith(b"FORM") and len(head) >= 12:
        if head[8:12] in (b"AIFF", b"AIFC"):
            return _AIFF
        raise SniffError(f"IFF file of type {head[8:12]!r}, not AIFF or AIFC")
    if head.startswith(b"fLaC"):
        return _FLAC
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        compatible = {head[i : i + 4] for i in range(16, min(len(head), struct.unpack(">I", head[:4])[0]), 4)}
        if brand in _M4A_BRANDS or compatible & {b"M4A ", b"mp42", b"isom"}:
            return _M4A
        raise SniffError(f"ISO media file of brand {brand!r}, not audio (m4a)")
    if head.startswith(b"OggS"):
        first_page = head[:HEAD_BYTES]
        if b"OpusHead" in first_page[:200]:
            return _OGG_OPUS
        if b"\x01vorbis" in first_page[:200]:
            return _OGG_VORBIS
        if b"\x7fFLAC" in first_page[:200]:
            return _OGG_FLAC
        raise SniffError("Ogg file without Opus, Vorbis or FLAC audio")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        doctype = _ebml_doctype(head)
        if doctype == b"webm":
            return _WEBM
        if doctype == b"matroska":
            return _MKA
        raise SniffError("EBML file that is neither WebM nor Matroska")
    if head.startswith(b"\xff\xd8\xff"):
        return _JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _PNG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return _GIF
    if _is_mpeg_audio(head):
        return _MP3
    if _is_adts(head):
        return _AAC
    raise SniffError("unrecognised file format (not a supported audio file or image)")


def check_declared_size(sniffed: Sniffed, head: bytes, size: int) -> None:
    """Raise SniffError when a RIFF/FORM header promises more bytes than the file holds."""
    if sniffed.format not in ("wav", "aiff", "webp") or len(head) < 8:
        return
    fmt = "<I" if head.startswith(b"RIFF") else ">I"
    declared = struct.unpack(fmt, head[4:8])[0]
    # Streaming writers leave 0 or 0xFFFFFFFF when they could not seek back; nothing to check.
    if declared in (0, 0xFFFFFFFF):
        return
    if declared + 8 > size:
        raise SniffError(
            f"the file is truncated: its header declares {declared + 8} bytes but it has {size}"
        )
