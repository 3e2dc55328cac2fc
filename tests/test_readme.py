"""Every Python snippet of the README runs as written, in a fresh process.

Each ```python block is a separate program (no state carried from the block
before it), run in an empty working directory so the files it writes
(`runs/`, `hybrid.keras`, `saved_models/`) land there.
"""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

README = os.path.join(REPO, "README.md")


def python_snippets():
    with open(README) as f:
        text = f.read()
    snippets = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.M | re.S):
        line = text[: match.start()].count("\n") + 1
        snippets.append(pytest.param(match.group(1), id=f"README.md:{line}"))
    return snippets


def test_the_readme_has_snippets():
    assert len(python_snippets()) >= 4


@pytest.mark.parametrize("code", python_snippets())
def test_readme_snippet_runs_as_written(code, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env
    )
    assert result.returncode == 0, f"snippet failed:\n{code}\n--- stderr ---\n{result.stderr[-4000:]}"
