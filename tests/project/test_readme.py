"""The README is a front page: its by-hand training example runs as written and learns, it names the set-up
commands, and what it points to (the faults table in docs/faults.md, the commands of every guide) holds."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FAULTS = ROOT / "docs" / "faults.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]


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


def test_every_sample_label_example_uses_a_conditional_run():
    """`sample --label K` needs a checkpoint trained with --conditional: each such example in the
    README or a guide in docs/ reads a checkpoint that a --conditional command on the same page writes."""
    for page in PAGES:
        check_sample_label_examples(page.read_text(), page.name)
    assert "--label" in README.read_text(), "README.md lost its sample --label example"


def check_sample_label_examples(text, name):
    commands = [line.split("#")[0] for line in re.findall(r"(?:python|`python)[^\n`]*", text)]
    conditional_outs = {m.group(1) for c in commands if "--conditional" in c
                        for m in [re.search(r"--out (\S+)", c)] if m}
    label_examples = [c for c in commands if "scratchgan sample" in c and "--label" in c]
    for command in label_examples:
        checkpoint = re.search(r"--checkpoint (\S+)/checkpoint\.npz", command).group(1)
        assert checkpoint in conditional_outs, f"{name}: {command!r} reads a run not trained with --conditional"


def test_readme_says_what_happens_when_things_go_wrong():
    """The whole table lives in docs/faults.md; the README keeps the most common rows and points there."""
    section = README.read_text().split("## When things go wrong", 1)[1].split("\n## ", 1)[0]
    assert "docs/faults.md" in section and "--overwrite" in section and "143" in section
    section = FAULTS.read_text()
    for words in ("--resume", "--overwrite", "SIGTERM", "disk fills up", "read-only", "NaN", "second Ctrl-C", "143"):
        assert words in section, words


def test_readme_is_a_front_page():
    """At most about 250 lines: the guides in docs/ hold the rest."""
    assert len(README.read_text().splitlines()) <= 250


def command_sheet():
    """The README's "Commands" block, one argv per line (comments dropped)."""
    import shlex
    section = README.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.strip()]


def test_the_command_sheet_names_each_command_and_parses():
    """Every line of the cheat-sheet is a command whose parser accepts its flags (argparse exits 2 on an
    unknown flag or a bad value); running them is the job of the guides' tests and the mpiexec tests."""
    from scratchgan.cli import evaluate as evaluate_cli
    from scratchgan.cli import export, flags, train_options
    from scratchgan.cli import sample as sample_cli
    from scratchgan.cli import train as train_command
    parsers = {"sample": sample_cli.make_sample_parser, "interpolate": sample_cli.make_interpolate_parser,
               "export": export.make_parser, "evaluate": evaluate_cli.make_parser,
               "evaluator": evaluate_cli.make_evaluator_parser}
    seen = set()
    for argv in command_sheet():
        if argv[0] == "mpiexec":  # its flags: tests/run/test_distributed.py
            seen.add("mpiexec")
            continue
        if argv[:2] == ["python", "-m"]:
            argv = argv[2:]
        if argv[0] == "python":  # an example: its architecture fixed
            script = argv[1]
            assert (ROOT / script).is_file(), script
            defaults = train_command.DCGAN_DEFAULTS if script.endswith("dcgan.py") else train_command.MLP_DEFAULTS
            train_command.make_train_parser(script, "", defaults).parse_args(argv[2:])
            seen.add("dcgan --dataset folder" if "folder" in argv else "train")
            seen.update(flag for flag in ("--resume", "--conditional") if flag in argv)
            continue
        assert argv[0] == "scratchgan", argv
        command, args = argv[1], argv[2:]
        seen.add(command)
        if command == "train":
            defaults = flags.defaults(train_options.arch_of(args), both=True)
            train_command.make_train_parser("scratchgan train", "", defaults, both=True).parse_args(args)
        else:
            parsers[command](f"scratchgan {command}").parse_args(args)
    for wanted in ("train", "--resume", "--conditional", "sample", "interpolate", "export", "evaluate",
                   "dcgan --dataset folder", "mpiexec"):
        assert wanted in seen, f"the README's command sheet lost {wanted}"
