"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples() -> None:
    assert SNIPPETS


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_python_example_runs(index: int) -> None:
    namespace: dict = {}
    exec(compile(SNIPPETS[index], f"README.md python block {index}", "exec"), namespace)  # noqa: S102
    if "tokens" in namespace:
        assert namespace["tokens"].shape == (1, 16)
