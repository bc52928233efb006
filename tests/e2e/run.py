"""Meson's entry point for the e2e and http suites: checks the Python packages, then runs
pytest on the given test directory. A missing package is a FAILURE, never a skip."""
import importlib.util
import sys

required = sys.argv[1].split(",") if len(sys.argv) > 1 else ["pytest"]
missing = []
for mod in required:
    if importlib.util.find_spec(mod) is None:
        missing.append(mod)
if missing:
    print(f"FAIL: python {sys.executable} lacks {', '.join(missing)}; install "
          "scripts/requirements-ci.txt (pip install -r scripts/requirements-ci.txt) and "
          "reconfigure meson with that python first on PATH", file=sys.stderr)
    sys.exit(1)

import pytest  # noqa: E402

sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[2:]]))
