"""`python -m llamalite`: see llamalite.cli."""
import sys

from .cli import main

sys.exit(main())
