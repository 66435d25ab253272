"""The README's Python example runs as printed, with the outputs its comments show."""
import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example(smollm2_path):
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue().splitlines()
    expected = [c.strip() for line in code.splitlines() if line.startswith("print(")
                for c in [line.split("#", 1)[1]]]
    assert printed == expected
