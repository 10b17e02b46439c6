"""`cifar-resnet predict`: images from pickles, arrays and files, predicted by the recorded best run on the CPU."""

import csv
import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_resnet import run_folder
from cifar_resnet.cli import main
from cifar_resnet.data.cifar10 import CLASSES, load_cifar10
from cifar_resnet.data.user_images import read_images, write_png_files

from conftest import ROOT

BEST = str(ROOT / "results" / "runs" / "best")
N = 200


def predict_cli(*args) -> int:
    return main(["predict", BEST, *map(str, args), "--device", "cpu"])


@pytest.fixture(scope="module")
def first_test_images(real_root, tmp_path_factory):
    """The first 200 CIFAR-10 test images written as PNG files, a CIFAR-style pickle without labels (bytes keys,
    channel-major rows, as CIFAR's own batches) and CIFAR-10.1-style `_data.npy` / `_labels.npy` files."""
    test = load_cifar10(real_root, "test", download=False)
    images, labels = test.images[:N].numpy(), test.labels[:N].numpy()
    folder = tmp_path_factory.mktemp("inputs")
    write_png_files(images, folder / "png")
    (folder / "nolabels.pkl").write_bytes(pickle.dumps({b"data": images.transpose(0, 3, 1, 2).reshape(N, -1)}))
    np.save(folder / "shifted_data.npy", images)
    np.save(folder / "shifted_labels.npy", labels)
    return folder, labels


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_png_pickle_and_npy_give_the_recorded_predictions(first_test_images, tmp_path, tta):
    folder, labels = first_test_images
    options = ["--tta"] if tta else []
    outputs = {}
    for name in ("png", "nolabels.pkl", "shifted_data.npy"):
        outputs[name] = tmp_path / f"{name.split('.')[0]}.csv"
        assert predict_cli(folder / name, "--out", outputs[name], *options) == 0
    texts = {name: path.read_text() for name, path in outputs.items()}
    assert texts["png"] == texts["nolabels.pkl"] == texts["shifted_data.npy"]

    recorded, _ = run_folder.load_predictions(ROOT / "results" / "runs" / "best" / run_folder.PREDICTIONS)
    expected = recorded["probs_tta" if tta else "probs"][:N].float().argmax(1).tolist()
    rows = list(csv.DictReader(texts["png"].splitlines()))
    assert [r["ID"] for r in rows] == [str(i) for i in range(N)]
    assert [int(r["Labels"]) for r in rows] == expected

    # only the labelled input (the .npy with its _labels.npy) gets a report, whose accuracy is the recorded one's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nolabels.csv", "png.csv", "shifted_data.csv",
                                                         "shifted_data.json"]
    report = json.loads((tmp_path / "shifted_data.json").read_text())
    metrics = run_folder.read_metrics(BEST)
    plain = recorded["probs"][:N].float().argmax(1).numpy()
    assert report["images"] == N and report["accuracy"] == pytest.approx(float((plain == labels).mean()))
    assert report["drop_points"] == pytest.approx((metrics["test_acc"] - report["accuracy"]) * 100)
    shown = np.array(expected)
    assert report["per_class_accuracy"]["cat"]["images"] == int((labels == 3).sum())
    assert report["per_class_accuracy"]["cat"]["correct"] == int(((shown == 3) & (labels == 3)).sum())
    if tta:
        assert report["accuracy_tta"] == pytest.approx(float((shown == labels).mean()))
        assert report["drop_points_tta"] == pytest.approx((metrics["test_acc_tta"] - report["accuracy_tta"]) * 100)
    else:
        assert "accuracy_tta" not in report


def test_image_files_of_other_sizes_are_resized_and_said_so(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(folder / "10.jpg", quality=100)
    Image.fromarray(np.full((32, 32, 3), 250, np.uint8)).save(folder / "2.png")
    out = tmp_path / "p.csv"
    assert predict_cli(folder, "--out", out, "--probabilities", "--class-names") == 0
    assert "resized 1 of 2 images to 32 x 32 (cropped to a centred square" in capsys.readouterr().out
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["ID"] for r in rows] == ["2", "10"]  # natural order, ids without the extension
    assert list(rows[0]) == ["ID", "Labels", *CLASSES]
    for row in rows:
        probs = [float(row[c]) for c in CLASSES]
        assert row["Labels"] == CLASSES[int(np.argmax(probs))] and sum(probs) == pytest.approx(1, abs=1e-4)


def test_the_resize_rule_crops_a_centred_square(tmp_path):
    wide = np.zeros((48, 96, 3), np.uint8)
    wide[:, :, 2] = 200
    wide[:, :16] = wide[:, -16:] = (255, 0, 0)  # well outside the centred 48 x 48 square (columns 24-71)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    read = read_images(tmp_path / "wide.png")
    assert read.images.shape == (1, 32, 32, 3) and read.resized == 1 and read.ids == ["wide"]
    assert (read.images == torch.tensor([0, 0, 200], dtype=torch.uint8)).all()


def test_pickle_keys_layouts_and_ids(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    # protocol 5 (pickle.HIGHEST_PROTOCOL) stores arrays as buffers, which the restricted unpickler accepts too
    (tmp_path / "kaggle.pkl").write_bytes(pickle.dumps({"data": images, "ids": np.arange(100, 105)}, protocol=5))
    (tmp_path / "cifar").write_bytes(pickle.dumps({b"data": images.transpose(0, 3, 1, 2).reshape(5, -1),
                                                   b"labels": [0, 1, 2, 3, 9], b"ids": [b"a", b"b", b"c", b"d", b"e"]}))
    kaggle, cifar = read_images(tmp_path / "kaggle.pkl"), read_images(tmp_path / "cifar")
    assert torch.equal(kaggle.images, torch.from_numpy(images)) and torch.equal(cifar.images, kaggle.images)
    assert kaggle.ids == ["100", "101", "102", "103", "104"] and kaggle.labels is None
    assert cifar.ids == ["a", "b", "c", "d", "e"] and cifar.labels.tolist() == [0, 1, 2, 3, 9]
    np.savez(tmp_path / "set.npz", images=images.transpose(0, 3, 1, 2), labels=np.arange(5))
    arrays = read_images(tmp_path / "set.npz")
    assert torch.equal(arrays.images, kaggle.images) and arrays.labels.tolist() == [0, 1, 2, 3, 4]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _pickle(path, obj):
    path.write_bytes(pickle.dumps(obj))


def _folder(path, files):
    path.mkdir()
    for name, content in files.items():
        if content is None:
            Image.new("RGB", (32, 32)).save(path / name)
        else:
            (path / name).write_bytes(content)


IMAGES = np.zeros((4, 32, 32, 3), np.uint8)
BAD_INPUTS = {
    "pickle without data": (lambda p: _pickle(p / "x.pkl", {b"labels": [0, 1]}), "x.pkl", "has no 'data' entry"),
    "wrong shape": (lambda p: _pickle(p / "x.pkl", {"data": np.zeros((4, 100), np.uint8)}), "x.pkl",
                    "has shape (4, 100), but images must be N x 3072"),
    "wrong dtype": (lambda p: np.save(p / "x.npy", IMAGES.astype(np.float32)), "x.npy",
                    "has dtype float32, but images must be uint8"),
    "labels of another length": (lambda p: (np.save(p / "x_data.npy", IMAGES), np.save(p / "x_labels.npy", [1, 2])),
                                 "x_data.npy", "must be 4 integer class indices"),
    "empty folder": (lambda p: (p / "imgs").mkdir(), "imgs", "is empty: put the PNG or JPEG images"),
    "a text file among images": (lambda p: _folder(p / "imgs", {"0.png": None, "notes.txt": b"hi"}), "imgs",
                                 "holds entries that are not PNG or JPEG files (notes.txt)"),
    "a damaged image": (lambda p: _folder(p / "imgs", {"0.png": None, "1.png": b"not a png"}), "imgs",
                        "1.png is not a readable PNG or JPEG image"),
    "a malicious pickle": (lambda p: _pickle(p / "x.pkl", {"data": _RunsCode(p / "ran")}), "x.pkl",
                           "cannot be read as a CIFAR-style pickle (UnpicklingError: refusing to load"),
    "an array of Python objects": (lambda p: np.save(p / "x.npy", np.array([{}], dtype=object)), "x.npy",
                                   "cannot be read as a numpy file of images"),
    "not an input at all": (lambda p: None, "missing.pkl", "missing.pkl not found"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_are_one_line_errors_and_write_nothing(case, tmp_path, capsys):
    make, name, message = BAD_INPUTS[case]
    make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert predict_cli(tmp_path / name, "--out", tmp_path / "out" / "p.csv") == 2
    err = capsys.readouterr().err
    assert err.startswith("cifar-resnet: error: ") and err.count("\n") == 1 and message in err, err
    assert sorted(tmp_path.rglob("*")) == before  # no CSV, no JSON, no folder, and the pickle ran nothing


@pytest.mark.parametrize("existing", ["p.csv", "p.json"])
def test_existing_outputs_are_refused_and_kept(existing, tmp_path, capsys):
    np.save(tmp_path / "x_data.npy", IMAGES)
    np.save(tmp_path / "x_labels.npy", np.arange(4))  # labelled: the report p.json would be written too
    (tmp_path / existing).write_text("mine")
    before = sorted(tmp_path.iterdir())
    assert predict_cli(tmp_path / "x_data.npy", "--out", tmp_path / "p.csv") == 2
    err = capsys.readouterr().err
    assert err == f"cifar-resnet: error: {tmp_path / existing} already exists: choose another --out, or delete it first\n"
    assert sorted(tmp_path.iterdir()) == before and (tmp_path / existing).read_text() == "mine"


def test_out_must_be_a_csv(tmp_path, capsys):
    np.save(tmp_path / "x.npy", IMAGES)
    assert predict_cli(tmp_path / "x.npy", "--out", tmp_path / "p.json") == 2
    assert "name a .csv file" in capsys.readouterr().err and not (tmp_path / "p.json").exists()
