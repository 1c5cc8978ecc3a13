"""`python -m tracker [--config FILE]`: serve the tracking server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mailer.core.settings import ConfigError, load
from tracker.app import serve


def main(argv: list[str] | None = None) -> int:
    """Load settings (file, then MAILER_* environment) and serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tracker", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML settings file (else MAILER_CONFIG)")
    args = parser.parse_args(argv)
    try:
        settings = load(args.config, dkim_keys=False)  # it never signs
        settings.require_token_keys()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
