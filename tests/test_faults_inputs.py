"""Inputs a careless or hostile user gives (issue 28, items 4, 8, 10 and 11): names that are paths, configuration
values the code downstream cannot take, records with values of the wrong type, empty data, huge images, files
that are not YAML. Each is one line (quoting at most a short excerpt of the value) and exit status 2, and every
file that was there is byte-identical after, with nothing written outside the folders named."""

import json
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from cifar_resnet import run_folder
from cifar_resnet.data.cifar10 import BATCH_DIR, TEST_FILE
from cifar_resnet.data.user_images import write_png_files

from conftest import CONFIGS
from faults import SMOKE, one_thread, refused, train_argv  # noqa: F401 (one_thread: an autouse fixture)

SMOKE_SPACE = str(CONFIGS / "search_space_smoke.yaml")
PATH_NAMES = ["../../escaped", "/tmp/absolute", "a/b", "..", ".", ".hidden", "-dash", "x" * 300, "new\nline", "sp ace",
              "back\\slash", "nul\0byte", "ünïcode"]


# ---- 4: a name that becomes a folder is one folder name -------------------------------------------------------
@pytest.mark.parametrize("name", PATH_NAMES)
def test_a_study_name_is_one_folder_name(synthetic_root, tmp_path, capsys, name):
    for extra in ([], ["--storage", f"sqlite:///{tmp_path / 'elsewhere.db'}"], ["--devices", "0,1"]):
        line = refused(capsys, ["search", "--space", SMOKE_SPACE, f"--study={name}", "--trials", "1", "--work-dir",
                                str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--data-root",
                                str(synthetic_root), "--device", "cpu", *extra], tmp_path)
        assert "--study" in line and "must be one folder name" in line and len(line) < 400


@pytest.mark.parametrize("name", PATH_NAMES)
def test_a_record_name_is_one_folder_name(run_copy, tmp_path, capsys, name):
    (tmp_path / "results" / "runs").mkdir(parents=True)
    line = refused(capsys, ["record", str(run_copy), f"--name={name}", "--results", str(tmp_path / "results")], tmp_path)
    assert "--name" in line and "must be one folder name" in line and len(line) < 400


def test_a_run_folder_whose_own_name_cannot_be_a_record_asks_for_a_name(run_copy, tmp_path, capsys):
    odd = run_copy.rename(run_copy.parent / "my run")
    line = refused(capsys, ["record", str(odd), "--results", str(tmp_path / "results")], tmp_path)
    assert "give --name" in line


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", ".x"])
def test_image_ids_that_become_file_names_stay_in_their_folder(tmp_path, name):
    with pytest.raises(run_folder.FolderError, match="must be one folder name"):
        write_png_files(np.zeros((1, 32, 32, 3), np.uint8), tmp_path / "png", ids=[name])
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


# ---- 8: every configuration value is checked for what the code downstream accepts -----------------------------
BAD_VALUES = [
    ("train.lr", float("nan"), "train.lr: must be a finite number"),
    ("train.lr", float("inf"), "train.lr: must be a finite number"),
    ("train.weight_decay", float("inf"), "train.weight_decay: must be a finite number"),
    ("train.momentum", float("-inf"), "train.momentum: must be a finite number"),
    ("train.warmup_epochs", float("nan"), "train.warmup_epochs: must be a finite number"),
    ("train.lr", 10**400, "train.lr: must be a finite number"),
    ("train.milestones", [1.0, float("nan")], "train.milestones[1]: must be a finite number"),
    ("train.milestones", [-3.0], "train.milestones[0]: must be an epoch"),
    ("data.holdout", 50_000, "data.holdout: must leave training images"),
    ("data.holdout", 10**12, "data.holdout: must leave training images"),
    ("data.crop_padding", 1000, "data.crop_padding: must be at least 0 and below 32"),
    ("data.crop_padding", 32, "data.crop_padding: must be at least 0 and below 32"),
    ("model.num_classes", 5, "model.num_classes: CIFAR-10 has 10 classes, got 5"),
    ("model.num_classes", 100, "model.num_classes: CIFAR-10 has 10 classes, got 100"),
    ("train.optimizer", "LBFGS", "train.optimizer: unknown 'LBFGS'"),
    ("train.optimizer", "SparseAdam", "train.optimizer: unknown 'SparseAdam'"),
    ("train.optimizer", "Optimizer", "train.optimizer: unknown 'Optimizer'"),
    ("train.optimizer", "lr_scheduler", "train.optimizer: unknown 'lr_scheduler'"),
    ("train.optimizer", "__class__", "train.optimizer: unknown '__class__'"),
    ("train.seed", 2**64, "train.seed: must be below 2^63"),
    ("train.momentum", 0.0, "train.nesterov: Nesterov momentum needs train.momentum above 0"),
    ("model.stem_channels", 0, "model.stem_channels: must be at least 1"),
    ("model.channels", [10**20, 8], "model.channels[0]: must be below 2^63"),  # torch's int64 (issue 37)
    ("model.channels", [10**12, 8], "model.channels: at most"),
    ("model.blocks", [10**7, 1], "model.blocks: at most"),
    ("model.kernels", [10**9 + 1, 3], "model.kernels: at most"),
    ("model.stem_kernel", 10**9 + 1, "model.stem_kernel: at most"),
    ("data.holdout", 1000, "data.holdout must be between 1 and"),  # beyond the synthetic data's 200 images
    ("data.root", "a\0b", "data.root: must not hold a NUL character"),
    ("train.batch_size", "x" * 5000, "train.batch_size: expected int, got 'xxxx"),
    ("name", ["y" * 5000], "name: expected str, got ['yyy"),
]


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=[f"{k}={str(v)[:20]}" for k, v, _ in BAD_VALUES])
def test_a_configuration_value_the_code_cannot_take_is_refused(synthetic_root, tmp_path, capsys, key, value, message):
    cfg = yaml.safe_load(Path(SMOKE).read_text())
    section, _, leaf = key.rpartition(".")
    (cfg.setdefault(section, {}) if section else cfg)[leaf] = value  # smoke.yaml has two stages, as the lists
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for argv in (["train", "--config", str(path), "--out", str(tmp_path / "run"), "--data-root", str(synthetic_root),
                  "--device", "cpu"], ["summary", "--config", str(path)]):
        if argv[0] == "summary" and not key.startswith("model."):
            continue
        line = refused(capsys, argv, tmp_path)
        assert message in line and len(line) < 300, line


@pytest.mark.parametrize("content", [
    "This is a plain text file, not a configuration. " * 400,           # YAML reads it as one long string
    "- " + "\n- ".join(str(i) for i in range(3000)),                   # a long list
    "{" + "a" * 5000 + ": 1}",                                           # a mapping with a long unknown key
    "model: [" + ", ".join("1" for _ in range(3000)) + "]",             # a section that is a long list
    "model:\n  block: " + "b" * 5000 + "\n",                            # a long unknown choice
    "key: [unclosed\n" + "x" * 5000,                                     # not YAML at all
])
def test_a_file_that_is_no_configuration_is_quoted_in_a_short_excerpt(tmp_path, capsys, content):
    path = tmp_path / "notes.yaml"
    path.write_text(content)
    line = refused(capsys, ["summary", "--config", str(path)], tmp_path)
    assert len(line) < 300 + len(str(path)), line


def test_a_binary_file_given_as_configuration(tmp_path, capsys):
    path = tmp_path / "weights.yaml"
    path.write_bytes(bytes(range(256)) * 40)
    line = refused(capsys, ["summary", "--config", str(path)], tmp_path)
    assert "not a text file" in line


# ---- 10: records with values of the wrong type, empty data, Ctrl-C while starting (in test_faults_runs) ----------
WRONG_TYPES = [("test_acc", "0.9"), ("test_acc", 1.5), ("test_acc", float("nan")), ("params", "many"), ("params", -3),
               ("params", 2.5), ("epochs_completed", True), ("status", "done"), ("weights_sha256", 7),
               ("time_to_acc", {"0.93": "soon"}), ("device", ["a"]), ("seed", "0")]


def _with_metrics(run: Path, key: str, value) -> None:
    metrics = json.loads((run / run_folder.METRICS).read_text())
    metrics[key] = value
    (run / run_folder.METRICS).write_text(json.dumps(metrics))


@pytest.mark.parametrize("key, value", WRONG_TYPES)
def test_metrics_of_the_wrong_type_are_refused_by_record_predict_and_evaluate(run_copy, tmp_path, capsys, key, value):
    _with_metrics(run_copy, key, value)
    images = tmp_path / "images.npz"
    np.savez(images, data=np.zeros((3, 32, 32, 3), np.uint8), labels=np.array([0, 1, 2]))
    for argv in (["record", str(run_copy), "--results", str(tmp_path / "results")],
                 ["predict", str(run_copy), str(images), "--out", str(tmp_path / "p.csv"), "--device", "cpu"],
                 ["evaluate", str(run_copy), "--device", "cpu"]):
        line = refused(capsys, argv, tmp_path)
        assert f"{run_copy / run_folder.METRICS}: {key} is" in line and len(line) < 400


@pytest.mark.parametrize("key, value", [("params", "many"), ("test_acc", "0.9"), ("device", 3)])
def test_figures_refuse_a_recorded_run_of_the_wrong_type_before_drawing(finished_run, tmp_path, capsys, key, value):
    shutil.copytree(CONFIGS, tmp_path / "configs")
    shutil.copytree(finished_run, tmp_path / "results" / "runs" / "bad")
    _with_metrics(tmp_path / "results" / "runs" / "bad", key, value)
    line = refused(capsys, ["figures", "--root", str(tmp_path)], tmp_path)
    assert f"bad/{run_folder.METRICS}: {key} is" in line


@pytest.mark.parametrize("batch", [TEST_FILE, "data_batch_1"])
def test_a_data_batch_with_no_rows(synthetic_root, tmp_path, capsys, batch):
    root = Path(shutil.copytree(synthetic_root, tmp_path / "data"))
    (root / BATCH_DIR / batch).write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}))
    line = refused(capsys, train_argv(root, tmp_path / "run"), tmp_path)
    assert f"{root / BATCH_DIR / batch} is damaged" in line


# ---- 11: images too large to decode safely -----------------------------------------------------------------------
def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header says `width` x `height` (what a decompression bomb declares), with a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(12_000, 12_000), (5_000, 5_000), (40_000, 40_000), (100_000, 300)])
def test_an_image_too_large_to_decode_is_one_line(finished_run, tmp_path, capsys, size):
    image = tmp_path / "huge.png"
    _png_header_only(image, *size)
    line = refused(capsys, ["predict", str(finished_run), str(image), "--out", str(tmp_path / "p.csv"), "--device",
                            "cpu"], tmp_path)
    assert str(image) in line and "scale it down" in line
