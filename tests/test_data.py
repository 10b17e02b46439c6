import os
import pickle

import pytest
import torch

from cifar_resnet.data.cifar10 import BATCH_DIR, CLASSES, DataError, MEAN, load_cifar10, split_holdout


def test_synthetic_set_loads_in_both_layouts(synthetic_root):
    train = load_cifar10(synthetic_root, "train", download=False)
    test = load_cifar10(synthetic_root, "test", download=False, channels_first=True)
    assert train.images.shape == (400, 32, 32, 3) and train.images.dtype == torch.uint8
    assert test.images.shape == (100, 3, 32, 32)
    assert train.labels.dtype == torch.int64 and train.labels.bincount().tolist() == [40] * 10
    assert train.classes == CLASSES


def test_root_comes_from_the_environment(synthetic_root, monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", str(synthetic_root))
    assert len(load_cifar10(split="test", download=False)) == 100


def test_real_cifar10_is_exact(real_root):
    train = load_cifar10(real_root, "train", download=False)
    test = load_cifar10(real_root, "test", download=False)
    assert train.images.shape == (50_000, 32, 32, 3) and test.images.shape == (10_000, 32, 32, 3)
    assert train.labels.bincount().tolist() == [5000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    means = train.images.double().mean(dim=(0, 1, 2))
    assert torch.allclose(means, torch.tensor([125.3, 123.0, 113.9], dtype=torch.double), atol=0.06)
    assert torch.allclose(means, torch.tensor(MEAN, dtype=torch.double), atol=0.001)
    # data_batch_1's published class counts
    assert train.labels[:10_000].bincount().tolist() == [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]


def test_missing_root_says_where_and_how(tmp_path):
    with pytest.raises(DataError, match=f"expected {tmp_path / 'nowhere' / BATCH_DIR}.*download") as err:
        load_cifar10(tmp_path / "nowhere", download=False)
    assert "\n" not in str(err.value)


def test_failed_download_says_how_to_get_the_files(tmp_path, monkeypatch):
    import torchvision.datasets.utils as utils

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(utils, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="download failed.*extract it into"):
        load_cifar10(tmp_path / "offline", download=True)


def _copy_synthetic(src, dst):
    (dst / BATCH_DIR).mkdir(parents=True)
    for f in (src / BATCH_DIR).iterdir():
        (dst / BATCH_DIR / f.name).write_bytes(f.read_bytes())
    return dst


def test_damaged_batch_is_refused(synthetic_root, tmp_path):
    root = _copy_synthetic(synthetic_root, tmp_path)
    path = root / BATCH_DIR / "test_batch"
    path.write_bytes(path.read_bytes()[: 5000])  # truncated
    with pytest.raises(DataError, match="test_batch is damaged.*download CIFAR-10 again"):
        load_cifar10(root, "test", download=False)


def test_unpickler_refuses_arbitrary_objects(synthetic_root, tmp_path):
    root = _copy_synthetic(synthetic_root, tmp_path)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (root / BATCH_DIR / "test_batch").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(DataError, match="refusing to load"):
        load_cifar10(root, "test", download=False)
    assert not (tmp_path / "pwned").exists()


def test_holdout_takes_the_last_images(synthetic_root):
    train = load_cifar10(synthetic_root, "train", download=False)
    kept, held = split_holdout(train, 50)
    assert len(kept) == 350 and len(held) == 50
    assert torch.equal(held.images, train.images[-50:])
    with pytest.raises(DataError, match="data.holdout must be between 1 and 399 .*hold out fewer"):
        split_holdout(train, 400)


def test_failed_download_is_one_line_and_leaves_no_empty_folder(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match=r"the download failed \(URLError: Name or service not known\): download "
                                        r"https://\S+ yourself") as err:
        load_cifar10(tmp_path / "data")
    assert "\n" not in str(err.value) and not (tmp_path / "data").exists()
