"""The AAL atlas's 116 regions grouped into structures, as data (`GROUPINGS`).

The thousands digit of an AAL region code names its lobe (`AAL_LOBES`); a rule takes the regions
of some lobes on one side or both. Every grouping is checked to be a partition of AAL.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

# The thousands digit of an AAL region code (third column of aal.nii.txt) names its lobe:
AAL_LOBES = {2: "frontal", 3: "insula", 4: "limbic", 5: "occipital", 6: "parietal",
             7: "central grey nuclei", 8: "temporal", 9: "cerebellum"}


@dataclass(frozen=True)
class AalRegion:
    """One line of `aal.nii.txt`: `index name code`, e.g. `1 Precentral_L 2001`."""
    index: int
    name: str
    code: int

    @property
    def lobe(self) -> int:
        return self.code // 1000

    @property
    def side(self) -> Optional[str]:
        """"L" or "R" from the name's suffix; None for midline regions (the vermis)."""
        return self.name[-1] if self.name[-2:] in ("_L", "_R") else None


@dataclass(frozen=True)
class StructureRule:
    """A structure = the AAL regions whose lobe digit is in `lobes`, on `side` (None: any side)."""
    name: str
    lobes: Tuple[int, ...]
    side: Optional[str]
    description: str

    def matches(self, region: AalRegion) -> bool:
        return region.lobe in self.lobes and (self.side is None or region.side == self.side)


def _per_side(name: str, lobes: Tuple[int, ...], description: str) -> Tuple[StructureRule, ...]:
    return tuple(StructureRule(f"{name}_{s}", lobes, s, f"{description} ({'left' if s == 'L' else 'right'})")
                 for s in ("L", "R"))


# Label = position + 1 (0 is background). Lobar boundaries follow AAL's own lobe codes. The insula
# joins the limbic regions because it is small and borders them. The cerebellum, vermis included, is
# one class: a separate vermis, with the hemispheres split L/R, would make 15 classes. Their borders
# are an atlas convention that a T1 barely shows. Every AAL region is used; nothing is left out.
STRUCTURES: Tuple[StructureRule, ...] = (
    *_per_side("frontal", (2,), "precentral, superior/middle/inferior frontal incl. orbital parts, Rolandic "
                                "operculum, SMA, olfactory, superior medial, medial orbital, rectus"),
    *_per_side("parietal", (6,), "postcentral, superior/inferior parietal, supramarginal, angular, "
                                 "precuneus, paracentral lobule"),
    *_per_side("temporal", (8,), "Heschl, superior/middle/inferior temporal, temporal poles"),
    *_per_side("occipital", (5,), "calcarine, cuneus, lingual, superior/middle/inferior occipital, fusiform"),
    *_per_side("limbic_insula", (3, 4), "insula, anterior/middle/posterior cingulum, hippocampus, "
                                        "parahippocampal, amygdala"),
    *_per_side("deep_grey", (7,), "caudate, putamen, pallidum, thalamus"),
    StructureRule("cerebellum", (9,), None, "cerebellar hemispheres (crus 1-2, lobules 3-10) and vermis"),
)
# The demo's coarse partition: two structures a CNN learns in a few hundred CPU iterations. Both are
# bilateral on purpose: nnU-Net's 2d training mirrors both in-plane axes, which makes "left" and
# "right" labels look alike to the network. The deep grey nuclei join the cortex: as a class of their
# own (cortex / deep grey / cerebellum) nnU-Net's recipe had not started to segment them after 1000
# iterations of batch 2.
GREY_MATTER_STRUCTURES: Tuple[StructureRule, ...] = (
    StructureRule("cerebral_grey_matter", (2, 3, 4, 5, 6, 7, 8), None,
                  "all cerebral AAL regions, both sides: the cortex of every lobe, insula, limbic regions "
                  "(cingulum, hippocampus, amygdala) and the deep grey nuclei (caudate, putamen, pallidum, thalamus)"),
    StructureRule("cerebellum", (9,), None, "cerebellar hemispheres (crus 1-2, lobules 3-10) and vermis"),
)
GROUPINGS: Dict[str, Tuple[StructureRule, ...]] = {"lobes": STRUCTURES, "grey": GREY_MATTER_STRUCTURES}
EXCLUDED_AAL_REGIONS: Tuple[str, ...] = ()  # AAL names deliberately left unlabelled: none


def read_aal_regions(path: str) -> List[AalRegion]:
    """Parse `aal.nii.txt` (one `index name code` per line)."""
    regions = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts:
                regions.append(AalRegion(int(parts[0]), parts[1], int(parts[2])))
    return regions


def group_regions(regions: Sequence[AalRegion],
                  structures: Sequence[StructureRule] = STRUCTURES) -> Dict[int, int]:
    """AAL index -> structure label (1-based). Every region must match exactly one rule (or be excluded)."""
    mapping, problems = {}, []
    for region in regions:
        hits = [label for label, rule in enumerate(structures, start=1) if rule.matches(region)]
        if region.name in EXCLUDED_AAL_REGIONS:
            if hits:
                problems.append(f"{region.name} is excluded but matches a structure")
        elif len(hits) != 1:
            problems.append(f"{region.name} (code {region.code}) matches {len(hits)} structures")
        else:
            mapping[region.index] = hits[0]
    if problems:
        raise ValueError("AAL grouping is not a partition: " + "; ".join(problems))
    return mapping


def dataset_labels(structures: Sequence[StructureRule] = STRUCTURES) -> Dict[str, int]:
    return {"background": 0, **{rule.name: label for label, rule in enumerate(structures, start=1)}}
