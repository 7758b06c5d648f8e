"""The README's two set-up commands stay true: CI runs the test command verbatim; the main command is `generate`."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_readme_opens_with_exactly_two_commands():
    install_and_run, tests = readme_commands()
    assert install_and_run.endswith("flowturbo generate") and "torch==2.13.0" in install_and_run
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    assert readme_commands()[1] in (ROOT / ".ci" / "run").read_text().splitlines()
