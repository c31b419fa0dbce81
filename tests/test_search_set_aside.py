"""Ray run folders the search cannot go on from are set aside, never deleted (durable.py)."""
import pytest

from ec4srec.search import durable


def ray_folder(exp, run, snapshot: bool):
    folder = exp / run
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"tuner")
    if snapshot:
        (folder / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    return folder


def test_a_folder_without_a_snapshot_is_set_aside_under_the_first_free_number(tmp_path):
    ray_folder(tmp_path, "run", snapshot=False)
    (tmp_path / "run.unsnapshotted-1").mkdir()
    moved = durable.drop_unsnapshotted(tmp_path, "run")
    # the folder moved, whole, to the next free name; the older one is untouched
    assert moved == tmp_path / "run.unsnapshotted-2"
    assert (moved / "tuner.pkl").read_bytes() == b"tuner" and not (tmp_path / "run").exists()
    assert (tmp_path / "run.unsnapshotted-1").is_dir()


@pytest.mark.parametrize("case", ["snapshot", "no tuner", "no folder"])
def test_a_restorable_or_absent_folder_stays_where_it_is(tmp_path, case):
    if case == "snapshot":
        ray_folder(tmp_path, "run", snapshot=True)
    elif case == "no tuner":
        (tmp_path / "run" / "trial_a").mkdir(parents=True)
    # nothing to set aside: Tune restores a snapshot, and a folder without a Tuner is new
    assert durable.drop_unsnapshotted(tmp_path, "run") is None
    assert (tmp_path / "run").exists() == (case != "no folder")


def test_reopening_a_run_sets_its_folder_aside_and_drops_its_finished_record(tmp_path):
    ray_folder(tmp_path, "run", snapshot=True)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "run.json").write_text("[]")
    durable.reopen_run(tmp_path, "run")
    # the closed run's folder is kept as run.closed-1 and the run is no longer finished
    assert (tmp_path / "run.closed-1" / "tuner.pkl").exists() and not (tmp_path / "run").exists()
    assert not (tmp_path / "runs" / "run.json").exists()
