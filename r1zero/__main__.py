"""``python -m r1zero`` (and ``torchrun -m r1zero``) is the ``r1zero`` command."""
import sys

from r1zero.cli import main

sys.exit(main())
