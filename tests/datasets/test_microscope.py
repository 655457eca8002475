"""Microscope files (MRC, Gatan DM3/DM4) through open_source, with their pixel size."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from simgen.datasets.imageio import image_shape, pixel_size_nm, read_calibrated, read_image
from simgen.datasets.sources import open_source
from simgen.errors import DataError

mrcfile = pytest.importorskip("mrcfile")
pytest.importorskip("rsciio.digitalmicrograph")


def _write_mrc(path, data, voxel_angstrom=None):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        if voxel_angstrom is not None:
            mrc.voxel_size = voxel_angstrom


# -- a minimal Gatan DigitalMicrograph writer (rosettasciio reads DM but does not write it) -----------
def dm_bytes(image: np.ndarray, scale: tuple[float, float], unit: str = "nm", version: int = 3) -> bytes:
    """A DM3/DM4 file holding one uint16 or float32 image, calibrated ``scale = (x, y)`` in ``unit``.

    Tag layout as Gatan writes it (the parts rosettasciio's reader uses): a root group with
    ``ImageList / TagGroup0 / {ImageData {Calibrations {Brightness, Dimension}, Data, DataType,
    Dimensions}, ImageTags, Name}``; tag-info fields big-endian, values little-endian.
    """
    n = ">l" if version == 3 else ">q"
    if image.ndim == 3:  # RGB: DataType 23, one 4-byte B, G, R, A word per pixel
        bgra = np.concatenate([image[..., ::-1], np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=-1)
        data_type, el_type, payload, (h, w) = 23, 5, bgra.astype(np.uint8).tobytes(), image.shape[:2]
    else:
        codes = {np.dtype(np.uint16): (10, 4), np.dtype(np.float32): (2, 6)}  # DataType, tag element type
        data_type, el_type = codes[image.dtype]
        payload, (h, w) = image.astype(image.dtype.newbyteorder("<")).tobytes(), image.shape

    def name(tag_id, text):
        raw = text.encode()
        return bytes([tag_id]) + struct.pack(">h", len(raw)) + raw

    def group(text, tags):
        size = struct.pack(n, 0) if version == 4 else b""
        return name(20, text) + b"\x00\x01" + size + struct.pack(n, len(tags)) + b"".join(tags)

    def data(text, info, payload):
        pad = b"\x00" * 8 if version == 4 else b""
        return name(21, text) + pad + b"%%%%" + struct.pack(n, len(info)) + b"".join(
            struct.pack(n, v) for v in info) + payload

    def long(text, v):
        return data(text, [3], struct.pack("<l", v))

    def real(text, v):
        return data(text, [6], struct.pack("<f", v))

    def string(text, s):
        return data(text, [20, 4, len(s)], b"".join(struct.pack("<H", ord(c)) for c in s))

    def calib(text, origin, sc, u):
        return group(text, [real("Origin", origin), real("Scale", sc), string("Units", u)])

    image_data = group("ImageData", [
        group("Calibrations", [calib("Brightness", 0.0, 1.0, "Counts"),
                               group("Dimension", [calib("", 0.0, scale[0], unit), calib("", 0.0, scale[1], unit)])]),
        data("Data", [20, el_type, h * w], payload),
        long("DataType", data_type),
        group("Dimensions", [long("", w), long("", h)]),
    ])
    root = [group("ImageList", [group("", [image_data, group("ImageTags", []), string("Name", "frame")])])]
    body = b"\x00\x01" + struct.pack(n, len(root)) + b"".join(root)
    head = struct.pack(">l", version) + struct.pack(n, len(body) + 16) + struct.pack(">l", 1)
    return head + body + b"\x00" * 8


# -- MRC -----------------------------------------------------------------------------------------
def test_mrc_folder_reads_through_open_source_with_its_pixel_size(tmp_path):
    rng = np.random.default_rng(0)
    frame = rng.integers(500, 3500, (24, 40)).astype(np.uint16)  # 12-bit camera counts
    _write_mrc(tmp_path / "a.mrc", frame, voxel_angstrom=4.2)  # 0.42 nm per pixel
    _write_mrc(tmp_path / "b.mrc", frame.astype(np.float32) * 0.5)  # no cell size: pixel size unknown
    with open_source(tmp_path) as src:
        assert src.kind == "images" and src.names == ["a", "b"]
        assert src.shape(0) == (24, 40) and src.shape(1) == (24, 40)  # from the header
        assert src.pixel_size_nm(0) == pytest.approx(0.42)
        assert src.pixel_size_nm(1) is None
        img = src.image(0)
        assert img.dtype == np.float32 and img.shape == (24, 40)
        np.testing.assert_allclose(img, frame / 4095, rtol=1e-6)  # true 12-bit level, not /65535
        real = src.image(1)  # float data: stretched to [0, 1], same picture
        assert real.min() == 0 and real.max() == 1
        np.testing.assert_allclose(real, (frame - frame.min()) / np.ptp(frame), atol=1e-6)


def test_mrc_stack_gives_its_first_section_with_a_warning(tmp_path):
    stack = np.stack([np.full((8, 10), 100, np.int16), np.full((8, 10), 7, np.int16)])
    stack[0, 0, 0] = 200
    _write_mrc(tmp_path / "s.mrc", stack, voxel_angstrom=10.0)
    with pytest.warns(UserWarning, match="2 sections"):
        img, px = read_calibrated(tmp_path / "s.mrc")
    assert img.shape == (8, 10) and img[0, 0] == pytest.approx(200 / 255) and px == pytest.approx(1.0)


@pytest.mark.parametrize("content", [b"", b"not an mrc file" * 20, "truncated"])
def test_a_damaged_mrc_file_is_one_data_error_line(tmp_path, content):
    path = tmp_path / "bad.mrc"
    readers = [read_image, read_calibrated, pixel_size_nm, image_shape]
    if content == "truncated":  # intact header, data cut short: only reading the pixels fails
        _write_mrc(path, np.zeros((32, 32), np.float32), 5.0)
        content = path.read_bytes()[:1100]
        readers = readers[:2]
    path.write_bytes(content)
    for read in readers:
        with pytest.raises(DataError, match="cannot read MRC file") as exc:
            read(path)
        assert "\n" not in str(exc.value)


def test_missing_instrument_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "none.dm3")
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "none.mrc")


# -- DigitalMicrograph --------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [3, 4])
def test_dm_folder_reads_through_open_source_with_its_pixel_size(tmp_path, version):
    rng = np.random.default_rng(1)
    frame = rng.integers(100, 900, (12, 20)).astype(np.uint16)  # 10-bit counts
    suffix = f".dm{version}"
    (tmp_path / f"a{suffix}").write_bytes(dm_bytes(frame, (0.35, 0.35), "nm", version))
    (tmp_path / f"b{suffix}").write_bytes(dm_bytes(frame.astype(np.float32), (0.0012, 0.0012), "µm", version))
    (tmp_path / f"c{suffix}").write_bytes(dm_bytes(frame, (1.0, 1.0), "", version))  # uncalibrated
    with open_source(tmp_path) as src:
        assert src.names == ["a", "b", "c"]
        assert src.shape(0) == (12, 20)
        assert src.pixel_size_nm(0) == pytest.approx(0.35)
        assert src.pixel_size_nm(1) == pytest.approx(1.2)  # µm → nm
        assert src.pixel_size_nm(2) is None
        np.testing.assert_allclose(src.image(0), frame / 1023, rtol=1e-6)
        np.testing.assert_allclose(src.image(1), (frame - frame.min()) / np.ptp(frame), atol=1e-6)


def test_dm_in_angstrom_and_non_square_pixels(tmp_path):
    frame = np.arange(30, dtype=np.float32).reshape(5, 6)
    (tmp_path / "a.dm3").write_bytes(dm_bytes(frame, (2.5, 2.5), "Å"))
    img, px = read_calibrated(tmp_path / "a.dm3")
    assert px == pytest.approx(0.25) and img.shape == (5, 6) and img[0, 1] > img[0, 0]  # rows/columns kept
    (tmp_path / "b.dm3").write_bytes(dm_bytes(frame, (0.2, 0.3), "nm"))
    with pytest.warns(UserWarning, match="non-square"):
        assert pixel_size_nm(tmp_path / "b.dm3") == pytest.approx(0.2)
    (tmp_path / "c.dm3").write_bytes(dm_bytes(frame, (0.5, 0.5), "1/nm"))  # a diffraction pattern
    assert pixel_size_nm(tmp_path / "c.dm3") is None


def test_dm_rgb_image_reads_as_luminance(tmp_path):
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    rgb = np.stack([grey, grey, grey], axis=-1)
    (tmp_path / "c.dm4").write_bytes(dm_bytes(rgb, (0.5, 0.5), "nm", version=4))
    assert image_shape(tmp_path / "c.dm4") == (4, 5)  # rosettasciio reads RGB eagerly only: handled
    img, px = read_calibrated(tmp_path / "c.dm4")
    np.testing.assert_allclose(img, grey / 255, atol=1e-6)
    assert px == pytest.approx(0.5)


@pytest.mark.parametrize("cut", [0, 10, 200])
def test_a_damaged_dm_file_is_one_data_error_line(tmp_path, cut):
    good = dm_bytes(np.zeros((16, 16), np.uint16), (1.0, 1.0))
    path = tmp_path / "bad.dm4"
    path.write_bytes(good[:cut] if cut else b"garbage that is not a dm file")
    with pytest.raises(DataError, match="DigitalMicrograph") as exc:
        read_image(path)
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError):
        pixel_size_nm(path)


def test_yolo_folder_with_mrc_images_has_shapes_and_pixel_sizes(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    _write_mrc(tmp_path / "images" / "f.mrc", np.zeros((20, 30), np.uint8), voxel_angstrom=8.0)
    (tmp_path / "labels" / "f.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    with open_source(tmp_path) as src:
        assert src.kind == "yolo" and src.shape(0) == (20, 30) and src.pixel_size_nm(0) == pytest.approx(0.8)
        b = src.boxes(0)
        assert b[["x0", "y0", "x1", "y1"]].iloc[0].tolist() == pytest.approx([12, 6, 18, 14])


def test_png_and_hdf5_pixel_sizes(tmp_path):
    from simgen.datasets.h5io import DatasetWriter
    from simgen.datasets.imageio import write_image

    write_image(tmp_path / "p.png", np.zeros((4, 4), np.float32))
    with open_source(tmp_path) as src:
        assert src.pixel_size_nm(0) is None
    with DatasetWriter(tmp_path / "d.h5", kind="tem") as w:
        w.append(np.zeros((4, 4), np.float32), provenance={"pixel_nm": 0.45})
        w.append(np.zeros((4, 4), np.float32), provenance={})
    with open_source(tmp_path / "d.h5") as src:
        assert src.pixel_size_nm(0) == pytest.approx(0.45) and src.pixel_size_nm(1) is None


def test_without_the_instruments_extra_the_error_says_what_to_install(tmp_path, monkeypatch):
    import sys

    _write_mrc(tmp_path / "a.mrc", np.zeros((4, 4), np.uint8), 1.0)
    (tmp_path / "a.dm3").write_bytes(dm_bytes(np.zeros((4, 4), np.uint16), (1.0, 1.0)))
    monkeypatch.setitem(sys.modules, "mrcfile", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "rsciio.digitalmicrograph", None)
    for name in ("a.mrc", "a.dm3"):
        with pytest.raises(DataError, match=r"simgen\[instruments\]"):
            read_image(tmp_path / name)
