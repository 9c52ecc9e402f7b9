"""The examples README shows run, and print what README says they print."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_crawl_example_runs_embedded_and_prints_what_readme_shows():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "crawl.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"```text\n# examples/crawl.py prints:\n(.*?)```", readme, re.S)
    assert shown, "README shows the example's output"
    assert result.stdout == shown.group(1)


def test_readme_example_code_runs_as_shown():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Writing machines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    shown = re.search(r"```text\n# examples/crawl.py prints:\n(.*?)```", section, re.S)
    assert code
    assert shown
    result = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == shown.group(1)
