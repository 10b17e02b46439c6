"""Generated CIFAR-10-C corruptions, `cifar-resnet robustness`, and the recorded best run's robustness.json."""

import json
import math

import pytest
import torch

from cifar_resnet import run_folder
from cifar_resnet.cli import main
from cifar_resnet.config import load_config, override
from cifar_resnet.data.cifar10 import load_cifar10
from cifar_resnet.evaluation.corruptions import CORRUPTIONS, RESULT, corrupt
from cifar_resnet.evaluation.robustness_record import load_robustness, rows
from cifar_resnet.training.engine import train

from conftest import CONFIGS, ROOT

REQUIRED = {"gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "gaussian_blur", "contrast",
            "brightness", "jpeg_compression", "pixelate"}


@pytest.fixture(scope="module")
def images(synthetic_root):
    return load_cifar10(synthetic_root, "test", download=False, channels_first=True).images


def test_corruptions_are_uint8_seeded_and_grow_with_severity(images):
    assert REQUIRED <= set(CORRUPTIONS)
    for name in CORRUPTIONS:
        out = [corrupt(images, name, s, seed=0) for s in range(1, 6)]
        assert all(o.dtype == torch.uint8 and o.shape == images.shape for o in out), name
        assert torch.equal(out[2], corrupt(images, name, 3, seed=0)), name  # the same draws again
        change = [(o.float() - images.float()).abs().mean().item() for o in out]
        assert 0 < change[0] < change[-1] and change == sorted(change), (name, change)
    assert not torch.equal(corrupt(images, "gaussian_noise", 1, seed=0), corrupt(images, "gaussian_noise", 1, seed=1))


def test_corruptions_apply_the_published_parameters(images):
    x = images.float()
    # contrast 0.15: each channel keeps its mean, its deviations shrink to 0.15
    out = corrupt(images, "contrast", 5).float()
    assert torch.allclose(out.mean((2, 3)), x.mean((2, 3)), atol=0.6)
    assert torch.allclose(out.std((2, 3)), 0.15 * x.std((2, 3)), atol=0.6)
    # brightness 0.3: HSV value (the largest channel) raised by 0.3 * 255, clipped at 255
    out = corrupt(images, "brightness", 5).float()
    assert torch.allclose(out.amax(1), (x.amax(1) + 0.3 * 255).clamp(max=255), atol=1.01)
    # gaussian blur sigma 1: a lone bright pixel spreads as exp(-d^2 / 2); a flat image stays flat
    dot = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    dot[..., 16, 16] = 255
    out = corrupt(dot, "gaussian_blur", 5).float()[0, 0]
    assert math.isclose(out[16, 17] / out[16, 16], math.exp(-0.5), rel_tol=0.02)
    flat = torch.full((2, 3, 32, 32), 100, dtype=torch.uint8)
    for name in ("gaussian_blur", "defocus_blur", "contrast", "pixelate"):
        assert torch.equal(corrupt(flat, name, 5), flat), name
    # impulse noise 0.07: that fraction of the values set to 0 or 255
    out = corrupt(images, "impulse_noise", 5)
    changed = out != images
    assert 0.05 < changed.float().mean() < 0.08 and set(out[changed].unique().tolist()) <= {0, 255}


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    """A finished one-epoch smoke run on the synthetic data (its test set: 100 images)."""
    cfg = override(load_config(CONFIGS / "smoke.yaml"), **{
        "data.root": str(synthetic_root), "data.download": False, "data.train_subset": 0, "data.test_subset": 0,
        "train.batch_size": 64, "train.epochs": 1})
    run = tmp_path_factory.mktemp("robustness") / "run"
    train(cfg, run, log=None, progress=False)
    return run


def test_robustness_command_writes_the_record(trained, capsys):
    run = trained
    assert main(["robustness", str(run), "--images", "40", "--device", "cpu"]) == 0
    assert "wrote" in capsys.readouterr().out
    result = json.loads((run / RESULT).read_text())
    assert result["images"] == 40 and result["generated"] and "not the released CIFAR-10-C" in result["note"]
    assert [c["name"] for c in result["corruptions"]] == list(CORRUPTIONS)
    accs = [a for c in result["corruptions"] for a in c["accuracy"]]
    assert len(accs) == 5 * len(CORRUPTIONS) and all(0 <= a <= 1 for a in accs)
    assert math.isclose(result["mean_corruption_acc"], sum(accs) / len(accs))
    tensors, _ = run_folder.load_predictions(run / run_folder.PREDICTIONS)  # the run's own record of these images
    recorded = (tensors["probs"][:40].float().argmax(1) == tensors["labels"][:40].long()).float().mean().item()
    assert math.isclose(result["clean_acc"], recorded, abs_tol=1e-6)


@pytest.mark.parametrize("images", ["0", "101"])
def test_robustness_refuses_an_image_count_outside_the_test_set(trained, capsys, images):
    before = (trained / RESULT).read_bytes() if (trained / RESULT).exists() else None
    assert main(["robustness", str(trained), "--images", images, "--device", "cpu", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cifar-resnet: error: --images must be between 1 and 100")
    assert ((trained / RESULT).read_bytes() if (trained / RESULT).exists() else None) == before  # untouched


def test_recorded_robustness_agrees_with_the_recorded_predictions():
    best = ROOT / "results" / "runs" / "best"
    result = json.loads((best / RESULT).read_text())
    assert result["generated"] and REQUIRED <= {c["name"] for c in result["corruptions"]}
    assert all(len(c["accuracy"]) == 5 for c in result["corruptions"]) and result["images"] >= 500
    tensors, _ = run_folder.load_predictions(best / run_folder.PREDICTIONS)
    n = result["images"]
    recorded = (tensors["probs"][:n].float().argmax(1) == tensors["labels"][:n].long()).float().mean().item()
    assert abs(result["clean_acc"] - recorded) <= 1 / n  # one near-tie may round the other way


def test_the_recorded_robustness_reads_as_a_table(tmp_path):
    best = ROOT / "results" / "runs" / "best"
    record = load_robustness(best)
    table = rows(record)
    assert [r["family"] for r in table] == [c["family"] for c in record["corruptions"]]
    assert list(table[0]) == ["corruption", "family", *(f"severity {s}" for s in range(1, 6)), "mean"]
    means = [r["mean"] for r in table]
    assert math.isclose(sum(means) / len(means), record["mean_corruption_acc"])
    gaussian = next(r for r in table if r["corruption"] == "Gaussian noise")
    assert gaussian["severity 5"] == next(c for c in record["corruptions"] if c["name"] == "gaussian_noise")["accuracy"][4]
    assert load_robustness(tmp_path) is None
