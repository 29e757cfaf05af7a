"""``mamext experiment`` command line: help text, option checks, and the
state a run leaves behind (arguments, threads, random state, matplotlib)."""

from __future__ import annotations

import argparse
import copy
import re

import pytest
import torch
from torch import nn

from mamext import prune as mprune
from mamext.__main__ import main as mamext_main
from mamext.experiment import cli, report, sweep
from mamext.experiment.models import build_mlp
from mamext.experiment.train import evaluate, train_model


def help_text():
    return cli.build_parser().format_help()


def option_blocks(text):
    """``{option: its help text}``, the help's lines joined."""
    blocks, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-{1,2}[\w-]+)", line)
        if m:
            current = m.group(1)
            blocks[current] = line
        elif current and line.startswith("   "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


def test_help_has_no_literal_percent_escapes_or_python_reprs():
    text = help_text()
    assert "%%" not in text
    assert "from 100% down to 0.01%" in " ".join(text.split())
    for bad in ("(default: None)", "(default: False)", "['", "[0]", "(default: 0.01)"):
        assert bad not in text, bad


def test_help_states_each_default_once():
    blocks = option_blocks(help_text())
    assert {"--dataset", "--data-dir", "--train-subset", "--criteria", "--quiet"} <= set(blocks)
    for option, block in blocks.items():
        assert block.count("(default") <= 1, (option, block)
    assert "(default: all)" in blocks["--train-subset"]
    assert "(default: 128)" in blocks["--batch-size"]
    assert "(default: 0)" in blocks["--seed"]
    assert "(default: mac, mam)" in blocks["--models"]
    assert "(default: 100, 50, 30," in blocks["--fractions"]
    assert "/usr/share/datasets/mnist for mnist" in blocks["--data-dir"]
    assert ", ".join(sweep.DEFAULT_CRITERIA) in blocks["--criteria"]


def test_help_lists_registered_criteria():
    mprune.register_score("magnitude_copy")(mprune.get_score("magnitude", "test").fn)
    try:
        assert "magnitude_copy-global" in option_blocks(help_text())["--criteria"]
        args = cli.build_parser().parse_args(["--criteria", "magnitude_copy-global"])
        assert args.criteria == ["magnitude_copy-global"]
    finally:
        mprune.unregister_score("magnitude_copy")


@pytest.mark.parametrize("argv, msg", [
    (["--lr", "inf"], "finite"),
    (["--transition-epochs", "inf"], "finite"),
    (["--iterative-min", "200"], r"\(0, 100\]"),
    (["--iterative-min", "0"], r"\(0, 100\]"),
    (["--fractions", "nan"], r"\(0, 100\]"),
])
def test_non_finite_and_out_of_range_numbers_refused(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        mamext_main(["experiment", *argv])
    assert e.value.code == 2
    assert re.search(msg, capsys.readouterr().err)


def test_out_that_is_a_file_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(SystemExit) as e:
            mamext_main(["experiment", "--dataset", "digits", "--epochs", "1", "--transition-epochs", "0",
                         "--quiet", "--threads", "1", "--out", str(out)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "--out" in err and "not a directory" in err


@pytest.mark.parametrize("option", ["--out", "--data-dir"])
def test_empty_paths_refused(option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["experiment", "--epochs", "1", "--transition-epochs", "0", "--quiet", "--threads", "1", option, ""]
    with pytest.raises(SystemExit) as e:
        mamext_main(argv)
    assert e.value.code == 2 and f"{option} is empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def tiny_args(out):
    argv = ["--dataset", "digits", "--quick", "--quiet", "--models", "mac", "--epochs", "1",
            "--transition-epochs", "0", "--fractions", "100,10", "--criteria", "magnitude-global",
            "--score-samples", "50", "--threads", "1", "--out", str(out)]
    args = cli.build_parser().parse_args(argv)
    args._argv = argv
    return args


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run through :func:`cli.run`: the caller's state before and after."""
    args = tiny_args(tmp_path_factory.mktemp("tiny") / "out")
    before = copy.deepcopy(vars(args))
    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    rng = torch.get_rng_state()
    results = cli.run(args)
    return dict(args_before=before, args_after=vars(args), rng_kept=torch.equal(torch.get_rng_state(), rng),
                threads_before=threads, threads_after=torch.get_num_threads(), results=results)


def test_run_leaves_arguments_unchanged(tiny_run):
    assert tiny_run["args_after"] == tiny_run["args_before"]
    # the effective options (--quick applied) are recorded in the results
    config = tiny_run["results"]["config"]
    assert config["train_subset"] == cli.QUICK_DIGITS["train_subset"]
    assert config["score_samples"] == 50 and config["epochs"] == 1


def test_run_leaves_global_random_state_unchanged(tiny_run):
    assert tiny_run["rng_kept"]


def test_run_restores_threads(tiny_run):
    assert tiny_run["threads_after"] == tiny_run["threads_before"]


def test_plot_leaves_matplotlib_backend(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    matplotlib.use("svg", force=True)
    try:
        rows = [{"model": "mac", "criterion": "c", "fraction": f, "val_acc": 0.5, "test_acc": 0.5} for f in (1, .1)]
        report.plot(tmp_path / "p.png", rows)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(backend, force=True)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resolve_options_copies():
    args = cli.build_parser().parse_args(["--dataset", "digits", "--quick"])
    opts = cli.resolve_options(args)
    assert opts is not args and args.epochs is None and args.train_subset is None
    assert opts.epochs == cli.QUICK_DIGITS["epochs"] and opts.train_subset == cli.QUICK_DIGITS["train_subset"]
    with pytest.raises(cli.UsageError, match="--transition-epochs"):
        cli.resolve_options(argparse.Namespace(**{**vars(args), "quick": False, "epochs": 2,
                                                  "transition_epochs": 3.0}))


def test_recipe_defaults_without_quick():
    opts = cli.resolve_options(cli.build_parser().parse_args([]))
    for k in cli.RECIPE_OPTIONS:
        assert getattr(opts, k) == cli.DEFAULTS[k]
    assert opts.train_subset is None


def test_quick_keeps_explicit_values_equal_to_the_defaults(tmp_path):
    # --epochs 15 is the default recipe's value; with --quick it must still mean 15 epochs.
    out = tmp_path / "out"
    argv = ["experiment", "--dataset", "digits", "--quick", "--quiet", "--models", "mac", "--epochs", "15",
            "--fractions", "100", "--criteria", "magnitude-global", "--score-samples", "10000", "--threads", "1",
            "--out", str(out)]
    assert mamext_main(argv) == 0
    res = __import__("json").loads((out / "results.json").read_text())
    assert res["config"]["epochs"] == 15 and len(res["histories"]["mac"][0]["epochs"]) == 15
    assert res["config"]["score_samples"] == 10000


def test_duplicate_seeds_refused(capsys):
    with pytest.raises(SystemExit) as e:
        mamext_main(["experiment", "--dataset", "digits", "--seed", "0", "1", "0"])
    assert e.value.code == 2 and "--seed" in capsys.readouterr().err


def test_cli_functions_are_short():
    import inspect

    from mamext.experiment import cli as mod, data, models, options, packing, train

    for m in (mod, data, models, options, packing, report, train):
        for name, fn in inspect.getmembers(m, inspect.isfunction):
            if fn.__module__ == m.__name__:
                n = len(inspect.getsource(fn).splitlines())
                assert n <= 80, f"{m.__name__}.{name} has {n} lines"


# --------------------------------------------------------------------------- training helpers

def test_evaluate_refuses_empty_or_mismatched_sets():
    model = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="5 inputs but 4 labels"):
        evaluate(model, torch.zeros(5, 4), torch.zeros(4, dtype=torch.long))


def test_evaluate_restores_mode_on_error():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    m = Boom().train()
    with pytest.raises(RuntimeError):
        evaluate(m, torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    assert m.training


def test_train_model_refuses_empty_training_set():
    model = build_mlp("mac", 4, 3, hidden=(5,))
    x, y = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="empty"):
        train_model(model, x, y, torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), epochs=1)


def test_train_model_restores_mode():
    torch.manual_seed(0)
    model = build_mlp("mam", 4, 3, hidden=(5,)).eval()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    h = train_model(model, x, y, x, y, epochs=2, batch_size=8, transition_epochs=1)
    assert not model.training
    assert len(h["epochs"]) == 2 and h["steps_per_epoch"] == 2


@pytest.mark.parametrize("kwargs", [dict(in_features=0, num_classes=10), dict(in_features=4, num_classes=0),
                                    dict(in_features=4, num_classes=10, hidden=(8, 0)),
                                    dict(in_features=4.5, num_classes=10)])
def test_build_mlp_refuses_empty_layers(kwargs):
    with pytest.raises(ValueError, match="positive integer"):
        build_mlp("mam", **kwargs)


# --------------------------------------------------------------------------- report with any criterion

def test_report_accepts_any_criterion_name(tmp_path):
    rows = [{"model": m, "criterion": c, "fraction": f, "seed": 0, "kept": int(100 * f), "total": 100,
             "val_acc": a, "test_acc": a, "seconds": 0.0}
            for m in ("mac", "mam") for c in ("a-new-score", "another")
            for f, a in ((1.0, 0.9), (0.1, 0.85), (0.01, 0.5), (0.001, 0.1))]
    summary = report.summarize(rows)
    assert {e["criterion"] for e in summary} == {"a-new-score", "another"}
    md = report.summary_markdown(summary)
    assert "| MAM | a-new-score |" in md
    assert any("a-new-score" in line or "another" in line for line in report.comparison_lines(summary))
    report.plot(tmp_path / "p.png", rows)
    assert (tmp_path / "p.png").stat().st_size > 0
