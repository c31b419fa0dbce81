"""The paper's settings shipped as ec4srec/configs/paper/<dataset>-<method>.yaml."""
from __future__ import annotations

import itertools

import pytest
import yaml

from ec4srec.cli import main
from ec4srec.config import METHODS, Config, ConfigError, load_config
from ec4srec.configs import list_paper_configs, paper_config_path

DATASETS = ("beauty", "clothing", "sports", "ml-1m")
NAMES = [f"{d}-{m}" for d, m in itertools.product(DATASETS, METHODS)]


def test_one_file_per_dataset_and_method():
    # Exactly one shipped file per (dataset, method), found through importlib.resources.
    assert list_paper_configs() == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_paper_config_loads_and_matches_its_name(name):
    config = load_config(f"paper:{name}")           # the call `--config paper:NAME` makes
    dataset, _, method = name.rpartition("-")
    # It loads and validates (load_config returns a validated Config).
    assert isinstance(config, Config) and config.validate() is config
    # Its method is the one its file name says ...
    assert config.method.name == method
    # ... and so is its dataset.
    assert config.data.dataset == dataset
    # The paper regime: SASRec backbone and (for every contrastive method) dot-product
    # similarity at tau = 1, whatever the package defaults are ...
    assert config.model.backbone == "sasrec"
    if method != "sasrec":
        assert config.method.similarity == "dot" and config.method.tau == 1.0
    # ... a 150-epoch budget (Fig. 3) and random, not length-bucketed, batches (upstream).
    assert config.train.epochs == 150 and config.train.bucket_batches == 1
    # Embedding size 64 (Sec. 5.1.4) and upstream's early-stopping patience of 10.
    assert config.model.hidden_size == 64 and config.train.patience == 10
    if method.startswith("ec4srec"):
        # The guided variants explain with occlusion (Sec. 5.1.4) and warm up with L_rec + CL + SL.
        assert config.method.explainer == "occlusion" and config.method.warmup_loss == "paper"


@pytest.mark.parametrize("name", NAMES)
def test_paper_config_is_partial_with_a_cited_header(name):
    text = paper_config_path(name).read_text()
    raw = yaml.safe_load(text)
    # The header is a comment block that cites the paper's implementation section.
    assert text.startswith("# ") and "Sec. 5.1.4" in text
    # Only the four config sections appear ...
    assert set(raw) <= {"data", "model", "method", "train"}
    full = sum(len(v) for v in Config().to_dict().values())
    # ... and it is partial: fewer than half of a full config's keys.
    assert sum(len(v) for v in raw.values()) < full // 2


@pytest.mark.parametrize("name, expected", [
    ("beauty-ec4srec", (0.5, 5, 256)), ("beauty-ec4srec_ssl", (0.3, 5, 256)),
    ("clothing-ec4srec", (0.2, 9, 512)), ("clothing-ec4srec_ssl", (0.2, 9, 512)),
    ("sports-ec4srec", (0.5, 5, 512)), ("ml-1m-ec4srec", (0.5, 5, 256)),
])
def test_reported_best_values(name, expected):
    config = load_config(f"paper:{name}")
    # mu_e (Sec. 5.3.4), p (Sec. 5.3.1) and batch size per dataset, as docs/paper-settings.md lists.
    assert (config.method.mu_e, config.method.updates, config.train.batch_size) == expected


def test_unknown_paper_name_lists_the_available_names():
    with pytest.raises(ConfigError) as info:
        load_config("paper:beauty-ec4rec")
    message = str(info.value)
    # The error names the unknown config ...
    assert "unknown paper config paper:beauty-ec4rec" in message
    # ... suggests the closest name ...
    assert "did you mean paper:beauty-ec4srec" in message
    # ... and lists every available name.
    assert all(name in message for name in NAMES)


def test_plain_path_still_loads(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 3}\n")
    # A file path (not paper:) is read as before.
    assert load_config(str(path)).train.epochs == 3 and load_config(path).train.epochs == 3


def test_cli_unknown_paper_config_exits_2_with_one_error_line(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--config", "paper:nope", "--output", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    # Exit status 2 and exactly one "error: ..." line, no traceback ...
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: unknown paper config")
    # ... that lists the available names.
    assert "beauty-ec4srec" in lines[0]
    # Nothing is written into --output.
    assert not out.exists()


def test_cli_paper_config_with_overrides(tmp_path):
    from ec4srec.cli import build_parser, resolve_config
    args = build_parser().parse_args(["train", "--config", "paper:sports-duorec", "--set",
                                      "train.epochs=2", "--output", str(tmp_path / "run")])
    config = resolve_config(args)
    # The CLI resolves paper:NAME like a file: the file's values ...
    assert (config.data.dataset, config.method.name, config.train.batch_size) == ("sports", "duorec", 512)
    # ... with --set applied on top, the rest of the file kept.
    assert config.train.epochs == 2 and config.method.sl_anchor == "dropout"
