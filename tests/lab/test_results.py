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


def test_longer_budgets_are_read_apart_from_the_runs():
    """Runs whose curves grow with their epochs live in ``longer``, by budget: ``budgets`` lists them after
    the settings' epochs, ``at_budget`` reads them as the runs, and a malformed ``longer`` is one clear
    ValueError."""
    data = {"config": {"epochs": 2}, "runs": [{"seed": 0, "curve": [1, 2, 3]}],
            "longer": {"6": [{"seed": 0, "epochs": 6, "curve": [1] * 7}]}}
    assert results.budgets(data) == [2, 6] and results.longer_runs(data) == {6: data["longer"]["6"]}
    assert results.at_budget(data, 6)["runs"] == data["longer"]["6"]
    assert results.at_budget(data, 6)["config"]["epochs"] == 6
    assert results.at_budget(data, 2)["runs"] == data["runs"]
    assert results.budgets({"config": {"epochs": 2}, "runs": [{"seed": 0}]}) == [2]  # none: the settings' only
    for bad in ([], {"six": []}, {"6": {}}):
        with pytest.raises(ValueError, match="'longer' must map"):
            results.longer_runs({**data, "longer": bad})
    with pytest.raises(ValueError, match=r"longer\.6\[1\]"):  # each budget's runs one shape, as the runs are
        results.check_records({**data, "longer": {"6": [*data["longer"]["6"], {"seed": 1, "epochs": 6, "curve": [1]}]}})
