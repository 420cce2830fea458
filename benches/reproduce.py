"""Shim: `python benches/reproduce.py [args]` runs `python -m benches.reproduce [args]`.

The report's script is the package benches/reproduce/ (one module per section).
"""

import sys
from pathlib import Path

# Run as a file, sys.path[0] is benches/; the package is imported from the repository root
# (a package directory wins over this file of the same name).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benches.reproduce.__main__ import main  # noqa: E402

if __name__ == "__main__":
    main()
