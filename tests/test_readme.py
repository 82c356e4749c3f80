"""The README's two set-up commands are the contract; CI must run the test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    app_cmd, test_cmd = _bash_blocks(setup)
    assert app_cmd.endswith("python app.py") and "pip install -r requirements.txt" in app_cmd
    assert "pytest" in test_cmd and '".[dev]"' in test_cmd
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()
    assert "set -euo pipefail" in ci


def test_spaces_front_matter_matches_the_gradio_pin():
    readme = (ROOT / "README.md").read_text()
    front = readme.split("---", 2)[1]
    sdk_version = re.search(r"^sdk_version: (\S+)$", front, flags=re.M).group(1)
    assert "sdk: gradio" in front and "app_file: app.py" in front and 'python_version: "3.11"' in front
    pin = re.search(r"^gradio>=(\S+),<", (ROOT / "requirements.txt").read_text(), flags=re.M).group(1)
    assert sdk_version == pin or sdk_version.startswith(pin)
