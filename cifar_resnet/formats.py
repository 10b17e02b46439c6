"""How numbers and names are written in the tables, `results/README.md` and the report: LaTeX escaping,
percentages, thousands, durations, and a booktabs tabular of chosen columns. Used by `reporting.records` (the
tables) and `reporting.paper` (the report's number macros), so both write every value the same way, and by
the training messages (`duration`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import pandas as pd


def excerpt(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters ('...' marks the cut): what a one-line error may quote of a value
    (a whole file read as one YAML string, say, is never printed)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _missing(value: object) -> bool:
    """None, NaN or pandas' NA. pandas is imported here, not at the top: the training messages use
    `duration` and load no pandas."""
    import pandas as pd

    return pd.isna(value)


_TEX_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
                 "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}"}


def tex_escape(text: object) -> str:
    """`text` (as str) with LaTeX's special characters escaped, for running text and table cells."""
    return "".join(_TEX_SPECIALS.get(c, c) for c in str(text))


def markdown_escape(text: object) -> str:
    """`text` (as str) safe in a Markdown table cell or list item: on one line, its `|` escaped (the rest of
    Markdown is left alone: the notes' `code` is meant)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def percent(fraction: object) -> str:
    """An accuracy in [0, 1] as a percentage with two decimals, without the % sign: 0.9412 -> '94.12'."""
    return f"{100 * float(fraction):.2f}"


def thousands(n: object) -> str:
    """A count rounded to an integer with LaTeX thousands separators: 4289754 -> '4{,}289{,}754'."""
    return f"{round(float(n)):,}".replace(",", "{,}")


def duration(seconds: object, *, rough: bool = False) -> str:
    """Seconds in the unit a reader takes in at a glance: '95.0 s', '12.5 min', '3.20 h'; `rough` (estimates)
    in whole units: '45 h'."""
    s = float(seconds)
    if rough:
        return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.0f} h"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def mean_std(mean: object, std: object, scale: float = 100, digits: int = 2, pm: str = " ± ") -> str:
    """"94.86 ± 0.08" from a mean and a standard deviation (the mean alone where there is no std)."""
    if _missing(mean):
        return "-"
    return f"{scale * float(mean):.{digits}f}" + ("" if _missing(std) else f"{pm}{scale * float(std):.{digits}f}")


@dataclass
class Column:
    """How a table column appears in LaTeX: its header, alignment, and formatter of a cell (None = escaped str)."""

    header: str
    align: str = "l"
    format: Callable[[object], str] | None = None


def to_latex(table: pd.DataFrame, columns: dict[str, Column]) -> str:
    """A booktabs tabular of the given columns (no float environment: the report wraps it)."""
    lines = [f"\\begin{{tabular}}{{{''.join(c.align for c in columns.values())}}}", "\\toprule",
             " & ".join(c.header for c in columns.values()) + " \\\\", "\\midrule"]
    for _, row in table.iterrows():
        cells = []
        for key, col in columns.items():
            value = row[key]
            missing = value is None or (not isinstance(value, str) and _missing(value))
            cells.append("--" if missing else col.format(value) if col.format else tex_escape(value))
        lines.append(" & ".join(cells) + " \\\\")
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"]) + "\n"
