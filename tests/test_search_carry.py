"""Carried trials (ec4srec/search/carry.py): an unfinished trial's newest checkpoint in the
study's durable state, continued exactly by the trial that restarts it on another machine."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ec4srec.checkpoint import CheckpointError, load_torch
from ec4srec.search import carry
from ec4srec.search.command import parse
from ec4srec.search.plan import main as plan_main
from ec4srec.search.trainable import LocalSession, run_trial
from ec4srec.search.watch import BudgetedOptunaSearch
from test_search_plan import snapshot, write_study
from test_tuning_helpers import GUIDED, require_method, tiny_config

ROOT = Path(__file__).resolve().parents[1]
RUN = "synthetic-sasrec-sasrec"


def study_of(config, **extra):
    return {"base": config.to_dict(), "checkpoint_every": 1, **extra}


def rows(reports):
    """A trial's result rows as a carry keeps them."""
    return [dict(r) for r in reports]


def fake_checkpoint(path: Path, scale: float = 1.0) -> bytes:
    """A small trainer-checkpoint-shaped file (its bytes)."""
    state = {"model": {"w": torch.full((4, 3), scale)}, "best_weights": {"w": torch.zeros(4, 3)},
             "optimizer": {}, "loop": {"epoch": 1}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path.read_bytes()


@pytest.mark.parametrize("method", ["sasrec", *GUIDED[:1]])
def test_a_trial_continued_from_its_carry_equals_the_uninterrupted_run(tmp_path, method):
    require_method(method)
    config = tiny_config(method, epochs=4, extra=["method.updates=1"])      # update at epoch 2
    params = {"train.lr": 0.002}
    full = LocalSession(tmp_path / "full")
    run_trial(params, study_of(config), full)
    lost = LocalSession(tmp_path / "lost", stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_trial(params, study_of(config), lost)
    # the lost machine's trial carried at its newest checkpoint (epoch 2)
    exp = tmp_path / "exp"
    carry.write_carry(exp, RUN, "old", params, "checkpoint_000001",
                      lost.checkpoints[-1].read_bytes(), rows(lost.reports))
    carried = carry.read_carries(exp, RUN)["old"]
    # a new trial with the same params, on a machine with no checkpoint of its own, continues it
    new = LocalSession(tmp_path / "new")
    run_trial({**params, carry.CARRIED_KEY: "old"},
              study_of(config, carried={"old": carried.checkpoint_bytes()}), new)
    assert [r["epoch"] for r in new.reports] == [3, 4]
    assert all(r["restored_from_epoch"] == 2 for r in new.reports)
    # every number it reports is the uninterrupted trial's
    keep = ("valid/", "train/")
    same = [{k: v for k, v in r.items() if k.startswith(keep) or k == "epoch"} for r in new.reports]
    assert same == [{k: v for k, v in r.items() if k.startswith(keep) or k == "epoch"}
                    for r in full.reports[2:]]
    a, b = load_torch(full.checkpoints[-1]), load_torch(new.checkpoints[-1])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key])
    assert repr(a["method"]) == repr(b["method"])          # importance scores included


def test_a_carry_whose_bytes_are_missing_starts_the_trial_from_scratch_and_says_so(tmp_path, capsys):
    new = LocalSession(tmp_path)
    run_trial({carry.CARRIED_KEY: "gone"}, study_of(tiny_config(epochs=1)), new)
    # nothing to continue: it trains from epoch 1, and the log says why
    assert [r["epoch"] for r in new.reports] == [1] and new.reports[0]["restored_from_epoch"] == 0
    assert "carried for trial gone is not in this run's study constants" in capsys.readouterr().out


def test_a_carry_drops_the_best_weights_and_is_read_back_checked(tmp_path):
    source = fake_checkpoint(tmp_path / "trainer.pt")
    history = [{"epoch": 1, "v": 0.1}, {"epoch": 2, "v": 0.2}]
    meta = carry.write_carry(tmp_path, RUN, "t1", {"train.lr": 0.1, carry.CARRIED_KEY: "t0"},
                             "checkpoint_000001", source, history)
    raw = json.loads(meta.read_text())
    # the json names its .pt, the epoch of the history's last row, and no continuation key
    assert raw["epoch"] == 2 and raw["file"] == "t1.checkpoint_000001.pt"
    assert raw["params"] == {"train.lr": 0.1} and raw["history"] == history
    state = load_torch(tmp_path / "carried" / RUN / raw["file"])
    # the best weights are gone, the model is the checkpoint's
    assert state["best_weights"] is None and torch.equal(state["model"]["w"], torch.ones(4, 3))
    carried = carry.read_carries(tmp_path, RUN)["t1"]
    assert carried.epoch == 2 and carried.params == {"train.lr": 0.1}
    assert carried.checkpoint_bytes() == (tmp_path / "carried" / RUN / raw["file"]).read_bytes()


@pytest.mark.parametrize("damage, message", [
    ("flip", "does not match its size and SHA-256"),
    ("delete", "is missing"),
    ("json", "not a readable carried trial"),
])
def test_a_damaged_carry_is_one_error_naming_its_file(tmp_path, damage, message):
    carry.write_carry(tmp_path, RUN, "t1", {}, "checkpoint_000000",
                      fake_checkpoint(tmp_path / "trainer.pt"), [{"epoch": 1}])
    folder = tmp_path / "carried" / RUN
    pt = folder / "t1.checkpoint_000000.pt"
    if damage == "flip":
        data = bytearray(pt.read_bytes())
        data[len(data) // 2] ^= 0xFF
        pt.write_bytes(bytes(data))
    elif damage == "delete":
        pt.unlink()
    else:
        (folder / "t1.json").write_text('{"trial_id": "t1", "par')
    with pytest.raises(CheckpointError) as info:
        carry.read_carries(tmp_path, RUN)
    # the error names the damaged file and how to go on without it
    assert message in str(info.value) and str(folder) in str(info.value)
    assert "from scratch" in str(info.value)


def test_a_carry_never_goes_back_an_epoch_and_keeps_one_checkpoint_file(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "trainer.pt")
    carry.write_carry(tmp_path, RUN, "t1", {}, "checkpoint_000002", ckpt, [{"epoch": 3}])
    # an older checkpoint (a late export racing the driver) does not replace a newer carry
    assert carry.write_carry(tmp_path, RUN, "t1", {}, "checkpoint_000001", ckpt, [{"epoch": 2}]) is None
    assert carry.carried_epoch(tmp_path, RUN, "t1") == 3
    carry.write_carry(tmp_path, RUN, "t1", {}, "checkpoint_000003", ckpt, [{"epoch": 4}])
    # a newer one replaces it, and the old .pt goes
    assert sorted(p.name for p in (tmp_path / "carried" / RUN).iterdir()) == \
        ["t1.checkpoint_000003.pt", "t1.json"]


def test_the_trial_continuing_a_carry_takes_its_place(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "trainer.pt")
    carry.write_carry(tmp_path, RUN, "old", {"x": 1}, "checkpoint_000001", ckpt, [{"epoch": 2}])
    carry.write_carry(tmp_path, RUN, "new", {"x": 1, carry.CARRIED_KEY: "old"},
                      "checkpoint_000000", ckpt, [{"epoch": 2}, {"epoch": 3}])
    # one carry of the trial is left, the continuing one's
    assert sorted(carry.read_carries(tmp_path, RUN)) == ["new"]
    assert carry.drop_carry(tmp_path, RUN, "new") and not carry.drop_carry(tmp_path, RUN, "new")
    assert not any((tmp_path / "carried" / RUN).iterdir())


def write_trial(exp: Path, trial_id: str, reported: list[tuple[int, str | None]],
                folders: list[str], finished: bool = False) -> Path:
    """A Ray trial folder: result rows (epoch, the checkpoint each reported), checkpoint folders
    with a trainer file, params.json, optionally FINISHED.json."""
    folder = exp / RUN / f"trial_{trial_id}"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"train.lr": 0.01}))
    (folder / "result.json").write_text("".join(
        json.dumps({"epoch": e, "valid/ndcg@10": e / 10, "checkpoint_dir_name": c,
                    "config": {}, "pid": 1}) + "\n" for e, c in reported))
    for name in folders:
        fake_checkpoint(folder / name / carry.TRAINER_FILE, scale=float(name[-1]))
    if finished:
        (folder / carry.FINISHED_MARKER).write_text("{}")
    return folder


def test_carry_unfinished_carries_the_running_trials_at_their_newest_kept_checkpoint(tmp_path):
    exp = tmp_path
    # a: running, its newest reported checkpoint (1) not on disk, so checkpoint 0 (epoch 2)
    write_trial(exp, "a", [(1, None), (2, "checkpoint_000000"), (3, "checkpoint_000001")],
                ["checkpoint_000000"])
    write_trial(exp, "b", [(1, "checkpoint_000000")], ["checkpoint_000000"], finished=True)
    write_trial(exp, "c", [(1, "checkpoint_000000")], ["checkpoint_000000"])
    (exp / "trials" / RUN).mkdir(parents=True)
    (exp / "trials" / RUN / "c.json").write_text("{}")          # c ended (its record)
    write_trial(exp, "d", [(1, None)], [])                       # d never checkpointed
    # a stale carry of c, from before it ended
    carry.write_carry(exp, RUN, "c", {}, "checkpoint_000000",
                      fake_checkpoint(tmp_path / "x.pt"), [{"epoch": 1}])
    written = carry.carry_unfinished(exp)
    # only the running trial with a kept, reported checkpoint is carried, at that checkpoint
    assert written == [(RUN, "a", 2)]
    carries = carry.read_carries(exp, RUN)
    assert sorted(carries) == ["a"]
    assert [r["epoch"] for r in carries["a"].history] == [1, 2]
    assert "config" not in carries["a"].history[0] and carries["a"].params == {"train.lr": 0.01}
    # a second pass changes nothing
    assert carry.carry_unfinished(exp) == []


def test_carry_unfinished_keeps_the_final_of_a_trial_that_ended_on_its_own(tmp_path):
    from ec4srec.search import finals
    session = LocalSession(tmp_path / "local")
    run_trial({}, study_of(tiny_config(epochs=2)), session)         # ended: 2 of 2 epochs
    folder = write_trial(tmp_path, "e", [(1, None), (2, "checkpoint_000000")], [], finished=True)
    (folder / "checkpoint_000000").mkdir()
    (folder / "checkpoint_000000" / carry.TRAINER_FILE).write_bytes(
        session.checkpoints[-1].read_bytes())
    carry.carry_unfinished(tmp_path)
    # an ended trial is offered to the run's finals, as the driver does when a trial ends
    assert finals.read_final(tmp_path, RUN)["trial_id"] == "e"


def test_the_searcher_hands_each_carry_to_one_trial(tmp_path):
    searcher = BudgetedOptunaSearch.__new__(BudgetedOptunaSearch)
    searcher.budget_run = RUN
    searcher.carry_points = {carry.params_key({"train.lr": 0.5}): ("old", 4, [{"epoch": 4}])}
    replayed = []
    searcher.on_carry = lambda trial_id, history: replayed.append((trial_id, history))
    config = searcher._continue_carry("new", {"train.lr": 0.5})
    # the first trial with the carry's params continues it; ASHA learns its past under its id
    assert config == {"train.lr": 0.5, carry.CARRIED_KEY: "old"}
    assert replayed == [("new", [{"epoch": 4}])]
    # a later trial with the same params (a repeated draw) starts from scratch
    assert searcher._continue_carry("later", {"train.lr": 0.5}) == {"train.lr": 0.5}
    assert searcher._continue_carry("other", {"train.lr": 0.1}) == {"train.lr": 0.1}


def test_a_resume_over_a_damaged_carry_is_one_error_and_writes_nothing(tmp_path, capsys):
    opts = write_study(tmp_path, used_s=10.0, epoch_s=1.0)
    carry.write_carry(opts.exp_dir, RUN, "t1", {}, "checkpoint_000000",
                      fake_checkpoint(tmp_path / "trainer.pt"), [{"epoch": 1}])
    (opts.exp_dir / "carried" / RUN / "t1.checkpoint_000000.pt").write_bytes(b"cut")
    before = snapshot(opts.exp_dir)
    parsed, resume = parse(["--resume", "--plan-only", "--storage-path", str(tmp_path),
                            "--name", "s", "--slots", "2"])
    # the damaged carry is named in one error line, exit 2, and no file changes
    assert plan_main(parsed, resume=resume) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "t1.checkpoint_000000.pt" in err and "SHA-256" in err
    assert snapshot(opts.exp_dir) == before


def test_the_carry_command_carries_a_study_and_refuses_a_folder_without_one(tmp_path):
    exp = tmp_path / "s"
    write_trial(exp, "a", [(1, "checkpoint_000000")], ["checkpoint_000000"])
    script = str(ROOT / "tune" / "carry.py")
    done = subprocess.run([sys.executable, script, "--experiment", str(exp)],
                          capture_output=True, text=True, timeout=120)
    # no study.json: one error line, exit 2, nothing carried
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no study here" in done.stderr
    assert not (exp / "carried").exists()
    (exp / "study.json").write_text("{}")
    done = subprocess.run([sys.executable, script, "--experiment", str(exp)],
                          capture_output=True, text=True, timeout=120)
    # the running trial is carried and the command says so
    assert done.returncode == 0, done.stderr
    assert f"{RUN}: trial a carried at epoch 1" in done.stdout
    assert sorted(carry.read_carries(exp, RUN)) == ["a"]


def recorder_trial(exp: Path, trial_id: str, epoch: int):
    """A Ray trial as the driver's callbacks see it, with a checkpoint reported at ``epoch``."""
    from types import SimpleNamespace
    folder = write_trial(exp, trial_id, [(e, f"checkpoint_00000{e - 1}") for e in range(1, epoch + 1)],
                         [f"checkpoint_00000{epoch - 1}"])
    last = {"epoch": epoch, "valid/ndcg@10": epoch / 10, "config": {"train.lr": 0.01}}
    trial = SimpleNamespace(trial_id=trial_id, last_result=last, local_path=str(folder),
                            config={"train.lr": 0.01}, error=None)
    return trial, SimpleNamespace(path=str(folder / f"checkpoint_00000{epoch - 1}"))


@pytest.mark.parametrize("enabled", [True, False])
def test_the_driver_carries_a_trial_at_each_checkpoint_unless_told_not_to(tmp_path, enabled):
    from ec4srec.search.durable import TrialRecorder
    recorder = TrialRecorder(tmp_path, RUN, carry=enabled)
    trial, checkpoint = recorder_trial(tmp_path, "a", 2)
    recorder.on_checkpoint(0, [], trial, checkpoint)
    carry.flush()
    carries = carry.read_carries(tmp_path, RUN)
    # with carries on, the trial is carried at the checkpoint's epoch with its history; off: none
    if enabled:
        assert carries["a"].epoch == 2 and [r["epoch"] for r in carries["a"].history] == [1, 2]
        assert "config" not in carries["a"].history[-1]
    else:
        assert carries == {}


def test_a_trial_that_ends_leaves_no_carry_even_with_a_write_still_queued(tmp_path):
    import threading

    from ec4srec.search.durable import TrialRecorder
    recorder = TrialRecorder(tmp_path, RUN)
    trial, checkpoint = recorder_trial(tmp_path, "a", 1)
    gate = threading.Event()
    carry.submit(gate.wait, 5)                 # the writer is busy: the carry below waits
    recorder.on_checkpoint(0, [], trial, checkpoint)
    threading.Timer(0.2, gate.set).start()
    recorder.on_trial_complete(0, [], trial)
    carry.flush()
    # the record is written after the queued carry, and the carry is dropped after it
    assert (tmp_path / "trials" / RUN / "a.json").exists()
    assert carry.read_carries(tmp_path, RUN) == {}


def test_a_failed_carry_write_is_one_line_and_a_vanished_checkpoint_none(capsys):
    def broken():
        raise ValueError("disk says no")

    def vanished():
        raise FileNotFoundError("checkpoint_000001")
    carry.submit(broken)
    carry.submit(vanished)
    carry.flush()
    out = capsys.readouterr().out
    # the driver goes on; a failure is named once, a checkpoint Ray deleted first is skipped
    assert out == "[carry] not written: ValueError: disk says no\n"


def test_no_carry_is_a_study_option_a_resume_may_turn_off(tmp_path):
    from ec4srec.search.options import read_manifest, write_manifest
    from ec4srec.search.resume import resumed_options
    parsed, _ = parse(["--no-carry"])
    # the flag turns carries off; by default they are on
    assert parsed.carry is False and parse([])[0].carry is True
    opts = write_study(tmp_path, used_s=10.0, epoch_s=1.0)
    assert read_manifest(opts.exp_dir / "study.json")["carry"] is True
    again, _ = parse(["--resume", "--no-carry", "--storage-path", str(tmp_path), "--name", "s"])
    resumed = resumed_options(again, opts.exp_dir / "study.json")
    # a resume with --no-carry keeps the study's other options and turns carries off
    assert resumed.carry is False and resumed.methods == opts.methods
    write_manifest(resumed)
    assert read_manifest(opts.exp_dir / "study.json")["carry"] is False


def test_each_restart_continues_its_own_carry_or_the_one_with_its_params():
    c = {cid: carry.Carry(trial_id=cid, params={"x": x}, epoch=2) for cid, x in (("a", 1), ("b", 2))}
    restarts = [("a", {"x": 1}),
                ("n", {"x": 2}),      # continued b, lost before its own first checkpoint
                ("m", {"x": 2}),      # the same params again: b is taken
                ("z", {"x": 3})]      # no carry: from scratch
    # a restart takes its own carry, else the one with its params, and each carry goes once
    assert carry.match_restarts(c, restarts) == {"a": c["a"], "b": c["b"]}


def test_the_most_promising_carried_restart_goes_first():
    def carried(cid, x, best):
        return carry.Carry(trial_id=cid, params={"x": x}, epoch=2,
                           history=[{"epoch": 1, "valid/best_ndcg@10": best / 2},
                                    {"epoch": 2, "valid/best_ndcg@10": best}])
    c = {"a": carried("a", 1, 0.05), "b": carried("b", 2, 0.06)}
    restarts = [("z", {"x": 3}), ("a", {"x": 1}), ("y", {"x": 4}), ("b", {"x": 2})]
    # the carried restarts first, by the best validation their carries reached; the others
    # after them in their order (a lane of one slot continues b, the better, first)
    assert carry.order_restarts(c, restarts, "valid/best_ndcg@10") == [
        ("b", {"x": 2}), ("a", {"x": 1}), ("z", {"x": 3}), ("y", {"x": 4})]


def test_a_carry_keeps_the_best_weights_while_its_trial_contends_for_the_run_best(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "trainer.pt")
    best = "valid/best_ndcg@10"

    def kept(trial_id, value, epoch):
        meta = carry.write_carry(tmp_path, RUN, trial_id, {}, f"checkpoint_{epoch:06d}", ckpt,
                                 [{"epoch": epoch, best: value}])
        pt = tmp_path / "carried" / RUN / json.loads(meta.read_text())["file"]
        return load_torch(pt)["best_weights"] is not None, json.loads(meta.read_text())["best_weights"]

    # the run's only trial may end as its best: its carry keeps the weights a final needs
    assert kept("a", 0.05, 1) == (True, True)
    # a weaker trial beside it drops them (a third of the file)
    assert kept("b", 0.04, 1) == (False, False)
    # once it leads, it keeps them, and the trial it overtook drops them at its next carry
    assert kept("b", 0.06, 2) == (True, True)
    assert kept("a", 0.055, 2) == (False, False)
    # an ended trial's record counts as the run's best too
    (tmp_path / "trials" / RUN).mkdir(parents=True)
    (tmp_path / "trials" / RUN / "c.json").write_text(
        json.dumps({"trial_id": "c", "history": [{"epoch": 9, best: 0.07}]}))
    assert kept("b", 0.065, 3) == (False, False)
    # ... unless it errored (never the run's best); a tie contends
    (tmp_path / "trials" / RUN / "c.json").write_text(
        json.dumps({"trial_id": "c", "history": [{"epoch": 9, best: 0.07}], "error": "boom"}))
    assert kept("b", 0.065, 4) == (True, True)
    assert kept("a", 0.065, 3) == (True, True)
    # an unreadable record: it cannot tell, so the weights stay
    (tmp_path / "trials" / RUN / "d.json").write_text('{"trial_id": "d", "hist')
    assert kept("a", 0.01, 4) == (True, True)
