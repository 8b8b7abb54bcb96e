"""Writing files safely: the lowest layer, standard library only, so every folder may import it."""
from __future__ import annotations

import contextlib
import os
from typing import Callable


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """`write(temporary_path)`, flushed to disk, then renamed over `path`: a reader (or a process
    killed meanwhile) sees the old file or the new one, never a partial one."""
    temporary = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.partial")
    try:
        write(temporary)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:  # Ctrl-C or an error while writing: the partial file goes too
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)
