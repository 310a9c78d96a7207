"""The ics experiment (experiments/ics.py): internal covariate shift on tiny cases whose answer is known."""

import torch

from experiments import ics
from helpers import step_state


def test_ics_is_zero_when_the_lower_layers_do_not_move():
    net, _, x, y = step_state(optimizer="sgd")
    still = torch.optim.SGD(net.parameters(), lr=0.0)
    measures = ics.ics_of(net, x, y, still)
    assert measures["l2"] == [0.0, 0.0, 0.0] and measures["dmean"] == [0.0] * 3 and measures["dstd"] == [0.0] * 3
    assert all(abs(c - 1) < 1e-6 for c in measures["cos"])
    moving = ics.ics_of(net, x, y, torch.optim.SGD(net.parameters(), lr=0.1))
    assert all(v > 0 for v in moving["l2"]) and all(v > 0 for v in moving["dmean"])


def test_ics_counts_only_the_layers_below():
    """With only the top block and the head moving, no block's G′ differs from G (the blocks below it
    are still), though training moves."""
    net, _, x, y = step_state(optimizer="sgd")
    top = [*net.blocks[-1].parameters(), *net.head.parameters()]
    rest = [p for p in net.parameters() if all(p is not q for q in top)]
    opt = torch.optim.SGD([{"params": top, "lr": 0.5}, {"params": rest, "lr": 0.0}])
    assert ics.ics_of(net, x, y, opt)["l2"] == [0.0, 0.0, 0.0]


def test_the_longer_budget_on_a_tiny_configuration(tmp_path):
    """The plain net, MyBN and MyBN + noise on (-5, 5) train again for the longer budget, kept apart
    (``longer``); the verdict reads the whole run of the first two there, beside the preset's parts, and the
    results load back."""
    from experiments import ics
    from helpers import round_trip

    config = ics.IcsSettings(seeds=[0, 1], epochs=1, long_epochs=[2], workers=1)
    results = {"experiment": "ics", **ics.run(config, log=lambda _: None)}
    assert len(results["runs"]) == 2 * 3 * 2 and list(results["longer"]) == ["2"]
    assert {(r["range"][1], r["model"], r["epochs"]) for r in results["longer"]["2"]} == {
        (5.0, "plain", 2), (5.0, "my_bn", 2), (5.0, "my_bn_noisy", 2)}
    loaded = round_trip(results, tmp_path)
    (row,) = ics.EXPERIMENT.verdicts(loaded)
    assert [p.label for p in row.parts if p.budget == "2 epochs"] == [
        "(-5, 5), whole run of 2 epochs: ‖G − G′‖/‖G‖", "(-5, 5), whole run of 2 epochs: input shift"]
    assert sum(p.budget == "1 epochs" for p in row.parts) == 8


def test_claims_about_ics():
    """The ics page: over the whole run on (-5, 5) both readings are more than 20 times the plain net's with
    MyBN (the interval's lower end), at 10 epochs and at 30; the verdict's parts there do not hold."""
    import math

    from experiments import ics
    from helpers import DOCS, committed, verdict
    from lab.results import at_budget, load_results
    from lab.stats import FAILS

    results = load_results(committed("ics"), ics.check_runs)
    assert results["config"]["epochs"] == 10 and results["config"]["long_epochs"] == [30]  # "three times as long"
    for epochs in (10, 30):
        assert all(math.exp(ci.low) > 20 for ci in ics.readings(at_budget(results, epochs), 5.0).values())
    for reading in ics.READINGS.values():
        assert verdict("Internal covariate shift", f"(-5, 5), whole run: {reading}") == FAILS
        assert verdict("Internal covariate shift", f"(-5, 5), whole run of 30 epochs: {reading}") == FAILS
    page = " ".join(DOCS["ics"].split())
    assert ("more than 20 times the plain net's (the paired interval's lower end) after the preset's 10 epochs and "
            "after 30") in page
