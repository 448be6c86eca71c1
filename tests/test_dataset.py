import os

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

from mixtrain_dali.dataset import IMG_EXTENSIONS, scan_image_folder
from mixtrain_dali.errors import UserError


def _touch_image(path, ext="jpg"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, format="PNG" if ext == "png" else "JPEG")


def test_class_mapping_and_samples_equal_torchvision_imagefolder(tmp_path):
    # nested folders, mixed-case extensions, a non-image file, an odd class name order
    for cls in ["zebra", "Apple", "mango", "b_2", "b_10"]:
        for name in ["x.jpg", "a.JPEG", "c.png", "sub/d.jpg", "sub/deeper/e.PNG"]:
            _touch_image(str(tmp_path / cls / name), ext=name.rsplit(".", 1)[1].lower())
        (tmp_path / cls / "notes.txt").write_text("not an image")
    ours = scan_image_folder(tmp_path)
    theirs = ImageFolder(str(tmp_path))
    assert ours.classes == theirs.classes
    assert ours.class_to_idx == theirs.class_to_idx
    assert ours.samples == theirs.samples
    assert set(IMG_EXTENSIONS) == set(theirs.extensions if hasattr(theirs, "extensions") and theirs.extensions
                                       else __import__("torchvision").datasets.folder.IMG_EXTENSIONS)


def test_path_bytes_round_trip_every_path(tmp_path):
    for cls in ["a", "bb"]:
        for name in ["1.jpg", "long_name_" * 5 + ".jpg", "ü-unicode.jpg"]:
            _touch_image(str(tmp_path / cls / name))
    index = scan_image_folder(tmp_path)
    buf, lens = index.path_bytes
    decoded = [bytes(buf[i, :lens[i]]).decode() for i in range(len(index))]
    assert decoded == index.paths


def test_encoded_batch_rows_are_the_paths_padded_with_nul_and_dali_reads_them(tmp_path):
    from nvidia.dali import fn, pipeline_def

    for cls in ["a", "bb"]:
        for name in ["1.jpg", "long_name_" * 5 + ".jpg", "ü-unicode.jpg"]:
            _touch_image(str(tmp_path / cls / name))
    index = scan_image_folder(tmp_path)
    ids = [5, 0, 3, 3, 1]
    rows = index.paths.encoded_batch(ids)
    assert rows.dtype == np.uint8 and rows.shape[0] == len(ids)
    for row, i in zip(rows, ids):
        assert bytes(row).rstrip(b"\0") == os.fsencode(index.paths[i])
        assert np.array_equal(row[:len(index.paths.encoded(i))], index.paths.encoded(i))
    assert index.paths.encoded_batch([]).shape[0] == 0

    @pipeline_def
    def read():  # the train graph's reader: a NUL-padded name opens the file itself
        return fn.io.file.read(fn.external_source(source=lambda: rows, batch=True))

    pipe = read(batch_size=len(ids), num_threads=1, device_id=None)
    pipe.build()
    (out,) = pipe.run()
    for j, i in enumerate(ids):
        assert np.array(out[j]).tobytes() == open(index.paths[i], "rb").read()

def test_missing_directory_names_the_path(tmp_path):
    with pytest.raises(UserError, match="does-not-exist"):
        scan_image_folder(tmp_path / "does-not-exist")

def test_directory_without_class_folders_names_the_path(tmp_path):
    _touch_image(str(tmp_path / "loose.jpg"))
    with pytest.raises(UserError, match=f"no class folders in '{tmp_path}'"):
        scan_image_folder(tmp_path)

def test_class_without_images_names_the_class_and_path(tmp_path):
    _touch_image(str(tmp_path / "full" / "a.jpg"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=r"hold no images \(empty\)") as e:
        scan_image_folder(tmp_path)
    assert str(tmp_path) in str(e.value)
