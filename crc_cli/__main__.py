"""``python -m crc_cli``: the ``crc`` command."""

import sys

from crc_cli.main import main

sys.exit(main())
