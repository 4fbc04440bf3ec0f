import sys
from pathlib import Path

# The test programs are shared with tests/driver.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "driver"))
