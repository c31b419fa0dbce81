"""``ec4srec diagnose``: the guidance-room shares on hand-built data, the explainer profile
against a per-row recomputation, and the CLI's outputs and errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ec4srec.cli import _load_run, main
from ec4srec.evaluate import evaluate
from ec4srec.data import load_dataset
from ec4srec.diagnostics import explainer_profile, guidance_room
from ec4srec.explain import explain_batch
from ec4srec.models import build_model

from conftest import tiny_config, write_sequences

# Training rows (leave-one-out: every prefix but the last two targets):
#   u1 [1 2 3 4 5]    -> [1]->2,  [1 2]->3
#   u2 [6 2 7 8 9]    -> [6]->2,  [6 2]->7
#   u3 [1 10 3 11 12] -> [1]->10, [1 10]->3
#   u4 [13 .. 18]     -> [13]->14, [13 14]->15, [13 14 15]->16
#   u5 [21 2 3 19 20] -> [21]->2, [21 2]->3
# 11 rows, 5 of length 1. Same-target groups: 2: {[1], [6], [21]} (no shared item),
# 3: {[1 2], [1 10], [21 2]} ([1 2] shares an item with both others, they with it only),
# every other target alone.
HAND = [[1, 2, 3, 4, 5], [6, 2, 7, 8, 9], [1, 10, 3, 11, 12], [13, 14, 15, 16, 17, 18],
        [21, 2, 3, 19, 20]]


@pytest.fixture
def hand_data(tmp_path):
    path = write_sequences(tmp_path / "hand.txt", HAND)
    return load_dataset(tiny_config(path).data).split


@pytest.mark.parametrize("k_counts, k_zero, reorder_identity", [
    ("unimportant", 5 / 11, 11 / 11),  # k = floor(|s| / 2): 0, 1, 1 for lengths 1, 2, 3
    ("important", 5 / 11, 10 / 11),    # k = |s| - floor(|s| / 2): 1, 1, 2 (a length-1 row's
                                       # ecrop+/emask+ act on at most |s| - 1 = 0 items)
])
def test_guidance_room_hand_computed(hand_data, k_counts, k_zero, reorder_identity):
    mc = tiny_config(method__name="ec4srec", method__updates=1, method__k_counts=k_counts).method
    room = guidance_room(hand_data, mc)
    # the hand-built split has 11 training rows, 5 of them of length 1
    assert room["rows"] == 11 and room["length_1"] == pytest.approx(5 / 11, abs=1e-6)
    # k follows the k_counts rule: rows whose positive views equal the anchor
    assert room["k_zero"] == pytest.approx(k_zero, abs=1e-6)
    assert room["reorder_identity"] == pytest.approx(reorder_identity, abs=1e-6)
    # L_cl- leaves out the rows shorter than neg_min_length = 2
    assert room["cl_neg_left_out"] == pytest.approx(5 / 11, abs=1e-6)
    # targets 7, 10, 14, 15, 16 have one training row each
    assert room["no_partner"] == pytest.approx(5 / 11, abs=1e-6)
    # target 2's three rows share no item (uniform fallback)
    assert room["uniform_fallback"] == pytest.approx(3 / 11, abs=1e-6)
    # of target 3's rows, [1 10] and [21 2] share an item with one partner, [1 2] with two
    assert room["one_sharing_partner"] == pytest.approx(2 / 11, abs=1e-6)
    # two groups of three rows: 2 partners each for 6 of the 11 rows
    assert room["mean_partners"] == pytest.approx(12 / 11, abs=1e-3)


def test_guidance_room_without_length_one_exclusion(hand_data):
    mc = tiny_config(method__name="ec4srec", method__updates=1, method__neg_min_length=1).method
    # neg_min_length = 1 keeps every row in L_cl-
    assert guidance_room(hand_data, mc)["cl_neg_left_out"] == 0.0


def _direct_profile(model, data, mc):
    """The profile's shares recomputed one row at a time, without batching."""
    in_hist, is_last, top_last, last_score, chance = [], [], [], [], []
    model.eval()
    for end, length in zip(data.train.end, data.train.length):
        items = torch.from_numpy(data.items[end - length:end]).view(1, -1)
        lengths = torch.tensor([length])
        with torch.no_grad():
            pred = int(model.scores(model(items, lengths)).argmax(1)) + 1
        scores = explain_batch(model, items, lengths, mc.explainer, torch.tensor([pred]))[0]
        in_hist.append(pred in items[0].tolist())
        is_last.append(pred == int(items[0, -1]))
        if length >= 2:
            top_last.append(int(scores.argmax()) == length - 1)
            last_score.append(float(scores[length - 1]))
            chance.append(1.0 / length)
    return (np.mean(in_hist), np.mean(is_last), np.mean(top_last), np.mean(last_score),
            np.mean(chance))


@pytest.mark.parametrize("explainer", ["occlusion", "saliency"])
def test_explainer_profile_equals_per_row_computation(tiny_file, explainer):
    config = tiny_config(tiny_file, method__name="ec4srec", method__updates=1, method__explainer=explainer)
    data = load_dataset(config.data).split
    torch.manual_seed(0)
    model = build_model(config.model, data.num_items, data.max_len)
    profile = explainer_profile(model, data, config.method, rows=10_000, batch_size=16)
    in_hist, is_last, top_last, last_score, chance = _direct_profile(model, data, config.method)
    # every training row is profiled when fewer than --rows exist
    assert profile["rows"] == len(data.train)
    # the batched shares equal the per-row recomputation
    assert profile["explained_in_history"] == pytest.approx(in_hist, abs=1e-6)
    assert profile["explained_is_last_item"] == pytest.approx(is_last, abs=1e-6)
    assert profile["top_is_last"] == pytest.approx(top_last, abs=1e-6)
    assert profile["last_score"] == pytest.approx(last_score, abs=1e-5)
    # the uniform reference is the mean of 1/|s| over rows of length >= 2
    assert profile["last_score_uniform"] == pytest.approx(chance, abs=1e-6)


def test_explainer_profile_of_the_target(tiny_file):
    config = tiny_config(tiny_file, method__name="ec4srec", method__updates=1, method__explain_target="target")
    data = load_dataset(config.data).split
    model = build_model(config.model, data.num_items, data.max_len)
    profile = explainer_profile(model, data, config.method, rows=50, seed=3)
    # a sample of 50 rows; the explained item is the target itself
    assert profile["rows"] == 50 and profile["explained_is_target"] == 1.0
    # the tiny data has distinct items per user: no target is in its own history
    assert profile["explained_in_history"] == 0.0


def test_cli_diagnose_data_only_writes_json(tiny_file, tmp_path, capsys):
    out = tmp_path / "room.json"
    assert main(["diagnose", "--dataset", str(tiny_file), "--set", "data.max_len=10",
                 "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    # without --method the report is about EC4SRec; no checkpoint: no explainer section
    assert report["method"] == "ec4srec" and "explainer" not in report
    assert report["guidance_room"]["rows"] > 0
    # the printed report names the shares
    assert "ertrl+ = uniform rtrl" in capsys.readouterr().out


def test_cli_diagnose_checkpoint_adds_the_explainer(tiny_file, tmp_path, capsys):
    from ec4srec.config import dump_config
    cfg = tmp_path / "c.yaml"
    cfg.write_text(dump_config(tiny_config(tiny_file, method__name="ec4srec", method__updates=1, train__epochs=2)))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--output", str(run)]) == 0
    out = tmp_path / "d.json"
    assert main(["diagnose", "--checkpoint", str(run), "--rows", "30", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    # a run's report has both sections, the explainer's on the requested sample size, of the
    # weights as saved (the last epoch's) unless --weights best
    assert report["explainer"]["rows"] == 30 and report["guidance_room"]["rows"] > 30
    assert report["checkpoint"]["weights"] == "last" and report["checkpoint"]["epoch"] == 2
    assert report["explainer"]["explainer"] == "occlusion"
    # --set method.* changes how the run is explained, not the run
    assert main(["diagnose", "--checkpoint", str(run), "--rows", "30", "--output", str(out),
                 "--set", "method.explainer=saliency", "--set", "method.explain_target=target"]) == 0
    report = json.loads(out.read_text())
    assert report["explainer"]["explainer"] == "saliency"
    assert report["explainer"]["explained_is_target"] == 1.0
    # the recommendations section: validation users whose top-1 is their own last item, the same
    # share evaluate() reports, and both protocols' NDCG@10
    rec = report["recommendations"]
    trainer = _load_run(run, None, best=False)          # diagnose reads the last weights
    metrics = evaluate(trainer.model, trainer.data, trainer.data.valid)
    assert rec["top1_is_last_item"] == pytest.approx(metrics["last_item_top1"], abs=1e-6)
    assert rec["ndcg@10_unseen"] == pytest.approx(metrics["ndcg@10_unseen"], abs=1e-6)
    # predicted_unseen explains an item outside the row's history, never one inside it
    assert main(["diagnose", "--checkpoint", str(run), "--rows", "30", "--output", str(out),
                 "--set", "method.explain_target=predicted_unseen"]) == 0
    assert json.loads(out.read_text())["explainer"]["explained_in_history"] == 0.0


def test_load_run_weights_last_or_best(tiny_file, tmp_path):
    from ec4srec.checkpoint import load_torch
    from ec4srec.cli import _load_run
    from ec4srec.config import dump_config
    cfg = tmp_path / "c.yaml"
    cfg.write_text(dump_config(tiny_config(tiny_file, train__epochs=2)))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--output", str(run)]) == 0
    # make the best weights differ from the last ones (a run whose best epoch is not its last)
    ckpt = load_torch(run / "checkpoint.pt")
    ckpt["best_weights"] = {k: v * 2 if v.is_floating_point() else v
                            for k, v in ckpt["best_weights"].items()}
    torch.save(ckpt, run / "checkpoint.pt")
    last = _load_run(str(run), None, best=False).model.state_dict()
    best = _load_run(str(run), None, best=True).model.state_dict()
    # best=False keeps the weights as saved, best=True loads the best validation weights
    assert all(torch.equal(last[k], ckpt["model"][k]) for k in last)
    assert all(torch.equal(best[k], ckpt["best_weights"][k]) for k in best)


def test_cli_diagnose_attention_needs_sasrec(tiny_file, tmp_path, capsys):
    from ec4srec.config import dump_config
    cfg = tmp_path / "c.yaml"
    cfg.write_text(dump_config(tiny_config(tiny_file, model__backbone="gru4rec", train__epochs=1)))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--output", str(run)]) == 0
    capsys.readouterr()
    # a GRU4Rec run has no attention weights to explain with: one error line, exit 2
    assert main(["diagnose", "--checkpoint", str(run), "--set", "method.explainer=attention"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a sasrec run" in err[0]


@pytest.mark.parametrize("argv, needle", [
    (["diagnose"], "give --checkpoint"),
    (["diagnose", "--dataset", "synthetic", "--seed", "3"], "needs --checkpoint"),
    (["diagnose", "--checkpoint", "x", "--seed", "-1"], "--seed must be >= 0"),
    (["diagnose", "--dataset", "synthetic", "--output", "{tmp}"], "not a writable file path"),
    (["diagnose", "--checkpoint", "no/such/run"], "no checkpoint"),
    (["diagnose", "--checkpoint", "x", "--dataset", "beauty"], "drop --config"),
    (["diagnose", "--checkpoint", "x", "--set", "train.lr=0.1"], "only method.* keys"),
    (["diagnose", "--dataset", "beauty", "--rows", "10"], "--rows is about a run's explainer"),
    (["diagnose", "--checkpoint", "x", "--rows", "0"], "--rows must be >= 1"),
    (["diagnose", "--dataset", "synthetic", "--set", "method.mu_e=2"], "method.mu_e"),
])
def test_cli_diagnose_errors(argv, needle, capsys, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    # bad input: exit 2 and one error line naming the problem
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]
