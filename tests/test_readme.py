"""Every code block of the README runs as written, and CI runs the README's test command.

The README's blocks are read from the file itself. Those of a notebook run, in order, in a real
IPython shell of a process of their own, in an empty directory (holding a copy of the README, which
the first task reads). A block followed by an output block that starts with an error's name must
raise that error, with the message shown. The "Plain Python" block runs as a script. Of the shell
commands, ``tasklab demo`` runs; the installs are what this suite runs after, and the test command is
this suite.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: A fenced block: its language (empty for output and diagrams), its text, and the heading above it.
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)


def blocks() -> list[tuple[str, str, str, str]]:
    """``(language, text, heading, following output)`` of every fenced block of the README, in order."""
    text = README.read_text()
    found = []
    matches = list(_FENCE.finditer(text))
    for i, match in enumerate(matches):
        headings = re.findall(r"^## (.+)$", text[: match.start()], re.M)
        nxt = matches[i + 1] if i + 1 < len(matches) else None
        between = text[match.end() : nxt.start()] if nxt else ""
        output = nxt.group(2) if nxt and not nxt.group(1) and not between.strip() else ""
        found.append((match.group(1), match.group(2), headings[-1] if headings else "", output))
    return found


RUN_IN_A_SHELL = r"""
import json, re, sys, traceback
from IPython.core.interactiveshell import InteractiveShell

cells = json.load(sys.stdin)
shell = InteractiveShell.instance()
outcomes = []
try:
    for source, expected in cells:
        result = shell.run_cell(source)
        error = result.error_in_exec or result.error_before_exec
        outcomes.append({
            "source": source,
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "expected": expected,
        })
finally:
    shell.run_cell("%tasklab stop")
print("OUTCOMES " + json.dumps(outcomes))
"""


def matches_shown(error: str, shown: str) -> bool:
    """Whether ``error`` (``Name: message``) is what the README shows: its first line, where ``…``
    stands for any text."""
    first = shown.strip().splitlines()[0]
    pattern = ".*".join(re.escape(part.strip()) for part in first.split("…"))
    return re.search(pattern, error, re.S) is not None


def test_the_notebook_blocks_run_as_written(tmp_path):
    cells = [
        (text, output)
        for language, text, heading, output in blocks()
        if language == "python" and heading != "Plain Python"
    ]
    assert len(cells) >= 6 and cells[0][0].strip() == "%load_ext tasklab"
    shutil.copy(README, tmp_path / "README.md")
    done = subprocess.run([sys.executable, "-c", RUN_IN_A_SHELL], input=json.dumps(cells), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    line = next((x for x in done.stdout.splitlines() if x.startswith("OUTCOMES ")), None)
    assert line is not None, done.stdout[-3000:] + done.stderr[-3000:]
    outcomes = json.loads(line.removeprefix("OUTCOMES "))
    for outcome in outcomes:
        shown, error = outcome["expected"], outcome["error"]
        if shown and re.match(r"\w+(Error|Exception|Warning)\b", shown):
            assert error is not None and matches_shown(error, shown), (outcome["source"], error, shown)
        else:
            assert error is None, (outcome["source"], error)
    assert "carried from the notebook: np (import), SCALE (value)" in done.stdout
    assert "SerializationError" in json.dumps(outcomes), "the one-line error the README shows was raised"
    shown = next(output for *_, output in blocks() if output.startswith("SerializationError"))
    for line in shown.strip().splitlines()[1:]:  # the user's line, and the hint, as the README shows them
        assert line in done.stdout + done.stderr, (line, done.stdout[-2000:])


def test_the_plain_python_block_runs_as_a_script(tmp_path):
    (script,) = [text for language, text, heading, _ in blocks() if heading == "Plain Python"]
    (tmp_path / "example.py").write_text(script)
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_shell_commands(tmp_path):
    (first, *_) = [text for language, text, _, _ in blocks() if language == "bash"]
    install, tests = [line.split("#")[0].strip() for line in first.strip().splitlines()]
    assert install == 'pip install -e ".[dev]" && tasklab demo'
    demo = subprocess.run(shlex.split(install.split("&&")[1]), cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert demo.returncode == 0 and "flaky" in demo.stdout, demo.stdout + demo.stderr
    # CI runs exactly the README's test command.
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == tests, (ci, tests)
    assert tests.startswith("bash .ci/test-deps.sh && ") and tests.endswith("python -m pytest")
