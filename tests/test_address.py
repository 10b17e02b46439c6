"""One address: pyproject.toml's, written everywhere by `cifar-resnet set-address`; identical set-up cells."""

import shutil

import nbformat
import pytest

from cifar_resnet.cli import main
from cifar_resnet.config import ConfigError
from cifar_resnet.reporting.address import PLACEHOLDER, badges, disagreements, read_address, read_version, setup_cell

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


def read(path):
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def test_every_place_shows_the_address_of_pyproject():
    assert disagreements(ROOT) == []


def test_every_notebook_opens_with_both_badges_and_asks_colab_for_a_gpu():
    assert len(NOTEBOOKS) == 4
    for path in NOTEBOOKS:
        nb = read(path)
        assert nb.cells[0].cell_type == "markdown" and "Open In Colab" in nb.cells[0].source
        assert "Open In SageMaker Studio Lab" in nb.cells[0].source and path.name in nb.cells[0].source
        assert nb.metadata["accelerator"] == "GPU" and nb.metadata["colab"]["gpuType"] == "T4"


def test_the_set_up_cell_is_identical_in_every_notebook_and_clones_the_version_tag():
    cells = {path.name: setup_cell(read(path)).source for path in NOTEBOOKS}
    assert len(set(cells.values())) == 1, "the set-up cells differ: " + ", ".join(cells)
    source = next(iter(cells.values()))
    assert f'VERSION = "{read_version(ROOT)}"' in source and '"--branch", f"v{VERSION}"' in source


@pytest.fixture
def clone(tmp_path):
    """The files set-address writes, copied."""
    for name in ("pyproject.toml", "README.md", "report/authors.yaml", "report/authors.tex", *(
            f"notebooks/{p.name}" for p in NOTEBOOKS)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_set_address_writes_the_address_everywhere(clone, capsys):
    url = "https://github.com/someone/cifar_resnet"
    (clone / "report" / "authors.yaml").write_text("authors: Ada Lovelace\naffiliations: Analytical Engines\n")
    assert main(["set-address", url, "--root", str(clone)]) == 0
    assert read_address(clone) == url and disagreements(clone) == []
    readme = (clone / "README.md").read_text()
    assert "github.com/USER" not in readme and "github/USER" not in readme
    assert f"git clone {url}" in readme and "colab.research.google.com/github/someone/cifar_resnet/" in readme
    authors = (clone / "report" / "authors.tex").read_text()
    assert f"\\newcommand\\RepoURL{{{url}}}" in authors and "{Ada Lovelace}" in authors
    for path in NOTEBOOKS:
        nb = read(clone / "notebooks" / path.name)
        assert nb.cells[0].source == badges(url, path.name) and f'REPO_URL = "{url}"' in setup_cell(nb).source
        assert nb.nbformat_minor == read(path).nbformat_minor
    assert "wrote" in capsys.readouterr().out


def test_a_place_left_behind_is_found(clone):
    readme = clone / "README.md"
    readme.write_text(readme.read_text() + "\nhttps://colab.research.google.com/github/other/cifar_resnet/blob/x\n")
    assert disagreements(clone) == ["README.md: 'colab.research.google.com/github/other/cifar_resnet/' is "
                                    "another address"]


def test_the_placeholder_names_no_repository_in_the_report():
    assert read_address(ROOT) != PLACEHOLDER or "\\newcommand\\RepoURL{}" in (ROOT / "report/authors.tex").read_text()


def test_set_address_refuses_what_is_not_a_github_address(clone, capsys):
    assert main(["set-address", "https://gitlab.com/a/b", "--root", str(clone)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "https://github.com/OWNER/NAME" in err
    with pytest.raises(ConfigError, match="needs a clone"):
        from cifar_resnet.reporting.address import set_address
        set_address(clone / "nowhere")
