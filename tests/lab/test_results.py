"""lab/results.py: an interrupted write leaves the old file."""

import pytest

from lab import results


def test_atomic_write_keeps_the_old_file_on_interrupt(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")

    def interrupted(tmp):
        tmp.write_text("half of a new fi")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        results.atomic_write(path, interrupted)
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]
