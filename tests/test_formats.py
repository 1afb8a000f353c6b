"""YOLO and Pascal VOC folders (hf_detr.data.formats) load into the same examples as the equivalent COCO folder, under
the same box policy; malformed files name the file and line; `hf-detr check-data` counts and lists the problems."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest

from hf_detr.apps.cli import main
from hf_detr.data import check_data, coco_detection_features, detect_format, id2label, load_data, load_detection_dataset
from test_real_world_data import ANNOTATIONS, CLIPPED, DROPPED_BY_CLIP, write_defective_coco

NAMES = ["bird", "cat", "dog"]  # sorted: VOC's label names are the sorted object names
# split -> images (file name, width, height, objects (class, COCO [x, y, w, h] pixels, VOC difficult))
SPEC = {
    "train": [
        # the dog reaches the bottom right corner
        ("a.png", 40, 30, [("cat", [2.0, 3.0, 10.0, 8.0], 0), ("dog", [20.0, 10.0, 20.0, 20.0], 1)]),
        ("b.png", 32, 32, []),  # YOLO: no label file
        ("c.png", 24, 16, [("bird", [0.0, 0.0, 24.0, 16.0], 0)]),  # the whole image
        ("e.png", 20, 20, []),  # YOLO: an empty label file
    ],
    "val": [("d.png", 30, 20, [("dog", [5.5, 2.25, 10.0, 7.5], 0), ("bird", [1.0, 1.0, 3.0, 4.0], 0)])],
}


def _images(spec=SPEC) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        name: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for images in spec.values() for name, w, h, _ in images
    }


def write_coco(root: Path, crowd_difficult: bool, spec=SPEC) -> None:
    """The COCO folder of `spec`: image ids 0.. and annotation ids 1.. per split in order; categories numbered out of
    name order (labels follow the COCO ids, so they are sorted by name here only through the ids)."""
    pixels = _images(spec)
    (root / "annotations").mkdir(parents=True)
    for split, images in spec.items():
        (root / "images" / split).mkdir(parents=True)
        coco = {
            "images": [],
            "annotations": [],
            "categories": [{"id": 10 * (i + 1), "name": n} for i, n in enumerate(NAMES)],
        }
        for image_id, (file_name, width, height, objects) in enumerate(images):
            PIL.Image.fromarray(pixels[file_name]).save(root / "images" / split / file_name)
            coco["images"].append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            for name, box, difficult in objects:
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": image_id,
                        "bbox": box,
                        "category_id": 10 * (NAMES.index(name) + 1),
                        "iscrowd": difficult if crowd_difficult else 0,
                    }
                )
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def write_yolo(root: Path, names=NAMES, spec=SPEC) -> Path:
    """The YOLO folder of `spec` (data.yaml, images/<split>, labels/<split>); returns the yaml."""
    pixels = _images(spec)
    for split, images in spec.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for file_name, width, height, objects in images:
            PIL.Image.fromarray(pixels[file_name]).save(root / "images" / split / file_name)
            lines = [
                f"{NAMES.index(n)} {(x + w / 2) / width:.7f} {(y + h / 2) / height:.7f} {w / width:.7f} "
                f"{h / height:.7f}"
                for n, (x, y, w, h), _ in objects
            ]
            if objects or file_name == "e.png":
                (root / "labels" / split / file_name).with_suffix(".txt").write_text("\n".join(lines))
    yaml_text = "path: .\n" + "".join(f"{split}: images/{split}\n" for split in spec) + f"names: {names}\n"
    (root / "data.yaml").write_text(yaml_text)
    return root / "data.yaml"


def _voc_xml(file_name: str, width: int | None, height: int | None, objects) -> str:
    size = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>" if width else ""
    boxes = "".join(
        f"<object><name>{n}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult><bndbox>"
        f"<xmin>{x + 1:g}</xmin><ymin>{y + 1:g}</ymin><xmax>{x + w:g}</xmax><ymax>{y + h:g}</ymax></bndbox></object>"
        for n, (x, y, w, h), d in objects
    )
    return f"<annotation><folder>VOC</folder><filename>{file_name}</filename>{size}{boxes}</annotation>"


def write_voc(root: Path, spec=SPEC) -> None:
    """The Pascal VOC folder of `spec`: 1-based inclusive corners, `<difficult>`, and a per-class list to skip."""
    pixels = _images(spec)
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    for split, images in spec.items():
        for file_name, width, height, objects in images:
            PIL.Image.fromarray(pixels[file_name]).save(root / "JPEGImages" / file_name)
            stem = Path(file_name).stem
            # one file without <size>: read from the image
            (root / "Annotations" / f"{stem}.xml").write_text(
                _voc_xml(file_name, None if stem == "c" else width, height, objects)
            )
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(Path(f).stem + "\n" for f, *_ in images))
    (root / "ImageSets" / "Main" / "cat_train.txt").write_text("a  1\nb -1\n")  # per-class lists are not splits


def _without_images(split) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "image"} for row in split]


def _assert_same_examples(loaded, expected) -> None:
    assert set(loaded) == set(expected) == {"train", "validation"}
    for name in expected:
        assert loaded[name].features == expected[name].features  # same schema, same label names
        got, want = _without_images(loaded[name]), _without_images(expected[name])
        assert len(got) == len(want)
        for row, reference in zip(got, want):
            boxes, reference_boxes = row["objects"].pop("bbox"), reference["objects"].pop("bbox")
            areas, reference_areas = row["objects"].pop("area"), reference["objects"].pop("area")
            assert row == reference  # image ids, sizes, object ids, categories, iscrowd
            np.testing.assert_allclose(boxes, reference_boxes, atol=1e-3, rtol=0)
            np.testing.assert_allclose(areas, reference_areas, atol=1e-2, rtol=0)
        for row, reference in zip(loaded[name], expected[name]):
            np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(reference["image"]))


@pytest.mark.parametrize("names", [NAMES, dict(enumerate(NAMES))], ids=["list", "dict"])
def test_yolo_folder_loads_as_the_equivalent_coco_folder(tmp_path, names):
    write_coco(tmp_path / "coco", crowd_difficult=False)
    yaml_file = write_yolo(tmp_path / "yolo", names=names)
    coco = load_detection_dataset(tmp_path / "coco")
    assert detect_format(yaml_file) == detect_format(tmp_path / "yolo") == "yolo"
    # the yaml or its folder, also through the one entry point of `hf-detr train --dataset`
    _assert_same_examples(load_detection_dataset(yaml_file), coco)
    _assert_same_examples(load_data(str(tmp_path / "yolo")), coco)
    assert id2label(load_data(str(yaml_file), ["validation"])["validation"]) == {0: "bird", 1: "cat", 2: "dog"}
    # hand-checked: 0.5 px per fraction digit is far below 1e-3; the dog of a.png ends exactly at the image corner
    a = load_detection_dataset(yaml_file, splits=["train"])["train"][0]["objects"]["bbox"]
    np.testing.assert_allclose(a, [[2.0, 3.0, 10.0, 8.0], [20.0, 10.0, 20.0, 20.0]], atol=1e-4)


def test_voc_folder_loads_as_the_equivalent_coco_folder_with_difficult_as_crowd(tmp_path):
    write_coco(tmp_path / "coco", crowd_difficult=True)
    write_voc(tmp_path / "voc")
    assert detect_format(tmp_path / "voc") == "voc"
    voc = load_data(str(tmp_path / "voc"))
    _assert_same_examples(voc, load_detection_dataset(tmp_path / "coco"))
    # <xmin>3</xmin><ymin>4</ymin><xmax>12</xmax><ymax>11</ymax>: pixels 3..12 (1-based) are [2, 12) -> w 10
    assert voc["train"][0]["objects"]["bbox"][0] == [2.0, 3.0, 10.0, 8.0]
    assert voc["train"][0]["objects"]["iscrowd"] == [0, 1]  # <difficult>1</difficult>
    streamed = load_detection_dataset(tmp_path / "voc", streaming=True, splits=["validation"])["validation"]
    assert [row["objects"]["bbox"] for row in streamed] == [row["objects"]["bbox"] for row in voc["validation"]]


def test_yolo_and_voc_boxes_follow_the_box_policy(tmp_path, caplog):
    spec = {
        "train": [
            (
                "a.png",
                40,
                30,
                [
                    ("cat", [30.0, 5.0, 20.0, 10.0], 0),
                    ("dog", [1.0, 1.0, 0.0, 5.0], 0),
                    ("bird", [2.0, 2.0, 4.0, 4.0], 0),
                ],
            )
        ]
    }
    yaml_file = write_yolo(tmp_path / "yolo", spec=spec)
    write_voc(tmp_path / "voc", spec=spec)
    for source, summary in ((yaml_file, "data.yaml: train"), (tmp_path / "voc", "ImageSets/Main/train.txt")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hf_detr.data"):
            objects = load_detection_dataset(source)["train"][0]["objects"]
        assert f"{summary}: 1 images, 1 box clipped to its image, 1 dropped (1 zero-area) by box_policy='clip'" in (
            caplog.text
        )
        np.testing.assert_allclose(objects["bbox"], [[30.0, 5.0, 10.0, 10.0], [2.0, 2.0, 4.0, 4.0]], atol=1e-4)
        assert objects["id"] == [1, 3] and objects["category"] == [1, 0]
        assert load_detection_dataset(source, box_policy="drop")["train"][0]["objects"]["id"] == [3]
    # the check names a box without area before one outside its image
    with pytest.raises(
        ValueError,
        match=r"^labels/train/a.txt line 2: box in pixels = \[1.0, 1.0000\d*, 0.0, "
        r"5.0000\d*\] has width or height <= 0",
    ):
        load_detection_dataset(yaml_file, box_policy="error")
    with pytest.raises(
        ValueError,
        match=r"^Annotations/a.xml object 2 \('dog'\): bndbox as \[x, y, w, h\] = "
        r"\[1.0, 1.0, 0.0, 5.0\] has width or height <= 0",
    ):
        load_detection_dataset(tmp_path / "voc", box_policy="error")
    del spec["train"][0][3][1]  # without the zero-area box, the one outside
    write_voc(tmp_path / "voc2", spec=spec)
    with pytest.raises(
        ValueError,
        match=r"^Annotations/a.xml object 1 \('cat'\): bndbox as \[x, y, w, h\] = "
        r"\[30.0, 5.0, 20.0, 10.0\] lies outside \[0, 40\] x \[0, 30\]",
    ):
        load_detection_dataset(tmp_path / "voc2", box_policy="error")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "1 0.5 0.5 0.2",
            r"labels/train/a.txt line 2: '1 0.5 0.5 0.2' has 4 fields; a YOLO detection label is "
            r"`class cx cy w h`",
        ),
        ("0 0.1 0.2 0.3 0.4 0.5 0.6", r"line 2: .* has 7 fields"),  # a polygon
        ("3 0.5 0.5 0.2 0.2", r"labels/train/a.txt line 2: class 3 is not in `names` of data.yaml \(ids 0..2\)"),
        ("-1 0.5 0.5 0.2 0.2", r"line 2: class -1 is not in `names`"),
        ("cat 0.5 0.5 0.2 0.2", r"line 2: the class 'cat' is not an integer class id"),
        ("1 0.5 half 0.2 0.2", r"line 2: '1 0.5 half 0.2 0.2': cx cy w h must be numbers"),
    ],
)
def test_malformed_yolo_lines_name_the_file_and_line(tmp_path, line, message):
    yaml_file = write_yolo(tmp_path / "yolo")
    label = tmp_path / "yolo" / "labels" / "train" / "a.txt"
    label.write_text(label.read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        load_detection_dataset(yaml_file)
    with pytest.raises(ValueError, match=message):  # check-data stops with the loader's error
        check_data(yaml_file)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("train: images/train\nnames: {0: a, 2: c}\n", r"data.yaml: the ids of `names` are \[0, 2\]; YOLO class ids"),
        ("train: images/train\nnames: [a, b]\nnc: 3\n", r"nc = 3 but `names` lists 2 classes"),
        ("train: images/train\nnames: [a, a]\n", r"class names \['a', 'a'\] repeat"),
        ("train: images/train\n", r"`names` must be a non-empty list"),
        ("names: [a]\n", r"no `train`, `val` or `test` entry"),
        ("train: images/nowhere\nnames: [a]\n", r"data.yaml: train: .*nowhere is neither an image folder nor a list"),
        ("train: [images/train\n", r"data.yaml: cannot read it as YAML"),
    ],
)
def test_bad_yolo_yaml_is_named(tmp_path, yaml_text, message):
    yaml_file = write_yolo(tmp_path / "yolo")
    yaml_file.write_text(yaml_text)
    with pytest.raises(ValueError, match=message):
        load_detection_dataset(yaml_file)


def test_yolo_list_files_and_missing_images(tmp_path):
    yaml_file = write_yolo(tmp_path / "yolo")
    root = tmp_path / "yolo"
    # a split given as a list file (relative lines from its folder) and a list of entries
    (root / "train.txt").write_text("images/train/c.png\nimages/train/a.png\n")
    yaml_file.write_text(f"train: [train.txt, images/val]\nnames: {NAMES}\n")
    train = load_detection_dataset(yaml_file)["train"]
    assert [(row["width"], len(row["objects"]["id"])) for row in train] == [(24, 1), (40, 2), (30, 2)]
    # a listed image that does not exist
    (root / "train.txt").write_text("images/train/gone.png\n")
    with pytest.raises(
        ValueError,
        match=r"data.yaml: train: image_id 0 \('images/train/gone.png'\): image file not "
        r"found",
    ):
        load_detection_dataset(yaml_file)
    # a label file whose image is missing
    yaml_file.write_text(f"train: images/train\nnames: {NAMES}\n")
    (root / "labels" / "train" / "lost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "labels" / "train" / "classes.txt").write_text("bird\ncat\ndog\n")  # labelImg's class list is no label
    with pytest.raises(ValueError, match=r"^data.yaml: train: labels/train/lost.txt labels an image that is missing"):
        load_detection_dataset(yaml_file)
    # Roboflow's exports write `../images/val` for the folder beside the yaml
    yaml_file.write_text(f"train: ../images/val\nnames: {NAMES}\n")
    assert load_detection_dataset(yaml_file)["train"][0]["width"] == 30


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "Annotations" / "a.xml").write_text("<annotation><object>"), r"Annotations/a.xml: not valid"),
        (
            lambda r: _edit_xml(r, "<xmin>3</xmin>", "<xmin>three</xmin>"),
            r"Annotations/a.xml object 1 \('cat'\): <bndbox> needs a number <xmin>, got 'three'",
        ),
        (lambda r: _edit_xml(r, "<ymax>11</ymax>", ""), r"object 1 \('cat'\): <bndbox> needs a number <ymax>, got ''"),
        (lambda r: _edit_xml(r, "<name>cat</name>", ""), r"Annotations/a.xml object 1: no <name>"),
        (
            lambda r: _edit_xml(r, "<width>40</width>", "<width>41</width>"),
            r"ImageSets/Main/train.txt: image_id 0 \('JPEGImages/a.png'\): .*a.png is 40x30 pixels but the XML says "
            r"width=41, height=30",
        ),
        (lambda r: (r / "JPEGImages" / "a.png").unlink(), r"image_id 0 \('JPEGImages/a.png'\): image file not found"),
        (lambda r: (r / "Annotations" / "b.xml").unlink(), r"Annotations/b.xml: cannot read the annotation of image"),
        (
            lambda r: (r / "ImageSets" / "Main" / "val.txt").write_text("d e\n"),
            r"ImageSets/Main/val.txt line 1: 'd e' is not one image id",
        ),
        (
            lambda r: [p.unlink() for p in (r / "ImageSets" / "Main").glob("*.txt")],
            r"has Annotations/ but no ImageSets/Main/<split>.txt",
        ),
    ],
)
def test_malformed_voc_names_the_file_and_object(tmp_path, damage, message):
    write_voc(tmp_path / "voc")
    damage(tmp_path / "voc")
    with pytest.raises(ValueError, match=message):
        load_detection_dataset(tmp_path / "voc")


def _edit_xml(root: Path, old: str, new: str) -> None:
    path = root / "Annotations" / "a.xml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))


# ----------------------------------------------------------------------------------------------- hf-detr check-data


def test_check_data_on_a_yolo_folder_with_defects(tmp_path, capsys):
    spec = {
        "train": [
            (
                "a.png",
                40,
                30,
                [
                    ("cat", [30.0, 5.0, 20.0, 10.0], 0),
                    ("dog", [1.0, 1.0, 0.0, 5.0], 0),
                    ("cat", [2.0, 2.0, 4.0, 6.0], 0),
                ],
            ),  # clipped to w 10, zero-area, fine
            ("b.png", 20, 10, [("bird", [0.0, 0.0, 20.0, 10.0], 0)]),
            ("c.png", 10, 10, [("dog", [1.0, 1.0, 2.0, 2.0], 0)]),  # made unreadable below
            ("d.png", 10, 10, []),
        ],
        "val": [("v.png", 16, 16, [("dog", [4.0, 4.0, 8.0, 8.0], 0)])],
    }
    yaml_file = write_yolo(tmp_path / "yolo", spec=spec)
    root = tmp_path / "yolo"
    (root / "images" / "train" / "c.png").write_bytes(b"not a png")
    (root / "labels" / "train" / "lost.txt").write_text("0 0.5 0.5 0.1 0.1\n")

    assert main(["check-data", str(yaml_file)]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == f"hf-detr check-data: error: 2 error(s) in {yaml_file}, listed above."
    lines = captured.out.splitlines()
    assert lines[0] == f"{yaml_file} (YOLO data set), box_policy='clip'"
    # c.png (unreadable) is not counted: 3 images, of which d.png has no box; kept: a's 2 cats, b's bird
    assert "split 'train': 3 images (1 without boxes), 3 boxes, 3 classes" in lines
    table = lines[lines.index("split 'train': 3 images (1 without boxes), 3 boxes, 3 classes") + 1 :][:4]
    assert [line.split() for line in table] == [
        ["class", "images", "boxes", "crowd"],
        ["bird", "1", "1", "0"],
        ["cat", "1", "2", "0"],
        ["dog", "0", "0", "0"],
    ]
    # widths 10 (clipped), 4, 20; heights 10, 6, 10; areas 100, 24, 200; boxes per image 2, 1, 0
    assert "  box width (px)   min 4  median 10  max 20" in lines
    assert "  box height (px)  min 6  median 10  max 10" in lines
    assert "  box area (px^2)  min 24  median 100  max 200" in lines
    assert "  boxes per image  min 0  median 1  max 2" in lines
    assert "  box_policy='clip': 1 box clipped to its image, 1 dropped (1 zero-area)" in lines
    assert "split 'validation': 1 images (0 without boxes), 1 boxes, 3 classes" in lines

    problems = [line for line in lines if line.startswith(("error", "warning"))]
    assert len(problems) == 4
    assert problems[0].startswith(
        "error [train]: data.yaml: train: labels/train/lost.txt labels an image that is missing"
    )
    assert problems[1].startswith("error [train]: data.yaml: train: image_id 2 ('images/train/c.png'): ")
    assert "c.png is not a readable image" in problems[1]
    assert problems[2].startswith("warning [train]: labels/train/a.txt line 1: box in pixels = [30.0")
    assert "clipped to [30.0" in problems[2]
    assert problems[3].startswith("warning [train]: labels/train/a.txt line 2: box in pixels = [1.0")
    assert problems[3].endswith("dropped (zero-area)")
    assert lines[-1] == (
        "2 errors (the loader stops at them), 2 warnings (box_policy='clip' clips or drops those boxes)"
    )

    # repaired: the warnings are what the loader fixes, so the exit status is 0; --box-policy error makes them errors
    (root / "images" / "train" / "c.png").unlink()
    (root / "labels" / "train" / "c.txt").unlink()
    (root / "labels" / "train" / "lost.txt").unlink()
    assert main(["check-data", str(yaml_file), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "split 'validation'" not in out and out.splitlines()[-1].startswith("0 errors (the loader stops at them), 2")
    assert main(["check-data", str(yaml_file), "--box-policy", "error"]) == 1
    out = capsys.readouterr().out
    assert "  box_policy='drop': 2 boxes dropped (1 zero-area, 1 outside the image)" in out
    assert re.search(
        r"\nerror \[train\]: labels/train/a.txt line 2: box in pixels = \[1.0, 1.0\d*, 0.0, 5.0\d*\] "
        r"dropped \(zero-area\) by box_policy='drop'; box_policy='error' stops at it\n",
        out,
    )
    assert out.splitlines()[-1] == "2 errors (the loader stops at them), 0 warnings"

    write_yolo(tmp_path / "clean")
    assert main(["check-data", str(tmp_path / "clean")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no problems found"


def test_check_data_on_a_voc_folder_lists_size_mismatch_and_missing_images(tmp_path):
    write_voc(tmp_path / "voc")
    _edit_xml(tmp_path / "voc", "<width>40</width>", "<width>41</width>")
    (tmp_path / "voc" / "JPEGImages" / "d.png").unlink()
    report = check_data(tmp_path / "voc")
    assert [(p.severity, p.split) for p in report.problems] == [("error", "train"), ("error", "validation")]
    assert "a.png is 40x30 pixels but the XML says width=41, height=30" in report.problems[0].message
    assert "image_id 0 ('JPEGImages/d.png'): image file not found" in report.problems[1].message
    train, validation = report.splits
    # every image is counted (their boxes have a frame: <size>); the difficult dog is a crowd box
    assert (train.num_images, validation.num_images) == (4, 1)
    assert train.boxes_per_class == [1, 1, 1] and train.crowd_per_class == [0, 0, 1]
    assert validation.images_per_class == [1, 0, 1] and validation.boxes_per_image == [2]


def test_check_data_shows_the_defects_of_the_real_world_coco_folder(tmp_path, capsys):
    root = tmp_path / "coco"
    write_defective_coco(root)
    (root / "train" / "gray.png").unlink()
    assert main(["check-data", str(root)]) == 1
    lines = capsys.readouterr().out.splitlines()
    kept = len(ANNOTATIONS) - len(DROPPED_BY_CLIP)
    assert f"split 'train': 10 images (0 without boxes), {kept} boxes, 4 classes" in lines
    assert (
        "  box_policy='clip': 2 boxes clipped to their image, 4 dropped (1 not finite, 1 negative size, "
        "1 zero-area, 1 outside the image)"
    ) in lines
    problems = [line for line in lines if line.startswith(("error", "warning"))]
    assert problems[0].startswith("error [train]: instances_train.json: image_id 7 ('gray.png'): image file not found")
    warnings = {int(line.split("annotation id ")[1].split()[0]): line for line in problems[1:]}
    assert set(warnings) == set(CLIPPED) | DROPPED_BY_CLIP | {21}  # 21: the validation box 4 px out
    assert warnings[1].endswith(f"bbox = [50.0, 10.0, 18.0, 10.0] clipped to {CLIPPED[1]}")
    assert warnings[8].endswith("bbox = [nan, 3.0, 4.0, 5.0] dropped (not finite)")
    assert "(image_id 5, 'degenerate.png')" in warnings[7] and warnings[7].endswith("dropped (negative size)")
    assert warnings[5].endswith("dropped (zero-area)") and warnings[3].endswith("dropped (outside the image)")
    assert lines[-1].startswith("1 error (the loader stops at them), 7 warnings")


def test_check_data_on_a_saved_data_set(tmp_path):
    rows = {
        "image": [PIL.Image.new("RGB", (30, 20)), PIL.Image.new("RGB", (16, 16))],
        "image_id": [4, 5],
        "width": [30, 17],
        "height": [20, 16],  # image 5 is 16 px wide, not 17
        "objects": [
            {
                "id": [40, 41],
                "area": [40.0, 0.0],
                "bbox": [[25.0, 2.0, 10.0, 4.0], [1.0, 1.0, 0.0, 3.0]],
                "category": [1, 0],
                "iscrowd": [0, 0],
            },
            {"id": [50], "area": [4.0], "bbox": [[1.0, 1.0, 2.0, 2.0]], "category": [1], "iscrowd": [1]},
        ],
    }
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows, features=coco_detection_features(["a", "b"]))}
    ).save_to_disk(saved)
    report = check_data(saved)
    assert report.kind == "saved"
    assert [(p.severity, p.message) for p in report.problems] == [
        (
            "error",
            "split 'train' example 1 (image_id 5): the image is 16x16 pixels but the example's `width`/`height` "
            "says width=17, height=16; boxes would be in the wrong frame.",
        ),
        (
            "warning",
            "split 'train' example 0 (image_id 4) object 0: bbox = [25.0, 2.0, 10.0, 4.0] clipped to "
            "[25.0, 2.0, 5.0, 4.0]",
        ),
        ("warning", "split 'train' example 0 (image_id 4) object 1: bbox = [1.0, 1.0, 0.0, 3.0] dropped (zero-area)"),
    ]
    (train,) = report.splits
    assert train.boxes_per_class == [0, 2] and train.crowd_per_class == [0, 1] and train.widths == [5.0, 2.0]
