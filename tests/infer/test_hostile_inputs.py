"""Hostile inputs of common.infer: odd image modes, broken files, bad annotation files, broken videos.

Each case is a clear InputError naming the file and the item, or an image read as a viewer shows it.
"""
import io
import json
import struct
import sys
import time
import types
import zlib

import numpy as np
import pytest
from PIL import Image

from common.infer import inputs
from common.infer.inputs import InputError, read_annotations, read_image, video_frames

RGB = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK"])
def test_gray_palette_and_cmyk_images_read_as_pillow_shows_them(tmp_path, mode):
    picture = Image.fromarray(RGB).convert(mode)
    path = tmp_path / ("picture.jpg" if mode == "CMYK" else "picture.png")
    picture.save(path)
    image = read_image(path)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(image, expected)


def test_16_bit_png_keeps_its_range_instead_of_clipping_to_white(tmp_path):
    wide = (np.arange(24 * 32).reshape(24, 32) * 80).astype(np.uint16)  # 0 .. 61360
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode.startswith("I")
    image = read_image(path)
    np.testing.assert_array_equal(image[:, :, 0], (wide.astype(np.uint32) * 255 // 0xFFFF).astype(np.uint8))
    assert (image[:, :, 0] < 255).mean() > 0.9  # Pillow's convert("RGB") would make all but 256 pixels white


def test_transparent_pixels_are_white_whatever_colour_they_hide(tmp_path):
    rgba = np.concatenate([RGB, np.full((24, 32, 1), 255, np.uint8)], axis=2)
    rgba[:12, :, 3] = 0  # top half transparent, hiding random colours
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = read_image(path)
    assert (image[:12] == 255).all()
    np.testing.assert_array_equal(image[12:], RGB[12:])


def test_a_tiny_image_is_refused(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(InputError, match=r"dot.png is 1 x 1 pixels: too small"):
        read_image(tmp_path / "dot.png")


def test_truncated_jpeg_and_fake_jpg_name_the_file(tmp_path):
    stream = io.BytesIO()
    Image.fromarray(RGB).save(stream, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(stream.getvalue()[: len(stream.getvalue()) // 2])
    (tmp_path / "notes.jpg").write_text("not a picture")
    for name in ("cut.jpg", "notes.jpg"):
        with pytest.raises(InputError, match=f"cannot read image .*{name}.*re-export it"):
            read_image(tmp_path / name)


def test_gif_frames_of_different_sizes_come_out_at_the_canvas_size(tmp_path):
    frames = [Image.new("RGB", (32, 24), (255, 0, 0)), Image.new("RGB", (10, 40), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    shapes = [frame.shape for _, frame in video_frames(tmp_path / "anim.gif")]
    assert shapes == [(24, 32, 3)] * 2
    with pytest.raises(InputError, match="every must be at least 1"):
        list(video_frames(tmp_path / "anim.gif", every=0))


def test_folder_skips_and_counts_non_images(tmp_path, caplog):
    Image.fromarray(RGB).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    assert inputs.folder_images(tmp_path, log_skipped=True) == [tmp_path / "a.png"]
    assert "2 entries that are not images" in caplog.text


def _fake_av(monkeypatch, frames=(), error=None):
    """A stand-in PyAV: ``open`` raises ``error`` or decodes to ``frames``."""
    av = types.ModuleType("av")
    av.FFmpegError = type("FFmpegError", (Exception,), {})

    class Container:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def decode(self, video):
            return iter(frames)

    def open_(path):
        if error:
            raise av.FFmpegError(error)
        return Container()

    av.open = open_
    monkeypatch.setitem(sys.modules, "av", av)


def test_videos_without_pyav_corrupt_or_empty(tmp_path, monkeypatch):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"garbage")
    monkeypatch.setitem(sys.modules, "av", None)  # not installed
    with pytest.raises(InputError, match="clip.mp4 needs PyAV, which is not installed: pip install av"):
        list(video_frames(video))
    _fake_av(monkeypatch, error="Invalid data found when processing input")
    with pytest.raises(InputError, match="cannot decode the video .*clip.mp4.*Invalid data"):
        list(video_frames(video))
    _fake_av(monkeypatch, frames=())
    assert list(video_frames(video)) == []  # the command line turns no frames into an error (test_infer)


def _annotations(tmp_path, document, raw=None):
    path = tmp_path / "people.json"
    path.write_text(raw if raw is not None else json.dumps(document))
    return path


FULL = [[10.0, 20.0]] * 17


@pytest.mark.parametrize("document, raw, message", [
    ({"a.jpg": [{"keypoints": [[float("nan"), 1]] * 17}]}, None, r"'a.jpg' person 0: keypoints hold NaN, infinite"),
    (None, '{"a.jpg": [{"keypoints": [[Infinity, 1]]}]}', r"'a.jpg' person 0: keypoints hold NaN, infinite"),
    ({"a.jpg": [{"keypoints": [["x", "y"]] * 17}]}, None, r"'a.jpg' person 0: keypoints must be numbers"),
    ({"a.jpg": [{"bbox": ["a", 1, 2, 3]}]}, None, r"'a.jpg' person 0: bbox must be numbers"),
    ({"a.jpg": [[1, 2, None, 4]]}, None, r"'a.jpg' person 0: bbox hold NaN, infinite or null"),
    ([], None, "holds no persons"),
    ({}, None, "holds no persons"),
    (None, '{"a.jpg": [{"bbox": [1, 2, 3, 4]}], "a.jpg": [{"bbox": [5, 6, 7, 8]}]}', "'a.jpg' appears twice"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "a.jpg"}],
      "annotations": [{"image_id": 1, "keypoints": [1] * 51}]}, None, r"appear twice \(a.jpg\)"),
    ({"images": [{"id": 1}], "annotations": [{"image_id": 1, "keypoints": [1] * 51}]}, None,
     "is malformed .KeyError: 'file_name'"),
    ({"instance_info": [{"frame_id": 1, "instances": [{"keypoints": FULL}]}] * 2}, None, "frame_id 1 appears twice"),
])
def test_bad_annotation_files_are_clear_errors(tmp_path, document, raw, message):
    with pytest.raises(InputError, match=message):
        read_annotations(_annotations(tmp_path, document, raw))


@pytest.mark.parametrize("arrays, message", [
    (dict(keypoints=np.array([{"x": 1}], dtype=object)), "without pickle"),
    (dict(keypoints=np.array([[["a", "b"]] * 17])), "must be numbers"),
    (dict(keypoints=np.concatenate([np.zeros((1, 17, 2)), np.full((1, 17, 2), np.inf)])), r"rows \[1\] hold NaN"),
    (dict(keypoints=np.zeros((2, 17, 2)), names=np.array(["a.jpg"])), "'names' must be .2,."),
    (dict(keypoints=np.zeros((0, 17, 2))), "holds no persons"),
])
def test_bad_keypoint_npz_files_are_clear_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "people.npz", **arrays)
    with pytest.raises(InputError, match=message):
        read_annotations(tmp_path / "people.npz")


def test_a_file_of_100000_persons_reads_in_seconds(tmp_path):
    """COCO results of 100,000 persons (Detectron2's format) are read in seconds."""
    keypoints = json.dumps(np.random.default_rng(0).uniform(0, 500, (17, 3)).round(1).reshape(-1).tolist())
    path = tmp_path / "results.json"
    path.write_text("[" + ", ".join(f'{{"image_id": {i}, "keypoints": {keypoints}, "bbox": [1, 2, 30, 40]}}'
                                    for i in range(100_000)) + "]")
    start = time.perf_counter()
    people, match = read_annotations(path)
    assert time.perf_counter() - start < 30  # about 4 s on one shared core
    assert match == "image_id" and len(people) == 100_000
    np.testing.assert_array_equal(people[99_999][0].keypoints.reshape(-1), json.loads(keypoints))



def _png_header_only(path, width, height):
    """A PNG whose header says ``width`` x ``height`` (8-bit RGB) with no pixel data: a bomb's disguise."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_a_30000_by_30000_bomb_is_refused_from_its_header(tmp_path):
    path = _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    start = time.perf_counter()
    with pytest.raises(InputError, match="bomb.png"):
        read_image(path)
    assert time.perf_counter() - start < 1  # nothing decoded (2.7 GB of pixels)
    with pytest.raises(InputError, match=r"12000 x 10000 pixels, more than 100,000,000: refused before decoding"):
        read_image(_png_header_only(tmp_path / "large.png", 12000, 10000))  # under Pillow's own bomb limit
