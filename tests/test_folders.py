"""Image folders as datasets, built from small synthetic files of the kinds people's folders contain."""

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from common import folders
from common.data import ImageSet, load_images
from common.errors import ConfigError, UserError
from common.images import make_square, parse_color, prepare_image

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def save(image, path, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def solid(color, size=(24, 24)):
    return Image.new("RGB", size, color)


def load(folder, tmp_path, size=32, channels=None, train=True, **options):
    """Load a FOLDER dataset with its cache under tmp_path/cache."""
    return load_images("FOLDER", size, channels, train, root=tmp_path, folder=folder, **options)


def both_splits(folder, tmp_path, **options):
    train = load(folder, tmp_path, train=True, **options)
    test = load(folder, tmp_path, train=False, **options)
    return train, test


def every_image(folder, tmp_path, **options):
    """Return the images of both splits, once each: a folder too small to hold out any has one shared split."""
    train, test = both_splits(folder, tmp_path, **options)
    if torch.equal(train.images, test.images):
        return train
    return ImageSet(torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels]), train.class_names)


def pixel(image_set, index=0, row=None, column=None):
    """Return the RGB values of one pixel (the centre by default) of image `index`."""
    size = image_set.images.shape[-1]
    row = size // 2 if row is None else row
    column = size // 2 if column is None else column
    return tuple(image_set.images[index, :, row, column].tolist())


def bytes_of(image, file_format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Forget which folders were reported, so that each test gets its own warnings."""
    monkeypatch.setattr(folders, "_reported_fingerprints", set())


# 1. Layouts: flat, class subfolders, empty or stray subfolders


def test_flat_folder_is_one_class(tmp_path):
    folder = tmp_path / "birds"
    for index in range(30):
        save(solid((index * 8, 0, 0)), folder / f"bird_{index:02d}.png")

    train, test = both_splits(folder, tmp_path)
    assert train.class_names == ["birds"]
    assert test.class_names == ["birds"]
    assert len(train.images) + len(test.images) == 30
    assert len(test.images) >= 1
    assert set(train.labels.tolist()) == {0}
    train_reds = {pixel(train, index)[0] for index in range(len(train.images))}
    test_reds = {pixel(test, index)[0] for index in range(len(test.images))}
    assert train_reds.isdisjoint(test_reds)
    assert train_reds | test_reds == {index * 8 for index in range(30)}


def test_class_subfolders_become_labels(tmp_path):
    folder = tmp_path / "pets"
    for index in range(15):
        save(solid(RED), folder / "cats" / f"{index}.png")
        save(solid(BLUE), folder / "dogs" / "indoor" / f"{index}.png")  # nested deeper: still dogs
    (folder / "empty").mkdir()
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("not an image")

    image_set = every_image(folder, tmp_path)
    assert image_set.class_names == ["cats", "dogs"]
    assert len(image_set.images) == 30
    for index, label in enumerate(image_set.labels.tolist()):
        assert pixel(image_set, index) == (RED if label == 0 else BLUE)


def test_loose_files_beside_classes_warn(tmp_path, capsys):
    folder = tmp_path / "pets"
    for index in range(3):
        save(solid(RED), folder / "cats" / f"{index}.png")
        save(solid(BLUE), folder / "dogs" / f"{index}.png")
    save(solid(GREEN), folder / "stray.png")

    train = load(folder, tmp_path)
    assert GREEN not in {pixel(train, index) for index in range(len(train.images))}
    error = capsys.readouterr().err
    assert "1 image file directly in" in error
    assert "stray.png" in error


def test_first_images_mix_classes(tmp_path):
    folder = tmp_path / "pets"
    for index in range(40):
        save(solid(RED), folder / "a_cats" / f"{index:02d}.png")
        save(solid(BLUE), folder / "b_dogs" / f"{index:02d}.png")
    train = load(folder, tmp_path)
    assert set(train.labels[:16].tolist()) == {0, 1}


# 2. Hidden names


def test_hidden_names_ignored(tmp_path, capsys):
    folder = tmp_path / "art"
    for index in range(12):
        save(solid(RED), folder / f"{index}.png")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    save(solid(GREEN), folder / ".ipynb_checkpoints" / "0-checkpoint.png")
    save(solid(GREEN), folder / "__MACOSX" / "0.png")
    (folder / "notes.txt").write_text("a caption")

    image_set = every_image(folder, tmp_path)
    assert len(image_set.images) == 12
    assert image_set.class_names == ["art"]  # .ipynb_checkpoints and __MACOSX are no classes
    error = capsys.readouterr().err
    assert "warning: skipped" not in error
    assert "not used" not in error


def test_pipes_and_broken_links_left_out(tmp_path):
    folder = tmp_path / "special"
    for index in range(3):
        save(solid(RED), folder / f"{index}.png")
    os.mkfifo(folder / "pipe.png")  # opening it would block forever
    (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
    assert len(every_image(folder, tmp_path).images) == 3


# 3. Unreadable files


def make_bad_files(folder):
    """Write the four kinds of unreadable files and return their relative names."""
    png = bytes_of(solid(RED, (64, 64)), "PNG")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    jpeg = bytes_of(noise, "JPEG")
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 3 // 4])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is a text file")
    return ["truncated.png", "cut.jpg", "empty.png", "notes.png"]


def test_bad_files_skipped_with_one_warning(tmp_path, capsys):
    folder = tmp_path / "mixed"
    for index in range(20):
        save(solid(BLUE), folder / f"good_{index}.png")
    bad_names = make_bad_files(folder)

    assert len(every_image(folder, tmp_path).images) == 20
    error = capsys.readouterr().err
    assert error.count("warning: skipped") == 1
    assert f"skipped 4 of 24 image files in {folder}" in error
    for name in bad_names:
        assert f"  {name}: " in error


def test_warning_caps_listed_files(tmp_path, capsys):
    folder = tmp_path / "mostly_bad"
    for index in range(3):
        save(solid(BLUE), folder / f"good_{index}.png")
    for index in range(15):
        (folder / f"bad_{index:02d}.png").write_text("no image")

    load(folder, tmp_path)
    error = capsys.readouterr().err
    assert error.count("  bad_") == folders.MAX_LISTED_FILES
    assert "... and 5 more" in error


def test_no_usable_file_stops(tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    make_bad_files(folder)
    with pytest.raises(UserError, match=f"none of the 4 image files in {folder} can be read"):
        load(folder, tmp_path)
    assert "skipped 4 of 4" in capsys.readouterr().err


def test_decompression_bomb_skipped(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "huge"
    save(solid(RED, (100, 100)), folder / "huge.png")
    for index in range(3):
        save(solid(BLUE, (10, 10)), folder / f"small_{index}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 100 x 100 is more than twice the limit

    assert len(every_image(folder, tmp_path).images) == 3
    assert "huge.png" in capsys.readouterr().err


# 4. Modes


def gradient_16_bit():
    """Return a 16-bit grayscale image whose columns rise from 0 to 65535."""
    values = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (64, 1))
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    return image


def test_sixteen_bit_keeps_gradient(tmp_path):
    path = save(gradient_16_bit(), tmp_path / "gradient.png")
    assert Image.open(path).mode == "I;16"
    row = prepare_image(path, 64, "crop", WHITE)[32, :, 0].astype(int)
    assert row[0] <= 2
    assert row[-1] >= 253
    assert np.all(np.diff(row) >= 0)
    assert 100 <= row[32] <= 155  # the middle of the gradient stays mid-gray


@pytest.mark.parametrize("mode", ["I", "F"])
def test_wide_modes_keep_gradient(tmp_path, mode):
    values = np.tile(np.linspace(0, 65535, 64), (64, 1))
    image = Image.fromarray(values.astype(np.int32) if mode == "I" else (values / 65535).astype(np.float32))
    assert image.mode == mode
    path = save(image, tmp_path / "wide.tif")
    row = prepare_image(path, 64, "crop", WHITE)[32, :, 0].astype(int)
    assert row[0] <= 2
    assert row[-1] >= 253
    assert 100 <= row[32] <= 155


def rgba_half_transparent():
    """Return a 20 x 20 RGBA image whose left half is opaque red and right half fully transparent."""
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 10, 20))
    return image


def palette_with_transparent_index():
    """Return a palette image: index 0 is transparent black, index 1 opaque red on the left half."""
    image = Image.new("P", (20, 20), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (0, 0, 10, 20))
    image.info["transparency"] = 0
    return image


def rgb_with_colour_key():
    """Return an RGB image whose black right half is transparent through a PNG colour key."""
    image = solid(RED, (20, 20))
    image.paste(BLACK, (10, 0, 20, 20))
    image.info["transparency"] = BLACK
    return image


def la_half_transparent():
    image = Image.new("LA", (20, 20), (0, 0))
    image.paste((50, 255), (0, 0, 10, 20))
    return image


# (name, image, file name, expected left pixel, expected right pixel) with a green background
MODE_CASES = [
    ("1", Image.new("1", (20, 20), 1), "one.png", WHITE, WHITE),
    ("L", Image.new("L", (20, 20), 77), "gray.png", (77, 77, 77), (77, 77, 77)),
    ("LA", la_half_transparent(), "gray_alpha.png", (50, 50, 50), GREEN),
    ("P transparent", palette_with_transparent_index(), "palette_alpha.png", RED, GREEN),
    ("P opaque", Image.new("RGB", (20, 20), BLUE).quantize(4), "palette.png", BLUE, BLUE),
    ("RGB", solid(RED, (20, 20)), "rgb.png", RED, RED),
    ("RGB colour key", rgb_with_colour_key(), "rgb_key.png", RED, GREEN),
    ("RGBA", rgba_half_transparent(), "rgba.png", RED, GREEN),
    ("CMYK", Image.new("CMYK", (20, 20), (255, 0, 0, 0)), "cmyk.jpg", (0, 255, 255), (0, 255, 255)),
]


@pytest.mark.parametrize("name, image, file_name, left, right", MODE_CASES, ids=[case[0] for case in MODE_CASES])
def test_modes_become_rgb(tmp_path, name, image, file_name, left, right):
    path = save(image, tmp_path / file_name)
    pixels = prepare_image(path, 32, "crop", GREEN)
    assert pixels.shape == (32, 32, 3)
    assert pixels.dtype == np.uint8
    # JPEG (the CMYK case) is lossy, so colours are compared with a tolerance.
    assert np.abs(pixels[16, 2].astype(int) - left).max() <= 8
    assert np.abs(pixels[16, 29].astype(int) - right).max() <= 8


def test_transparency_uses_background_color(tmp_path):
    folder = tmp_path / "sprites"
    for index in range(12):
        save(rgba_half_transparent(), folder / f"{index}.png")
        save(palette_with_transparent_index(), folder / f"{index}.gif")

    white_set = load(folder, tmp_path)
    assert {pixel(white_set, index, column=28) for index in range(len(white_set.images))} == {WHITE}
    blue_set = load(folder, tmp_path, background_color=(0, 0, 255))
    assert {pixel(blue_set, index, column=28) for index in range(len(blue_set.images))} == {BLUE}
    assert {pixel(blue_set, index, column=3) for index in range(len(blue_set.images))} == {RED}


def test_gray_as_three_channels_and_color_as_one(tmp_path):
    folder = tmp_path / "gray_and_red"
    for index in range(12):
        save(Image.new("L", (16, 16), 100), folder / f"gray_{index}.png")
        save(solid(RED, (16, 16)), folder / f"red_{index}.png")

    rgb = load(folder, tmp_path, channels=3)
    gray = load(folder, tmp_path, channels=1)
    assert rgb.images.shape[1:] == (3, 32, 32)
    assert gray.images.shape[1:] == (1, 32, 32)
    rgb_values = {pixel(rgb, index) for index in range(len(rgb.images))}
    assert rgb_values == {(100, 100, 100), RED}
    gray_values = {pixel(gray, index) for index in range(len(gray.images))}
    assert gray_values == {(100,), (76,)}  # red's luma: 0.299 x 255


def test_default_channels_is_three(tmp_path):
    folder = tmp_path / "gray"
    for index in range(3):
        save(Image.new("L", (16, 16), 100), folder / f"{index}.png")
    assert load(folder, tmp_path).images.shape[1] == 3


# 5. Formats and extensions


def animated_gif(path):
    frames = [Image.new("P", (20, 20), 1), Image.new("P", (20, 20), 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0, 0, 0] * 253)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def test_formats_and_upper_case_extensions(tmp_path):
    folder = tmp_path / "formats"
    folder.mkdir()
    animated_gif(folder / "animation.gif")
    save(solid(RED), folder / "photo.webp", lossless=True)
    save(solid(RED), folder / "bitmap.bmp")
    save(solid(RED), folder / "scan.tiff")
    save(solid(RED), folder / "scan2.TIF")
    save(solid(RED), folder / "upper.PNG")
    save(solid(RED), folder / "camera.JPG", quality=95)
    save(solid(RED), folder / "camera2.JPEG", quality=95)

    image_set = every_image(folder, tmp_path)
    assert len(image_set.images) == 8
    for index in range(len(image_set.images)):
        assert np.abs(np.array(pixel(image_set, index)) - RED).max() <= 8  # the GIF's first frame is red


def test_exif_orientation_applied(tmp_path):
    image = solid(RED, (40, 20))  # stored landscape
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display, so it shows portrait
    path = save(image, tmp_path / "phone.jpg", exif=exif, quality=95)
    pixels = prepare_image(path, 32, "pad", WHITE)
    assert tuple(pixels[16, 0]) == WHITE  # portrait: padded at the left and right
    assert np.abs(pixels[0, 16].astype(int) - RED).max() <= 8


# Non-square images


def three_stripes():
    """Return a 60 x 30 image: green, then red, then green, 20 px wide each."""
    image = solid(GREEN, (60, 30))
    image.paste(RED, (20, 0, 40, 30))
    return image


def test_crop_and_pad_policies(tmp_path):
    cropped = make_square(three_stripes(), "crop", WHITE)
    assert cropped.size == (30, 30)
    assert cropped.getpixel((0, 15)) == GREEN  # centre crop: columns 15 to 44
    assert cropped.getpixel((15, 15)) == RED
    padded = make_square(three_stripes(), "pad", WHITE)
    assert padded.size == (60, 60)
    assert padded.getpixel((30, 5)) == WHITE
    assert padded.getpixel((0, 30)) == GREEN
    assert padded.getpixel((30, 30)) == RED


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_result_shape_exact(tmp_path, size, channels):
    folder = tmp_path / "shapes"
    for index, dimensions in enumerate([(60, 30), (30, 60), (7, 300), (300, 7), (32, 32), (1, 1)]):
        save(solid(RED, dimensions), folder / f"{index}.png")
    for policy in ("crop", "pad"):
        image_set = every_image(folder, tmp_path, size=size, channels=channels, resize_policy=policy)
        assert image_set.images.shape == (6, channels, size, size)
        assert image_set.images.dtype == torch.uint8


def test_auto_policy_per_dataset(tmp_path, capsys):
    for dataset in ("POKEMON", "PAINTINGS"):
        for index in range(3):
            save(three_stripes(), tmp_path / dataset / f"{index}.png")
    folder = tmp_path / "mine"
    for index in range(3):
        save(three_stripes(), folder / f"{index}.png")

    sprites = load_images("POKEMON", 32, 3, root=tmp_path)
    assert pixel(sprites, row=2) == WHITE  # padded
    paintings = load_images("PAINTINGS", 32, 3, root=tmp_path)
    assert pixel(paintings, row=2, column=0) == GREEN  # cropped: the stripes fill the frame
    mine = load(folder, tmp_path, channels=3)
    assert pixel(mine, row=2, column=0) == GREEN
    padded_mine = load(folder, tmp_path, channels=3, resize_policy="pad")
    assert pixel(padded_mine, row=2) == WHITE


# 6. Few images


def test_tiny_folder_shares_split(tmp_path, capsys):
    folder = tmp_path / "two"
    save(solid(RED), folder / "a.png")
    save(solid(BLUE), folder / "b.png")
    train, test = both_splits(folder, tmp_path)
    assert len(train.images) == 2
    assert torch.equal(train.images, test.images)
    assert "its test split is the training split" in capsys.readouterr().err


def test_held_out_split_is_stable(tmp_path):
    folder = tmp_path / "growing"
    for index in range(40):
        save(solid((index, 0, 0)), folder / f"{index:03d}.png")
    _, test_before = both_splits(folder, tmp_path)
    for index in range(40, 60):
        save(solid((index, 0, 0)), folder / f"{index:03d}.png")
    train_after, test_after = both_splits(folder, tmp_path)

    held_out_before = {pixel(test_before, index)[0] for index in range(len(test_before.images))}
    held_out_after = {pixel(test_after, index)[0] for index in range(len(test_after.images))}
    trained_after = {pixel(train_after, index)[0] for index in range(len(train_after.images))}
    assert held_out_before <= held_out_after
    assert held_out_before.isdisjoint(trained_after)
    assert len(trained_after) + len(held_out_after) == 60


def test_held_out_names_fixed_across_runs(tmp_path):
    folder = tmp_path / "numbered"
    for index in range(60):
        save(solid((index, 0, 0)), folder / f"{index:03d}.png")
    _, test = both_splits(folder, tmp_path)
    held_out = sorted(f"{pixel(test, index)[0]:03d}.png" for index in range(len(test.images)))
    # Fixed by the SHA-256 of each name, so every run and every machine holds out the same files.
    assert held_out == ["001.png", "003.png", "004.png", "006.png", "031.png", "059.png"]


# 7. Empty, missing or imageless folders


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(UserError) as raised:
        load(tmp_path / "nowhere", tmp_path)
    message = str(raised.value)
    assert message.startswith(f"image folder {tmp_path / 'nowhere'} not found: expected a folder of .jpg, .jpeg, .png")
    assert "\n" not in message


@pytest.mark.parametrize("content", ["empty", "no images", "empty class folders"])
def test_folder_without_images(tmp_path, content):
    folder = tmp_path / "pictures"
    folder.mkdir()
    if content == "no images":
        (folder / "notes.txt").write_text("text")
        (folder / ".DS_Store").write_bytes(bytes(16))
        (folder / "._photo.png").write_bytes(b"\x00\x05\x16\x07")
    elif content == "empty class folders":
        (folder / "cats").mkdir()
        (folder / "dogs").mkdir()
    with pytest.raises(UserError) as raised:
        load(folder, tmp_path)
    message = str(raised.value)
    assert f"no image files in {folder}" in message
    for extension in (".png", ".jpg", ".gif"):
        assert extension in message
    assert "\n" not in message


def test_file_instead_of_folder(tmp_path):
    path = save(solid(RED), tmp_path / "one.png")
    with pytest.raises(UserError, match="is a file, not a folder of images"):
        load(path, tmp_path)


def test_paintings_missing_names_folder_and_types(tmp_path):
    with pytest.raises(UserError) as raised:
        load_images("PAINTINGS", 32, None, root=tmp_path)
    message = str(raised.value)
    assert str(tmp_path / "PAINTINGS") in message
    assert ".png" in message
    assert "README.md" in message
    (tmp_path / "PAINTINGS").mkdir()
    with pytest.raises(UserError, match=r"no image files in .*PAINTINGS: expected files ending in \.jpg"):
        load_images("PAINTINGS", 32, None, root=tmp_path)


def test_invalid_policy_rejected(tmp_path):
    folder = tmp_path / "any"
    save(solid(RED), folder / "0.png")
    with pytest.raises(ConfigError, match="invalid hyperparameter RESIZE_POLICY='stretch'"):
        load(folder, tmp_path, resize_policy="stretch")


def test_folder_without_path_rejected(tmp_path):
    with pytest.raises(ConfigError, match="DATASET_PATH"):
        load_images("FOLDER", 32, None, root=tmp_path)


# Cache


@pytest.fixture
def counted_decoding(monkeypatch):
    """Count how many times the folder loader decodes files, that is, misses its cache."""
    calls = []
    decode = folders.decode_files

    def counting(paths, *arguments, **options):
        calls.append(len(paths))
        return decode(paths, *arguments, **options)

    monkeypatch.setattr(folders, "decode_files", counting)
    return calls


def test_cache_rebuilt_when_files_change(tmp_path, counted_decoding):
    folder = tmp_path / "changing"
    for index in range(20):
        save(solid(RED), folder / f"{index:02d}.png")

    def total():
        return len(every_image(folder, tmp_path).images)

    assert total() == 20
    assert total() == 20
    assert counted_decoding == [20]  # the second load and both test splits come from the cache

    save(solid(BLUE), folder / "added.png")
    assert total() == 21
    (folder / "00.png").unlink()
    assert total() == 20
    assert counted_decoding == [20, 21, 20]

    modified = folder / "05.png"
    save(solid(BLUE, (30, 30)), modified)
    os.utime(modified, ns=(1, 1))  # a new size and modification time
    image_set = every_image(folder, tmp_path)
    assert {pixel(image_set, index) for index in range(len(image_set.images))} == {RED, BLUE}
    assert len(counted_decoding) == 4


def test_cache_rebuilt_for_new_settings(tmp_path, counted_decoding):
    folder = tmp_path / "settings"
    for index in range(5):
        save(three_stripes(), folder / f"{index}.png")
    load(folder, tmp_path)
    load(folder, tmp_path, resize_policy="pad")
    load(folder, tmp_path, resize_policy="pad", background_color="black")
    load(folder, tmp_path, resize_policy="pad", background_color="black")
    assert len(counted_decoding) == 3


def test_warning_repeats_from_cache(tmp_path, capsys):
    folder = tmp_path / "bad"
    for index in range(5):
        save(solid(RED), folder / f"{index}.png")
    (folder / "broken.png").write_text("no image")
    load(folder, tmp_path)
    assert "broken.png" in capsys.readouterr().err
    folders._reported_fingerprints.clear()  # a new run of the script
    load(folder, tmp_path)
    assert "broken.png" in capsys.readouterr().err


# Colours


def test_parse_color_forms():
    assert parse_color("white") == WHITE
    assert parse_color("#00ff00") == GREEN
    assert parse_color((1, 2, 3)) == (1, 2, 3)
    for invalid in ("no such colour", (1, 2), (0, 0, 256), (0.5, 0, 0)):
        with pytest.raises(ValueError):
            parse_color(invalid)
