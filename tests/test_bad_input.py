"""Bad input found by an audit of every entry point: one error line, exit 2, nothing written."""
from __future__ import annotations

import pytest

from ec4srec.cli import main
from ec4srec.config import Config, ConfigError, load_config
from ec4srec.data.io import DataError, read_sequences
from ec4srec.trainer import CHECKPOINT, resolve_device

from test_cli import config_file, interrupt_after_first_epoch, one_error_line  # noqa: F401


@pytest.fixture
def interrupted_run(config_file, tmp_path):
    """A run stopped after epoch 1 of 2: RUN/checkpoint.pt and RUN/config.yaml."""
    return interrupt_after_first_epoch(load_config(config_file), tmp_path / "run")


@pytest.mark.parametrize("override, key", [
    ("model.num_heads=0", "model.num_heads"), ("model.num_heads=-2", "model.num_heads"),
    ("model.num_layers=0", "model.num_layers"), ("model.inner_size=0", "model.inner_size"),
    ("model.gru_hidden_size=0", "model.gru_hidden_size"), ("model.init_std=-1", "model.init_std"),
    ("train.weight_decay=-1", "train.weight_decay"), ("train.seed=-1", "train.seed"),
    ("train.seed=99999999999999999999999", "train.seed"), ("train.threads=99999999999", "train.threads"),
    ("train.lr=.inf", "train.lr"), ("train.device=cudax", "train.device"),
    ("train.device=cuda:abc", "train.device"), ("data.synthetic_seed=-1", "data.synthetic_seed"),
    ("data.max_len=99999999999", "data.max_len"),
])
def test_values_that_would_crash_later_are_config_errors(override, key):
    with pytest.raises(ConfigError) as err:
        Config().with_overrides([override])
    # Each is refused up front by the validator, naming the key (no torch/numpy error later).
    assert key in str(err.value)


def test_caser_filters_and_window_checked():
    with pytest.raises(ConfigError, match="caser_nv"):
        Config().with_overrides(["model.backbone=caser", "model.caser_nv=0", "model.caser_nh=0"])
    # Caser's window is taken from the history: it cannot exceed data.max_len.
    with pytest.raises(ConfigError, match="caser_window"):
        Config().with_overrides(["model.backbone=caser", "model.caser_window=500"])


def test_cuda_device_without_cuda_is_a_config_error():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    # A CPU-only torch asked for a GPU: one ConfigError naming the key, no torch assertion.
    with pytest.raises(ConfigError, match="train.device=cuda"):
        resolve_device("cuda")


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", None])
def test_unreadable_config_file_is_one_error(tmp_path, content):
    path = tmp_path / "c.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    # A directory or a binary file is a ConfigError naming the file.
    assert str(path) in str(err.value)


@pytest.mark.parametrize("token", ["1_0", "+5", "٣"])
def test_data_ids_are_plain_ascii_digits(tmp_path, token):
    path = tmp_path / "d.txt"
    path.write_text(f"1 1 2 3\n2 1 {token} 3\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_sequences(path)
    # int() would take these; the format's ids are ASCII digits: file:line and the token.
    assert f"{path}:2:" in str(err.value) and repr(token) in str(err.value)


def test_data_ids_too_large_or_too_sparse(tmp_path):
    huge = tmp_path / "huge.txt"
    huge.write_text("1 1 2 3\n2 1 99999999999999999999 3\n")
    with pytest.raises(DataError) as err:
        read_sequences(huge)
    # An id beyond int32 is refused at its line (np.int64 would overflow on larger ones).
    assert f"{huge}:2: id 99999999999999999999 is larger" in str(err.value)
    sparse = tmp_path / "sparse.txt"
    sparse.write_text("1 1 2 3\n2 1 1000000 3\n")
    # An item id far beyond the number of items would size the embedding table by the id.
    with pytest.raises(DataError, match="must be about dense"):
        read_sequences(sparse)


def test_truncated_checkpoint_is_one_error(interrupted_run, capsys):
    ckpt = interrupted_run / CHECKPOINT
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    for argv in (["evaluate", "--checkpoint", str(interrupted_run)],
                 ["train", "--output", str(interrupted_run), "--resume"]):
        code = main(argv)
        # Cut off mid-archive (torch raises OSError there): one line naming the file, exit 2.
        assert code == 2 and str(ckpt) in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("override", ["model.hidden_size=32", "method.name=cl4srec", "data.max_len=7"])
def test_resume_refuses_set_that_changes_what_the_run_is(interrupted_run, capsys, override):
    before = (interrupted_run / CHECKPOINT).read_bytes()
    code = main(["train", "--output", str(interrupted_run), "--resume", "--set", override])
    line = one_error_line(capsys.readouterr().err)
    # The model's shape, the method and the data of a run are fixed by its checkpoint.
    assert code == 2 and "contradicts" in line and override.split("=")[0] in line
    assert (interrupted_run / CHECKPOINT).read_bytes() == before


def test_checkpoint_of_another_model_is_one_error(interrupted_run, tmp_path, capsys):
    import torch
    ckpt = torch.load(interrupted_run / CHECKPOINT, weights_only=False)
    ckpt["config"]["model"]["hidden_size"] = 32          # the weights stay 16 wide
    torch.save(ckpt, interrupted_run / CHECKPOINT)
    code = main(["evaluate", "--checkpoint", str(interrupted_run)])
    line = one_error_line(capsys.readouterr().err)
    # The saved weights do not fit the saved config: one line naming the file and a tensor.
    assert code == 2 and str(interrupted_run / CHECKPOINT) in line and "does not fit" in line
    del ckpt["optimizer"]
    ckpt["config"]["model"]["hidden_size"] = 16
    torch.save(ckpt, interrupted_run / CHECKPOINT)
    code = main(["evaluate", "--checkpoint", str(interrupted_run)])
    # A checkpoint missing a part names the part.
    assert code == 2 and "no optimizer" in one_error_line(capsys.readouterr().err)


def test_bad_config_inside_checkpoint_names_the_file(interrupted_run, capsys):
    import torch
    ckpt = torch.load(interrupted_run / CHECKPOINT, weights_only=False)
    ckpt["config"]["train"]["epocs"] = 3
    torch.save(ckpt, interrupted_run / CHECKPOINT)
    code = main(["evaluate", "--checkpoint", str(interrupted_run)])
    line = one_error_line(capsys.readouterr().err)
    # The unknown key is reported with the checkpoint it came from.
    assert code == 2 and str(interrupted_run / CHECKPOINT) in line and "train.epocs" in line


def test_output_that_is_a_file_is_one_error(config_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["train", "--config", str(config_file), "--output", str(blocker)])
    line = one_error_line(capsys.readouterr().err)
    # An --output that cannot be a folder: one line naming the path, exit 2, the file untouched.
    assert code == 2 and str(blocker) in line and blocker.read_text() == "x"


@pytest.mark.parametrize("target", ["dir", "below a file"])
def test_explain_output_that_cannot_be_a_file_is_refused_before_scoring(interrupted_run, tmp_path,
                                                                       capsys, monkeypatch, target):
    import ec4srec.explain_cli
    monkeypatch.setattr(ec4srec.explain_cli, "explain_batch",
                        lambda *a, **kw: pytest.fail("scores were computed"))
    (tmp_path / "blocker").write_text("x")
    output = tmp_path if target == "dir" else tmp_path / "blocker" / "scores.csv"
    code = main(["explain", "--checkpoint", str(interrupted_run), "--output", str(output)])
    line = one_error_line(capsys.readouterr().err)
    # One line naming the path, exit 2, checked before the run is scored (or even loaded).
    assert code == 2 and line.startswith(f"error: --output {output}: ")


@pytest.mark.parametrize("flags, message", [
    (["--reduction-factor", "1"], "--reduction-factor 1.0: must be a finite number > 1"),
    (["--grace-period", "-1"], "--grace-period -1: must be an integer >= 1"),
    (["--num-samples", "0"], "--num-samples 0: must be an integer >= 1"),
    (["--cpus-per-trial", "-1"], "--cpus-per-trial -1.0: must be a finite number > 0"),
])
def test_search_numeric_flags_checked_before_anything_runs(tmp_path, flags, message):
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "tune" / "search.py"
    proc = subprocess.run([sys.executable, str(script), "--dataset", "synthetic", "--storage-path",
                           str(tmp_path / "studies"), *flags], capture_output=True, text=True, timeout=120)
    # argparse's usage error: exit 2, the flag and its bound named, no traceback, no study folder
    # (a reduction factor of 1 used to make ASHA's rung list grow without end).
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "studies").exists()
