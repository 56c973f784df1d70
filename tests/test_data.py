import gzip
from pathlib import Path

import pytest
import torch
from conftest import make_fake_mnist, write_idx

from digitrec.data.augment import augment_batch, homography, random_affine, warp
from digitrec.data.datamodule import MNISTDataModule
from digitrec.data.mnist import FILES, MNIST_MEAN, MNIST_STD, REPO_ROOT, default_data_dir, load_split, raw_dir, read_idx
from digitrec.errors import ConfigError, DataError


@pytest.mark.parametrize("gz", [True, False])
def test_setup_shapes_dtypes_and_split_sizes(tmp_path: Path, gz: bool) -> None:
    data_dir = make_fake_mnist(tmp_path, n_train=200, n_test=50, gz=gz)
    dm = MNISTDataModule(data_dir=str(data_dir), val_fraction=0.1, batch_size=16)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 180 and len(dm.val_set) == 20 and len(dm.test_set) == 50
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (16,) and labels.dtype == torch.int64


def test_split_is_identical_across_setups_and_seeded(tmp_path: Path) -> None:
    data_dir = str(make_fake_mnist(tmp_path))
    a, b, c = (MNISTDataModule(data_dir=data_dir, split_seed=s) for s in (7, 7, 8))
    for dm in (a, b, c):
        dm.setup("fit")
    assert torch.equal(a.val_set.images, b.val_set.images) and torch.equal(a.val_set.labels, b.val_set.labels)
    assert not torch.equal(a.val_set.images, c.val_set.images)
    # validation images come out of the training file and never appear in the training split
    train_rows = {row.numpy().tobytes() for row in a.train_set.images}
    assert not any(row.numpy().tobytes() in train_rows for row in a.val_set.images)


def test_data_dir_may_hold_the_raw_files_directly(tmp_path: Path) -> None:
    raw = make_fake_mnist(tmp_path) / "MNIST" / "raw"
    dm = MNISTDataModule(data_dir=str(raw))
    dm.prepare_data()
    dm.setup()
    assert len(dm.test_set) == 50


def test_env_var_sets_default_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITREC_DATA_DIR", str(tmp_path))
    assert MNISTDataModule().data_dir == tmp_path.resolve()
    assert MNISTDataModule(data_dir=str(tmp_path / "x")).data_dir == (tmp_path / "x").resolve()


def test_corrupt_magic_names_the_file(tmp_path: Path) -> None:
    raw = make_fake_mnist(tmp_path) / "MNIST" / "raw"
    path = raw / "train-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[2] = 0x0D  # float IDX, not unsigned bytes
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz.*magic"):
        load_split(raw, train=True)


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    raw = make_fake_mnist(tmp_path, gz=False) / "MNIST" / "raw"
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: truncated"):
        load_split(raw, train=False)


def test_truncated_gzip_stream_is_a_data_error(tmp_path: Path) -> None:
    raw = make_fake_mnist(tmp_path) / "MNIST" / "raw"
    path = raw / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_split(raw, train=True)


def test_count_mismatch_and_label_range(tmp_path: Path) -> None:
    raw = make_fake_mnist(tmp_path) / "MNIST" / "raw"
    write_idx(raw / "t10k-labels-idx1-ubyte", torch.zeros(49, dtype=torch.uint8))
    with pytest.raises(DataError, match="50 images but .* 49 labels"):
        load_split(raw, train=False)
    write_idx(raw / "t10k-labels-idx1-ubyte", torch.full((50,), 12, dtype=torch.uint8))
    with pytest.raises(DataError, match="label 12 is out of range"):
        load_split(raw, train=False)


def test_read_idx_reports_checksum(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x-idx1-ubyte", torch.arange(10, dtype=torch.uint8), gz=False)
    tensor, md5 = read_idx(path)
    assert tensor.tolist() == list(range(10)) and len(md5) == 32


def test_missing_files_without_download_say_where(tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError, match=r"missing in .*MNIST/raw.*train-images-idx3-ubyte\.gz"):
        dm.prepare_data()


def test_download_failure_says_which_files_to_put_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens there
    dm = MNISTDataModule(data_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"Could not download .*Put the four files"):
        dm.prepare_data()
    assert not (tmp_path / "MNIST").exists(), "a failed download leaves no files and no folders behind"
    assert tmp_path.exists(), "a folder that was there before stays"


def test_repository_ships_canonical_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh clone trains offline: the default data_dir holds the four canonical files."""
    monkeypatch.delenv("DIGITREC_DATA_DIR", raising=False)
    folder = raw_dir(default_data_dir())
    assert folder == REPO_ROOT / "data" / "MNIST" / "raw"
    for stem, md5 in FILES.items():
        _, actual = read_idx(folder / f"{stem}.gz")
        assert actual == md5, f"{stem}.gz is not the canonical MNIST file"


@pytest.mark.parametrize(
    "kwargs, message",
    [({"batch_size": 0}, "batch_size"), ({"val_fraction": 1.0}, "val_fraction"), ({"val_fraction": 0}, "val_fraction")],
)
def test_bad_values_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MNISTDataModule(**kwargs)


def test_augmentation_keeps_shape_and_range_and_changes_images() -> None:
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0
    y = augment_batch(x.clone())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().mean() > 0.01
    # the ink stays roughly where it was: a warp, not noise
    assert (y.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))).sub(1).abs().median() < 0.35


def test_identity_warp_is_exact() -> None:
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(warp(x, torch.eye(3).expand(3, 3, 3)), x, atol=1e-5)


def test_homography_maps_corners() -> None:
    src = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])
    dst = src + torch.tensor([[[0.1, 0.0], [0.0, 0.2], [-0.1, 0.0], [0.0, -0.05]]])
    h = homography(src, dst)[0]
    pts = torch.cat([src[0], torch.ones(4, 1)], dim=1) @ h.T
    assert torch.allclose(pts[:, :2] / pts[:, 2:], dst[0], atol=1e-5)


def test_affine_parameters_stay_in_the_original_ranges() -> None:
    torch.manual_seed(0)
    m = random_affine(10_000, torch.device("cpu"))
    det = torch.linalg.det(m[:, :2, :2])  # = scale², shear and rotation preserve area
    assert det.min() > 0.9**2 - 1e-4 and det.max() < 1.1**2 + 1e-4
    assert m[:, :2, 2].abs().max() <= 0.2 + 1e-6  # ±10 % of the image (2 normalised units)


def test_training_batches_are_augmented_and_normalised_eval_batches_only_normalised(tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=str(make_fake_mnist(tmp_path)), batch_size=32)
    dm.setup()
    images, labels = next(iter(dm.val_dataloader()))
    dm.trainer = type("T", (), {"training": False})()
    x_eval, _ = dm.on_after_batch_transfer((images, labels), 0)
    expected = (images.float() / 255 - MNIST_MEAN) / MNIST_STD
    assert torch.allclose(x_eval, expected)
    dm.trainer = type("T", (), {"training": True})()
    torch.manual_seed(0)
    x_train, _ = dm.on_after_batch_transfer((images, labels), 0)
    assert x_train.shape == expected.shape and not torch.allclose(x_train, expected)


def test_elastic_distortion_is_smooth_bounded_and_optional() -> None:
    from digitrec.data.augment import elastic_field

    torch.manual_seed(0)
    field = elastic_field(16, 28, 28, alpha=8.0, sigma=4.0, device=torch.device("cpu"))
    assert field.shape == (16, 28, 28, 2)
    pixels = field * 14  # normalised units -> pixels
    assert 0.1 < pixels.abs().max() <= 8.0
    neighbour_step = (pixels[:, 1:] - pixels[:, :-1]).abs().mean()
    assert neighbour_step < 0.25 * pixels.abs().mean()  # smooth: neighbours move together
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0
    torch.manual_seed(1)
    plain = augment_batch(x)
    torch.manual_seed(1)
    elastic = augment_batch(x, elastic_alpha=8.0)
    assert elastic.shape == x.shape and 0 <= elastic.min() and elastic.max() <= 1
    assert not torch.allclose(plain, elastic)
