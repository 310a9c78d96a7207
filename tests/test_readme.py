"""The README is the repository's front page: what it shows must exist and what it says must run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_linked_image_exists():
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", README) + re.findall(r'<img[^>]+src="([^"]+)"', README)
    for link in links:
        assert not link.startswith("http"), f"images are the repository's own: {link}"
        assert (ROOT / link).is_file(), f"README links {link}, which does not exist"


def test_ci_runs_the_readme_test_command():
    ci_commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#") and "pytest" in line
    ]
    assert len(ci_commands) == 1
    assert ci_commands[0] in README
