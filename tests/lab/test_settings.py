"""lab/settings.py: settings dataclasses as command lines, an experiment's preset as a class of its own,
and what train.py makes of an experiment's own flags."""

import dataclasses
import pickle

import pytest

import train
from experiments import conv, depth, lr
from lab.regression import Regression
from lab.settings import TRIALS, Settings, build_parser

Narrow = Regression.preset("Narrow", __name__, drop={"lr": "it has a grid of its own"},
                           only={"device": ("cpu", "it runs on the CPU")}, epochs=3, ranges=[2.0])


def test_a_preset_is_a_class_with_its_own_defaults_and_without_what_it_drops():
    narrow = Narrow()
    assert (narrow.epochs, narrow.ranges, narrow.batch_size) == (3, [2.0], 64)  # its preset, then the task's
    assert "lr" not in {f.name for f in dataclasses.fields(Narrow)}
    assert Narrow.DROPPED == {"lr": "it has a grid of its own"}
    assert Narrow.ONLY == {"device": ("cpu", "it runs on the CPU")} and Regression.ONLY == {}
    assert Narrow().ranges is not Narrow().ranges  # a list default is each instance's own
    assert pickle.loads(pickle.dumps(narrow)) == narrow  # worker processes receive it
    assert pickle.loads(pickle.dumps(lr.LrSettings())) == lr.LrSettings()
    with pytest.raises(TypeError, match="no setting 'widths'"):
        Regression.preset("Wrong", __name__, widths=[3])


def test_problem_names_the_flag_and_the_one_value_it_runs_with():
    assert Narrow(device="cpu").problem() is None
    assert Narrow(device="cuda:3").problem() == "argument --device: cpu only (it runs on the CPU)"
    assert Narrow(ranges=[1e30]).problem().startswith("arguments --ranges/--a/--b/--noise-std/--dtype: ")
    assert depth.DepthSettings(depth=11).problem().startswith("argument --depth: at least 12")


def test_settings_read_back_from_a_record_take_the_defaults_for_what_it_lacks():
    older = {"seeds": [3], "lr": 0.2, "epochs": 4}  # a conv results file from before the grids were recorded
    read = conv.ConvSettings.from_record(older)
    assert (read.seeds, read.lr, read.batch_sizes, read.base_batch) == ([3], 0.2, [2, 8, 32, 128], 32)


def test_the_help_lists_an_experiments_own_settings_first_and_parses_the_others_quietly():
    parser = build_parser(conv.ConvSettings, None, also=(depth.DepthSettings,))
    flags = [a.dest for a in parser._actions if a.dest != "help"]
    own = [f.name for f in dataclasses.fields(conv.ConvSettings) if f.name not in {g.name for g in
                                                                                  dataclasses.fields(Settings)}]
    assert flags[:len(own)] == own and "widths" in flags
    assert "--widths" not in parser.format_help() and "--batch-sizes" in parser.format_help()
    assert vars(parser.parse_args(["--widths", "8"]))["widths"] == [8]


def test_an_experiments_own_flags_reach_it_and_make_a_trial():
    """`train.py conv --batch-sizes 2 8 --epochs 8`: its grid and budget, off its preset, so into runs/."""
    (config,) = train.parse_config(["conv", "--batch-sizes", "2", "8", "2", "--epochs", "8"]).values()
    assert isinstance(config, conv.ConvSettings)
    assert (config.batch_sizes, config.epochs, config.norms, config.out) == ([2, 8], 8, conv.ConvSettings().norms,
                                                                             TRIALS)


@pytest.mark.parametrize("argv, error", [
    (["conv", "--batch-sizes", "1"], "argument --batch-sizes: expected an integer >= 2"),
    (["conv", "--norms", "ghost"], "argument --norms: invalid choice: 'ghost'"),  # its own grid: --ghost-at
    (["mnist", "--models", "my_bn_noisy"], "argument --models: the mnist experiment's 'models' cannot be"),
    (["depth", "--depth", "4"], "argument --depth: at least 12"),
    (["depth", "--epochs", "3"], "argument --epochs: the depth experiment does not use it"),
])
def test_an_experiments_own_flags_are_checked_in_one_line(argv, error, capsys):
    with pytest.raises(SystemExit) as exc:
        train.parse_config(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and error in err, err


def test_help_says_each_default_once_without_markup_and_describes_each_model():
    """Issue 35: a help that states its own default is not followed by "(default: None)"; the docstrings'
    reST ``code`` shows as `code`; each model id of --models comes with its label."""
    text = " ".join(build_parser(Regression, "Uses ``lab.nets.TanhMLP``.").format_help().split())
    assert "(default: 0.1 for R=1" in text and "(default: None)" not in text
    assert "``" not in text and "Uses `lab.nets.TanhMLP`." in text
    assert "torch_bn: nn.BatchNorm1d; my_bn: MyBN;" in text and "bn_first: BN before the first tanh only;" in text
    conv_help = " ".join(build_parser(conv.ConvSettings, conv.__doc__).format_help().split())
    assert "``" not in conv_help and "group_norm: GroupNorm (4 groups);" in conv_help


def test_figures_tick_whole_epochs_and_count_seeds_in_words(tmp_path):
    from lab.plotting import save, seeds_text, subplots

    fig, ax = subplots()
    ax.plot([0, 1, 2], [3.0, 2.0, 1.0])
    ax.set(xlabel="epoch")
    save(fig, tmp_path / "two_epochs.png")
    assert [t for t in ax.get_xticks() if 0 <= t <= 2] == [0, 1, 2]  # no 0.25
    assert (seeds_text(1), seeds_text(5)) == ("1 seed", "5 seeds")
