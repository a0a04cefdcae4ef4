"""DICOM decoding on real-world files (pydicom-data) and on crafted edge cases."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.uid import UID

from fedward.common.choices import FrameMode
from fedward.common.data.dicom import Reason, UnusableFileError, decode_dicom, read_dicom
from fedward.common.data.files import decode_file, probe, to_model_input
from fedward.simulation.dicom_export import secondary_capture

data_store = pytest.importorskip("data_store", reason="pydicom-data (test extra) is not installed")
DATA = Path(data_store.DataStore().data_path)
FILES = sorted(p.name for p in DATA.iterdir() if p.is_file())
EXPECTED_UNUSABLE = {"emri_small_jpeg_2k_lossless_too_short.dcm": Reason.TRUNCATED}

# (compressed or re-encoded file, its uncompressed twin): lossless, so pixels must match exactly.
TWINS = [
    ("693_J2KR.dcm", "693_UNCR.dcm"),  # JPEG 2000 lossless, CT
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),  # JPEG 2000 lossless, MR
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),  # JPEG 2000 lossless, CR radiograph, MONOCHROME1
    ("RG3_J2KR.dcm", "RG3_UNCR.dcm"),
    ("US1_J2KR.dcm", "US1_UNCR.dcm"),  # JPEG 2000 lossless with YBR_RCT, ultrasound
    ("emri_small_RLE.dcm", "emri_small.dcm"),  # RLE lossless, multi-frame
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),  # JPEG-LS lossless
    ("emri_small_big_endian.dcm", "emri_small.dcm"),  # explicit VR big endian
    ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm"),  # RLE, palette color
    ("OBXXXX1A_rle_2frame.dcm", "OBXXXX1A_2frame.dcm"),
    ("OBXXXX1A_expb.dcm", "OBXXXX1A.dcm"),  # big endian palette
    ("OBXXXX1A_expb_2frame.dcm", "OBXXXX1A_2frame.dcm"),
    ("SC_rgb_expb.dcm", "SC_rgb.dcm"),
    ("SC_rgb_expb_16bit.dcm", "SC_rgb_16bit.dcm"),
    ("SC_rgb_expb_32bit.dcm", "SC_rgb_32bit.dcm"),
    ("liver_expb.dcm", "liver.dcm"),  # 1-bit segmentation, big endian
    ("gdcm-US-ALOKA-16_big.dcm", "gdcm-US-ALOKA-16.dcm"),  # segmented 16-bit palette
]


@pytest.mark.parametrize("name", FILES)
def test_every_pydicom_data_file_decodes_or_says_why(name: str) -> None:
    path = DATA / name
    if name in EXPECTED_UNUSABLE:
        with pytest.raises(UnusableFileError) as err:
            decode_file(path)
        assert err.value.reason is EXPECTED_UNUSABLE[name]
        return
    info = probe(path)
    display = decode_file(path)
    expected = (1, info.rows, info.columns) + ((3,) if info.channels == 3 else ())
    assert display.shape == expected
    assert display.dtype == np.float32
    assert display.min() >= 0.0 and display.max() <= 1.0
    assert info.transfer_syntax


def test_at_least_thirty_real_files_are_covered() -> None:
    assert len([f for f in FILES if f not in EXPECTED_UNUSABLE]) >= 30


@pytest.mark.parametrize(("compressed", "plain"), TWINS)
def test_reversible_files_decode_to_their_twins_pixels(compressed: str, plain: str) -> None:
    stored_a, stored_b = pixel_array(DATA / compressed), pixel_array(DATA / plain)
    assert np.array_equal(stored_a.astype(np.int64), stored_b.astype(np.int64))
    every = FrameMode.ALL
    assert np.array_equal(decode_file(DATA / compressed, every), decode_file(DATA / plain, every))


def test_monochrome1_is_inverted() -> None:
    ds = read_dicom(DATA / "RG1_UNCR.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    as_stored = decode_dicom(ds)
    ds.PhotometricInterpretation = "MONOCHROME2"
    np.testing.assert_allclose(as_stored, 1.0 - decode_dicom(ds), atol=1e-6)


def test_modality_lut_then_window() -> None:
    # CT: stored 1000 with slope 1, intercept -1024 -> -24 HU; window 40/400 (LINEAR, PS3.3 C.11.2.1.2.1).
    pixels = np.array([[0, 1000], [1064, 4095]], dtype=np.uint16)
    ds = _grayscale_dataset(pixels, bits=12)
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    out = decode_dicom(ds)[0]
    hu = pixels.astype(float) - 1024
    expected = np.clip(((hu - 39.5) / 399 + 0.5), 0, 1)
    expected[hu <= 40 - 0.5 - 399 / 2] = 0
    expected[hu > 40 - 0.5 + 399 / 2] = 1
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_without_voi_the_frame_range_is_used() -> None:
    ds = _grayscale_dataset(np.array([[100, 200], [300, 500]], dtype=np.uint16), bits=12)
    np.testing.assert_allclose(decode_dicom(ds)[0], [[0.0, 0.25], [0.5, 1.0]], atol=1e-6)


def test_voi_lut_sequence_file() -> None:
    out = decode_file(DATA / "vlut_04.dcm")
    assert out.min() == 0.0 and out.max() == 1.0


def test_multi_frame_middle_or_all() -> None:
    every = decode_file(DATA / "emri_small.dcm", FrameMode.ALL)
    middle = decode_file(DATA / "emri_small.dcm", FrameMode.MIDDLE)
    assert every.shape == (10, 64, 64) and middle.shape == (1, 64, 64)
    # Display ranges come from the window, identical for all frames: the middle frame matches.
    np.testing.assert_array_equal(middle[0], every[5])


def test_file_without_file_meta_is_recovered() -> None:
    assert decode_file(DATA / "OT-PAL-8-face.dcm").shape == (1, 480, 640, 3)


def test_truncated_pixel_data(tmp_path: Path) -> None:
    data = (DATA / "MR2_UNCR.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnusableFileError) as err:
        decode_file(cut)
    assert err.value.reason is Reason.TRUNCATED


def test_truncated_compressed_file(tmp_path: Path) -> None:
    data = (DATA / "RG3_J2KR.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnusableFileError) as err:
        decode_file(cut)
    assert err.value.reason in (Reason.TRUNCATED, Reason.CORRUPT_PIXEL_DATA)


def test_not_dicom(tmp_path: Path) -> None:
    text = tmp_path / "notes.dcm"
    text.write_text("Patient arrived at 10:00, chest pain.\n" * 20)
    with pytest.raises(UnusableFileError) as err:
        decode_file(text)
    assert err.value.reason is Reason.NOT_DICOM
    assert "chest" not in str(err.value)


def test_no_pixel_data(tmp_path: Path) -> None:
    ds = secondary_capture(np.zeros((8, 8), np.uint8), patient_name="A^B", patient_id="1", institution="h")
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm", enforce_file_format=True)
    with pytest.raises(UnusableFileError) as err:
        decode_file(tmp_path / "nopix.dcm")
    assert err.value.reason is Reason.NO_PIXEL_DATA


def test_unsupported_transfer_syntax(tmp_path: Path) -> None:
    ds = secondary_capture(np.zeros((8, 8), np.uint8), patient_name="A^B", patient_id="1", institution="h")
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2 video
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "video.dcm", enforce_file_format=True)
    with pytest.raises(UnusableFileError) as err:
        decode_file(tmp_path / "video.dcm")
    assert err.value.reason is Reason.UNSUPPORTED_TRANSFER_SYNTAX
    assert "MPEG2" in str(err.value)


def test_messages_carry_no_header_values(tmp_path: Path) -> None:
    ds = secondary_capture(np.zeros((8, 8), np.uint8), patient_name="DOE^JANE", patient_id="PID-777", institution="h")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    (tmp_path / "cut.dcm").write_bytes(buffer.getvalue()[:-20])
    with pytest.raises(UnusableFileError) as err:
        decode_file(tmp_path / "cut.dcm")
    assert "DOE" not in str(err.value) and "PID-777" not in str(err.value)


def test_model_input_matches_channels_and_size() -> None:
    gray = decode_file(DATA / "MR2_UNCR.dcm")
    color = decode_file(DATA / "US1_UNCR.dcm")
    assert to_model_input(gray, 1, 64).shape == (1, 1, 64, 64)
    assert to_model_input(gray, 3, 28).shape == (1, 3, 28, 28)
    rgb_as_gray = to_model_input(color, 1, 28)
    assert rgb_as_gray.shape == (1, 1, 28, 28) and rgb_as_gray.dtype.is_floating_point is False


def _grayscale_dataset(pixels: np.ndarray, bits: int) -> Dataset:
    ds = secondary_capture(np.zeros(pixels.shape, np.uint8), patient_name="A^B", patient_id="1", institution="h")
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction"):
        delattr(ds, keyword)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds
