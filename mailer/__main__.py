"""`python -m mailer` is the `mailer` command."""

import sys

from mailer.commands.main import main

# Guarded: render processes (mailer/send/render_pool.py) are spawned, and a spawned process
# imports the parent's main module again.
if __name__ == "__main__":
    sys.exit(main())
