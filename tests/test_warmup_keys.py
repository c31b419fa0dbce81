"""Shared warm-ups by design: guided runs pick their warm-up params as one of K fixed configs
(seeded by the study's best cl4srec/duorec trials), the first K trials take the K keys, and a
trial waits for a live trial producing its warm-up instead of training it again beside it."""
import json

import optuna
import pytest

from test_tuning_helpers import TINY, ray_session

from ec4srec.config import ConfigError
from ec4srec.search import study as study_mod
from ec4srec.search import tuner
from ec4srec.search.ranges import dump_ranges, load_ranges
from ec4srec.search.space import WARMUP_KEY, SearchSpace, narrowing_problem
from ec4srec.search.warmcache import LEASE, WarmupCache

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space_file(tmp_path, keys="warmup_keys: 3\n", name="space.yaml"):
    path = tmp_path / name
    path.write_text(keys + """params:
  train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
  method.tau: {low: 0.05, high: 1.5, log: true}
  method.similarity: {choices: [dot, cosine]}
  method.mu_e: {low: 0.1, high: 0.9, step: 0.1}
  method.updates: {choices: [1]}
common: [train.lr]
methods:
  cl4srec: [method.tau, method.similarity]
  ec4srec: [method.tau, method.similarity, method.mu_e, method.updates]
""")
    return path


@pytest.mark.parametrize("bad", ["0", "-2", "x", "true", "1.5"])
def test_warmup_keys_must_be_a_positive_whole_number(tmp_path, bad):
    # anything but a whole number >= 1 is one error naming the file and the keyword
    with pytest.raises(ConfigError, match="space.yaml.*warmup_keys"):
        load_ranges(space_file(tmp_path, f"warmup_keys: {bad}\n"))


def test_a_guided_run_samples_a_key_and_gets_its_fixed_warmup(tmp_path):
    ranges = load_ranges(space_file(tmp_path))
    space = SearchSpace("ec4srec", "sasrec", 6, ranges)
    # the warm-up params are those acting before the first update; mu_e and p are guided
    assert space.warmup_params == ["train.lr", "method.tau", "method.similarity"]
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    seen = {}
    for _ in range(12):
        trial = study.ask()
        config = space(trial)
        k = trial.params[WARMUP_KEY]
        # Optuna sees the key and the guided params, never the warm-up params themselves ...
        assert set(trial.params) == {WARMUP_KEY, "method.mu_e", "method.updates"}
        # ... which the config gets as the key's fixed values, the same at every draw
        assert config == space.warmup_values(k)
        seen.setdefault(k, config)
        assert seen[k] == config
        study.tell(trial, 0.0)
    # another SearchSpace of the same run (a resumed driver) draws the same K configs
    again = SearchSpace("ec4srec", "sasrec", 6, load_ranges(space_file(tmp_path)))
    assert [again.warmup_values(k) for k in range(3)] == [space.warmup_values(k) for k in range(3)]
    # the values lie in their ranges
    for k in range(3):
        v = space.warmup_values(k)
        assert 1e-4 <= v["train.lr"] <= 1e-2 and v["method.similarity"] in ("dot", "cosine")
    # the first K trials take keys 0..K-1
    assert space.points_to_evaluate(20) == [{WARMUP_KEY: k} for k in range(3)]
    assert space.points_to_evaluate(2) == [{WARMUP_KEY: 0}, {WARMUP_KEY: 1}]


def test_baselines_and_spaces_without_keys_are_unchanged(tmp_path):
    ranges = load_ranges(space_file(tmp_path))
    # a baseline run samples its params as always
    trial = optuna.create_study().ask()
    assert SearchSpace("cl4srec", "sasrec", 6, ranges)(trial) is None
    assert set(trial.params) == {"train.lr", "method.tau", "method.similarity"}
    # without warmup_keys a guided run samples every param per trial
    plain = load_ranges(space_file(tmp_path, "", name="plain.yaml"))
    trial = optuna.create_study().ask()
    assert SearchSpace("ec4srec", "sasrec", 6, plain)(trial) is None and WARMUP_KEY not in trial.params
    # the key count round-trips through the study's active space file, and changing it on a
    # resume is refused (the shared warm-ups were drawn when the study began)
    assert load_ranges_text(tmp_path, dump_ranges(ranges))["warmup_keys"] == 3
    assert "warmup_keys" in narrowing_problem(ranges, plain, [("ec4srec", "sasrec")], "new.yaml")


def load_ranges_text(tmp_path, text):
    path = tmp_path / "dumped.yaml"
    path.write_text(text)
    return load_ranges(path)


def test_keys_are_seeded_by_the_best_baseline_trials(tmp_path):
    opts = study_mod.StudyOptions(dataset="synthetic", storage_path=str(tmp_path), name="s").finalize()
    runs = opts.exp_dir / "runs"
    runs.mkdir(parents=True)

    def record(lr, score):
        return {"params": {"train.lr": lr, "method.tau": 0.2, "method.similarity": "cosine"},
                "history": [{"valid/ndcg@10": score}], "error": None}
    (runs / "synthetic-cl4srec-sasrec.json").write_text(json.dumps([record(1e-3, 0.1), record(2e-3, 0.3)]))
    (runs / "synthetic-duorec-sasrec.json").write_text(json.dumps([record(5e-3, 0.2)]))
    seeds = tuner.baseline_warmups(opts, ("synthetic", "ec4srec", "sasrec"), 3)[:3]
    # best cl4srec, best duorec, then the next cl4srec
    assert [s["train.lr"] for s in seeds] == [2e-3, 5e-3, 1e-3]
    # baselines get none
    assert tuner.baseline_warmups(opts, ("synthetic", "duorec", "sasrec"), 3) == []
    space = SearchSpace("ec4srec", "sasrec", 6, load_ranges(space_file(tmp_path)), warmup_configs=seeds)
    # key k's warm-up is the k-th seed
    assert space.warmup_values(1)["train.lr"] == 5e-3 and space.warmup_values(0)["train.lr"] == 2e-3


class FakeConfig:
    pass


def test_a_trial_waits_for_a_live_producer_of_its_warmup(tmp_path, monkeypatch):
    cache = WarmupCache(tmp_path, epochs=[1, 2, 4])
    monkeypatch.setattr("ec4srec.search.warmcache.warmup_key", lambda config: "key")
    (tmp_path / "key").mkdir()
    lease = tmp_path / "key" / LEASE
    import time
    lease.write_text(json.dumps({"first_update": 5, "epoch": 1, "epoch_seconds": 1.0, "time": time.time()}))
    (tmp_path / "key" / "epoch_1.pt").write_bytes(b"x")
    calls = []

    def fake_sleep(seconds):          # the producer finishes epochs 2 and 3 meanwhile
        calls.append(seconds)
        epoch = 1 + len(calls)
        if epoch == 2:
            (tmp_path / "key" / "epoch_2.pt").write_bytes(b"x")
        lease.write_text(json.dumps({"first_update": 5, "epoch": epoch, "epoch_seconds": 1.0,
                                     "time": time.time()}))
    # a consumer whose first update is at 4 can use epochs below 4; of the cached epochs
    # (1, 2, 4) the producer has stored 1: it waits until epoch 2 is there, then stops
    waited = cache.wait_for_producer(FakeConfig(), first_update=4, sleep=fake_sleep)
    assert len(calls) == 1 and waited == 1.0
    # a consumer that needs nothing the producer has not stored yet does not wait
    assert cache.wait_for_producer(FakeConfig(), first_update=3, sleep=fake_sleep) == 0.0
    # a stale lease (not renewed for 3 epochs + grace) is ignored
    lease.write_text(json.dumps({"first_update": 5, "epoch": 1, "epoch_seconds": 1.0, "time": time.time() - 3600}))
    assert cache.wait_for_producer(FakeConfig(), first_update=5, sleep=fake_sleep) == 0.0


@pytest.mark.slow
def test_keyed_trials_share_one_warmup_in_a_real_study(tmp_path):
    ray_session()
    opts = study_mod.StudyOptions(
        dataset="synthetic", storage_path=str(tmp_path), name="keyed", methods=["ec4srec"],
        num_samples=3, max_epochs=6, scheduler="fifo", seeds=0, cpus_per_trial=1,
        gpus_per_trial=0, max_concurrent=1, status_every=1e9,
        search_space=str(space_file(tmp_path, "warmup_keys: 1\n")),
        overrides=[o for o in TINY if not o.startswith("data.")]).finalize()
    summary = study_mod.run(opts)
    import pandas as pd
    trials = pd.read_csv(f"{summary['exp']}/trials.csv")
    # one key: every trial has the same warm-up params ...
    assert trials["train.lr"].nunique() == 1 and trials["method.tau"].nunique() == 1
    # ... and every trial after the first starts from the shared warm-up (p = 1, N = 6:
    # first update at epoch 3, warm-up epochs 1-2)
    assert sorted(trials["warm_start_epoch"].tolist()) == [0, 2, 2]
    assert summary["warm_start"]["skipped"] == 4
