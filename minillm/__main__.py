"""``python -m minillm``: the ``minillm`` command, for when the console script is not on the PATH."""

import sys

from minillm.cli import main

sys.exit(main())
