"""JPEG Lossless encoding (ITU-T T.81 process 14, selection value 1): DICOM transfer syntax 1.2.840.10008.1.2.4.70.

pydicom decodes this transfer syntax (through pylibjpeg-libjpeg) but has no encoder for it, and it is the
lossless JPEG that DICOM viewers and patient CD software read most widely. The encoder is small because the
format is: each sample is predicted by its left neighbour (the first column by the sample above, the very
first sample by ``2**(P-1)``), the differences are sorted into 17 magnitude categories, the categories are
Huffman coded with a table made for the image (T.81 Annex K.2, lengths limited to 16 bits by K.3) and each
category code is followed by the difference's low bits. Everything is vectorised with numpy, so a 512 x 512
CT slice takes a few tens of milliseconds.

Only uncompressed instances with 1 sample (MONOCHROME1/2, PALETTE COLOR) or 3 samples (RGB, colour-by-pixel)
and 2-16 stored bits are encoded; :func:`can_compress` says which.
"""

from __future__ import annotations

import heapq
import struct

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, JPEGLosslessSV1

_NATIVE = {
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
}


def _code_lengths(freq: np.ndarray) -> np.ndarray:
    """Huffman code lengths (at most 16 bits, no all-ones code) for the 17 categories, after T.81 Annex K."""
    symbols = [i for i in range(17) if freq[i]]
    counts = {i: int(freq[i]) for i in symbols}
    reserved = 17  # Annex K.2: a symbol with count 1 keeps the all-ones code out of use.
    counts[reserved] = 1
    heap: list[tuple[int, int, list[int]]] = [(c, s, [s]) for s, c in counts.items()]
    heapq.heapify(heap)
    depth = dict.fromkeys(counts, 0)
    if len(heap) == 1:
        depth[heap[0][2][0]] = 1
    tie = 100
    while len(heap) > 1:
        c1, _, m1 = heapq.heappop(heap)
        c2, _, m2 = heapq.heappop(heap)
        for s in m1 + m2:
            depth[s] += 1
        tie += 1
        heapq.heappush(heap, (c1 + c2, tie, m1 + m2))
    bits = np.zeros(33, dtype=np.int64)
    for d in depth.values():
        bits[d] += 1
    # Annex K.3 (Figure K.3): move codes longer than 16 bits up the tree.
    i = 32
    while i > 16:
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
        i -= 1
    # Drop the reserved code: it takes the longest length.
    i = 16
    while bits[i] == 0:
        i -= 1
    bits[i] -= 1
    # Longest codes to the rarest symbols.
    ordered = sorted(symbols, key=lambda s: (-counts[s], s))
    lengths = np.zeros(17, dtype=np.int64)
    pos = 0
    for length in range(1, 17):
        for _ in range(int(bits[length])):
            lengths[ordered[pos]] = length
            pos += 1
    return lengths


def _canonical(lengths: np.ndarray) -> tuple[np.ndarray, bytes]:
    """Codes for the code lengths (T.81 Annex C) and the DHT payload (counts then symbols)."""
    order = sorted((int(n), s) for s, n in enumerate(lengths) if n)
    codes = np.zeros(17, dtype=np.uint64)
    code, previous = 0, order[0][0] if order else 1
    for n, s in order:
        code <<= n - previous
        previous = n
        codes[s] = code
        code += 1
    counts = bytes(sum(1 for n, _ in order if n == length) for length in range(1, 17))
    return codes, counts + bytes(s for _, s in order)


def _differences(samples: np.ndarray, precision: int) -> np.ndarray:
    """Prediction differences with predictor 1, modulo 2**16, as signed values (rows, columns[, samples])."""
    x = samples.astype(np.int64)
    pred = np.empty_like(x)
    pred[:, 1:] = x[:, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[0, 0] = 1 << (precision - 1)
    diff = (x - pred) % 65536
    return np.where(diff > 32768, diff - 65536, diff)


def encode_frame(samples: np.ndarray, precision: int) -> bytes:
    """Encode one frame as a JPEG Lossless SV1 codestream.

    Parameters
    ----------
    samples : numpy.ndarray
        ``(rows, columns)`` or ``(rows, columns, 3)`` unsigned integers below ``2**precision``.
    precision : int
        Bits per sample, 2-16.

    Returns
    -------
    bytes
        SOI ... EOI.
    """
    if samples.ndim == 2:
        samples = samples[..., np.newaxis]
    rows, columns, components = samples.shape
    diff = _differences(samples, precision).reshape(-1)  # interleaved: one sample of each component per pixel
    magnitude = np.abs(diff)
    category = np.zeros(diff.shape, dtype=np.int64)
    nonzero = magnitude > 0
    category[nonzero] = np.floor(np.log2(magnitude[nonzero])).astype(np.int64) + 1
    category[magnitude == 32768] = 16
    lengths = _code_lengths(np.bincount(category, minlength=17))
    codes, dht = _canonical(lengths)
    extra_bits = np.where(category == 16, 0, category)
    extra = np.where(diff < 0, diff - 1, diff).astype(np.int64) & ((1 << extra_bits) - 1)
    total_len = lengths[category] + extra_bits
    value = (codes[category] << extra_bits.astype(np.uint64)) | extra.astype(np.uint64)
    # Concatenate the variable-length codes, most significant bit first.
    starts = np.cumsum(total_len) - total_len
    n_bits = int(total_len.sum())
    owner = np.repeat(np.arange(diff.size), total_len)
    shift = (total_len[owner] - 1 - (np.arange(n_bits) - starts[owner])).astype(np.uint64)
    bits = ((value[owner] >> shift) & np.uint64(1)).astype(np.uint8)
    pad = (-n_bits) % 8
    if pad:
        bits = np.concatenate([bits, np.ones(pad, dtype=np.uint8)])  # T.81 F.1.2.3: pad with 1-bits
    packed = np.packbits(bits)
    ff = np.flatnonzero(packed == 0xFF)
    scan = np.insert(packed, ff + 1, 0).tobytes() if ff.size else packed.tobytes()  # byte stuffing
    sof = struct.pack(">BHHB", precision, rows, columns, components) + b"".join(
        bytes((c + 1, 0x11, 0)) for c in range(components))
    sos = bytes([components]) + b"".join(bytes((c + 1, 0x00)) for c in range(components)) + bytes((1, 0, 0))
    return b"".join((
        b"\xff\xd8",
        b"\xff\xc3", struct.pack(">H", 2 + len(sof)), sof,
        b"\xff\xc4", struct.pack(">H", 3 + len(dht)), b"\x00", dht,
        b"\xff\xda", struct.pack(">H", 2 + len(sos)), sos,
        scan,
        b"\xff\xd9",
    ))


def can_compress(ds: Dataset) -> bool:
    """Whether :func:`compress` can encode this data set (uncompressed, integer, 1 or 3 samples, 2-16 bits)."""
    try:
        ts = str(ds.file_meta.TransferSyntaxUID)
        samples = int(ds.get("SamplesPerPixel", 1))
        photometric = str(ds.get("PhotometricInterpretation", "")).upper()
        return ("PixelData" in ds and ts in _NATIVE and int(ds.BitsAllocated) in (8, 16)
                and 2 <= int(ds.get("BitsStored", ds.BitsAllocated)) <= 16
                and ((samples == 1 and photometric in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"))
                     or (samples == 3 and photometric == "RGB")))
    except (AttributeError, TypeError, ValueError):
        return False


def compress(ds: Dataset) -> bool:
    """Re-encode a data set's pixel data as JPEG Lossless SV1, in place.

    Parameters
    ----------
    ds : Dataset
        A full data set with file meta; it is left unchanged when it cannot be encoded.

    Returns
    -------
    bool
        Whether it was compressed.
    """
    if not can_compress(ds):
        return False
    precision = int(ds.get("BitsStored", ds.BitsAllocated))
    array = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    if frames == 1:
        array = array[np.newaxis]
    if samples == 1 and array.ndim == 4:
        array = array[..., 0]
    # Signed values are coded as their two's complement within BitsStored bits, as DICOM stores them.
    unsigned = array.astype(np.int64) & ((1 << precision) - 1)
    ds.PixelData = encapsulate([encode_frame(frame, precision) for frame in unsigned])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = UID(JPEGLosslessSV1)
    return True
