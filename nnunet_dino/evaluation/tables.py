"""The one renderer of per-class metric tables (Markdown), used by `evaluate`, the demo report and
the cross-validation report, so every table rounds and marks undefined values the same way."""
from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Sequence, Tuple

DIGITS = {"Dice": 3, "IoU": 3, "HD95": 2, "ASD": 2}
UNITS = {"Dice": "", "IoU": "", "HD95": " mm", "ASD": " mm"}
UNDEFINED = "–"
MEAN_ROW = "mean"  # row key of the foreground mean

Column = Tuple[str, Callable[[str], str]]  # header, cell text for a row key (a class key or MEAN_ROW)


def _defined(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def metric_cell(metric: str, mean, sd=None) -> str:
    """'0.812 ± 0.034' (the metric's digits), '0.812' without a spread, '–' when undefined."""
    if not _defined(mean):
        return UNDEFINED
    digits = DIGITS[metric]
    spread = f" ± {float(sd):.{digits}f}" if _defined(sd) else ""
    return f"{float(mean):.{digits}f}{spread}"


def per_class_table(class_names: Mapping[str, str], columns: Sequence[Column],
                    mean_label: Optional[str] = "**mean (foreground)**") -> str:
    """Markdown: one row per class (in `class_names` order), then the foreground-mean row."""
    rows = [(key, name) for key, name in class_names.items()]
    if mean_label:
        rows.append((MEAN_ROW, mean_label))
    lines = ["| class | " + " | ".join(header for header, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(cell(key) for _, cell in columns) + " |" for key, name in rows]
    return "\n".join(lines)
