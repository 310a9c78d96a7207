"""The conv experiment (experiments/conv.py): its batch-size loop on a tiny configuration, each member of
a cell against its net trained alone, and its readings and verdicts on results with known answers."""

import dataclasses

import pytest
import torch
from torch import nn

from experiments import conv
from helpers import DOCS, VERDICTS, committed, verdict
from lab.data import digits_split
from lab.loop import BatchOrder, ClassBatchOrder, member_accuracy, precise_statistics
from lab.nets import ConvNet
from lab.results import load_results, pack_items
from lab.stats import FAILS, HOLDS, UNDECIDED


@pytest.fixture
def tiny(monkeypatch):
    """conv with 40 training and 20 test digits, batch sizes 2 and 8, a sweep of two rates (MyBN2d with its
    norms held at the second), the non-i.i.d. cells (batches of 8 from 2 classes), 3 seeds (the sweep 4)."""
    x_train, y_train, x_test, y_test = digits_split(0)
    small = (x_train[:40].double(), y_train[:40], x_test[:20].double(), y_test[:20])
    monkeypatch.setattr(conv.training, "digits_standardised", lambda dtype: small)
    config = conv.ConvSettings(norms=["plain", "my_bn", "group_norm", "renorm"], batch_sizes=[2, 8], base_batch=8,
                               ghost_batch=2, ghost_at=[8], lr_factors=[1.0, 10.0], seeds=[0, 1, 2], epochs=2,
                               dtype="float64", workers=1, sweep_more=1, long_epochs=[3],
                               held_factors=[10.0])
    return config, small


def alone(config, small, norm: str, batch_size: int, lr: float, seed: int, epochs: int) -> dict:
    """One seed of one cell the plain way: its own ConvNet, torch.optim.SGD with momentum, the cosine
    schedule, its seed's batches (a non-i.i.d. cell's: ``ClassBatchOrder``'s); the same measurements."""
    x_train, y_train, x_test, y_test = small
    batches = (ClassBatchOrder(y_train, batch_size, epochs, seed, config.noniid_classes)
               if norm in conv.training.NONIID else BatchOrder(len(x_train), batch_size, epochs, seed))
    steps = epochs * len(batches[0])
    net = ConvNet(conv.training.LAYER.get(norm, norm), seed, bn_momentum=config.bn_momentum,
                  ghost_batch_size=config.ghost_batch, dtype=torch.float64,
                  renorm=(config.r_max, config.d_max, conv.renorm_warmup(steps)))
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=config.momentum)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for epoch in batches:
        for idx in epoch:
            opt.zero_grad()
            nn.functional.cross_entropy(net(x_train[idx]), y_train[idx]).backward()
            opt.step()
            schedule.step()
    order = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        test, train = (net.eval()(x).argmax(1) for x in (x_test, x_train))
        in_train_mode = torch.cat([net.train()(c) for c in x_test[order].split(batch_size)])  # its buffers move: last
    right = in_train_mode.argmax(1) == y_test[order]
    out = {"test_acc": (test == y_test).double().mean().item(), "train_acc": (train == y_train).double().mean().item(),
           "train_mode_acc": right.double().mean().item(), "test_items": pack_items((test == y_test).tolist()),
           "train_mode_items": pack_items(right[order.argsort()].tolist())}
    with torch.no_grad():  # eval mode on statistics recomputed over the training digits
        precise = precise_statistics(net, x_train)(x_test).argmax(1) == y_test
    out[conv.training.PRECISE] = pack_items(precise.tolist())
    return out


def test_the_batch_size_loop_on_a_tiny_configuration(tiny, tmp_path):
    """Every cell of the grid for every seed, each member exactly its net trained alone, and the figure,
    tables and verdict rows drawn from what ran."""
    config, small = tiny
    results = {"experiment": "conv", **conv.run(config, log=lambda _: None)}  # as train.py saves it
    conv.check_format(results)
    cells = {(r["model"], r["batch_size"], r["lr"], r["epochs"]) for r in results["runs"]}
    at_two = {c for c in cells if c[3] == 2}  # the preset's budget: the whole grid
    noniid = tuple(conv.training.NONIID)
    assert cells == set(conv.cells(config)) and len(at_two) == 4 * 2 + 1 + 2 * 1 + 1 + 2
    longer = {c[:3] for c in cells if c[3] == 3}  # the cells that decide a row, at the longer budget
    assert longer == {(m, b, 0.1 * b / 8) for m in ("my_bn", "group_norm", "renorm") for b in (2, 8)} | {
        ("ghost", 8, 0.1), ("plain", 8, 0.1), ("plain", 8, 1.0), ("my_bn", 8, 1.0), (conv.HELD, 8, 1.0),
        *((m, 8, 0.1) for m in noniid)}
    swept = {c for c in cells if c[0] in (*conv.SWEEP, conv.HELD, *noniid) and c[1] == 8}  # seeds 0 to 3
    assert conv.sweep_seeds(config) == [0, 1, 2, 3] and len(swept) == 14
    assert len(results["runs"]) == 3 * len(cells) + len(swept)
    assert conv.cells(config)[0] == ("renorm", 2, 0.025, 3)  # the slowest first; lr 0.1 · 2 / 8
    for norm, batch_size, lr, seed, epochs in (("my_bn", 2, 0.025, 1, 2), ("renorm", 8, 0.1, 2, 2),
                                               ("ghost", 8, 0.1, 0, 2), ("plain", 8, 1.0, 3, 2),
                                               ("group_norm", 2, 0.025, 2, 3), ("renorm_noniid", 8, 0.1, 3, 3)):
        (run,) = [r for r in results["runs"] if (r["model"], r["batch_size"], r["lr"], r["seed"], r["epochs"])
                  == (norm, batch_size, lr, seed, epochs)]
        expected = alone(config, small, norm, batch_size, lr, seed, epochs)
        items = {k: expected.pop(k) for k in (*conv.ITEMS.values(), conv.training.PRECISE)}
        assert {k: run[k] for k in expected} == pytest.approx(expected, abs=1e-5), (norm, batch_size)
        assert {k: run[k] for k in items} == items  # which digits it got right, in the test set's order
    tables = conv.EXPERIMENT.tables(results)
    assert set(tables) == {"conv-batch-table", "conv-precise-table", "conv-budget-table", "conv-gap-table",
                           "conv-lr-table", "conv-noniid-table"}
    assert all(body.count("\n") > 3 for body in tables.values())
    assert tables["conv-budget-table"].count("\n| ") == 3  # its header, 2 epochs, 3 epochs
    rows = conv.EXPERIMENT.verdicts(results)
    assert len(rows) == 6 and all("|" not in cell for v in rows for cell in dataclasses.astuple(v)[:4])
    assert all({p.budget for p in v.parts} == {"2 epochs", "3 epochs"} for v in rows)  # each part at each budget
    for name, draw in conv.EXPERIMENT.figures(results).items():
        draw(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 10_000


def test_a_test_set_in_training_mode_leaves_the_running_estimates_alone():
    net = ConvNet("my_bn", [0, 1], dtype=torch.float64)
    x, y = digits_split(0)[2][:12].double(), digits_split(0)[3][:12]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train_mode, eval_mode = member_accuracy(net, x, y, batch_size=4), member_accuracy(net, x, y)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items()) and net.training
    assert train_mode.shape == eval_mode.shape == (2,) and not torch.equal(train_mode, eval_mode)


def test_the_renorm_warm_up_is_the_papers_at_80000_steps():
    """Ioffe 2017: r_max = 1, d_max = 0 for 5,000 steps, d_max reaches 5 by 25,000 and r_max 3 by 40,000;
    here 40,000 is half the run."""
    assert conv.renorm_warmup(80_000) == (5_000, 40_000, 25_000)
    preset = conv.ConvSettings()
    assert conv.scaled_lr(preset, 2) == pytest.approx(0.1 / 16) and conv.scaled_lr(preset, 128) == pytest.approx(0.4)


DIGITS = 1000  # the synthetic test set


def right(accuracy: float) -> str:
    """A synthetic run's test items: the first round(accuracy · DIGITS) right."""
    k = round(accuracy * DIGITS)
    return pack_items([True] * k + [False] * (DIGITS - k))


def synthetic(acc: dict[tuple, float], seeds=(0, 1, 2, 3, 4), lr: float = 0.1, gap=None, mode=None,
              precise=None) -> dict:
    """Results with the test accuracy ``acc[(model, batch size)]`` (at the linearly scaled rate) or
    ``acc[(model, batch size, rate)]``, plus 0.001·seed so that intervals have a width; train − test
    ``gap`` and training − eval mode ``mode`` per (model, batch size); on precise statistics ``precise``
    (model, batch size) -> its accuracy (the same in every seed). The sweep's seeds are ``seeds``."""
    runs = []
    for (model, bs, *rate), value in acc.items():
        for s in seeds:
            test = value + 0.001 * s
            scaled = conv.scaled_lr(conv.ConvSettings(lr=lr), bs)
            train_mode = test + (mode or {}).get((model, bs), 0.0) * (1 + 0.1 * s)
            runs.append({"model": model, "batch_size": bs, "lr": rate[0] if rate else scaled, "seed": s, "epochs": 4,
                         "test_acc": test, "train_acc": test + (gap or {}).get((model, bs), 0.0),
                         "train_mode_acc": train_mode, "test_items": right(test),
                         "train_mode_items": right(train_mode),
                         conv.training.PRECISE: right((precise or {}).get((model, bs), test))})
    return {"config": {"seeds": list(seeds[:5]), "sweep_more": len(seeds) - len(seeds[:5]), "lr": lr, "epochs": 4},
            "runs": runs}


def test_batch_norm_needs_the_batch_on_known_cases():
    acc = {("my_bn", 2): 0.95, ("my_bn", 8): 0.98, ("group_norm", 2): 0.96, ("group_norm", 8): 0.96}
    both = "falls ({0}, 4 epochs): **holds**; more than GroupNorm's ({0}, 4 epochs): **holds**"
    answer = f"{both.format('running averages')}; {both.format('precise statistics')}"
    assert conv.needs_the_batch(synthetic(acc)).verdict == answer  # precise: the running averages' accuracy
    # on precise statistics MyBN2d's accuracy is 0.98 at both sizes: it does not fall there
    fixed = conv.needs_the_batch(synthetic(acc, precise={("my_bn", 2): 0.98, ("my_bn", 8): 0.98}))
    assert fixed.verdict.endswith("falls (precise statistics, 4 epochs): not decided; more than GroupNorm's "
                                  "(precise statistics, 4 epochs): not decided")
    assert [p.evaluation for p in fixed.parts] == ["running averages"] * 2 + ["precise statistics"] * 2
    steady = synthetic({("my_bn", 2): 0.98, ("my_bn", 8): 0.96, ("group_norm", 2): 0.96, ("group_norm", 8): 0.90})
    assert conv.needs_the_batch(steady).verdict.startswith("falls (running averages, 4 epochs): **does not hold**; "
                                                           "more than GroupNorm's (running averages, 4 epochs): "
                                                           "**holds**")


def test_renorm_and_ghost_verdicts_on_known_cases():
    results = synthetic({("my_bn", 2): 0.95, ("renorm", 2): 0.97, ("my_bn", 8): 0.98, ("renorm", 8): 0.98},
                        mode={("my_bn", 2): -0.15, ("renorm", 2): 0.01})
    row = conv.renorm_fixes(results)
    assert row.verdict == ("higher at batch 2 (running averages, 4 epochs): **holds**; higher at batch 8 (running "
                           "averages, 4 epochs): not decided; higher at batch 2 (precise statistics, 4 epochs): "
                           "**holds**; higher at batch 8 (precise statistics, 4 epochs): not decided")
    assert "matches" not in row.verdict + row.rule  # its training/inference match is its construction: a test
    ghost = synthetic({("my_bn", 32): 0.98, ("ghost", 32): 0.96}, gap={("my_bn", 32): 0.01, ("ghost", 32): 0.03})
    answer = ("batch 32: higher (running averages, 4 epochs): **does not hold**; batch 32: higher (precise "
              "statistics, 4 epochs): **does not hold**; batch 32: over-fits less (4 epochs): **does not hold**")
    assert conv.ghost_regularises(ghost).verdict == answer


def test_larger_rates_on_known_cases():
    """The plain net trains (test accuracy ≥ 0.5) up to lr 0.3, MyBN2d up to 3: one decade in every seed."""
    rates = (0.1, 0.3, 1.0, 3.0, 10.0)
    plain = dict(zip(rates, (0.9, 0.8, 0.1, 0.1, 0.1), strict=True))
    bn = dict(zip(rates, (0.98, 0.98, 0.97, 0.8, 0.1), strict=True))
    acc = {(m, 32, lr): v[lr] for m, v in (("plain", plain), ("my_bn", bn)) for lr in rates}
    ten = tuple(range(10))
    results = synthetic(acc, ten)
    assert conv.sweep_rates(results) == list(rates) and conv.sweep_seeds(conv.settings_of(results)) == list(ten)
    assert conv.largest_rate(results, "plain") == dict.fromkeys(ten, 0.3)
    count = conv.wider_rates(results)
    assert (count.median, count.above) == (1.0, 10) and conv.larger_rates(results).verdict == "4 epochs: **holds**"
    assert conv.larger_rates(synthetic(acc)).verdict == "4 epochs: not decided"  # 5 seeds: a sign test's p ≥ 1/32
    same = synthetic({(m, 32, lr): plain[lr] for m in ("plain", "my_bn") for lr in rates}, ten)
    assert conv.larger_rates(same).verdict == "4 epochs: **does not hold**"  # a tie in every seed counts against
    fewer = synthetic({(m, 32, lr): v[lr] for m, v in (("plain", bn), ("my_bn", plain)) for lr in rates}, ten)
    assert conv.WIDER.decide(conv.wider_rates(fewer)) == FAILS


def test_held_norms_keep_each_filter_at_its_start_and_the_function_as_it_is():
    """After a step, ``HeldNorms`` scales each filter back to its initial norm; batch norm after the
    convolution makes that invisible to the net's output (in training mode), and the step's direction
    stays: the filters are not where they started."""
    net = ConvNet("my_bn", [0, 1], dtype=torch.float64)
    held = conv.training.HeldNorms(net)
    start = [w.detach().clone() for w in held.weights]
    x, y = digits_split(0)[0][:16].double(), digits_split(0)[1][:16]
    x, y = x.unsqueeze(1).expand(-1, 2, -1, -1, -1), y.unsqueeze(1).expand(-1, 2)
    opt = torch.optim.SGD(net.parameters(), lr=5.0)
    ConvNet.member_losses(net(x), y).sum().backward()
    opt.step()
    with torch.no_grad():
        before = net(x)
        held.stepped(None)
        after = net(x)
    assert torch.allclose(after, before, atol=1e-6)
    for w, w0 in zip(held.weights, start, strict=True):
        assert torch.allclose(w.flatten(1).norm(dim=1), w0.flatten(1).norm(dim=1), rtol=1e-12)
        assert not torch.allclose(w, w0)


def test_self_tuning_on_known_cases():
    """MyBN2d with its norms held at lr 1 and 3 of a sweep where MyBN2d trains at both: at 0.3 and 0.45 (both
    parts hold: it costs accuracy at 3, and no training is left at 1), at 0.97 and 0.95 (neither), the same
    as MyBN2d (not decided at 3)."""
    sweep = {("my_bn", 32, 1.0): 0.97, ("my_bn", 32, 3.0): 0.85, ("plain", 32, 1.0): 0.1, ("plain", 32, 3.0): 0.1}
    ten = tuple(range(10))

    def answers(at_one: float, at_three: float) -> list[str]:
        results = synthetic({**sweep, (conv.HELD, 32, 1.0): at_one, (conv.HELD, 32, 3.0): at_three}, ten)
        return conv.self_tuning(results).answers()

    assert [p.label for p in conv.self_tuning(synthetic({**sweep, (conv.HELD, 32, 1.0): 0.3,
                                                         (conv.HELD, 32, 3.0): 0.45}, ten)).parts][:2] == [
        "costs accuracy at lr 3 (running averages, 4 epochs)", "no longer trains at lr 1 (running averages, 4 epochs)"]
    assert answers(0.3, 0.45) == [HOLDS] * 4
    assert answers(0.97, 0.95) == [FAILS] * 4
    assert answers(0.3, 0.85)[0::2] == [UNDECIDED] * 2
    assert not conv.self_tuning(synthetic(sweep, ten)).parts  # no held net: no part


def test_claims_about_conv():
    """The conv page and the short answer: from batch 8 to 2 MyBN2d's test accuracy falls in every seed,
    GroupNorm's rises in every seed, the plain net's and LayerNorm's on average, Batch Renorm's falls in
    every seed; in training mode MyBN2d at batch 2 is more than ten points below its eval mode and loses
    about three in eval mode, GroupNorm gains a few; Batch Renorm's two modes agree within about a point at
    every size, it is not shown better at batch 2 and is behind at 128 by more than ten points; no net
    over-fits by two points; ghost batches are not shown better nor over-fitting less at 32 and test about
    two points lower on average at 128; the plain net trains up to 0.3 in most seeds and never above 1,
    MyBN2d up to 3 in most seeds and never below 1; at 128 the nets without batch statistics end between
    0.2 and 0.55; a run at batch 128 is 44 steps. Each claim in a form that another CPU's rounding leaves
    true (``verdicts.py --rounding``)."""
    from experiments import conv
    from lab.stats import FAILS

    results = load_results(committed("conv"), conv.check_format)
    page = " ".join(DOCS["conv"].split())
    falls = {m: [sum(v) / len(v) for v in conv.fall(results, m).values()]  # per seed, the mean over test digits
             for m in ("my_bn", "group_norm", "plain", "layer_norm", "renorm")}
    assert all(v < 0 for v in falls["my_bn"]) and all(v < 0 for v in falls["renorm"])
    assert all(v > 0 for v in falls["group_norm"]) and all(sum(falls[m]) > 0 for m in ("plain", "layer_norm"))
    assert ("`MyBN2d`'s test accuracy falls in every seed, while GroupNorm's rises in every seed (the plain net's "
            "and LayerNorm's on average)") in page
    assert conv.mode_gap(results, "my_bn", 2).high < -0.10
    loses = conv.interval(results, "my_bn", 8).mean - conv.interval(results, "my_bn", 2).mean
    gains = conv.interval(results, "group_norm", 2).mean - conv.interval(results, "group_norm", 8).mean
    assert 0.02 <= loses <= 0.04 and 0.01 <= gains <= 0.05
    assert "`MyBN2d` at batch 2 is more than ten points below its own eval mode" in page
    assert "loses about three points" in page
    assert "batch norm loses a few points from batch 8 to 2 and GroupNorm gains a few" in page
    sizes = conv.settings_of(results).batch_sizes
    assert all(abs(conv.mode_gap(results, "renorm", b).mean) < 0.015 for b in sizes)  # "about a point"
    assert all(verdict("Batch Renormalization", f"higher at batch 2 ({e}, {b} epochs)") != HOLDS
               for e in ("running averages", "precise statistics") for b in (4, 12))  # "not shown testing better"
    assert conv.HIGHER.decide(conv.difference(results, ("renorm", 128), ("my_bn", 128))) == FAILS
    assert conv.difference(results, ("renorm", 128), ("my_bn", 128)).mean < -0.10
    assert "it is behind at 128, by more than ten points" in page
    assert "these seeds do not show it testing better" in page
    short = " ".join(VERDICTS.split())  # the short answer: the budgets named, and Batch Renorm's match as its design
    assert (f"On a conv net of 8×8 digits, trained for {results['config']['epochs']} epochs, its test accuracy falls "
            "from batch 8 to batch 2 in every seed while GroupNorm's rises") in short
    assert ("trained three times as long, the fall shrinks to under a point and is not decided, so what the batch "
            "costs it there is speed") in short
    assert ("Batch Renormalization, which by construction computes in training what it computes in inference, is "
            "not shown testing better there") in short
    settings = conv.settings_of(results)
    assert settings.long_epochs == [3 * settings.epochs]  # "three times as long"
    long = conv.at_budget(results, settings.long_epochs[0])
    for key in ("test_acc", "precise"):
        falls = [sum(v) / len(v) for v in conv.fall(long, "my_bn", key).values()]
        assert -0.01 < sum(falls) / len(falls) < 0  # "shrinks to under a point"
    assert all(verdict("Batch norm needs", f"{what} ({e}, {settings.long_epochs[0]} epochs)") != HOLDS
               for e in ("running averages", "precise statistics")
               for what in ("falls", "more than GroupNorm's"))  # "not decided", "no longer shown larger"
    assert all(conv.mode_gap(conv.at_budget(results, e), "my_bn", 2).high < -0.03
               for e in (settings.epochs, *settings.long_epochs))  # "well below its eval mode" at both budgets
    trained = {b: sum(conv.per_seed(results, "my_bn", b, key="train_acc").values()) for b in (2, 8)}
    assert trained[2] < trained[8]  # "its training accuracy below"
    last = {b: sum(conv.per_seed(results, "my_bn", b, key="loss").values()) for b in (2, 8)}
    assert last[2] > 3 * last[8]  # "several times that at batch 8"
    assert "its fall from batch 8 to 2 shrinks to under a point on average" in page
    assert "What lasts at both budgets is panel (b)" in page and "at batch 2 it trains more slowly" in page
    assert all(abs(conv.interval(results, m, b, "gap").mean) < 0.02 for m in conv.models(results)
               for b in conv.sizes(results, m))
    ghost = {b: conv.difference(results, ("ghost", b), ("my_bn", b)) for b in conv.settings_of(results).ghost_at}
    assert conv.HIGHER.decide(ghost[32]) != HOLDS and 1 <= -100 * ghost[128].mean <= 3  # "about two points lower"
    assert "in batches of 128 they test about two points lower on average" in page
    gap32 = conv.difference(results, ("ghost", 32), ("my_bn", 32), "gap")
    assert conv.LESS_OVERFITTING.decide(gap32) != HOLDS
    assert verdict("Ghost batches", "batch 32: higher (running averages, 4 epochs)") != HOLDS
    assert verdict("Ghost batches", "batch 32: over-fits less (4 epochs)") != HOLDS
    plain, bn = (sorted(conv.largest_rate(results, m).values()) for m in ("plain", "my_bn"))
    assert plain[len(plain) // 2] == 0.3 and max(plain) <= 1.0 and bn[len(bn) // 2] == 3.0 and min(bn) >= 1.0
    assert "up to a learning rate of 0.3 in most seeds and never above 1; `MyBN2d` trains up to 3 in most seeds" in page
    ends = [conv.interval(results, m, 128).mean for m in ("plain", "group_norm", "layer_norm")]
    assert 0.2 <= min(ends) and max(ends) <= 0.55 and "end between 0.2 and 0.55" in page
    lift = {(m, b): conv.difference(results, (m, b), (m, b), "precise", "test_acc").mean
            for m in ("my_bn", "ghost", "renorm") for b in conv.sizes(results, m)}
    assert all(abs(v) < 0.01 for (m, _), v in lift.items() if m != "renorm")  # "under a point on average"
    assert 0.01 < lift["renorm", 2] < 0.03  # "about two points at batch 2"
    lead = {e: conv.difference(results, ("renorm", 2), ("my_bn", 2), key).mean for e, key in (("precise", "precise"),
                                                                                          ("running", "test_acc"))}
    assert 0.01 <= lead["precise"] <= 0.02 and abs(lead["running"]) < 0.005  # "a point and a half", "about none"
    assert ("changes `MyBN2d` and ghost BN by under a point on average at every batch size" in page
            and "Batch Renormalization gains about two points at batch 2 from it" in page)
    assert "its lead over `MyBN2d` at batch 2 is about a point and a half on average" in page
    steps = results["config"]["epochs"] * conv.steps_per_epoch(128, results["split"]["train"])
    assert steps == 44 and "a run of 44 steps" in page and "(lr 0.4, 44 steps)" in page  # at batch 128


def test_claims_about_held_norms():
    """The conv page, the scale page and the short answer on MyBN2d with its filters' norms held: at lr 3 it
    costs 25 points after 4 epochs (0.560 against 0.813) and 47 after 12 (0.316 against 0.784); at lr 1 at
    most a point, and it trains in every seed (0.972, 0.989) where the plain net is at chance; the row's two
    parts answer holds and does not hold at both budgets, on both evaluations."""
    results = load_results(committed("conv"), conv.check_format)
    page, scale, short = (" ".join(text.split()) for text in (DOCS["conv"], DOCS["scale"], VERDICTS))
    settings = conv.settings_of(results)
    assert settings.held_factors == [10.0, 30.0] and conv.scaled_lr(settings, 32, 30.0) == 3.0
    numbers = {}
    for epochs in (settings.epochs, *settings.long_epochs):
        view = conv.at_budget(results, epochs)
        for lr in (1.0, 3.0):
            free, held = (conv.interval(view, m, 32, lr=lr, sweep=True).mean for m in ("my_bn", conv.HELD))
            numbers[epochs, lr] = (free, held)
            if lr == 1.0:  # "at most a point", "trains in every seed", "the plain net is at chance"
                assert free - held <= 0.01 + 1e-9
                assert min(conv.per_seed(view, conv.HELD, 32, lr, sweep=True).values()) >= conv.training.TRAINS
                assert max(conv.per_seed(view, "plain", 32, lr, sweep=True).values()) < 0.15  # 10 digits: 0.1
    assert [round(100 * (f - h)) for (e, lr), (f, h) in numbers.items() if lr == 3.0] == [25, 47]
    assert "(0.560 against 0.813)" in page and "(0.316 against 0.784)" in page
    assert f"{numbers[4, 1.0][1]:.3f}" == "0.972" and f"{numbers[12, 1.0][1]:.3f}" == "0.989"
    assert "(0.972; 0.989 after 12 epochs)" in page and "costs it 25 points after 4 epochs" in page
    assert "costs it 25 points after 4 epochs and 47 after 12" in scale
    for e in ("running averages", "precise statistics"):
        for b in (4, 12):
            assert verdict("The self-tuning effective rate", f"costs accuracy at lr 3 ({e}, {b} epochs)") == HOLDS
            assert verdict("The self-tuning effective rate", f"no longer trains at lr 1 ({e}, {b} epochs)") == FAILS
    assert "it tests worse at the largest of them (3) but still trains at 1, where the plain net does not" in short
    assert ("On two other sets of seeds (`verdicts.py --start 1000`, `--start 1100`) the cost at lr 3 after 4 epochs "
            "(about 17 and 27 points there) is not decided; after 12 it holds") in page  # those sets: by hand, in runs/


def test_claims_about_non_iid_batches():
    """The conv page and the short answer on non-i.i.d. batches: MyBN2d's accuracy falls by about half after
    4 epochs (0.48 against 0.98) and by more than ten points on average after 12, on both evaluations, precise
    statistics within two points of the running averages; Batch Renorm tests better by 13 to 17 points
    after 4 epochs and 8 to 10 after 12, every part of the row holding; it stays below its own i.i.d.
    accuracy (0.61 against 0.96)."""
    from experiments import conv
    from experiments.conv.training import NONIID
    from experiments.conv.verdicts import EVALUATIONS
    from lab.stats import HOLDS

    results = load_results(committed("conv"), conv.check_format)
    settings = conv.settings_of(results)
    base, (bn, renorm) = settings.base_batch, NONIID
    assert settings.noniid_classes == 2 and base == 32  # "each drawn from two classes", "16 digits of each"
    row = "Batch Renormalization fixes non-i.i.d. batches"
    for epochs, (low, high) in ((4, (0.13, 0.17)), (12, (0.08, 0.10))):
        view = conv.at_budget(results, epochs)
        for e, key in EVALUATIONS.items():
            falls = conv.difference(view, (bn, base), ("my_bn", base), key, sweep=True)
            higher = conv.difference(view, (renorm, base), (bn, base), key, sweep=True)
            assert falls.mean < -0.10 and low <= round(higher.mean, 2) <= high, (epochs, e)
            assert verdict(row, f"MyBN2d falls ({e}, {epochs} epochs)") == HOLDS
            assert verdict(row, f"Batch Renorm higher ({e}, {epochs} epochs)") == HOLDS
        again = conv.difference(view, (bn, base), (bn, base), "precise", "test_acc", sweep=True)
        assert abs(again.mean) < 0.02  # "precise statistics do not help it"
    half = conv.interval(results, bn, base, sweep=True).mean / conv.interval(results, "my_bn", base, sweep=True).mean
    assert 0.4 < half < 0.6  # "loses half its accuracy"
    numbers = [round(conv.interval(results, m, base, sweep=s).mean, 2)
               for m, s in ((bn, True), ("my_bn", True), (renorm, True), ("renorm", False))]
    assert numbers == [0.48, 0.98, 0.61, 0.96]
    page = " ".join(DOCS["conv"].split())
    assert "`MyBN2d` loses half its accuracy after 4 epochs (0.48 against 0.98 on i.i.d. batches)" in page
    assert "by 13 to 17 points after 4 epochs and 8 to 10 after 12" in page
    assert "it does not undo the loss (0.61 against 0.96 on i.i.d. batches after 4 epochs)" in page
    short = " ".join(VERDICTS.split())
    assert ("on batches each drawn from two classes, where batch norm's accuracy falls (by half after 4 epochs), it "
            "tests better at both budgets, as Ioffe found") in short
