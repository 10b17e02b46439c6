"""Whether regenerated figure PDFs draw what the committed ones draw.

A PDF's bytes are not a figure: matplotlib embeds a subset of each font, and fontTools, which makes the
subset, writes it differently from one version to the next (4.68.0 and 4.69.1 give 8,772 and 18,572 bytes
for the same glyphs). So CI compares what a reader sees instead: every page rendered by poppler's pdftoppm
and the text pdftotext extracts. A figure whose bytes differ but whose pages and text do not is the same
figure.

    python scripts/compare_figures.py [--against REV] [PDF ...]

compares each PDF (default: every tracked `figures/*.pdf`) with its version at REV (default HEAD), prints
one line for each that draws something else, and exits 1 if any does. Needs poppler-utils.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

RENDER_DPI = 100  # a figure is 3.3 to 7 inches wide: 330 to 700 pixels, enough to see any changed mark


def _pages(pdf: Path, out: Path) -> list[bytes]:
    """Each page of `pdf` rendered as a PNG's bytes (the same poppler renders the same drawing identically)."""
    subprocess.run(["pdftoppm", "-r", str(RENDER_DPI), "-png", str(pdf), str(out / "page")], check=True,
                   capture_output=True)
    return [page.read_bytes() for page in sorted(out.glob("page*.png"))]


def _text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True,
                          text=True).stdout


def drawing_difference(old: bytes, new: bytes) -> str | None:
    """None where two PDFs draw the same pages with the same text, else what differs, in a few words."""
    if old == new:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        folders = []
        for name, content in (("old", old), ("new", new)):
            folder = Path(tmp, name)
            folder.mkdir()
            (folder / "figure.pdf").write_bytes(content)
            folders.append(folder)
        texts = [_text(folder / "figure.pdf") for folder in folders]
        pages = [_pages(folder / "figure.pdf", folder) for folder in folders]
    if len(pages[0]) != len(pages[1]):
        return f"{len(pages[0])} pages before, {len(pages[1])} now"
    if texts[0] != texts[1]:
        return "its text differs"
    changed = [str(number) for number, (a, b) in enumerate(zip(*pages), 1) if a != b]
    return f"page {', '.join(changed)} draws something else" if changed else None


def _committed(path: str, rev: str) -> bytes | None:
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True)
    return shown.stdout if shown.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pdfs", nargs="*", help="PDFs to compare (default: every tracked figures/*.pdf)")
    parser.add_argument("--against", default="HEAD", metavar="REV", help="the git revision to compare with")
    args = parser.parse_args(argv)
    paths = args.pdfs or subprocess.run(["git", "ls-files", "figures/*.pdf"], check=True, capture_output=True,
                                        text=True).stdout.split()
    different = 0
    for path in paths:
        old = _committed(path, args.against)
        if old is None:
            print(f"{path}: not in {args.against}; commit it or compare another revision with --against")
            different += 1
            continue
        if not Path(path).is_file():
            print(f"{path}: missing; rerun `cifar-resnet figures`")
            different += 1
            continue
        try:
            reason = drawing_difference(old, Path(path).read_bytes())
        except FileNotFoundError as missing:
            print(f"{path}: {missing.strerror}: {missing.filename} (install poppler-utils for pdftoppm and pdftotext)")
            return 2
        if reason:
            print(f"{path}: {reason} (compared with {args.against}); commit it if the change is meant")
            different += 1
    print(f"compare_figures: {len(paths) - different} of {len(paths)} figures draw what {args.against} draws")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
