"""Encoder adaptation modes (base.py): one file per mode, each registering its object. Importing this package
imports every module in it, so a new mode is one new file."""
import importlib
import pkgutil

from .base import AdaptationMode, get_mode, layer_of, mode_names, modes, register_mode

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["AdaptationMode", "get_mode", "layer_of", "mode_names", "modes", "register_mode"]
