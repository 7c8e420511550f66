"""Write each ```python block of README.md to its own file, for the type checkers.

python scripts/readme_blocks.py OUTDIR    # OUTDIR/readme_block_<i>.py
"""

import re
import sys
from pathlib import Path

readme = Path(__file__).resolve().parents[1] / "README.md"
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for old in out.glob("readme_block_*.py"):
    old.unlink()
for i, block in enumerate(re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)):
    (out / f"readme_block_{i}.py").write_text(block)
