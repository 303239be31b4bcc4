"""Reader and writer for the IDX format of the MNIST files.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the
array in C order, big-endian::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions, ndim
    4 * ndim    the dimensions, uint32 big-endian
    rest        prod(dims) elements, big-endian

MNIST ships these gzip-compressed (`*-idx3-ubyte.gz`); `read_idx` detects gzip by its
magic bytes (1f 8b), never by the file name, so a renamed file still reads.

Every check names the file, what it found and what is allowed, because these files come
from outside (downloads, shared folders) and a truncated copy is a common failure. A file
that cannot be read or is malformed is an `IdxFileError` (a ValueError), one line.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

PathLike = str | os.PathLike

_GZIP_MAGIC = b"\x1f\x8b"
_DAMAGED = "a damaged or incomplete copy: copy or download it again"


class IdxFileError(ValueError):
    """An IDX file that cannot be read or is malformed; the message names the file."""

# IDX type code -> big-endian numpy dtype, as in the format's definition.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# Keyed by native-endian dtype: callers hand us native arrays; we swap on write.
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}


def _decompress(raw: bytes, path: PathLike) -> bytes:
    """Gunzips `raw` if it starts with the gzip magic bytes; else returns it as is."""
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError.
        raise IdxFileError(f"{os.fspath(path)}: corrupted gzip stream ({err}); {_DAMAGED}.") from err


def _parse_header(data: bytes, path: PathLike) -> tuple[np.dtype, tuple[int, ...]]:
    """Returns (dtype, dims) from an uncompressed IDX header, checking each field."""
    name = os.fspath(path)
    if len(data) < 4:
        raise IdxFileError(
            f"{name}: {len(data)} bytes is too short for an IDX header (needs >= 4); {_DAMAGED}."
        )
    if data[0:2] != b"\x00\x00":
        raise IdxFileError(
            f"{name}: bad IDX magic number {data[0:4].hex()}; the first two bytes "
            "must be 0000 (a gzip file starts with 1f8b): not an IDX file, or " + _DAMAGED + "."
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise IdxFileError(f"{name}: unknown IDX type code 0x{code:02X}; allowed: {allowed}.")
    if ndim == 0:
        raise IdxFileError(f"{name}: IDX header declares 0 dimensions; need >= 1.")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxFileError(
            f"{name}: truncated IDX header: {ndim} dimensions need {header_size} "
            f"bytes, the file has {len(data)}; {_DAMAGED}."
        )
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    return _IDX_DTYPES[code], dims


def read_idx(path: PathLike) -> np.ndarray:
    """Reads an IDX file, plain or gzip-compressed.

    Args:
      path: the file. Gzip is recognised by the first two bytes (1f 8b).

    Returns:
      The array, with the shape of the header's dimensions and a native-endian dtype
      (uint8 for the MNIST files). The array is writable and owns its memory.

    Raises:
      IdxFileError (a ValueError): the file cannot be read (missing, a directory, no
        permission); corrupted gzip; bad magic number; unknown type code; a payload that
        is not exactly prod(dims) * itemsize bytes (truncated or trailing bytes).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise IdxFileError(f"{os.fspath(path)}: cannot be read ({err.strerror or err}).") from None
    data = _decompress(raw, path)
    dtype, dims = _parse_header(data, path)
    offset = 4 + 4 * len(dims)
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - offset
    if actual != expected:
        what = "truncated" if actual < expected else "trailing bytes"
        raise IdxFileError(
            f"{os.fspath(path)}: IDX payload size mismatch ({what}): dims {dims} of "
            f"{dtype.itemsize}-byte elements need {expected} bytes, found {actual}; {_DAMAGED}."
        )
    array = np.frombuffer(data, dtype, offset=offset).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # Copies: native order, writable.


def write_idx(path: PathLike, array: np.ndarray) -> None:
    """Writes `array` as an IDX file; gzip-compressed when `path` ends with ".gz".

    Args:
      path: the destination file.
      array: any array of ndim 1..255 whose dtype IDX can hold (uint8, int8, int16,
        int32, float32, float64).

    Raises:
      ValueError: an unsupported dtype or number of dimensions.
    """
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        allowed = ", ".join(sorted(str(d) for d in _IDX_CODES))
        raise ValueError(
            f"{os.fspath(path)}: cannot write dtype {array.dtype} as IDX; allowed: {allowed}."
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"{os.fspath(path)}: IDX needs 1..255 dimensions, got {array.ndim}.")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = np.ascontiguousarray(array, _IDX_DTYPES[code]).tobytes()
    data = header + payload
    if os.fspath(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # mtime=0: identical arrays, identical files.
    with open(path, "wb") as f:
        f.write(data)


def load_idx_pair(
    images_path: PathLike, labels_path: PathLike, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Loads an MNIST-style (images, labels) pair of IDX files and checks they match.

    Args:
      images_path: IDX file of uint8 images, shape (N, H, W); (N, 28, 28) for MNIST.
      labels_path: IDX file of uint8 labels, shape (N,).
      num_classes: labels must lie in [0, num_classes).

    Returns:
      images: uint8 (N, H, W).
      labels: int32 (N,).

    Raises:
      IdxFileError (a ValueError): naming the file, as read_idx, or for images that are not 3-D uint8, labels that are
        not 1-D integers, different counts, or labels out of range.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFileError(
            f"{os.fspath(images_path)}: images must be uint8 of shape (N, H, W), got "
            f"{images.dtype} of shape {images.shape}."
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise IdxFileError(
            f"{os.fspath(labels_path)}: labels must be integers of shape (N,), got "
            f"{labels.dtype} of shape {labels.shape}."
        )
    if len(images) != len(labels):
        raise IdxFileError(
            f"{os.fspath(labels_path)}: {len(labels)} labels but "
            f"{os.fspath(images_path)} has {len(images)} images; the counts must agree."
        )
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(np.argmax(bad))
        raise IdxFileError(
            f"{os.fspath(labels_path)}: {int(bad.sum())} labels outside 0..{num_classes - 1}"
            f", the first at record {first} with value {int(labels[first])}."
        )
    return images, labels.astype(np.int32)
