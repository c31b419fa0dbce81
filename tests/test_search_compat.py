"""ec4srec/search/compat.py against the installed Ray and Optuna: every private internal it
relies on still exists. A failure here means Ray or Optuna moved: re-read compat.py before
changing the pin in pyproject.toml."""
from __future__ import annotations

import inspect
import json

import pytest

ray = pytest.importorskip("ray")
optuna = pytest.importorskip("optuna")

from ray import tune  # noqa: E402
from ray.tune import registry  # noqa: E402
from ray.tune.impl import tuner_internal  # noqa: E402
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from ec4srec.search import compat  # noqa: E402


def test_the_installed_versions_are_the_pinned_ones():
    installed = {"ray": ray.__version__, "optuna": optuna.__version__}
    # compat.py was written against these versions; another one needs its internals re-checked
    assert installed == compat.PINNED, (
        f"Ray/Optuna {installed} differ from compat.PINNED {compat.PINNED}: re-check every "
        f"internal in ec4srec/search/compat.py, then update PINNED and pyproject.toml")


def test_ray_registry_and_tuner_internals_exist():
    # the registry patch wraps these two methods of Ray's private trainable registry
    assert callable(registry._Registry.register) and callable(registry._Registry.flush_values)
    init = inspect.getsource(tuner_internal.TunerInternal.__init__)
    # a restored Tuner keeps its TuneConfig and RunConfig in these attributes of _local_tuner
    assert "self._tune_config" in init and "self._run_config" in init
    # and the public Tuner holds the TunerInternal as _local_tuner
    assert "self._local_tuner" in inspect.getsource(tune.Tuner.__init__)


def test_the_registry_patch_is_applied_once():
    compat.serialise_ray_registry()
    first = registry._Registry.register
    compat.serialise_ray_registry()
    # the lock wraps Ray's method once, however often a driver asks for it
    assert registry._Registry.register is first and first._ec4srec_locked


def test_optuna_search_internals_exist():
    searcher = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
                            metric="m", mode="max")
    searcher.suggest("t1")
    study, ot_trials, completed = compat.optuna_search_state(searcher)
    # the searcher's study, its trial map and its finished set are where compat reads them
    assert isinstance(study, optuna.Study) and set(ot_trials) == {"t1"} and completed == set()
    storage = compat.optuna_storage(study)
    trial_id = compat.optuna_trial_id(ot_trials["t1"])
    # an Optuna trial's storage id finds it in the study's storage
    assert storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING


def test_the_logger_overrides_meet_rays_methods():
    csv_logger, json_logger = CSVLoggerCallback(), JsonLoggerCallback()
    # the restart-safe loggers override and call these private methods and attributes
    assert callable(csv_logger._restore_from_remote) and callable(json_logger._restore_from_remote)
    assert callable(csv_logger._setup_trial) and isinstance(csv_logger._trial_files, dict)
    assert callable(json_logger.log_trial_start) and isinstance(json_logger._trial_files, dict)


def test_the_recorded_cluster_address_comes_from_rays_address_file(tmp_path, monkeypatch):
    import ray._private.utils as ray_utils
    from ec4srec.search.tuner import answers
    # Ray's private address file is where compat looks (the path Ray itself writes).
    monkeypatch.setattr(ray_utils, "get_ray_address_file", lambda temp_dir: str(tmp_path / "f"))
    assert compat.recorded_cluster_address() is None
    (tmp_path / "f").write_text("127.0.0.2:6379\n")
    assert compat.recorded_cluster_address() == "127.0.0.2:6379"
    # a dead address does not answer (the search then starts a local instance, not a hang)
    assert not answers("127.0.0.1:1", timeout=0.5) and not answers("nonsense")


def test_tunes_restore_hint_is_hidden_and_other_warnings_kept():
    import logging
    import ray.tune.tune as tune_module
    # the text the filter matches is what Tune 2.60 logs when an interrupted fit returns
    assert "Resume experiment with: {restore_entrypoint}" in inspect.getsource(tune_module)
    assert tune_module.logger.name == compat.TUNE_LOGGER
    compat.hide_tune_restore_hint()
    compat.hide_tune_restore_hint()                       # once, however often it is called
    log = logging.getLogger(compat.TUNE_LOGGER)
    assert sum(isinstance(f, compat._NoRestoreHint) for f in log.filters) == 1
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())
    handler = Keep(level=logging.WARNING)
    log.addHandler(handler)
    try:
        log.warning("Experiment has been interrupted, but the most recent state was saved.\n"
                    "Resume experiment with: Tuner.restore(path='x', trainable=...)")
        log.warning("some other warning")
    finally:
        log.removeHandler(handler)
    # Tune's restore hint (a single run's, not the study's) is dropped; other warnings stay
    assert seen == ["some other warning"]


def ended(values: list[float]) -> list[dict]:
    """A trial's reports: guided epochs 1, 2, ... with these validation NDCG@10 values."""
    return [{"guided_epoch": e, "valid/select_ndcg@10": v} for e, v in enumerate(values, 1)]


@pytest.mark.parametrize("replayed, action", [(True, "STOP"), (False, "CONTINUE")])
def test_a_replayed_asha_judges_a_new_trial_against_the_ended_ones(tmp_path, replayed, action):
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from ec4srec.search.options import StudyOptions
    from ec4srec.search.tuner import make_scheduler
    opts = StudyOptions(dataset="synthetic", grace_period=1, storage_path=str(tmp_path)).finalize()
    scheduler = make_scheduler(opts, n_epochs=27, method="sasrec")      # rungs at 1, 3, 9
    histories = [("a", ended([0.50, 0.55, 0.60])), ("b", ended([0.40])), ("c", [{"epoch": 1}])]
    if replayed:
        # a and b reached the first rung; c reported neither the clock nor the metric
        assert compat.replay_asha(scheduler, histories) == 2
        rung_one = dict(scheduler._brackets[0]._rungs)[1]
        assert rung_one == {"ended-a": 0.50, "ended-b": 0.40}
    new = SimpleNamespace(trial_id="new")
    scheduler.on_trial_add(None, new)
    got = scheduler.on_trial_result(None, new, {"guided_epoch": 1, "valid/select_ndcg@10": 0.30})
    # with the ended trials in its rung, 0.30 is below the cutoff (the 2/3 percentile of 0.40
    # and 0.50) and stopped; a fresh ASHA lets the first trial at a rung go on
    assert got == getattr(TrialScheduler, action)


def test_replay_asha_leaves_other_schedulers_alone():
    from ray.tune.schedulers import FIFOScheduler
    # nothing to replay into: no rung is touched
    assert compat.replay_asha(FIFOScheduler(), [("a", ended([0.5]))]) == 0


def _trial_with_checkpoints(tmp_path, on_disk, reported, named="checkpoint_000000"):
    """A restored trial as Tune's controller holds it: its snapshot names ``named`` as its last
    checkpoint; ``on_disk`` checkpoint folders exist; ``result.json`` reports ``reported``."""
    from types import SimpleNamespace

    import pyarrow.fs
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult
    fs = pyarrow.fs.LocalFileSystem()
    folder = tmp_path / "trial_a"
    folder.mkdir()
    for name in on_disk:
        (folder / name).mkdir()
        (folder / name / "trainer.pt").write_bytes(b"x")
    (folder / "checkpoint_000009").mkdir()          # an empty folder (a copy never begun): never
    lines = [{"epoch": i + 1, "training_iteration": i + 1, "checkpoint_dir_name": f"checkpoint_{i:06d}"}
             for i in range(3)]
    lines = [line for line in lines if line["checkpoint_dir_name"] in reported]
    (folder / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"torn')
    manager = _CheckpointManager(tune.CheckpointConfig(num_to_keep=2))
    manager._checkpoint_results = [_TrainingResult(
        checkpoint=tune.Checkpoint(str(folder / named), filesystem=fs), metrics={"epoch": 1})]
    manager._latest_checkpoint_result = manager._checkpoint_results[-1]
    return SimpleNamespace(trial_id="a", run_metadata=SimpleNamespace(checkpoint_manager=manager),
                           storage=SimpleNamespace(storage_filesystem=fs, trial_fs_path=str(folder)))


ALL = ("checkpoint_000000", "checkpoint_000001", "checkpoint_000002")


@pytest.mark.parametrize("on_disk, reported, expected, iteration", [
    (ALL[1:], ALL, ALL[2], 3),            # the snapshot's is deleted: the newest kept one
    (ALL[1:], ALL[:2], ALL[1], 2),        # the newest is not reported yet: the newest reported
    (ALL[2:], ALL[:2], ALL[2], None),     # none kept is reported: the newest, without metrics
    ((), ALL, None, None),                # none kept: the trial starts again
])
def test_a_restored_trial_whose_checkpoint_was_deleted_resumes_from_its_newest_kept_one(
        tmp_path, on_disk, reported, expected, iteration):
    trial = _trial_with_checkpoints(tmp_path, on_disk, reported)
    changed = compat.repoint_lost_checkpoints([trial])
    latest = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
    # the trial is reported as repointed, from the deleted checkpoint to the expected one
    assert changed == [("a", ALL[0], expected)]
    if expected is None:
        # nothing to resume from: Ray's restore is skipped and the trial starts from scratch
        assert latest is None and trial.run_metadata.checkpoint_manager._checkpoint_results == []
    else:
        # the replacement, with the metrics of the result line that reported it (if any)
        assert latest.checkpoint.path == str(tmp_path / "trial_a" / expected)
        assert latest.metrics.get("training_iteration") == iteration


def test_a_restored_trial_whose_checkpoint_is_kept_is_left_alone(tmp_path):
    trial = _trial_with_checkpoints(tmp_path, ALL, ALL, named=ALL[1])
    before = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
    # the snapshot's checkpoint exists: nothing changes, even with a newer one on disk
    assert compat.repoint_lost_checkpoints([trial]) == []
    assert trial.run_metadata.checkpoint_manager.latest_checkpoint_result is before


def test_tunes_restore_is_hooked_once():
    from ray.tune.execution.tune_controller import TuneController
    compat.keep_restores_on_kept_checkpoints()
    hooked = TuneController._restore_trials
    compat.keep_restores_on_kept_checkpoints()
    # the hook wraps Tune's private _restore_trials once, however many runs a driver restores
    assert TuneController._restore_trials is hooked and hooked._ec4srec_repoints
