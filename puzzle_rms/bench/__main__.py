"""``python -m puzzle_rms.bench``: run the benchmark with the command line's options."""
import sys

from puzzle_rms.bench.cli import main

sys.exit(main())
