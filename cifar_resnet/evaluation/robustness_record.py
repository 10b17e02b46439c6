"""A run's recorded corruption robustness, `robustness.json` (written by `cifar-resnet robustness`), read
and laid out for the figures, notebook 04 and the report.

The corruptions are generated on the fly with the CIFAR-10-C types and severities (Hendrycks and
Dietterich, 2019), not read from the released CIFAR-10-C files; every caption and sentence says so.
Only the standard library is imported.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

ROBUSTNESS = "robustness.json"
SEVERITIES = 5
CIFAR10C_TYPES = 15  # corruption types of CIFAR-10-C's benchmark (Hendrycks and Dietterich, 2019), extras aside
FAMILY_ORDER = ("noise", "blur", "weather", "digital")


def _fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def _valid(record: Any) -> str | None:
    """What is wrong with a loaded robustness.json, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    images = record.get("images")
    if not isinstance(images, int) or isinstance(images, bool) or images <= 0:
        return "no positive number of images"
    for key in ("clean_acc", "mean_corruption_acc"):
        if not _fraction(record.get(key)):
            return f"{key} is not an accuracy in [0, 1]"
    corruptions = record.get("corruptions")
    if not isinstance(corruptions, list) or not corruptions:
        return "no corruptions"
    for c in corruptions:
        if not (isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("family"), str)
                and isinstance(c.get("accuracy"), list) and len(c["accuracy"]) == SEVERITIES
                and all(_fraction(a) for a in c["accuracy"])):
            return f"a corruption without a name, a family and {SEVERITIES} accuracies: {c!r}"[:200]
    return None


def load_robustness(run_dir: str | Path) -> dict | None:
    """The run's robustness.json, its corruptions ordered by family (noise, blur, weather, digital) as in
    CIFAR-10-C; None where the run has none, or (with a warning) where it cannot be used."""
    path = Path(run_dir) / ROBUSTNESS
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        warnings.warn(f"ignoring {path}: {err}", stacklevel=2)
        return None
    problem = _valid(record)
    if problem:
        warnings.warn(f"ignoring {path}: {problem}", stacklevel=2)
        return None
    rank = {family: i for i, family in enumerate(FAMILY_ORDER)}
    record["corruptions"] = sorted(record["corruptions"], key=lambda c: rank.get(c["family"], len(rank)))
    return record


def corruption_label(name: str) -> str:
    """'gaussian_noise' -> 'Gaussian noise', 'jpeg_compression' -> 'JPEG compression'."""
    words = name.split("_")
    fixed = {"gaussian": "Gaussian", "jpeg": "JPEG"}
    words = [fixed.get(w, w) for w in words]
    return (words[0][:1].upper() + words[0][1:] + " " + " ".join(words[1:])).strip()


def mean_accuracy(corruption: dict) -> float:
    """A corruption's accuracy averaged over its five severities."""
    return sum(corruption["accuracy"]) / len(corruption["accuracy"])


def rows(record: dict) -> list[dict[str, Any]]:
    """One row per corruption: its name in words, family, accuracy at severities 1-5 and their mean, as
    fractions (a table for notebook 04)."""
    return [{"corruption": corruption_label(c["name"]), "family": c["family"],
             **{f"severity {s + 1}": a for s, a in enumerate(c["accuracy"])}, "mean": mean_accuracy(c)}
            for c in record["corruptions"]]


def summary(record: dict) -> str:
    """One sentence: on how many images, clean and mean corrupted accuracy, the hardest corruption."""
    worst = min(record["corruptions"], key=mean_accuracy)
    seconds = record.get("seconds")
    timing = f" in {seconds:.0f} s on {record.get('device', 'an unknown device')}" if isinstance(seconds, (int, float)) else ""
    return (f"{record['images']:,} test images{timing}: {100 * record['clean_acc']:.2f}% clean, "
            f"{100 * record['mean_corruption_acc']:.2f}% on average over {len(record['corruptions'])} generated "
            f"corruptions x {SEVERITIES} severities (CIFAR-10-C types, generated on the fly, not the released "
            f"files); hardest: {corruption_label(worst['name']).lower()}, {100 * mean_accuracy(worst):.2f}%.")


def families(record: dict) -> list[tuple[str, int, list[float]]]:
    """(family, how many corruptions, accuracy at each severity averaged over them), in CIFAR-10-C's order."""
    out: dict[str, list[dict]] = {}
    for c in record["corruptions"]:
        out.setdefault(c["family"], []).append(c)
    return [(family, len(cs), [sum(c["accuracy"][s] for c in cs) / len(cs) for s in range(SEVERITIES)])
            for family, cs in out.items()]


def robustness_latex(record: dict) -> str:
    """Accuracy (%) by corruption family and severity, with the mean per family and over all corruptions, as
    a bare booktabs tabular for a one-column table (notebook 04 shows each corruption)."""
    lines = ["\\begin{tabular}{@{}l" + "r" * (SEVERITIES + 1) + "@{}}", "\\toprule",
             "Corruptions & " + " & ".join(str(s + 1) for s in range(SEVERITIES)) + " & Mean \\\\", "\\midrule"]
    everything = [(f"All ({len(record['corruptions'])})", [sum(c["accuracy"][s] for c in record["corruptions"])
                                                         / len(record["corruptions"]) for s in range(SEVERITIES)])]
    for name, accs in [(f"{family.capitalize()} ({n})", accs) for family, n, accs in families(record)] + everything:
        cells = " & ".join(f"{100 * a:.1f}" for a in accs)
        lines.append(f"{name} & {cells} & {100 * sum(accs) / len(accs):.1f} \\\\")
        if name.startswith("All "):
            lines.insert(-1, "\\midrule")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
