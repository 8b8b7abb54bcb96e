"""Label mapping: from the values found in the user's masks to nnU-Net's consecutive labels.

nnU-Net wants `background: 0` and consecutive integers (an `ignore` label, if any, last). Users'
masks often hold other values (binary 0/255, or 0/128/255), so a mapping names the *mask values*
and onboarding renumbers them: background -> 0, the others by increasing mask value -> 1, 2, ...
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence
from ..errors import OptionError

MAX_INFERRED_LABELS = 50  # more distinct values than this is an image or an instance map, not classes


@dataclass
class LabelPlan:
    labels: Dict[str, int]          # dataset.json `labels`: name -> nnU-Net value
    mask_to_label: Dict[int, int]   # value in the user's masks -> nnU-Net value
    inferred: bool
    notes: List[str] = field(default_factory=list)

    def lookup_table(self):
        """Array mapping mask value -> nnU-Net value (for non-negative mask values)."""
        import numpy as np
        table = np.zeros(max(self.mask_to_label) + 1, dtype=np.uint16)
        for source, target in self.mask_to_label.items():
            table[source] = target
        return table


def _as_int(name: str, value) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or number != int(number):
        raise OptionError(f"label {name!r}: value {value!r} is not an integer; give the value the masks hold "
                         f"for it, e.g. {name}=1")
    return int(number)


def parse_label_mapping(items: Optional[Sequence[str]]) -> Optional[Dict[str, int]]:
    """`name=value` pairs or one JSON file ({"name": value} or a dataset.json with "labels"); None if empty."""
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        path = items[0]
        if not os.path.isfile(path):
            raise OptionError(f"--labels {path!r}: neither name=value pairs nor an existing JSON file")
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as error:
                raise OptionError(f"--labels {path}: not valid JSON ({error})")
        data = data.get("labels", data) if isinstance(data, dict) else data
        if not isinstance(data, dict) or any(isinstance(v, (list, dict)) for v in data.values()):
            raise OptionError(f"--labels {path}: expected {{\"name\": value, ...}} with one integer per name "
                             f"(regions are not supported by onboarding)")
        pairs = list(data.items())
    else:
        pairs = []
        for item in items:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise OptionError(f"--labels: {item!r} is not name=value (e.g. background=0 tumour=255)")
            pairs.append((name.strip(), value.strip()))
    mapping: Dict[str, int] = {}
    for name, value in pairs:
        if name in mapping:
            raise OptionError(f"--labels: {name!r} is given twice")
        mapping[name] = _as_int(name, value)
    values = list(mapping.values())
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise OptionError(f"--labels: mask value(s) {repeated} are named more than once; one name per value")
    return mapping


def _renumber(named: Dict[str, int], notes: List[str]) -> Dict[int, int]:
    """mask value -> nnU-Net value: background 0, others by mask value, `ignore` last."""
    ordered = sorted((v for n, v in named.items() if n not in ("background", "ignore")))
    table = {named["background"]: 0} if "background" in named else {}
    table.update({v: i + 1 for i, v in enumerate(ordered)})
    if "ignore" in named:
        table[named["ignore"]] = len(ordered) + 1
    renumbered = {s: t for s, t in table.items() if s != t}
    if renumbered:
        notes.append("mask values renumbered for nnU-Net (consecutive from 0): "
                     + ", ".join(f"{s} -> {t}" for s, t in sorted(table.items())))
    return table


def plan_labels(given: Optional[Dict[str, int]], found_values: Iterable[int]) -> LabelPlan:
    """The label plan from a user mapping, or inferred from the mask values found (`given` None)."""
    found = sorted(set(found_values))
    notes: List[str] = []
    if given is None:
        nonzero = [v for v in found if v != 0]
        if len(nonzero) > MAX_INFERRED_LABELS:
            raise OptionError(f"the masks hold {len(found)} distinct values ({found[:10]} ...): too many to be "
                             f"classes. Are these label maps? Pass --labels name=value ... for the classes")
        if any(v < 0 for v in nonzero):
            raise OptionError(f"the masks hold negative values {[v for v in nonzero if v < 0]}: pass --labels to "
                             f"name every value (e.g. background=0 lesion=-1)")
        if not nonzero:
            raise OptionError("every mask holds only 0 (background): there is nothing to segment. "
                             "Check the masks folder and --mask-pattern")
        named = {"background": 0}
        if len(nonzero) == 1:
            named["foreground"] = nonzero[0]
        else:
            named.update({f"label_{v}": v for v in nonzero})
        notes.append(f"labels inferred from the mask values {found}; name them with --labels name=value ...")
        table = _renumber(named, notes)
        return LabelPlan({n: table[v] for n, v in named.items()}, table, True, notes)

    named = dict(given)
    zero_names = [n for n, v in named.items() if v == 0]
    if not zero_names:
        named = {"background": 0, **named}
        notes.append("no name for mask value 0: added background=0")
    elif zero_names[0] != "background":
        if "background" in named:
            raise OptionError(f"--labels: 'background' must be mask value 0 (nnU-Net's rule), "
                             f"but 0 is {zero_names[0]!r}")
        named = {("background" if n == zero_names[0] else n): v for n, v in named.items()}
        notes.append(f"mask value 0 ({zero_names[0]!r}) is called 'background' in dataset.json (nnU-Net's rule)")
    negative = [v for v in named.values() if v < 0]
    if negative:
        raise OptionError(f"--labels: negative mask values {negative} are not supported; relabel the masks")
    table = _renumber(named, notes)
    labels = dict(sorted(((n, table[v]) for n, v in named.items()), key=lambda item: item[1]))
    return LabelPlan(labels, table, False, notes)
