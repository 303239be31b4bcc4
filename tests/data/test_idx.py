"""IDX reading and writing: round trips and every way a file can be broken."""

import gzip
import re

import numpy as np
import pytest

from rnnvision.data import idx


def _images_and_labels(n=6):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n, dtype=np.uint8))


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("array", [
    np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28),
    np.array([0, 9, 3], np.uint8),
    np.array([[-5, 7], [100000, -2]], np.int32),
    np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
    np.array([-3, 4], np.int8),
    np.array([1.5, -2.25], np.float64),
    np.array([-300, 300], np.int16),
], ids=["u8-3d", "u8-1d", "i32", "f32", "i8", "f64", "i16"])
def test_round_trip(tmp_path, name, array):
    path = tmp_path / name
    idx.write_idx(path, array)
    got = idx.read_idx(path)
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)
    assert got.flags.writeable
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")


def test_gzip_detected_by_content_not_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    idx.write_idx(tmp_path / "x.gz", array)
    renamed = tmp_path / "no-suffix"
    renamed.write_bytes((tmp_path / "x.gz").read_bytes())
    plain_named_gz = tmp_path / "plain.gz"
    plain_named_gz.write_bytes(gzip.decompress(renamed.read_bytes()))
    np.testing.assert_array_equal(idx.read_idx(renamed), array)
    np.testing.assert_array_equal(idx.read_idx(plain_named_gz), array)


def test_header_layout_is_the_mnist_one(tmp_path):
    idx.write_idx(tmp_path / "x", np.zeros((3, 28, 28), np.uint8))
    raw = (tmp_path / "x").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x08, 3])  # 0x00000803: the MNIST images magic.
    assert raw[4:16] == (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    assert len(raw) == 16 + 3 * 28 * 28


def _write_raw(tmp_path, data, name="broken"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _valid_bytes(array=np.arange(100, dtype=np.uint8).reshape(10, 10)):
    return bytes([0, 0, 8, 2]) + (10).to_bytes(4, "big") * 2 + array.tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload(tmp_path, gz):
    data = _valid_bytes()[:-7]
    path = _write_raw(tmp_path, gzip.compress(data) if gz else data)
    with pytest.raises(ValueError, match="truncated") as err:
        idx.read_idx(path)
    assert str(path) in str(err.value)
    assert re.search(r"need 100 bytes, found 93", str(err.value))


def test_trailing_bytes(tmp_path):
    path = _write_raw(tmp_path, _valid_bytes() + b"\x00\x01")
    with pytest.raises(ValueError, match="trailing bytes") as err:
        idx.read_idx(path)
    assert str(path) in str(err.value) and "need 100 bytes, found 102" in str(err.value)


@pytest.mark.parametrize("header, message", [
    (bytes([1, 0, 8, 2]), "bad IDX magic"),
    (bytes([0, 0, 0x07, 2]), "unknown IDX type code 0x07"),
    (bytes([0, 0, 8, 0]), "0 dimensions"),
])
def test_bad_magic(tmp_path, header, message):
    path = _write_raw(tmp_path, header + _valid_bytes()[4:])
    with pytest.raises(ValueError, match=message) as err:
        idx.read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("data", [b"", b"\x00\x00", bytes([0, 0, 8, 3]) + b"\x00" * 5])
def test_truncated_header(tmp_path, data):
    path = _write_raw(tmp_path, data)
    with pytest.raises(ValueError, match="too short|truncated IDX header") as err:
        idx.read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_corrupted_gzip(tmp_path, damage):
    packed = bytearray(gzip.compress(_valid_bytes(np.arange(100, dtype=np.uint8)
                                                  .reshape(10, 10) % 7)))
    if damage == "flip":
        packed[len(packed) // 2] ^= 0xFF
        packed[-6] ^= 0xFF  # Also break the CRC, in case the deflate stream survives.
    else:
        packed = packed[: len(packed) - 12]
    path = _write_raw(tmp_path, bytes(packed))
    with pytest.raises(ValueError, match="corrupted gzip") as err:
        idx.read_idx(path)
    assert str(path) in str(err.value)


def test_write_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="cannot write dtype int64"):
        idx.write_idx(tmp_path / "x", np.zeros(3, np.int64))


def test_load_idx_pair(tmp_path):
    images, labels = _images_and_labels()
    idx.write_idx(tmp_path / "i.gz", images)
    idx.write_idx(tmp_path / "l.gz", labels)
    got_images, got_labels = idx.load_idx_pair(tmp_path / "i.gz", tmp_path / "l.gz")
    assert got_images.dtype == np.uint8 and got_images.shape == (6, 28, 28)
    assert got_labels.dtype == np.int32
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("images, labels, blamed, message", [
    (np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8), "l", "4 labels but"),
    (np.zeros((5, 784), np.uint8), np.zeros(5, np.uint8), "i", r"shape \(N, H, W\)"),
    (np.zeros((5, 28, 28), np.float32), np.zeros(5, np.uint8), "i", "must be uint8"),
    (np.zeros((5, 28, 28), np.uint8), np.zeros((5, 1), np.uint8), "l", r"shape \(N,\)"),
    (np.zeros((3, 28, 28), np.uint8), np.array([1, 10, 2], np.uint8), "l",
     "outside 0..9, the first at record 1 with value 10"),
])
def test_load_idx_pair_rejects(tmp_path, images, labels, blamed, message):
    idx.write_idx(tmp_path / "i", images)
    idx.write_idx(tmp_path / "l", labels)
    with pytest.raises(ValueError, match=message) as err:
        idx.load_idx_pair(tmp_path / "i", tmp_path / "l")
    assert str(err.value).startswith(str(tmp_path / blamed) + ":")
