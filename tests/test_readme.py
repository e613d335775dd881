"""The README's by-hand training example runs as written and learns."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_example_runs_as_written(tmp_path):
    blocks = [b for b in python_blocks() if "optim.Adam" in b and "backward" in b]
    assert blocks, "README.md lost its by-hand training example"
    code = blocks[0]
    assert len(code.strip().splitlines()) <= 25
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    losses = [float(x) for x in re.findall(r"loss ([0-9.]+)", out.stdout)]
    assert len(losses) >= 2 and losses[-1] < 0.5 * losses[0], out.stdout


def test_readme_names_the_two_setup_commands():
    text = README.read_text()
    assert "pip install" in text and "examples/mnist_mlp.py" in text
    assert re.search(r"^python3 -m venv .*pip install -e \.( .*)?&& python examples/mnist_mlp\.py$", text, flags=re.M)
    assert re.search(r"^python3 -m venv .*pip install -e \"\.\[dev\]\" && python -m pytest -q$", text, flags=re.M)
