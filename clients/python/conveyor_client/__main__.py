"""python3 -m conveyor_client: the `conveyor` command line (see cli.py)."""
import sys

from .cli import main

sys.exit(main())
