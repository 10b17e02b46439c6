import math

import numpy as np
import pandas as pd
import pytest
import torch

from cifar_resnet.data.cifar10 import CIFAR10Split
from cifar_resnet.models import count_parameters, create_model
from cifar_resnet.reporting import analysis

from conftest import CONFIGS, write_predictions


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 0, 1, 2, 0])
    matrix = analysis.confusion_matrix(labels, predicted, num_classes=3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 0]]
    table = analysis.per_class_accuracy(matrix, ["a", "b", "c"])
    assert table["correct"].tolist() == [2, 1, 0] and table["total"].tolist() == [3, 2, 1]
    assert table["accuracy"].tolist() == [0.6667, 0.5, 0.0]
    with pytest.raises(ValueError, match="differ in shape"):
        analysis.confusion_matrix(labels, predicted[:-1], 3)


def test_per_class_accuracy_of_an_unseen_class_is_zero_not_nan():
    table = analysis.per_class_accuracy(np.array([[3, 0], [0, 0]]), ["a", "b"])
    assert table["accuracy"].tolist() == [1.0, 0.0]


def test_ece_is_the_weighted_gap_between_accuracy_and_confidence():
    # Bin (0.6, 0.7]: 4 predictions at 0.65, 1 right -> |0.25 - 0.65| = 0.4, weight 4/10.
    # Bin (0.9, 1.0]: 6 predictions at 0.95, all right -> |1 - 0.95| = 0.05, weight 6/10.
    confidence = np.array([0.65] * 4 + [0.95] * 6)
    correct = np.array([1, 0, 0, 0] + [1] * 6)
    assert analysis.expected_calibration_error(confidence, correct, n_bins=10) == pytest.approx(0.4 * 0.4 + 0.6 * 0.05)
    bins = analysis.reliability_bins(confidence, correct, n_bins=10)
    assert bins["count"].tolist() == [0] * 6 + [4, 0, 0, 6]
    assert bins.loc[6, "accuracy"] == 0.25 and bins.loc[9, "confidence"] == pytest.approx(0.95)
    assert bins["accuracy"].isna().sum() == 8  # empty bins have no accuracy, and count for nothing


def test_ece_of_a_calibrated_and_of_an_overconfident_network():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.1, 1.0, 200_000)
    calibrated = rng.uniform(size=confidence.size) < confidence
    assert analysis.expected_calibration_error(confidence, calibrated) < 0.01
    assert analysis.expected_calibration_error(np.full(100, 0.8), np.arange(100) < 60) == pytest.approx(0.2)


def test_a_confidence_on_a_bin_edge_goes_to_the_lower_bin():
    bins = analysis.reliability_bins(np.array([0.5, 0.5000001, 1.0]), np.array([1, 1, 1]), n_bins=2)
    assert bins["count"].tolist() == [1, 2]


def test_confident_mistakes_are_the_wrong_answers_by_confidence():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]])
    labels = np.array([0, 0, 1, 1, 1])
    pred = analysis.Predictions(probs, labels)
    mistakes = analysis.confident_mistakes(pred, k=2, classes=["a", "b"])
    assert mistakes["index"].tolist() == [4, 1]
    assert mistakes["true"].tolist() == ["b", "a"] and mistakes["predicted"].tolist() == ["a", "b"]
    assert mistakes["confidence"].tolist() == [0.95, 0.8]
    assert pred.accuracy == pytest.approx(0.4)


def test_channel_stats_are_exact_from_the_histograms():
    images = torch.randint(0, 256, (7, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    histograms = analysis.channel_histograms(images)
    assert histograms.shape == (3, 256) and histograms.sum() == images.numel()
    assert (analysis.channel_histograms(images.permute(0, 3, 1, 2)) == histograms).all()
    stats = analysis.channel_stats(histograms)
    pixels = images.double().reshape(-1, 3)
    assert stats["mean"].tolist() == pytest.approx(pixels.mean(0).tolist(), abs=1e-3)
    assert stats["std"].tolist() == pytest.approx(pixels.std(0, unbiased=False).tolist(), abs=1e-3)
    with pytest.raises(ValueError, match="uint8"):
        analysis.channel_histograms(images.float())


def test_class_counts_and_first_images_of_each_class():
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 1])
    split = CIFAR10Split(torch.zeros(7, 32, 32, 3, dtype=torch.uint8), labels, ("a", "b", "c"))
    assert analysis.first_of_each_class(split, 2).tolist() == [[1, 3], [2, 5], [0, 4]]
    counts = analysis.class_counts(split, split.subset(slice(0, 3)))
    assert counts["train"].tolist()[:3] == [2, 3, 2] and counts.iloc[-1].tolist() == ["total", 7, 3]


def test_parameter_counts_match_the_built_model_and_grow_as_expected():
    cfg = analysis.three_stage(32, 2, kernel=5, skip_kernel=3, pool=4)
    assert analysis.count_params(cfg) == count_parameters(create_model(cfg, budget=None))
    widths = analysis.width_sweep(widths=[16, 32], blocks=[1])
    small, large = widths["params"]
    assert 3.5 < large / small < 4.0  # convolutions dominate: about quadratic in width
    kernels = analysis.kernel_sweep(analysis.three_stage(16, 1)).set_index(["variable", "value"])["params"]
    assert kernels["F", 1] < kernels["F", 3] < kernels["F", 5]
    # A K x K projection skip adds (K^2 - 1) * C_in * C_out weights in each of the two downsampling stages.
    assert kernels["K", 3] - kernels["K", 1] == 8 * (16 * 32 + 32 * 64)
    # P = 4 on the final 8x8 map leaves 2x2 positions: 4x the classifier's weights.
    assert kernels["P", 4] - kernels["P", 0] == 3 * 64 * 10


def test_presets_table_counts_every_resnet_preset_and_skips_other_files(tmp_path):
    for name in ("fast", "smoke"):
        (tmp_path / f"{name}.yaml").write_text((CONFIGS / f"{name}.yaml").read_text())
    (tmp_path / "search_space.yaml").write_text("budget: 5000000\n")
    (tmp_path / "speed.yaml").write_text("name: speed\nwidths: [64, 256, 256]\n")  # another tool's schema
    table = analysis.presets_table(tmp_path)
    assert table["preset"].tolist() == ["fast"]
    assert table.loc[0, "params"] == 1_227_594 and table.loc[0, "channels"] == "64/128/256"
    assert table.loc[0, "description"].startswith("Small and fast")


def test_predictions_are_read_as_recorded_with_or_without_tta(tmp_path):
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]], np.float32)
    write_predictions(tmp_path, probs, [0, 0, 1], tta=probs[:, ::-1].copy())
    pred = analysis.load_predictions(tmp_path)
    assert pred.tta == "flip" and pred.probs.dtype == np.float64 and pred.predicted.tolist() == [1, 0, 1]
    plain = analysis.load_predictions(tmp_path, tta=False)
    assert plain.tta == "none" and plain.accuracy == pytest.approx(1 / 3) and plain.views == "the network alone"
    assert (plain.probs == probs.astype(np.float16).astype(np.float64)).all()  # the fp16 values exactly
    images = torch.arange(4 * 32 * 32 * 3).reshape(4, 32, 32, 3).to(torch.uint8)
    split = CIFAR10Split(images, torch.tensor([0, 0, 1, 1]), ("a", "b"))
    assert (analysis.load_predictions(tmp_path, split=split).images == images[:3].numpy()).all()  # a subset: the first N
    with pytest.raises(ValueError, match="labels differ"):
        analysis.load_predictions(tmp_path, split=CIFAR10Split(images, torch.tensor([1, 0, 1, 1]), ("a", "b")))


def test_reliability_bins_and_ece_from_recorded_probabilities_do_not_depend_on_the_order():
    # The cause of figures that differed in the 7th digit between CPUs: sums whose rounding depends on how
    # the CPU splits them. From fp16 probabilities every sum is exact, so any order gives the same bits.
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.1, 1.0, 10_000).astype(np.float16).astype(np.float64)
    correct = rng.uniform(size=confidence.size) < confidence
    bins = analysis.reliability_bins(confidence, correct)
    order = rng.permutation(confidence.size)
    assert bins.equals(analysis.reliability_bins(confidence[order], correct[order]))
    index = np.searchsorted(bins["upper"].to_numpy()[:-1], confidence, side="left")
    exact = [math.fsum(confidence[index == b]) / max((index == b).sum(), 1) for b in range(len(bins))]
    assert bins["confidence"].fillna(0).tolist() == exact  # equal to the exactly rounded sums, bit for bit
    ece = analysis.expected_calibration_error(confidence, correct)
    assert ece == analysis.expected_calibration_error(confidence[order], correct[order])
    assert ece == pytest.approx(float((bins["count"] * (bins["accuracy"] - bins["confidence"]).abs()).sum() / 10_000))


def test_pareto_front_keeps_only_undominated_trials():
    trials = pd.DataFrame({"params": [1, 2, 2, 3, 4, 5], "val_acc": [0.5, 0.7, 0.6, 0.65, 0.9, 0.85]})
    front = analysis.pareto_front(trials)
    assert list(zip(front["params"], front["val_acc"])) == [(1, 0.5), (2, 0.7), (4, 0.9)]


def test_search_results_are_read_with_either_parameter_column_name(tmp_path):
    assert analysis.load_search(tmp_path) is None and analysis.load_importance(tmp_path) is None
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "main.csv").write_text(
        "number,state,val_acc,epochs,trainable_params,seconds,channels\n0,complete,0.9,10,100,5.0,8-16\n")
    (tmp_path / "search" / "main_importance.csv").write_text("param,importance\nwidth,0.7\ndepth,0.3\n")
    assert analysis.load_search(tmp_path)["params"].tolist() == [100]
    assert analysis.load_importance(tmp_path).to_dict("list") == {"parameter": ["width", "depth"], "importance": [0.7, 0.3]}
    (tmp_path / "search" / "main.csv").write_text("number,state\n0,complete\n")
    with pytest.raises(ValueError, match="lacks the column"):
        analysis.load_search(tmp_path)


def test_to_nhwc_gives_channels_last_from_either_layout():
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).reshape(2, 3, 4, 5)
    nhwc = analysis.to_nhwc(images)
    assert isinstance(nhwc, np.ndarray) and nhwc.shape == (2, 4, 5, 3)
    assert nhwc[1, 2, 3, 0] == images[1, 0, 2, 3]
    assert np.array_equal(analysis.to_nhwc(torch.from_numpy(nhwc)), nhwc)
