"""Decoding any Pillow-readable file to upright 8-bit RGB; image sets and their errors; preprocessing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import noise_image
from generator import images as imagelib
from generator.errors import ConvscopeError
from generator.images import decode
from generator.checks import ReportSpec
from generator.spec import InputSpec


def rgb(im: Image.Image) -> np.ndarray:
    assert im.mode == "RGB"
    a = np.asarray(im)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    return a


def test_rgb_png_round_trips(tmp_path):
    src = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(src).save(tmp_path / "x.png")
    assert np.array_equal(rgb(decode(tmp_path / "x.png")), src)


def test_rgba_is_composited_on_white(tmp_path):
    a = np.zeros((4, 6, 4), dtype=np.uint8)
    a[0, 0] = (255, 0, 0, 0)  # fully transparent red → white
    a[1, 1] = (0, 0, 255, 255)  # opaque blue
    a[2, 2] = (0, 0, 0, 128)  # half-transparent black → mid grey
    Image.fromarray(a, "RGBA").save(tmp_path / "x.png")
    out = rgb(decode(tmp_path / "x.png"))
    assert out.shape == (4, 6, 3)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[1, 1]) == (0, 0, 255)
    assert all(abs(int(v) - 127) <= 1 for v in out[2, 2])


def test_palette_image(tmp_path):
    im = Image.new("P", (5, 3))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.putpixel((1, 2), 1)
    im.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = rgb(decode(tmp_path / "p.png"))
    assert out.shape == (3, 5, 3)
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[2, 1]) == (200, 100, 50)


def test_palette_image_with_transparent_index(tmp_path):
    im = Image.new("P", (4, 4))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.putpixel((0, 0), 1)
    im.save(tmp_path / "p.png", transparency=0)
    out = rgb(decode(tmp_path / "p.png"))
    assert tuple(out[0, 0]) == (200, 100, 50)
    assert tuple(out[3, 3]) == (255, 255, 255)  # transparent → white background


def test_grayscale_image(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(a, "L").save(tmp_path / "g.png")
    out = rgb(decode(tmp_path / "g.png"))
    assert out.shape == (3, 4, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], a)


def test_16_bit_grayscale_is_scaled_to_8_bit(tmp_path):
    levels = np.array([[0, 1, 64, 128], [200, 250, 254, 255]], dtype=np.uint16)
    Image.fromarray(levels * 257).save(tmp_path / "g16.png")  # v × 257 is v/255 of the 16-bit range
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = rgb(decode(tmp_path / "g16.png"))
    assert out.shape == (2, 4, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], levels.astype(np.uint8))


def test_exif_rotation_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), dtype=np.uint8)  # 40 wide, 20 tall as stored
    stored[:5, :5] = (255, 0, 0)  # red mark at the stored top-left
    stored[-3:, :] = (0, 255, 0)  # green band along the stored bottom
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: rotate 90° clockwise to display
    Image.fromarray(stored).save(tmp_path / "r.png", exif=exif)
    out = rgb(decode(tmp_path / "r.png"))
    expected = np.rot90(stored, k=-1)  # clockwise
    assert out.shape == (40, 20, 3)  # upright: 20 wide, 40 tall
    assert np.array_equal(out, expected)
    assert tuple(out[0, -1]) == (255, 0, 0)  # the mark is now top-right
    assert (out[:, :3] == (0, 255, 0)).all()  # the bottom band is now the left edge


def test_exif_rotation_in_a_jpeg(tmp_path):
    stored = np.full((16, 32, 3), 255, dtype=np.uint8)
    stored[:, :8] = 0  # dark block at the stored left
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = rgb(decode(tmp_path / "r.jpg"))
    assert out.shape == (32, 16, 3)
    assert out[:8].mean() < 30 and out[12:].mean() > 225  # left → top after a clockwise turn


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConvscopeError) as info:
        decode(tmp_path / "nope.png")
    assert info.value.where == str(tmp_path / "nope.png")
    assert "not found" in info.value.message


def test_broken_file_names_it(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ConvscopeError) as info:
        decode(path)
    assert info.value.where == str(path)
    assert "cannot decode" in info.value.message


def test_truncated_file_names_it(tmp_path):
    noise_image(tmp_path / "full.png", size=(64, 64))
    path = tmp_path / "cut.png"
    path.write_bytes((tmp_path / "full.png").read_bytes()[:100])
    with pytest.raises(ConvscopeError) as info:
        decode(path)
    assert info.value.where == str(path)


# ------------------------------------------------------------------------------------------------ sets


def spec_with(tmp_path: Path, images: dict) -> ReportSpec:
    spec = ReportSpec.parse({"images": images, "models": [{"name": "m", "factory": "x:y"}]})
    spec._path = (tmp_path / "spec.yml").resolve()
    return spec


def load_ok(spec: ReportSpec) -> dict:
    sets, problems = imagelib.load_sets(spec)
    assert problems == []
    return sets


def problems_of(spec: ReportSpec) -> list[str]:
    sets, problems = imagelib.load_sets(spec)
    assert problems
    return problems


def test_sets_from_files_and_globs(tmp_path):
    (tmp_path / "pics" / "sub").mkdir(parents=True)
    for seed, name in enumerate(("b.png", "a.png", "sub/c.png")):
        noise_image(tmp_path / "pics" / name, seed=seed)
    (tmp_path / "pics" / "notes.txt").write_text("not an image")
    sets = load_ok(spec_with(tmp_path, {"one": ["pics/b.png"], "all": ["pics/**/*.png"]}))
    assert [r.id for r in sets["one"]] == ["one/b"]
    assert [r.id for r in sets["all"]] == ["all/a", "all/b", "all/c"]
    r = sets["one"][0]
    assert r.set == "one" and r.name == "b" and r.source == str(tmp_path / "pics" / "b.png")
    assert r.image.mode == "RGB" and r.image.size == (48, 40)
    # the digest is of the pixels: the same picture under another name has the same digest
    assert sets["all"][1].digest == r.digest and sets["all"][0].digest != r.digest


def test_same_stem_twice_gets_unique_ids(tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        noise_image(tmp_path / d / "cat.png", seed=ord(d))
    sets = load_ok(spec_with(tmp_path, {"s": ["x/cat.png", "y/cat.png"]}))
    ids = [r.id for r in sets["s"]]
    assert len(set(ids)) == 2 and ids[0] == "s/cat"


def test_glob_matching_nothing(tmp_path):
    noise_image(tmp_path / "a.png")
    problems = problems_of(spec_with(tmp_path, {"pics": ["a.png"], "other": ["a.png", "b/*.jpg"]}))
    assert problems == ["images.other[1]: the pattern 'b/*.jpg' matches no file"]


def test_missing_file_in_a_set(tmp_path):
    noise_image(tmp_path / "a.png")
    (line,) = problems_of(spec_with(tmp_path, {"pics": ["a.png", "gone.png"]}))
    assert line.startswith("images.pics[1]: ") and "not found" in line and "gone.png" in line


def test_broken_file_in_a_set_names_key_and_file(tmp_path):
    noise_image(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage" * 10)
    (line,) = problems_of(spec_with(tmp_path, {"pics": ["a.png", "bad.png"]}))
    assert line.startswith("images.pics[1]: ")
    assert str(tmp_path / "bad.png") in line and "cannot decode" in line


def test_broken_file_via_validate(tmp_path, capsys):
    from helpers import TINYMOD, cli, tiny_spec, write_spec

    (tmp_path / "tinymod.py").write_text(TINYMOD)
    (tmp_path / "pics").mkdir()
    noise_image(tmp_path / "pics" / "a.png")
    (tmp_path / "pics" / "b.png").write_bytes(np.random.default_rng(1).bytes(500))
    assert cli("validate", write_spec(tmp_path, tiny_spec())) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: spec.yml: images.pics[1]:") and "b.png" in err


def test_samples_decode(tmp_path):
    sets = load_ok(spec_with(tmp_path, {"s": ["skimage:camera", "sklearn:china"]}))
    camera, china = sets["s"]
    assert camera.id == "s/camera" and china.id == "s/china"
    assert camera.image.mode == "RGB" and camera.image.size == (512, 512)  # grayscale sample made RGB
    assert china.image.size == (640, 427)


def test_unknown_sample(tmp_path):
    (line,) = problems_of(spec_with(tmp_path, {"s": ["skimage:chelse"]}))
    assert line.startswith("images.s[0]: ") and "did you mean 'chelsea'?" in line


# ------------------------------------------------------------------------------------------------ preprocessing


def test_preprocess_normalizes_each_channel():
    a = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    spec = InputSpec(size=16, resize=16)
    x = imagelib.preprocess(Image.fromarray(a), spec)
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    expected = (torch.from_numpy(a).permute(2, 0, 1).float() / 255 - mean) / std
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x, expected, atol=1e-5)
    # display() undoes it
    assert np.array_equal(imagelib.display(x, spec), a)


def test_crop_is_the_centre_square_of_the_resized_image():
    a = np.zeros((8, 24, 3), dtype=np.uint8)  # 24 wide, 8 tall
    a[:, 8:16] = 255  # the middle third is white
    spec = InputSpec(size=8, resize=8, interpolation="nearest")
    c = np.asarray(imagelib.crop(Image.fromarray(a), spec))
    assert c.shape == (8, 8, 3) and (c == 255).all()


def test_grayscale_input_mode():
    a = np.full((10, 10, 3), 128, dtype=np.uint8)
    x = imagelib.preprocess(Image.fromarray(a), InputSpec(size=10, resize=10, mode="L", mean=[0.5], std=[0.5]))
    assert x.shape == (1, 10, 10)
    assert torch.allclose(x, torch.full((1, 10, 10), (128 / 255 - 0.5) / 0.5), atol=1e-5)
