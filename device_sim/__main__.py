"""`python -m device_sim`."""
import sys

from device_sim.cli import main

# Guarded: load mode's spawned workers import this module again.
if __name__ == "__main__":
    sys.exit(main())
