"""The search space: ranges, per-method params, attention only for SASRec, p bounded."""
from pathlib import Path

import optuna
import pytest

from ec4srec.config import ConfigError
from ec4srec.search.ranges import load_ranges
from ec4srec.search.space import SearchSpace, apply_params
from test_tuning_helpers import tiny_config

optuna.logging.set_verbosity(optuna.logging.WARNING)

EXPECTED = {          # what each method reads (besides the base model's training params)
    "sasrec": set(),
    "cl4srec": {"lambda_cl", "tau", "similarity"},
    "duorec": {"lambda_sl", "tau", "similarity"},
    "ec4srec_ssl": {"mu_e", "tau", "similarity", "lambda_cl_pos", "lambda_cl_neg", "updates",
                    "explainer"},
    "ec4srec_sl": {"mu_e", "tau", "similarity", "lambda_sl_pos", "updates", "explainer"},
    "ec4srec": {"mu_e", "tau", "similarity", "lambda_cl_pos", "lambda_cl_neg", "lambda_sl_pos",
                "updates", "explainer"},
}
COMMON = {"train.objective", "train.loss", "train.negatives", "train.seen_negatives", "train.lr",
          "train.weight_decay", "train.batch_size", "train.adam_beta2", "data.max_len",
          "model.hidden_size", "model.item_dropout", "model.tied_output"}
BASE_MODEL = {"sasrec": COMMON | {"model.num_layers", "model.num_heads", "model.inner_size",
                                  "model.norm", "model.dropout", "model.attn_dropout"},
              "gru4rec": COMMON | {"model.gru_hidden_size", "model.gru_layers", "model.gru_dropout"},
              "caser": COMMON | {"model.caser_window", "model.caser_nv", "model.caser_nh",
                                 "model.caser_dropout"}}


def per_trial(ranges):
    """``ranges`` with every param sampled per trial (no shared warm-up keys: those draw the
    same ranges once per key, tests/test_warmup_keys.py)."""
    return {**ranges, "warmup_keys": None}


def sample(method, backbone="sasrec", max_epochs=100, n=60, ranges=None, distributions=False):
    space = SearchSpace(method, backbone, max_epochs, per_trial(ranges or load_ranges()))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        # the define-by-run function suggests and returns nothing when nothing is aliased
        assert space(trial) is None
        out.append(trial.distributions if distributions else trial.params)
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("backbone", sorted(BASE_MODEL))
@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_each_method_searches_its_params_and_the_same_base_model_params(method, backbone):
    for params in sample(method, backbone, n=5):
        method_keys = {k.split(".", 1)[1] for k in params if k.startswith("method.")}
        # a method samples exactly the method params it reads (sasrec: no tau/lambda/similarity)
        assert method_keys == EXPECTED[method]
        # every method, sasrec included, gets the same lr and backbone-dropout tuning
        assert {k for k in params if not k.startswith("method.")} == BASE_MODEL[backbone]


def test_default_space_is_the_fair_one():
    dists = sample("ec4srec", n=1, distributions=True)[0]
    values = {}
    for params in sample("ec4srec", n=300):
        for k, v in params.items():
            values.setdefault(k, set()).add(v)
    # similarity is searched, dot and cosine
    assert values["method.similarity"] == {"dot", "cosine"}
    for key, (low, high) in {"method.tau": (0.05, 1.5), "method.lambda_cl_pos": (0.01, 0.5),
                             "method.lambda_cl_neg": (0.01, 0.5), "method.lambda_sl_pos": (0.01, 0.5),
                             "train.lr": (3e-4, 1e-2)}.items():
        # tau, the lambdas and the learning rate are log-uniform over their ranges
        assert dists[key].log and (dists[key].low, dists[key].high) == (low, high)
        assert low <= min(values[key]) and max(values[key]) <= high
    # log scale: about 38 % of log-uniform draws on [0.01, 0.5] lie below 0.045 (uniform: 7 %)
    assert sum(v < 0.045 for v in values["method.lambda_cl_pos"]) > 0.25 * 300
    ranges = load_ranges()
    for method in ("cl4srec", "duorec"):
        for key in ranges["methods"][method]:
            if "lambda" in key:
                # the baselines' lambdas share the log range of the EC4SRec lambdas
                assert ranges["params"][key] == {"low": 0.01, "high": 0.5, "log": True}


def test_paper_space_follows_the_paper():
    values = {}
    ranges = load_ranges("paper")
    for params in sample("ec4srec", n=300, ranges=ranges):
        for k, v in params.items():
            values.setdefault(k, set()).add(round(v, 6) if isinstance(v, float) else v)
    grid = lambda lo, hi: {round(lo + 0.1 * i, 6) for i in range(int(round((hi - lo) / 0.1)) + 1)}
    # Section 5.1.4: mu_e 0.1..0.9 step 0.1, tau in {0.5, 1.0, 1.5}, lambdas 0.1..0.5 step 0.1
    assert values["method.mu_e"] == grid(0.1, 0.9)
    for key in ("method.lambda_cl_pos", "method.lambda_cl_neg", "method.lambda_sl_pos"):
        assert values[key] == grid(0.1, 0.5)
    assert values["method.tau"] == {0.5, 1.0, 1.5}
    # dot product only; no learning rate or dropout tuning (sasrec runs one trial)
    assert values["method.similarity"] == {"dot"}
    assert not any(k.startswith(("train.", "model.")) for k in values)
    assert SearchSpace("sasrec", "sasrec", 100, ranges).empty
    # p and the explainer as in the Section 5.4 sensitivity study
    assert values["method.updates"] == set(range(1, 10))
    assert values["method.explainer"] == {"occlusion", "saliency", "integrated_gradients", "attention"}


@pytest.mark.parametrize("spelling", ["paper", "PACKAGED"])
def test_paper_space_is_selected_by_name_or_by_its_file(spelling):
    from importlib import resources
    path = str(resources.files("ec4srec.search").joinpath("paper_space.yaml"))
    # `--search-space paper` and the packaged file's path load the same space
    assert load_ranges(path if spelling == "PACKAGED" else spelling) == load_ranges(path)
    from ec4srec.search.study import StudyOptions, input_error
    opts = StudyOptions(dataset="synthetic", search_space="paper").finalize()
    # the name stays a name in the study options, and a study with it passes the input checks
    assert opts.search_space == "paper" and input_error(opts) is None


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
    assert clone.params == space.params and clone.__class__.__module__ == "ec4srec.search.space"


@pytest.mark.parametrize("dataset, label", [("beauty", "beauty"), ("synthetic", "synthetic"),
                                            ("data/beauty-5k.txt", "beauty-5k"),
                                            ("/abs/clothing.txt.gz", "clothing")])
def test_study_names_a_file_dataset_by_its_stem(tmp_path, dataset, label):
    from ec4srec.search.study import StudyOptions, run_name
    opts = StudyOptions(dataset=dataset, methods=["cl4srec"], storage_path=str(tmp_path)).finalize()
    # run folders, best configs and tables are named by the label, never by a path (a path as a
    # run name escaped the experiment folder)
    assert [run_name(k) for k in opts.runs()] == [f"{label}-cl4srec-sasrec"]
    assert opts.exp_dir == tmp_path / f"ec4srec-{label}"
    # a file dataset is read by absolute path, whatever a trial's working directory
    assert opts.dataset == dataset or Path(opts.dataset).is_absolute()


@pytest.mark.parametrize("kw, message", [
    ({"dataset": "/nope/x.txt"}, "neither a known dataset (beauty, sports, clothing, ml-1m, synthetic) nor a file"),
    ({"dataset": "Sprots"}, "nor a file; did you mean 'sports'?"),
    ({"overrides": ["model.bogus=1"]}, "model.bogus"),
    ({"overrides": ["train.lr=abc"]}, "train.lr"),
    ({"search_space": "/nope/space.yaml"}, "/nope/space.yaml"),
])
def test_bad_study_input_is_one_clear_error_before_anything_starts(tmp_path, capsys, kw, message):
    from ec4srec.search.study import StudyOptions, main
    opts = StudyOptions(**{"dataset": "synthetic", "storage_path": str(tmp_path / "s"), **kw})
    # exit status 2, the offending value named, and no experiment folder written (Ray not started)
    assert main(opts) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------ malformed space files
GOOD_PARAM = "  method.tau: {low: 0.1, high: 1.0, log: true}\n"


@pytest.mark.parametrize("text, key", [
    ("params: [1, 2\n", "not valid YAML"),                                    # bad YAML
    ("- params\n", "expected a mapping"),                                     # not a mapping
    ("params:\n" + GOOD_PARAM + "method:\n  cl4srec: [method.tau]\n", "'method'"),   # top-level typo
    ("params:\n  method.tau: {low: 0.1, high: 1.0, lg: true}\n", "params.method.tau: unknown keyword 'lg'"),
    ("params:\n  method.tua: {low: 0.1, high: 1.0}\n", "params.method.tua is not a config key"),
    ("params:\n  method.tau: {low: 1.0, high: 0.1}\n", "params.method.tau: low 1.0 > high 0.1"),
    ("params:\n  method.tau: {choices: []}\n", "params.method.tau.choices must be a non-empty list"),
    ("params:\n  method.tau: {low: 0.0, high: 1.0, log: true}\n", "params.method.tau: a log scale needs low > 0"),
    ("params:\n  method.tau: {low: -1.0, high: 1.0, log: true}\n", "params.method.tau: a log scale needs low > 0"),
    ("params:\n  method.tau: {low: a, high: 1.0}\n", "params.method.tau.low must be a number"),
    ("params:\n  method.tau: {low: 0.1, high: 1.0, log: yes please}\n", "params.method.tau.log must be true or false"),
    ("params:\n  method.tau: {low: 0.1, high: 1.0, step: 0}\n", "params.method.tau.step must be > 0"),
    ("params:\n  method.tau: {choices: [0.5], low: 0.1}\n", "params.method.tau: 'choices' cannot be combined"),
    ("params:\n  method.tau: {high: 1.0}\n", "params.method.tau needs 'choices' or both"),
    ("params:\n  method.tau: 0.5\n", "params.method.tau must be a mapping"),
    ("params:\n  method.similarity: {choices: [dot, cosin]}\n", "params.method.similarity: value 'cosin'"),
    ("params:\n  model.dropout: {low: 0.0, high: 1.5}\n", "params.model.dropout: value 1.5"),
    ("params:\n  method.tau: {choices: [fast]}\n", "params.method.tau: value 'fast'"),
    ("params:\n" + GOOD_PARAM + "methods:\n  cl4srec: [method.lambda_cl]\n", "methods.cl4srec lists undefined params"),
    ("params:\n" + GOOD_PARAM + "methods:\n  cl4sec: [method.tau]\n", "methods.cl4sec is not one of"),
    ("params:\n" + GOOD_PARAM + "methods:\n  cl4srec: method.tau\n", "methods.cl4srec must be a list"),
    ("params:\n" + GOOD_PARAM + "backbones:\n  bert4rec: [method.tau]\n", "backbones.bert4rec is not one of"),
    ("params:\n" + GOOD_PARAM + "common: [train.lr]\n", "common lists undefined params"),
])
def test_malformed_space_file_is_one_error_naming_file_and_key(tmp_path, text, key):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_ranges(path)
    # one ConfigError whose message names the file and the offending key or problem
    assert str(err.value).startswith(f"{path}:") and key in str(err.value)
    # on one line (the CLI prints it as a single `error:` line)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("step", ["0.5", "2.0"])
def test_a_non_integer_step_on_an_integer_key_is_one_error(tmp_path, step):
    path = tmp_path / "space.yaml"
    path.write_text(f"params:\n  model.num_layers: {{low: 1, high: 3, step: {step}}}\n"
                    "common: [model.num_layers]\n")
    with pytest.raises(ConfigError) as err:
        load_ranges(path)
    # model.num_layers is an int field: a float step (which would make Optuna suggest floats the
    # config rejects in every trial) is one error naming the file and the key
    assert str(err.value) == (f"{path}: params.model.num_layers.step must be an integer "
                              f"(model.num_layers is an integer key), got {float(step)}")


def test_a_fractional_step_on_a_float_key_is_fine(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  train.weight_decay: {low: 0, high: 1, step: 0.5}\n")
    # the field's type decides, not the values: train.weight_decay is a float, with int bounds too
    assert load_ranges(path)["params"]["train.weight_decay"]["step"] == 0.5


def test_a_float_key_with_integer_bounds_draws_floats(tmp_path):
    import numpy as np
    from ec4srec.search.space import draw
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  train.weight_decay: {low: 0, high: 1}\ncommon: [train.weight_decay]\n")
    spec = load_ranges(path)["params"]["train.weight_decay"]
    drawn = {draw(spec, np.random.default_rng(s), "train.weight_decay") for s in range(20)}
    # the field's type decides: a float key draws fractions, not only the bounds 0 and 1
    assert any(0 < v < 1 for v in drawn)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = SearchSpace("sasrec", "sasrec", 10, load_ranges(path))
    values = []
    for _ in range(5):
        trial = study.ask()
        space(trial)                  # define-by-run: the values are the trial's params
        values.append(trial.params["train.weight_decay"])
    # through Optuna too: suggest_float, not suggest_int
    assert all(isinstance(v, float) for v in values) and any(0 < v < 1 for v in values)


def test_fractional_bounds_on_an_integer_key_are_one_error(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  model.num_layers: {low: 1.5, high: 3}\ncommon: [model.num_layers]\n")
    with pytest.raises(ConfigError) as err:
        load_ranges(path)
    # Optuna would truncate 1.5 silently: one error naming the key
    assert "params.model.num_layers.low must be an integer (model.num_layers is an integer key)" \
        in str(err.value)


def test_a_key_given_twice_in_a_space_file_is_one_error(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
                    "common: [train.lr]\nparams:\n  model.dropout: {low: 0.1, high: 0.5}\n")
    with pytest.raises(ConfigError) as err:
        load_ranges(path)
    # the second params: does not silently replace the first: the file, key and lines are named
    assert str(err.value) == f"{path}: not valid YAML: duplicate key 'params' on line 4 (first on line 1)"


def test_exponent_floats_without_a_dot_are_read_as_numbers(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  train.lr: {low: 3e-4, high: 3e-3, log: true}\ncommon: [train.lr]\n")
    # YAML 1.1 reads 3e-4 as a string; the space file takes it as the number it means
    assert load_ranges(path)["params"]["train.lr"] == {"low": 3e-4, "high": 3e-3, "log": True}


@pytest.mark.parametrize("value, message", [("nope", "neither a file nor one of the packaged spaces"),
                                            ("nope.yaml", "search-space file not found")])
def test_unknown_space_name_or_missing_file_is_an_error(value, message):
    with pytest.raises(ConfigError) as err:
        load_ranges(value)
    # an unknown packaged name and a missing file are each one clear error naming the value
    assert message in str(err.value) and "nope" in str(err.value)


@pytest.mark.parametrize("space", ["BAD", "LOG0"])
def test_search_py_exits_2_with_one_error_line_before_ray_starts(tmp_path, space):
    import subprocess
    import sys
    path = tmp_path / "space.yaml"
    path.write_text({"BAD": "params:\n  method.tau: {low: 0.1, hihg: 1.0}\n",
                     "LOG0": "params:\n  train.lr: {low: 0, high: 0.1, log: true}\n"}[space])
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "tune" / "search.py"), "--dataset", "synthetic",
                          "--storage-path", str(tmp_path / "s"), "--search-space", str(path)],
                         capture_output=True, text=True, timeout=120)
    # exit 2, exactly one stderr line, starting with error: and naming the file
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"error: {path}:")
    # before Ray started or anything was written
    assert "ray" not in out.stdout.lower() and not (tmp_path / "s").exists()


# ------------------------------------------------------------------ narrowing a resumed study
WIDE = ("params:\n  train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "  method.explainer: {choices: [occlusion, saliency, integrated_gradients]}\n"
        "  method.tau: {choices: [0.5, 1.0, 1.5]}\n"
        "common: [train.lr]\nmethods:\n  ec4srec_sl: [method.explainer, method.tau]\n")
NARROW = ("params:\n  train.lr: {low: 1.0e-3, high: 2.0e-3, log: true}\n"
          "  method.explainer: {choices: [saliency]}\n"
          "  method.tau: {choices: [0.5, 1.0, 1.5]}\n"
          "common: [train.lr]\nmethods:\n  ec4srec_sl: [method.explainer, method.tau]\n")


def test_narrowing_problem_accepts_only_a_narrower_space(tmp_path):
    from ec4srec.search.ranges import parse_ranges
    from ec4srec.search.space import narrowing_problem
    import yaml
    wide, narrow = parse_ranges(yaml.safe_load(WIDE), "w"), parse_ranges(yaml.safe_load(NARROW), "n")
    runs = [("ec4srec_sl", "sasrec")]
    # a space inside the old one on every param is a narrowing
    assert narrowing_problem(wide, narrow, runs, "n") is None
    # the reverse widens train.lr: refused, naming the param
    assert "params.train.lr" in narrowing_problem(narrow, wide, runs, "w")
    # a dropped param is refused too (it would jump to the base config's value)
    fewer = parse_ranges(yaml.safe_load(NARROW.replace("[method.explainer, method.tau]",
                                                       "[method.tau]")), "f")
    assert "keeps its params" in narrowing_problem(wide, fewer, runs, "f")


def test_narrowing_a_staged_study_compares_what_stage_two_searches():
    import copy
    from ec4srec.search.space import narrowing_problem
    old = load_ranges(None)                                   # the default space
    new = copy.deepcopy(old)
    new["params"]["train.weight_decay"] = {"low": 0.0, "high": 10.0}     # wider
    # stage 2 searches its own params and the retune keys: a base-model key outside them
    # (stage 1's, done) is no change to it
    assert narrowing_problem(old, new, [("cl4srec", "sasrec", "methods")], "n") is None
    # unstaged, the same run searches it too: the widening is refused, naming it
    assert "params.train.weight_decay" in narrowing_problem(old, new, [("cl4srec", "sasrec")], "n")
    new = copy.deepcopy(old)
    new["params"]["train.lr"] = {"low": 1e-5, "high": 1e-1, "log": True}
    # a retune key widened: refused in stage 2 as well
    assert "params.train.lr" in narrowing_problem(old, new, [("cl4srec", "sasrec", "methods")], "n")


def test_restored_searcher_samples_new_trials_from_the_narrowed_active_space(tmp_path):
    """The real mechanism without a cluster: Ray's OptunaSearch with the SearchSpace, saved
    (what Tune writes into the experiment folder) and restored into a new searcher after the
    study's active space file was narrowed; the journal storage carries the Optuna study."""
    from ray.tune.search.optuna import OptunaSearch
    active = tmp_path / "search_space.yaml"
    active.write_text(WIDE)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal")))

    def searcher(space=None):
        return OptunaSearch(space=space, metric="m", mode="max", storage=storage, study_name="s",
                            sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    first = searcher(SearchSpace("ec4srec_sl", "sasrec", 10, load_ranges(active), active=active))
    before = []
    for i in range(6):
        config = first.suggest(f"t{i}")
        before.append(config)
        first.on_trial_complete(f"t{i}", {"m": float(i % 3), "training_iteration": 1})
    first.save(str(tmp_path / "searcher.pkl"))
    # the wide space was sampled before the pause (more than one explainer)
    assert len({c["method.explainer"] for c in before}) > 1
    active.write_text(NARROW)                       # what `--resume --search-space` does
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    after = []
    for i in range(6, 12):
        config = restored.suggest(f"t{i}")
        after.append(config)
        restored.on_trial_complete(f"t{i}", {"m": 1.0, "training_iteration": 1})
    for config in after:
        # every trial created after the resume lies in the narrowed space
        assert config["method.explainer"] == "saliency" and 1e-3 <= config["train.lr"] <= 2e-3
        # and its config holds config keys only (the categorical's Optuna alias stays in Optuna)
        assert set(config) == {"train.lr", "method.explainer", "method.tau"}
    trials = optuna.load_study(study_name="s", storage=storage).trials
    # one Optuna study holds the trials before and after; train.lr keeps its Optuna name (TPE
    # learns from the old trials), the narrowed categorical is sampled under its alias
    assert len(trials) == 12 and all("train.lr" in t.params for t in trials)
    assert all("method.explainer{saliency}" in t.params for t in trials[6:])
    assert all(t.params["method.tau"] in (0.5, 1.0, 1.5) for t in trials)


def test_resume_with_a_wider_space_is_refused_and_changes_nothing(tmp_path, capsys):
    from ec4srec.search.study import SPACE_FILE, StudyOptions, main, write_manifest
    wide, narrow = tmp_path / "wide.yaml", tmp_path / "narrow.yaml"
    wide.write_text(WIDE)
    narrow.write_text(NARROW)
    opts = StudyOptions(dataset="synthetic", methods=["ec4srec_sl"], storage_path=str(tmp_path),
                        name="s", search_space=str(narrow), max_epochs=4).finalize()
    opts.exp_dir.mkdir(parents=True)
    write_manifest(opts)
    (opts.exp_dir / SPACE_FILE).write_text(NARROW)
    before = {p.name: p.read_bytes() for p in opts.exp_dir.iterdir()}
    again = StudyOptions(storage_path=str(tmp_path), name="s", search_space=str(wide))
    # widening a paused study: exit 2, one error line naming the param, before Ray starts
    assert main(again, resume=True) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "params.train.lr" in err
    # the study's files are untouched
    assert {p.name: p.read_bytes() for p in opts.exp_dir.iterdir()} == before


def test_resume_with_a_narrower_space_makes_it_the_active_space(tmp_path, monkeypatch):
    from ec4srec.search import study as study_mod
    wide, narrow = tmp_path / "wide.yaml", tmp_path / "narrow.yaml"
    wide.write_text(WIDE)
    narrow.write_text(NARROW)
    opts = study_mod.StudyOptions(dataset="synthetic", methods=["ec4srec_sl"], max_epochs=4,
                                  storage_path=str(tmp_path), name="s", search_space=str(wide)).finalize()
    opts.exp_dir.mkdir(parents=True)
    study_mod.write_manifest(opts)
    (opts.exp_dir / study_mod.SPACE_FILE).write_text(study_mod.dump_ranges(load_ranges(wide)))
    seen = {}
    monkeypatch.setattr(study_mod, "run", lambda o: seen.setdefault("opts", o) and {})
    monkeypatch.setattr(study_mod, "print_summary", lambda *a: None)
    again = study_mod.StudyOptions(storage_path=str(tmp_path), name="s", search_space=str(narrow))
    assert study_mod.main(again, resume=True) == 0
    # the active space file (read by every run's SearchSpace) is now the narrow space
    assert load_ranges(opts.exp_dir / study_mod.SPACE_FILE) == load_ranges(narrow)
    # and study.json records it, so a later plain --resume keeps it
    saved = study_mod.read_manifest(opts.exp_dir / "study.json")
    assert saved["search_space"] == str(narrow) and seen["opts"].search_space == str(narrow)


@pytest.mark.parametrize("original, current, name", [
    ({"low": 0.01, "high": 0.5, "log": True}, {"low": 0.02, "high": 0.1, "log": True}, "k"),
    ({"low": 0.1, "high": 0.9, "step": 0.1}, {"low": 0.3, "high": 0.5, "step": 0.1}, "k"),
    ({"low": 1, "high": 9, "step": 1}, {"low": 2, "high": 4, "step": 1}, "k"),
    ({"choices": ["a", "b"]}, {"choices": ["a", "b"]}, "k"),
    ({"choices": ["a", "b", "c"]}, {"choices": ["a", "c"]}, "k{a,c}"),
    ({"low": 0.1, "high": 0.9, "step": 0.1}, {"choices": [0.3, 0.5]}, "k{0.3,0.5}"),
    ({"low": 0.1, "high": 0.9, "step": 0.1}, {"low": 0.2, "high": 0.8, "step": 0.2}, "k{0.2..0.8 step 0.2}"),
    ({"low": 0.01, "high": 0.5, "log": True}, {"low": 0.02, "high": 0.1}, "k{0.02..0.1}"),
])
def test_optuna_name_keeps_the_key_only_where_optuna_accepts_the_narrowed_distribution(
        original, current, name):
    from ec4srec.search.space import optuna_name
    # same kind, log flag and step: the same Optuna param (TPE keeps learning from old trials);
    # anything Optuna refuses for one param name gets an alias that spells out the new spec
    assert optuna_name("k", original, current) == name


def test_a_study_from_before_the_active_space_cannot_be_narrowed(tmp_path, capsys):
    import dataclasses
    import json

    from ec4srec.search.study import SPACE_FILE, StudyOptions, main
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(NARROW)
    opts = StudyOptions(dataset="synthetic", methods=["ec4srec_sl"], storage_path=str(tmp_path),
                        name="old", max_epochs=4).finalize()
    opts.exp_dir.mkdir(parents=True)
    (opts.exp_dir / "study.json").write_text(json.dumps(dataclasses.asdict(opts)))   # version 1
    again = StudyOptions(storage_path=str(tmp_path), name="old", search_space=str(narrow))
    # its searchers pickled their ranges: narrowing would silently not apply, so it is refused
    assert main(again, resume=True) == 2
    assert "older ec4srec" in capsys.readouterr().err
    # and nothing was created in the study folder
    assert not (opts.exp_dir / SPACE_FILE).exists()


def test_a_set_typo_is_named_even_where_a_study_exists(tmp_path, capsys):
    from ec4srec.search.study import StudyOptions, main
    opts = StudyOptions(dataset="synthetic", storage_path=str(tmp_path), name="s",
                        overrides=["train.lrr=0.1"]).finalize()
    opts.exp_dir.mkdir(parents=True)
    (opts.exp_dir / "study.json").write_text("{}")
    # The bad key is the error (with the closest valid one), not "already holds a study".
    assert main(opts) == 2
    err = capsys.readouterr().err
    assert "train.lrr" in err and "did you mean 'train.lr'" in err and "already holds" not in err


def test_narrowing_a_float_key_given_integer_bounds_keeps_its_optuna_name():
    from ec4srec.search.space import optuna_name
    # train.weight_decay is a float field: {0, 1} -> {0, 0.5} is the same float distribution
    # narrowed, so TPE keeps the param's history under its own name
    assert optuna_name("train.weight_decay", {"low": 0, "high": 1}, {"low": 0, "high": 0.5}) \
        == "train.weight_decay"
