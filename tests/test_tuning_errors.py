"""Malformed inputs of the search and its report are one clear error each (exit 2, one `error:`
line, nothing half-written): a study.json that is truncated, malformed or from another version,
a corrupt trainer checkpoint, a malformed trials/seeds table. Paths in the tables and exports are
relative to the experiment folder."""
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from ec4srec.checkpoint import CheckpointError, load_torch, save_torch
from ec4srec.report.results import TableError, export_study, read_table, write_trial_tables

ROOT = Path(__file__).resolve().parents[1]


def report_main():
    spec = importlib.util.spec_from_file_location("tune_report", ROOT / "tune" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------ study.json
def good_manifest() -> dict:
    import dataclasses

    from ec4srec.search.study import STUDY_VERSION, StudyOptions
    return {"version": STUDY_VERSION, **dataclasses.asdict(StudyOptions(dataset="synthetic"))}


@pytest.mark.parametrize("content, message", [
    (json.dumps(good_manifest())[:40], "not valid JSON (truncated or corrupt?)"),
    ("", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({**good_manifest(), "version": 99}), "study format version 99"),
    (json.dumps({**good_manifest(), "num_trials": 3}), "unknown study options ['num_trials']"),
    (json.dumps({**good_manifest(), "max_epochs": "ten"}), "option 'max_epochs' has the wrong type"),
    (json.dumps({**good_manifest(), "methods": "sasrec"}), "option 'methods' has the wrong type"),
])
def test_bad_study_json_is_one_error_and_resume_changes_nothing(tmp_path, capsys, content, message):
    from ec4srec.search.study import StudyOptions, main
    exp = tmp_path / "s"
    exp.mkdir()
    (exp / "study.json").write_text(content)
    before = files(exp)
    # exit 2 before Ray starts, one error line naming the file and the problem
    assert main(StudyOptions(storage_path=str(tmp_path), name="s"), resume=True) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {exp / 'study.json'}:") and message in err
    # nothing in the study folder was touched
    assert files(exp) == before


def test_study_json_without_version_is_read_as_version_1(tmp_path):
    from ec4srec.search.study import read_manifest
    raw = good_manifest()
    raw.pop("version")
    (tmp_path / "study.json").write_text(json.dumps(raw))
    # studies written before the version field existed still resume
    assert read_manifest(tmp_path / "study.json")["_version"] == 1


# ------------------------------------------------------------------ checkpoints
def corrupt(path: Path, kind: str) -> None:
    good = path.read_bytes()
    path.write_bytes({"truncated": good[: len(good) // 2], "empty": b"", "text": b"not a checkpoint\n",
                      "zeros": b"\0" * 64}[kind])


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "zeros"])
def test_corrupt_checkpoint_is_one_error_naming_the_file(tmp_path, kind):
    import torch
    path = tmp_path / "checkpoint.pt"
    save_torch(path, {"model": {"w": torch.zeros(100)}})
    corrupt(path, kind)
    with pytest.raises(CheckpointError) as err:
        load_torch(path)
    # CheckpointError (a ValueError) names the file, on one line, instead of torch's internals
    assert str(err.value).startswith(f"{path}: not a readable checkpoint") and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_cli_reports_a_corrupt_checkpoint_in_one_line(tmp_path, capsys, command):
    import torch

    from ec4srec.cli import main
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  dataset: synthetic\nmodel:\n  hidden_size: 8\n  num_heads: 1\n")
    save_torch(run / "checkpoint.pt", {"model": {"w": torch.zeros(100)}})
    corrupt(run / "checkpoint.pt", "truncated")
    before = files(run)
    argv = (["evaluate", "--checkpoint", str(run)] if command == "evaluate"
            else ["train", "--output", str(run), "--resume", "--set", "train.epochs=1"])
    # exit status 2 and one error line naming the checkpoint
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "checkpoint.pt" in err
    # the checkpoint is left as it was (nothing overwritten)
    assert files(run)["checkpoint.pt"] == before["checkpoint.pt"]


# ------------------------------------------------------------------ trials / seeds tables
SEEDS_HEADER = ("dataset,method,backbone,seed,"
                + ",".join(f"test/{m}" for m in ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20"))
                + "\n")


@pytest.mark.parametrize("name, content, message", [
    ("trials.csv", "run,state\nx,completed\n", "missing column(s) ['valid/ndcg@10']"),
    ("trials.csv", "run,valid/ndcg@10\nx,0.1\ny,oops\n", "column 'valid/ndcg@10' holds a non-number: 'oops' (row 3)"),
    ("trials.csv", 'run,valid/ndcg@10\n"x,0.1\n', "not a readable CSV table"),
    ("trials.csv", "", "not a readable CSV table"),
    ("seeds.csv", "dataset,method,backbone,seed\nb,sasrec,sasrec,1\n", "missing column(s) ['test/hr@5'"),
    ("seeds.csv", SEEDS_HEADER + "b,sasrec,sasrec,1" + ",0.1" * 6 + "\nb,sasrec,,2" + ",0.1" * 6 + "\n",
     "row 3: empty 'backbone' cell"),
    ("trials.csv", "run,valid/ndcg@10\nx,0.1\n,0.2\n", "row 3: empty 'run' cell"),
])
def test_malformed_table_is_one_error_and_no_report_is_written(tmp_path, capsys, name, content, message):
    (tmp_path / name).write_text(content)
    # read_table raises TableError naming the file
    with pytest.raises(TableError, match="^" + str(tmp_path / name).replace("/", "/")):
        read_table(tmp_path / name)
    # tune/report.py: exit 2, one error line, no report folder and no export written
    assert report_main()(["--experiment", str(tmp_path), "--export", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path / name}:") and message in err
    assert not (tmp_path / "report").exists() and not (tmp_path / "out").exists()


def test_header_only_tables_render_what_there_is(tmp_path, capsys):
    (tmp_path / "trials.csv").write_text("run,state,valid/ndcg@10\n")
    (tmp_path / "seeds.csv").write_text(SEEDS_HEADER)
    # tables without rows (a study whose trials all errored early) are read as empty
    assert read_table(tmp_path / "trials.csv").empty and read_table(tmp_path / "seeds.csv").empty
    # tune/report.py renders them (nothing to tabulate) and exports them: exit 0, no error
    assert report_main()(["--experiment", str(tmp_path), "--export", str(tmp_path / "out")]) == 0
    # ... without an error line, and the export holds them
    assert capsys.readouterr().err == "" and (tmp_path / "out" / "trials.csv").exists()


# ------------------------------------------------------------------ relative paths
def test_trials_table_paths_are_relative_to_the_experiment_folder(tmp_path):
    exp = tmp_path / "exp"
    hist = [{"epoch": 1, "valid/ndcg@10": 0.1, "time_total_s": 1.0}]
    records = [{"trial_id": "a", "params": {}, "history": hist, "error": None,
                "path": "r-sasrec-sasrec/trial_a"},                                  # current form
               {"trial_id": "b", "params": {}, "history": hist, "error": None,
                "path": str(exp / "r-sasrec-sasrec" / "trial_b")},                   # old absolute form
               {"trial_id": "c", "params": {}, "history": hist, "error": None,
                "path": "/bucket/elsewhere/r-sasrec-sasrec/trial_c"}]                # a URI's path
    trials, _ = write_trial_tables(exp, {"r-sasrec-sasrec": (("r", "sasrec", "sasrec"), records)}, 1)
    # every trial's path is <run>/<trial folder>, relative to the experiment folder
    assert pd.read_csv(exp / "trials.csv")["path"].tolist() == [
        "r-sasrec-sasrec/trial_a", "r-sasrec-sasrec/trial_b", "r-sasrec-sasrec/trial_c"]


def test_grid_records_carry_relative_trial_paths(tmp_path):
    from types import SimpleNamespace

    from ec4srec.search.runs import grid_records
    grid = [SimpleNamespace(metrics_dataframe=None, metrics={"trial_id": "a"}, config={},
                            error=None, path=str(tmp_path / "s" / "run" / "trial_a"))]
    # the record (runs/<run>.json and trials.csv) names the trial folder relative to the study
    assert grid_records(grid, "run")[0]["path"] == "run/trial_a"


def test_export_carries_paths_relative_to_the_experiment_folder(tmp_path):
    exp, dest = tmp_path / "studies" / "s", tmp_path / "results" / "s"
    exp.mkdir(parents=True)
    manifest = {**good_manifest(), "storage_path": str(tmp_path / "studies"), "name": "s"}
    (exp / "study.json").write_text(json.dumps(manifest))
    (exp / "summary.json").write_text(json.dumps({"exp": str(exp), "report": str(exp / "report"),
                                                  "trials": 1}))
    pd.DataFrame({"run": ["r"], "valid/ndcg@10": [0.1], "path": [str(exp / "r" / "trial_a")]}
                 ).to_csv(exp / "trials.csv", index=False)
    export_study(exp, dest)
    text = "".join(p.read_text() for p in dest.rglob("*") if p.is_file())
    # no exported file holds the machine's path of the experiment folder
    assert str(exp) not in text and str(tmp_path / "studies") not in text
    # the paths are relative to the experiment folder: the study itself ".", its parent ".."
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["exp"] == "." and summary["report"] == "report" and summary["trials"] == 1
    assert json.loads((dest / "study.json").read_text())["storage_path"] == ".."
    assert pd.read_csv(dest / "trials.csv")["path"].tolist() == ["r/trial_a"]
