"""Channel names for dataset.json, which is how nnU-Net picks each channel's intensity normalisation.

nnU-Net maps a channel name to a scheme (case-insensitive): 'CT' -> CTNormalization, 'rgb_to_0_1',
'rescale_to_0_1', 'nonorm', 'zscore'; any other name -> ZScoreNormalization. So the name *is* the
choice; we keep a descriptive name (e.g. 'T1') where it already selects the wanted scheme.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple
from ..errors import OptionError

SCHEME_NAMES = {"ct": "CT", "zscore": "zscore", "rescale_to_0_1": "rescale_to_0_1", "rgb_to_0_1": "rgb_to_0_1",
                "nonorm": "nonorm"}
REASONS = {
    "ct": "CT intensities are Hounsfield units, comparable across scans: clip to the dataset's foreground "
          "0.5-99.5 percentiles, then normalise with the global foreground mean/sd",
    "rgb": "8-bit colour image: divide by 255 (nnU-Net's scheme for natural images; z-scoring each colour "
           "channel separately would distort colours)",
    "zscore": "intensities without a fixed physical scale (not CT): z-score each image (mean 0, sd 1), "
              "nnU-Net's default",
    "rgb_not_8bit": "colour image that is not 8-bit (rgb_to_0_1 needs 0..255): z-score per channel",
}
RGB_NAMES = ("R", "G", "B")


@dataclass
class ChannelChoice:
    index: int           # channel index in dataset.json
    source: str          # what the user calls it (channel id, 'R'/'G'/'B', 'image')
    name: str            # the dataset.json name (selects the scheme)
    scheme: str          # nnU-Net's normalisation class
    reason: str


def parse_channel_options(items: Optional[Sequence[str]], option: str) -> Dict[Optional[str], str]:
    """`VALUE` (every channel) or `CHANNEL=VALUE` pairs -> {channel or None: value}."""
    parsed: Dict[Optional[str], str] = {}
    for item in items or ():
        key, sep, value = item.rpartition("=")
        parsed[key.strip() if sep else None] = value.strip()
    return parsed


def _scheme_class(name: str) -> str:
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme
    return get_normalization_scheme(name).__name__


def _lookup(options: Dict[Optional[str], str], keys: Sequence[str]) -> Tuple[Optional[str], Optional[str]]:
    for key in keys:
        if key in options:
            return options[key], key
    return options.get(None), None


def choose_channels(sources: Sequence[Tuple[str, int, float, float]], modality: Dict[Optional[str], str],
                    normalization: Dict[Optional[str], str]) -> List[ChannelChoice]:
    """One ChannelChoice per dataset.json channel.

    `sources`: per channel *file* position (channel id, components, min value, max value).
    `modality` / `normalization`: from --modality / --normalization, keyed by channel id, file
    position or None (all channels).
    """
    known_keys = {str(i) for i in range(len(sources))} | {s[0] for s in sources} | {None}
    for option, values in (("--modality", modality), ("--normalization", normalization)):
        unknown = sorted(str(k) for k in values if k not in known_keys)
        if unknown:
            raise OptionError(f"{option}: no channel called {unknown}; channels are "
                             f"{[s[0] for s in sources]} (or their positions 0..{len(sources) - 1})")
    bad = sorted({v for v in normalization.values() if v.lower() not in SCHEME_NAMES})
    if bad:
        raise OptionError(f"--normalization: unknown scheme(s) {bad}; choose from {sorted(SCHEME_NAMES)}")

    choices: List[ChannelChoice] = []
    for position, (channel, components, vmin, vmax) in enumerate(sources):
        keys = [k for k in (channel, str(position)) if k is not None]
        wanted, key = _lookup(normalization, keys)
        kind, _ = _lookup(modality, keys)
        implied_ct = kind is None and channel is not None and channel.lower() == "ct"
        label = channel if channel is not None else "image"
        for component in range(components):
            source = RGB_NAMES[component] if components == 3 else (label if components == 1
                                                                    else f"{label}[{component}]")
            descriptive = kind or (label if channel is not None else "gray")
            if components == 3:
                descriptive = f"{descriptive}_{RGB_NAMES[component]}" if kind else RGB_NAMES[component]
            if wanted:
                scheme = wanted.lower()
                reason = f"--normalization {key + '=' if key else ''}{wanted}: as you asked"
            elif (kind or "").lower() == "ct" or implied_ct:
                scheme = "ct"
                reason = REASONS["ct"] + (f" (channel is called {channel!r}; override with --modality "
                                          f"{channel}=MR or --normalization {channel}=zscore)" if implied_ct else "")
            elif components == 3 and vmin >= 0 and vmax <= 255:
                scheme, reason = "rgb_to_0_1", REASONS["rgb"]
            else:
                scheme, reason = "zscore", REASONS["rgb_not_8bit" if components == 3 else "zscore"]
            if scheme == "rgb_to_0_1" and (vmin < 0 or vmax > 255):
                raise OptionError(f"--normalization rgb_to_0_1 for channel {label!r}: values span {vmin:g}..{vmax:g}, "
                                 f"but rgb_to_0_1 needs 0..255 (nnU-Net asserts it); use zscore or rescale_to_0_1")
            name = descriptive if _scheme_class(descriptive) == _scheme_class(SCHEME_NAMES[scheme]) \
                else SCHEME_NAMES[scheme]
            choices.append(ChannelChoice(len(choices), source, name, _scheme_class(name), reason))
    return choices
