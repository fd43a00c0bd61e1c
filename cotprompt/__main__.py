"""``python -m cotprompt``: the same as the ``cotprompt`` command."""

from __future__ import annotations

import sys

from cotprompt.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
