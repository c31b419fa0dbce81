"""The staged study (stage 1: the plain method's base model; stage 2: every other method's own
params and the retune keys on stage 1's best) and ASHA's seconds clock."""
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from ec4srec.config import ConfigError
from ec4srec.search.command import parse
from ec4srec.search.options import StudyOptions, base_config, best_params, input_error, run_base
from ec4srec.search.ranges import dump_ranges, load_ranges, parse_ranges
from ec4srec.search.space import SearchSpace, run_params
from ec4srec.search.resume import extend
from ec4srec.search.tuner import make_scheduler, trial_constants
from test_tuning_driver import ray_local  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
# the smoke studies' space: stage 1 searches lr, dropout and blocks; stage 2 lambda and lr
STAGED_SPACE = ("params:\n  train.lr: {low: 0.0005, high: 0.01, log: true}\n"
                "  model.dropout: {choices: [0.1, 0.3]}\n"
                "  model.num_layers: {choices: [1, 2]}\n"
                "  method.lambda_cl: {low: 0.01, high: 0.5, log: true}\n"
                "common: [train.lr]\nbackbones:\n  sasrec: [model.dropout, model.num_layers]\n"
                "methods:\n  cl4srec: [method.lambda_cl]\nretune: [train.lr]\n")
RANGES = {"params": {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                     "model.hidden_size": {"choices": [16, 32]},
                     "model.dropout": {"low": 0.0, "high": 0.5, "step": 0.1},
                     "model.gru_dropout": {"low": 0.0, "high": 0.5, "step": 0.1},
                     "method.tau": {"low": 0.1, "high": 1.0, "log": True}},
          "common": ["train.lr", "model.hidden_size"],
          "backbones": {"sasrec": ["model.dropout"], "gru4rec": ["model.gru_dropout"]},
          "methods": {"cl4srec": ["method.tau"]},
          "retune": ["train.lr", "model.dropout", "model.gru_dropout"]}


@pytest.mark.parametrize("backbone, dropout", [("sasrec", "model.dropout"),
                                               ("gru4rec", "model.gru_dropout")])
def test_stage_two_searches_the_methods_params_and_the_retune_keys_its_backbone_reads(backbone, dropout):
    # unstaged and stage 1: the base model's keys, then the method's
    assert list(run_params(RANGES, "cl4srec", backbone)) == ["train.lr", "model.hidden_size",
                                                             dropout, "method.tau"]
    assert list(run_params(RANGES, "sasrec", backbone, "base")) == ["train.lr", "model.hidden_size",
                                                                    dropout]
    # stage 2: the method's own params and the retune keys of this backbone; hidden size fixed
    assert list(run_params(RANGES, "cl4srec", backbone, "methods")) == ["method.tau", "train.lr",
                                                                        dropout]


def test_retune_must_name_defined_params_and_round_trips():
    with pytest.raises(ConfigError, match="retune lists undefined params"):
        parse_ranges({**RANGES, "retune": ["train.weight_decay"]}, "space.yaml")
    ranges = parse_ranges(RANGES, "space.yaml")
    # a written space reads back the same; a space without retune is written without the key
    import yaml
    assert parse_ranges(yaml.safe_load(dump_ranges(ranges)), "x") == ranges
    assert "retune" not in dump_ranges({**ranges, "retune": []})


def test_the_default_space_retunes_learning_rate_and_dropouts_only():
    ranges = load_ranges()
    keys = set(run_params(ranges, "duorec", "sasrec", "methods"))
    # DuoRec's own params plus the learning rate and SASRec's three dropouts; no size, no loss
    assert keys == {"method.similarity", "method.tau", "method.lambda_sl", "train.lr",
                    "model.dropout", "model.attn_dropout", "model.item_dropout"}


def test_staged_runs_put_stage_one_first_and_need_the_plain_method(tmp_path):
    opts = StudyOptions(dataset="synthetic", methods=["cl4srec", "sasrec"],
                        backbones=["sasrec", "gru4rec"], staged=True,
                        storage_path=str(tmp_path)).finalize()
    # every backbone's plain run comes before any stage-2 run; order otherwise kept
    assert [k[1:] for k in opts.runs()] == [("sasrec", "sasrec"), ("sasrec", "gru4rec"),
                                            ("cl4srec", "sasrec"), ("cl4srec", "gru4rec")]
    assert [opts.stage_of(m) for m in ("sasrec", "cl4srec")] == ["base", "methods"]
    no_plain = StudyOptions(dataset="synthetic", methods=["cl4srec"], staged=True,
                            storage_path=str(tmp_path)).finalize()
    # a staged study without the plain method has no stage 1: refused before anything starts
    assert "must include sasrec" in input_error(no_plain)


def test_a_resume_starts_the_runs_in_progress_first(tmp_path):
    from ec4srec.search.options import run_name
    from ec4srec.search.runs import start_order
    opts = StudyOptions(dataset="synthetic", methods=["cl4srec", "duorec", "ec4srec"],
                        storage_path=str(tmp_path), name="s").finalize()
    keys = opts.runs()
    complete, in_progress = run_name(keys[0]), run_name(keys[2])
    (opts.exp_dir / "runs").mkdir(parents=True)
    (opts.exp_dir / "runs" / f"{complete}.json").write_text("[]")       # may reopen
    (opts.exp_dir / "trials" / in_progress).mkdir(parents=True)          # begun, not complete
    # the run whose trials were running goes on first; the others keep their order
    assert start_order(opts, keys) == [keys[2], keys[0], keys[1]]


def write_run(exp: Path, run: str, trials: list[tuple[str, dict, float]]) -> None:
    records = [{"trial_id": tid, "params": params, "error": None, "path": f"{run}/trial_{tid}",
                "history": [{"epoch": 1, "valid/ndcg@10": score / 2},
                            {"epoch": 2, "valid/ndcg@10": score}]} for tid, params, score in trials]
    (exp / "runs").mkdir(parents=True, exist_ok=True)
    (exp / "runs" / f"{run}.json").write_text(json.dumps(records))


def test_stage_two_starts_from_stage_ones_best_trial(tmp_path):
    opts = StudyOptions(dataset="synthetic", methods=["sasrec", "cl4srec"], staged=True,
                        storage_path=str(tmp_path), name="s").finalize()
    key = ("synthetic", "cl4srec", "sasrec")
    # before stage 1 has finished, stage 2 has no base: one clear error
    with pytest.raises(ConfigError, match="not finished"):
        run_base(opts, key)
    write_run(opts.exp_dir, "synthetic-sasrec-sasrec",
              [("a", {"train.lr": 0.002, "model.hidden_size": 32}, 0.30),
               ("b", {"train.lr": 0.005, "model.hidden_size": 16}, 0.40),
               ("c", {"train.lr": 0.009, "model.hidden_size": 32}, 0.35)])
    # the best trial by validation NDCG@10 (b) is stage 2's base; the method keeps its own name
    assert best_params(opts.exp_dir, ("synthetic", "sasrec", "sasrec"))["train.lr"] == 0.005
    base = run_base(opts, key)
    assert (base.train.lr, base.model.hidden_size, base.method.name) == (0.005, 16, "cl4srec")
    # stage 1 itself and an unstaged study start from the flags' base config
    assert run_base(opts, ("synthetic", "sasrec", "sasrec")) == base_config(opts, "sasrec", "sasrec")
    opts.staged = False
    assert run_base(opts, key) == base_config(opts, "cl4srec", "sasrec")


def test_resume_extends_a_plain_study_into_a_staged_one(tmp_path):
    saved = {**StudyOptions(dataset="synthetic", methods=["sasrec"], storage_path=str(tmp_path),
                            name="s").finalize().__dict__}
    extend(saved, ["sasrec", "cl4srec", "duorec"], staged=True)
    # the new methods follow the study's own, and the study becomes staged
    assert saved["methods"] == ["sasrec", "cl4srec", "duorec"] and saved["staged"]
    other = {**saved, "methods": ["sasrec", "cl4srec"], "staged": False}
    write_run(tmp_path / "s", "synthetic-cl4srec-sasrec", [("a", {}, 0.1)])
    # a method that finished on the untuned base cannot become stage 2
    with pytest.raises(ConfigError, match="synthetic-cl4srec-sasrec started outside"):
        extend(other, None, staged=True)


@pytest.mark.parametrize("trace", ["ray folder", "trial record", "journal"])
def test_a_run_started_on_the_untuned_base_cannot_become_stage_two(tmp_path, trace):
    saved = {**StudyOptions(dataset="synthetic", methods=["sasrec", "cl4srec"], storage_path=str(tmp_path),
                            name="s").finalize().__dict__}
    exp, run = tmp_path / "s", "synthetic-cl4srec-sasrec"
    exp.mkdir()
    if trace == "ray folder":
        (exp / run).mkdir()
    elif trace == "trial record":
        (exp / "trials" / run).mkdir(parents=True)
    else:                        # its driver died before a trial ended: only Optuna knows it
        (exp / "optuna.journal").write_text(
            '{"op_code":0,"worker_id":"w","study_name":"synthetic-sasrec-sasrec","directions":[2]}\n'
            '{"op_code":0,"worker_id":"w","study_name":"synthetic-cl4srec-sasrec","directions":[2]}\n')
    # any trace of a started run refuses the change, naming the run
    with pytest.raises(ConfigError, match="synthetic-cl4srec-sasrec started outside"):
        extend(saved, None, staged=True)


def test_resume_flags_methods_only_when_given():
    opts, resume = parse(["--resume", "--methods", "cl4srec", "--staged"])
    # --methods with --resume names methods to add; without it nothing is added
    assert resume and opts.extend == ["cl4srec"] and opts.staged
    opts, _ = parse(["--resume"])
    assert opts.extend is None


def test_resume_changes_the_runs_at_once_only_when_given(tmp_path):
    from ec4srec.search.options import write_manifest
    from ec4srec.search.resume import resumed_options
    opts = StudyOptions(dataset="synthetic", methods=["sasrec", "cl4srec"], storage_path=str(tmp_path),
                        name="s", concurrent_runs=3).finalize()
    opts.exp_dir.mkdir(parents=True)
    write_manifest(opts)
    manifest = opts.exp_dir / "study.json"
    common = ["--resume", "--storage-path", str(tmp_path), "--name", "s"]
    # a plain --resume keeps the study's own number of runs at once
    assert resumed_options(parse(common)[0], manifest).concurrent_runs == 3
    # --resume --concurrent-runs changes it from now on
    assert resumed_options(parse([*common, "--concurrent-runs", "2"])[0], manifest).concurrent_runs == 2
    # a new study without the flag runs one at a time; below 1 is a usage error
    assert parse(["--storage-path", str(tmp_path), "--name", "t"])[0].concurrent_runs == 1
    with pytest.raises(SystemExit):
        parse([*common, "--concurrent-runs", "0"])


@pytest.mark.parametrize("clock, method", [("epochs", "sasrec"), ("seconds", "sasrec"),
                                           ("seconds", "cl4srec"), ("seconds", "ec4srec"),
                                           ("cpu-seconds", "cl4srec"), ("cpu-seconds", "ec4srec")])
def test_asha_clock(clock, method, tmp_path):
    opts = StudyOptions(dataset="synthetic", asha_clock=clock, storage_path=str(tmp_path)).finalize()
    scheduler = make_scheduler(opts, n_epochs=100, method=method)
    assert isinstance(scheduler, ASHAScheduler)
    # seconds: rungs at 300 s of train_seconds (3x apart); cpu-seconds: at 300 CPU seconds
    # (train_cpu_seconds); epochs: guided epochs from 10; a guided method keeps the
    # guided-epoch clock whatever --asha-clock says
    seconds = clock != "epochs" and method != "ec4srec"
    attr = {"seconds": "train_seconds", "cpu-seconds": "train_cpu_seconds"}.get(clock)
    expected = (attr, 300) if seconds else ("guided_epoch", 10)
    assert (scheduler._time_attr, scheduler._brackets[0]._rungs[-1][0]) == expected
    base = base_config(opts, method, "sasrec")
    space = SearchSpace(method, "sasrec", 100, load_ranges())
    study = trial_constants(opts, base, space)
    # trials checkpoint at the epoch rungs only on the epoch clock
    assert study["decision_epochs"] == ([] if seconds else [10, 30, 90])
    opts.scheduler = "fifo"
    assert isinstance(make_scheduler(opts, 100, method), FIFOScheduler)


def test_the_cpu_clock_counts_every_thread_of_a_trial(tmp_path):
    opts = StudyOptions(dataset="synthetic", asha_clock="cpu-seconds", cpus_per_trial=4,
                        storage_path=str(tmp_path)).finalize()
    scheduler = make_scheduler(opts, n_epochs=100, method="cl4srec")
    # 4 threads count 4 CPU seconds a second: the first rung is 300 s of work, and the day a
    # trial may run is 4 days of CPU time
    assert scheduler._brackets[0]._rungs[-1][0] == 1200 and scheduler._max_t == 4 * 86_400


@pytest.mark.slow
def test_a_staged_smoke_study_tunes_stage_two_on_stage_ones_best(ray_local, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(STAGED_SPACE)
    address = ray_local.get_runtime_context().gcs_address
    done = subprocess.run([sys.executable, str(ROOT / "tune" / "search.py"), "--smoke-test",
                           "--staged", "--methods", "cl4srec", "sasrec", "--search-space",
                           str(space), "--num-samples", "3", "--max-epochs", "2", "--seeds", "0",
                           # ASHA on the CPU clock: the trials report train_cpu_seconds
                           "--asha-clock", "cpu-seconds", "--grace-period", "1",
                           "--storage-path", str(tmp_path), "--name", "s", "--address", address],
                          capture_output=True, text=True, timeout=400)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    # Tune's snapshot warning (27 blocks in a smoke study before) says nothing to our user
    assert "snapshotting" not in out
    # stage 1 ran first and to its end
    assert out.index("stage 1") < out.index("=== synthetic-sasrec-sasrec") < out.index("stage 2")
    exp = tmp_path / "s"
    best = best_params(exp, ("synthetic", "sasrec", "sasrec"))
    cl = json.loads((exp / "runs" / "synthetic-cl4srec-sasrec.json").read_text())
    for record in cl:
        # stage 2 searches lambda and the learning rate, nothing of stage 1's other keys
        assert set(record["params"]) == {"method.lambda_cl", "train.lr"}
        # every epoch reports the CPU clock ASHA reads, growing
        clock = [h["train_cpu_seconds"] for h in record["history"]]
        assert clock[0] > 0 and clock == sorted(clock)
    import yaml
    config = yaml.safe_load((exp / "best" / "synthetic-cl4srec-sasrec.yaml").read_text())
    # its best config carries stage 1's best dropout and layers
    assert config["model"]["dropout"] == best["model.dropout"]
    assert config["model"]["num_layers"] == best["model.num_layers"]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(exp / "optuna.journal")))
    assert {s.study_name for s in storage.get_all_studies()} == {"synthetic-sasrec-sasrec",
                                                               "synthetic-cl4srec-sasrec"}


def test_stage_two_has_its_own_epoch_budget_until_it_starts(tmp_path, monkeypatch):
    from ec4srec.search import study
    from ec4srec.search.resume import set_stage2_epochs
    from ec4srec.search.study import make_budget
    monkeypatch.setattr(study, "cluster_slots", lambda opts: 2)     # no Ray needed
    opts = StudyOptions(dataset="synthetic", methods=["sasrec", "ec4srec"], staged=True,
                        max_epochs=200, stage2_epochs=40, storage_path=str(tmp_path),
                        name="s").finalize()
    # stage 1 keeps N = max_epochs; stage 2's configs, update schedule and budget use 40
    assert base_config(opts, "sasrec", "sasrec").train.epochs == 200
    assert base_config(opts, "ec4srec", "sasrec").train.epochs == 40
    budget = make_budget(opts, started=0.0)
    assert budget.n("synthetic-sasrec-sasrec") == 200 and budget.n("synthetic-ec4srec-sasrec") == 40
    saved = dict(opts.__dict__)
    set_stage2_epochs(saved, 60)
    assert saved["stage2_epochs"] == 60
    (tmp_path / "s" / "trials" / "synthetic-ec4srec-sasrec").mkdir(parents=True)
    # once a stage-2 run has a trial, its N is fixed
    with pytest.raises(ConfigError, match="stage 2 has started"):
        set_stage2_epochs(saved, 80)


@pytest.mark.slow
def test_a_plain_study_resumed_as_stage_one_of_a_staged_study(ray_local, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(STAGED_SPACE)
    address = ray_local.get_runtime_context().gcs_address
    where = ["--storage-path", str(tmp_path), "--name", "s", "--address", address]
    search = [sys.executable, str(ROOT / "tune" / "search.py")]
    first = subprocess.run([*search, "--smoke-test", "--methods", "sasrec", "--search-space",
                            str(space), "--num-samples", "2", "--max-epochs", "4", "--seeds", "1",
                            *where], capture_output=True, text=True, timeout=400)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    second = subprocess.run([*search, "--resume", "--staged", "--methods", "cl4srec",
                             "--stage2-epochs", "2", *where], capture_output=True, text=True,
                            timeout=400)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    exp = tmp_path / "s"
    # the finished plain run is kept as stage 1 (not re-run); cl4srec is added as stage 2
    assert "synthetic-sasrec-sasrec: complete, not re-run" in out and "adding cl4srec" in out
    manifest = json.loads((exp / "study.json").read_text())
    assert manifest["staged"] and manifest["methods"] == ["sasrec", "cl4srec"]
    import yaml
    config = yaml.safe_load((exp / "best" / "synthetic-cl4srec-sasrec.yaml").read_text())
    best = best_params(exp, ("synthetic", "sasrec", "sasrec"))
    # stage 2 trains N = 2 epochs on stage 1's best dropout; each run has its seed re-run
    assert config["train"]["epochs"] == 2 and config["model"]["dropout"] == best["model.dropout"]
    assert {p.parent.name for p in exp.glob("seeds/*/seed_*.json")} == {
        "synthetic-sasrec-sasrec", "synthetic-cl4srec-sasrec"}


@pytest.mark.parametrize("kw, message", [
    ({"staged": False, "stage2_epochs": 40}, "only a --staged study has a stage 2"),
    ({"overrides": ["train.epochs=50"]}, "--set train.epochs"),
    ({"grace_period": 30, "stage2_epochs": 20}, "first rung is past the 20 epochs"),
])
def test_study_inputs_that_would_fail_later_are_refused_up_front(tmp_path, kw, message):
    opts = StudyOptions(**{"dataset": "synthetic", "methods": ["sasrec", "ec4srec"], "staged": True,
                           "max_epochs": 200, "storage_path": str(tmp_path), **kw}).finalize()
    # one line before Ray starts, not a traceback in stage 2 hours later
    assert message in input_error(opts)


def test_grace_period_is_in_the_asha_clocks_unit_only(tmp_path):
    from ec4srec.search.options import asha_clock, asha_grace
    opts = StudyOptions(dataset="synthetic", asha_clock="seconds", grace_period=600,
                        storage_path=str(tmp_path)).finalize()
    # 600 seconds for an unguided run; a guided run (epoch clock) keeps the epoch default
    assert asha_grace(opts, asha_clock(opts, "sasrec"), 200) == 600
    assert asha_grace(opts, asha_clock(opts, "ec4srec"), 200) == 10


def test_resume_checks_the_runs_it_adds(tmp_path):
    from ec4srec.search.options import write_manifest
    from ec4srec.search.resume import resumed_options
    opts = StudyOptions(dataset="synthetic", methods=["sasrec"], storage_path=str(tmp_path),
                        name="s").finalize()
    opts.exp_dir.mkdir(parents=True)
    write_manifest(opts)
    cli = StudyOptions(dataset="synthetic", storage_path=str(tmp_path), name="s", staged=True,
                       stage2_epochs=1).finalize()
    cli.extend = ["ec4srec"]
    # a stage 2 of one epoch cannot hold an importance update: refused at resume, not later
    with pytest.raises(ConfigError, match="method.updates"):
        resumed_options(cli, opts.exp_dir / "study.json")


def test_a_staged_study_skips_stage_two_where_stage_one_has_no_trial(tmp_path, monkeypatch, capsys):
    from ec4srec.search import study
    opts = StudyOptions(dataset="synthetic", methods=["sasrec", "cl4srec"], staged=True,
                        storage_path=str(tmp_path), name="s", seeds=0).finalize()
    calls = []

    def fake_run(opts, key, ranges, budget=None, reopen=True):   # stage 1: every trial errored
        calls.append(key)
        return [{"trial_id": "a", "params": {}, "history": [], "error": "boom", "path": "x"}]
    monkeypatch.setattr(study, "run_search", fake_run)
    monkeypatch.setattr(study, "cluster_slots", lambda opts: 1)
    (opts.exp_dir / "runs").mkdir(parents=True)
    (opts.exp_dir / "runs" / "synthetic-sasrec-sasrec.json").write_text(json.dumps(
        fake_run(opts, None, None)))
    calls.clear()
    budget = study.make_budget(opts, 0.0)
    study._run_phases(opts, opts.exp_dir, load_ranges(), budget, 0.0)
    # stage 2 is not started on a base that does not exist, and says why
    assert calls == [("synthetic", "sasrec", "sasrec")]
    assert "synthetic-cl4srec-sasrec: skipped: stage 1 on sasrec has no finished trial" in \
        capsys.readouterr().out


@pytest.mark.parametrize("stage_two_started", [False, True])
def test_stage_one_reopens_only_while_no_stage_two_run_has_begun(tmp_path, monkeypatch,
                                                                  stage_two_started):
    from ec4srec.search import study
    opts = StudyOptions(dataset="synthetic", methods=["sasrec", "cl4srec"], staged=True,
                        storage_path=str(tmp_path), name="s", seeds=0).finalize()
    flags = {}

    def fake_run(opts, key, ranges, budget=None, reopen=True):
        flags[key[1]] = reopen
        return [{"trial_id": "a", "params": {}, "history": [], "error": "boom", "path": "x"}]
    monkeypatch.setattr(study, "run_search", fake_run)
    monkeypatch.setattr(study, "cluster_slots", lambda opts: 1)
    opts.exp_dir.mkdir(parents=True)
    if stage_two_started:
        (opts.exp_dir / "trials" / "synthetic-cl4srec-sasrec").mkdir(parents=True)
    study._run_phases(opts, opts.exp_dir, load_ranges(), study.make_budget(opts, 0.0), 0.0)
    # stage 1's best is stage 2's base: once a stage-2 run began, a larger budget must not
    # reopen stage 1 (it did, on the Beauty study, before this rule)
    assert flags["sasrec"] is (not stage_two_started)
