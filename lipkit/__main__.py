"""`python -m lipkit ...` (and `torchrun -m lipkit ...`): the same as the `lipkit` command."""
import sys

from .cli import main

sys.exit(main())
