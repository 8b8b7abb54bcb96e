"""`python -m nnunet_dino.bench --memory-child REQUEST`: one memory phase in a fresh process."""
import sys

from .measure import _memory_child_main

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        _memory_child_main(sys.argv[2])
    else:
        sys.exit("use `nnunet-dino bench`")
