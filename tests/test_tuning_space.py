"""The search space: ranges, per-method params, attention only for SASRec, p bounded."""
from pathlib import Path

import optuna
import pytest

from ec4srec.config import ConfigError
from ec4srec.tuning.space import SearchSpace, apply_params, load_ranges
from test_tuning_helpers import tiny_config

optuna.logging.set_verbosity(optuna.logging.WARNING)

EXPECTED = {
    "sasrec": set(),
    "cl4srec": {"lambda_cl", "tau"},
    "duorec": {"lambda_sl", "tau"},
    "ec4srec_ssl": {"mu_e", "tau", "lambda_cl_pos", "lambda_cl_neg", "updates", "explainer"},
    "ec4srec_sl": {"mu_e", "tau", "lambda_sl_pos", "updates", "explainer"},
    "ec4srec": {"mu_e", "tau", "lambda_cl_pos", "lambda_cl_neg", "lambda_sl_pos", "updates", "explainer"},
}


def sample(method, backbone="sasrec", max_epochs=100, n=60, ranges=None):
    space = SearchSpace(method, backbone, max_epochs, ranges or load_ranges())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        assert space(trial) is None
        out.append(trial.params)
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_each_method_searches_only_its_params(method):
    for params in sample(method, n=10):
        assert {k.split(".", 1)[1] for k in params} == EXPECTED[method]
        assert all(k.startswith("method.") for k in params)


def test_ranges_follow_the_paper():
    values = {}
    for params in sample("ec4srec", n=300):
        for k, v in params.items():
            values.setdefault(k, set()).add(round(v, 6) if isinstance(v, float) else v)
    grid = lambda lo, hi: {round(lo + 0.1 * i, 6) for i in range(int(round((hi - lo) / 0.1)) + 1)}
    assert values["method.mu_e"] == grid(0.1, 0.9)
    for key in ("method.lambda_cl_pos", "method.lambda_cl_neg", "method.lambda_sl_pos"):
        assert values[key] == grid(0.1, 0.5)
    assert values["method.tau"] == {0.5, 1.0, 1.5}
    assert values["method.updates"] == set(range(1, 10))
    assert values["method.explainer"] == {"occlusion", "saliency", "integrated_gradients", "attention"}


@pytest.mark.parametrize("backbone", ["gru4rec", "caser"])
def test_attention_explainer_only_for_sasrec(backbone):
    explainers = {p["method.explainer"] for p in sample("ec4srec_sl", backbone, n=80)}
    assert "attention" not in explainers
    assert explainers == {"occlusion", "saliency", "integrated_gradients"}


@pytest.mark.parametrize("max_epochs", [2, 5, 8])
def test_p_is_bounded_by_the_epoch_budget(max_epochs):
    ps = {p["method.updates"] for p in sample("ec4srec", max_epochs=max_epochs, n=80)}
    assert max(ps) == min(9, max_epochs - 1)
    assert all(max_epochs // (p + 1) >= 1 for p in ps)
    space = SearchSpace("ec4srec", "sasrec", max_epochs, load_ranges())
    assert space.first_update_epochs() == sorted({max_epochs // (p + 1) for p in range(1, max(ps) + 1)})


def test_p_needs_two_epochs():
    with pytest.raises(ConfigError):
        sample("ec4srec", max_epochs=1, n=1)


def test_apply_params_gives_a_valid_config_with_clean_values():
    base = tiny_config("ec4srec", epochs=10, extra=["method.update_epochs=[2]"])
    cfg = apply_params(base, {"method.lambda_sl_pos": 0.30000000000000004, "method.updates": 3,
                              "method.explainer": "saliency"})
    assert cfg.method.lambda_sl_pos == 0.3 and cfg.method.updates == 3
    assert cfg.method.update_epochs is None          # p decides the schedule
    assert cfg.method.explainer == "saliency" and cfg.model.hidden_size == 16


def test_custom_space_file_replaces_the_default(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  train.lr: {low: 0.0001, high: 0.01, log: true}\n"
                    "  method.tau: {choices: [0.2]}\nmethods:\n  sasrec: [train.lr]\n  cl4srec: [method.tau]\n")
    ranges = load_ranges(path)
    lrs = [p["train.lr"] for p in sample("sasrec", ranges=ranges, n=20)]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs)
    assert sample("duorec", ranges=ranges, n=1) == [{}]          # not listed: nothing searched
    path.write_text("params:\n  method.nope: {choices: [1]}\nmethods: {}\n")
    with pytest.raises(ConfigError, match="method.nope"):
        load_ranges(path)


def test_space_is_picklable():
    import pickle
    space = SearchSpace("ec4srec", "sasrec", 20, load_ranges())
    clone = pickle.loads(pickle.dumps(space))
    assert clone.params == space.params and clone.__class__.__module__ == "ec4srec.tuning.space"


@pytest.mark.parametrize("dataset, label", [("beauty", "beauty"), ("synthetic", "synthetic"),
                                            ("data/beauty-5k.txt", "beauty-5k"),
                                            ("/abs/clothing.txt.gz", "clothing")])
def test_study_names_a_file_dataset_by_its_stem(tmp_path, dataset, label):
    from ec4srec.tuning.study import StudyOptions, run_name
    opts = StudyOptions(dataset=dataset, methods=["cl4srec"], storage_path=str(tmp_path)).finalize()
    # run folders, best configs and tables are named by the label, never by a path (a path as a
    # run name escaped the experiment folder)
    assert [run_name(k) for k in opts.runs()] == [f"{label}-cl4srec-sasrec"]
    assert opts.exp_dir == tmp_path / f"ec4srec-{label}"
    # a file dataset is read by absolute path, whatever a trial's working directory
    assert opts.dataset == dataset or Path(opts.dataset).is_absolute()


@pytest.mark.parametrize("kw, message", [
    ({"dataset": "/nope/x.txt"}, "neither a known dataset nor a file"),
    ({"overrides": ["model.bogus=1"]}, "model.bogus"),
    ({"overrides": ["train.lr=abc"]}, "train.lr"),
    ({"search_space": "/nope/space.yaml"}, "/nope/space.yaml"),
])
def test_bad_study_input_is_one_clear_error_before_anything_starts(tmp_path, capsys, kw, message):
    from ec4srec.tuning.study import StudyOptions, main
    opts = StudyOptions(**{"dataset": "synthetic", "storage_path": str(tmp_path / "s"), **kw})
    # exit status 2, the offending value named, and no experiment folder written (Ray not started)
    assert main(opts) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
