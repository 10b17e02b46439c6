"""The repository's address, kept in one place and written into every place that shows it.

`pyproject.toml`'s `[project.urls] Repository` is the address. `cifar-resnet set-address URL` writes it
there and into the README's links, every notebook's badges (its first cell) and set-up cell (`REPO_URL`),
and `report/authors.tex`, whose authors and affiliations come from `report/authors.yaml`. `disagreements`
lists every place that says something else (a test keeps it empty). While the address is the placeholder,
the report names no repository and a notebook opened alone stops, saying to set `REPO_URL`.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ..config import ConfigError
from ..formats import excerpt
from ..files import FolderError, atomic_write_text, writable_folder

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PLACEHOLDER = "https://github.com/USER/cifar_resnet"
PLACEHOLDER_AUTHORS = "The cifar\\_resnet authors"  # report/authors.yaml's authors until the team sets them
_AUTHORS_TEX = re.compile(r"\\newcommand\\(ReportAuthors|RepoURL)\{(.*)\}$", re.MULTILINE)
NOTEBOOKS = "notebooks"
BRANCH = "main"  # the branch the badges open the notebooks from
_GITHUB = re.compile(r"https://github\.com/([A-Za-z0-9][A-Za-z0-9-]*)/([A-Za-z0-9._-]+?)(?:\.git)?/?$")
_REPO_URL_LINE = re.compile(r'^REPO_URL = "([^"]*)"', re.MULTILINE)
_PYPROJECT_LINE = re.compile(r'^(Repository = )"[^"]*"', re.MULTILINE)
# Where the README names the repository: the clone and pip commands, the notebooks' Colab and Studio Lab links.
_README_FORMS = ("git clone https://github.com/{}/{}", "git+https://github.com/{}/{}",
                 "colab.research.google.com/github/{}/{}/", "studiolab.sagemaker.aws/import/github/{}/{}/")
_README_ANY = re.compile("|".join(re.escape(form).replace(r"\{\}", r"([^/\s)`]+)") for form in _README_FORMS))
SETUP_MARK = "# Set-up"  # the first line of every notebook's set-up cell


def owner_and_name(url: str) -> tuple[str, str]:
    """('OWNER', 'NAME') of a https://github.com/OWNER/NAME address; `ConfigError` for any other."""
    match = _GITHUB.match(url)
    if not match:
        raise ConfigError(f"{url!r} is not a GitHub repository address: give https://github.com/OWNER/NAME "
                          "(the Colab and Studio Lab badges open notebooks from GitHub)")
    return match.group(1), match.group(2)


def read_address(root: str | Path) -> str:
    """The address in `root/pyproject.toml` ([project.urls] Repository)."""
    with open(Path(root) / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"]


def repository_address() -> str:
    """The address as this installation knows it: the source tree's pyproject.toml, else the installed
    package's metadata (a plain `pip install`), else the placeholder."""
    from importlib import metadata

    source = Path(__file__).resolve().parents[2]
    if (source / "pyproject.toml").is_file():
        try:
            return read_address(source)
        except (KeyError, ValueError):
            pass
    try:
        urls = metadata.metadata("cifar_resnet").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        urls = []
    return next((u.split(",", 1)[1].strip() for u in urls if u.lower().startswith("repository,")), PLACEHOLDER)


def clone_command() -> str:
    """The `git clone` line of the repository."""
    return f"git clone {repository_address()}"


def read_version(root: str | Path) -> str:
    """The project's version in `root/pyproject.toml`; the notebooks clone the tag v<version>."""
    with open(Path(root) / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def badges(url: str, notebook: str) -> str:
    """The markdown of the 'Open in Colab' and 'Open in Studio Lab' badges of `notebook` (a file name)."""
    owner, name = owner_and_name(url)
    path = f"github/{owner}/{name}/blob/{BRANCH}/{NOTEBOOKS}/{notebook}"
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/{path}) "
            f"[![Open In SageMaker Studio Lab](https://studiolab.sagemaker.aws/studiolab.svg)]"
            f"(https://studiolab.sagemaker.aws/import/{path})")


def authors_tex(root: str | Path, url: str) -> str:
    """report/authors.tex: authors and affiliations from report/authors.yaml, and the address (none while
    it is the placeholder)."""
    people = read_authors(root)
    repo = "" if url == PLACEHOLDER else url
    return ("% Written by `cifar-resnet set-address` from report/authors.yaml and pyproject.toml's address: edit those.\n"
            f"\\newcommand\\ReportAuthors{{{people['authors']}}}\n"
            f"\\newcommand\\ReportAffiliations{{{people['affiliations']}}}\n"
            "% The public repository that holds the code, configurations and recorded results; empty: none is named.\n"
            f"\\newcommand\\RepoURL{{{repo}}}\n")


def read_authors(root: str | Path) -> dict[str, str]:
    """report/authors.yaml's `authors` and `affiliations` as the LaTeX the report prints: a string as it is,
    a list of strings joined (authors by commas, affiliations one a line); anything else is a one-line
    `ConfigError` naming the file, as is YAML that does not parse."""
    path = Path(root) / "report" / "authors.yaml"
    try:
        people = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid YAML ({str(err).splitlines()[0]}): fix it, then run the command "
                          "again") from None
    if not isinstance(people, dict):
        raise ConfigError(f"{path} must map `authors` and `affiliations` to text, not hold a {type(people).__name__}")
    found = {}
    for key, joiner in (("authors", ", "), ("affiliations", " \\\\ ")):
        value = people.get(key) or ""
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = joiner.join(value)
        if not isinstance(value, str) or "\n" in value:
            raise ConfigError(f"{path}: `{key}` must be text on one line or a list of names (LaTeX allowed), not "
                              f"{type(value).__name__} {excerpt(value)}")
        found[key] = value
    return found


def authors_hint(report_dir: Path, errors: list[str]) -> str:
    """Where a LaTeX error at report.tex's author or affiliation line comes from: report/authors.yaml."""
    lines = (report_dir / "report.tex").read_text(errors="replace").splitlines()
    for match in (re.match(r"\./report\.tex:(\d+):", e) for e in errors):
        if match and 0 < int(match.group(1)) <= len(lines) and re.search(
                r"\\(author|affiliations|ReportAuthors|ReportAffiliations)\b", lines[int(match.group(1)) - 1]):
            return (" at the authors' line, which report/authors.yaml writes (through set-address into "
                    "report/authors.tex): fix the LaTeX in authors.yaml, then run `cifar-resnet set-address`")
    return ""


def report_placeholders(root: str | Path) -> str | None:
    """One line saying which of the report's author line and repository link are still placeholders and
    where to set them, or None where report/authors.tex names both."""
    tex = Path(root) / "report" / "authors.tex"
    found = dict(_AUTHORS_TEX.findall(tex.read_text())) if tex.is_file() else {}
    missing = []
    if found.get("ReportAuthors", "").strip() in ("", PLACEHOLDER_AUTHORS):
        missing.append("the author line is a placeholder (set `authors` in report/authors.yaml)")
    if not found.get("RepoURL", "").strip():
        missing.append("no repository link is printed (the address is the placeholder)")
    if not missing:
        return None
    return (f"report/report.pdf: {'; '.join(missing)}; then run `cifar-resnet set-address "
            "https://github.com/OWNER/NAME`, which writes both into report/authors.tex")


def _notebooks(root: Path) -> list[Path]:
    return sorted((root / NOTEBOOKS).glob("0*.ipynb"))


def setup_cell(nb) -> object:
    """A notebook's set-up cell (the code cell that starts with `SETUP_MARK`)."""
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(SETUP_MARK))


def set_address(root: str | Path, url: str | None = None) -> list[Path]:
    """Write `url` (default: the one in pyproject.toml) into every place that shows the address; returns the
    files written. Every file is read and its new text made, and every folder checked, before the first is
    written (each atomically: never through a link planted there), so a mistake changes nothing."""
    import nbformat

    root = Path(root)
    if not (root / "pyproject.toml").is_file() or not (root / NOTEBOOKS).is_dir():
        raise ConfigError(f"set-address needs a clone of the repository: {root.resolve()} holds no pyproject.toml "
                          f"and {NOTEBOOKS}/; run it from the clone's root or give --root CLONE")
    old, url = read_address(root), url or read_address(root)
    (old_owner, old_name), (owner, name) = owner_and_name(old), owner_and_name(url)
    pyproject, readme, authors = root / "pyproject.toml", root / "README.md", root / "report" / "authors.tex"
    text = readme.read_text(encoding="utf-8")
    for form in _README_FORMS:
        text = text.replace(form.format(old_owner, old_name), form.format(owner, name))
    planned = {pyproject: _PYPROJECT_LINE.sub(rf'\g<1>"{url}"', pyproject.read_text(encoding="utf-8"), count=1),
               readme: text, authors: authors_tex(root, url)}
    for path in _notebooks(root):
        try:
            nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
            setup_cell(nb)
        except (ValueError, KeyError, AttributeError, StopIteration, IndexError) as err:  # not JSON, not a notebook
            raise ConfigError(f"{path} is not one of the project's notebooks ({type(err).__name__}): restore it "
                              f"(git checkout -- {path.relative_to(root)}), then run set-address again; nothing "
                              "was written") from None
        nb.cells[0].source = badges(url, path.name)
        cell = setup_cell(nb)
        cell.source = _REPO_URL_LINE.sub(f'REPO_URL = "{url}"', cell.source, count=1)
        notebook = nbformat.writes(nb)
        planned[path] = notebook if notebook.endswith("\n") else notebook + "\n"  # as nbformat.write ends it
    for path in planned:
        writable_folder(path.parent)
        if path.is_dir():
            raise FolderError(f"{path} is a folder where set-address writes a file: move it away, then run it again")
    for path, new_text in planned.items():
        atomic_write_text(path, new_text)
    written = list(planned)
    return written


def disagreements(root: str | Path) -> list[str]:
    """Every place that does not show pyproject.toml's address (or the notebooks' version), one line each."""
    import nbformat

    root = Path(root)
    url, version = read_address(root), read_version(root)
    owner, name = owner_and_name(url)
    found = []
    readme = (root / "README.md").read_text()
    for form in _README_FORMS:
        if form.format(owner, name) not in readme:
            found.append(f"README.md: no {form.format(owner, name)!r}")
    for match in _README_ANY.finditer(readme):
        if [g for g in match.groups() if g is not None] != [owner, name]:
            found.append(f"README.md: {match.group(0)!r} is another address")
    if (root / "report" / "authors.tex").read_text() != authors_tex(root, url):
        found.append("report/authors.tex: not what report/authors.yaml and the address give")
    for path in _notebooks(root):
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        if nb.cells[0].source != badges(url, path.name):
            found.append(f"{path.name}: the first cell is not the badges of {url}")
        source = setup_cell(nb).source
        if _REPO_URL_LINE.findall(source) != [url]:
            found.append(f"{path.name}: REPO_URL is not {url}")
        if f'VERSION = "{version}"' not in source:
            found.append(f"{path.name}: the set-up cell's VERSION is not {version}")
    return found
