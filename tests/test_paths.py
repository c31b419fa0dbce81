"""Result files record local paths without a machine-specific prefix (paths.recorded_path), the
paths the tools read back expand again, and nothing committed under results/ names a machine."""
import json
import re
from pathlib import Path

import pytest

from ec4srec.config import Config, dump_config, load_config
from ec4srec.data import DataError
from ec4srec.data.sources import resolve
from ec4srec.paths import expand_path, recorded_path
from ec4srec.report.results import export_study

ROOT = Path(__file__).resolve().parents[1]
ENV = {"HOME": "/home/alice", "EC4SREC_DATA_DIR": "/srv/data"}


@pytest.mark.parametrize("path, recorded, expandable", [
    ("/repo/results/synthetic", "results/synthetic", "/repo/results/synthetic"),
    ("/repo", ".", "/repo"),
    ("/srv/data/beauty.txt.gz", "$EC4SREC_DATA_DIR/beauty.txt.gz", "$EC4SREC_DATA_DIR/beauty.txt.gz"),
    ("/srv/data", "$EC4SREC_DATA_DIR", "$EC4SREC_DATA_DIR"),
    ("/home/alice/diag/run.pt", "~/diag/run.pt", "~/diag/run.pt"),
    ("/tmp/xyz/out/metrics.json", "<...>/out/metrics.json", "/tmp/xyz/out/metrics.json"),
    ("/srv/database/x", "<...>/database/x", "/srv/database/x"),     # a prefix of a name is not a parent
    ("runs/a", "runs/a", "runs/a"),
    ("s3://bucket/exp", "s3://bucket/exp", "s3://bucket/exp"),
    ("/x.txt", "<...>/x.txt", "/x.txt"),                              # a root-level file

    (None, None, None),
])
def test_recorded_path_rules(path, recorded, expandable):
    # the first rule that applies: cwd-relative, data dir, home, else the prefix dropped
    assert recorded_path(path, cwd="/repo", env=ENV) == recorded
    # a path the tools read back keeps only the rules expand_path undoes
    assert recorded_path(path, cwd="/repo", env=ENV, expandable=True) == expandable


def test_expand_path_undoes_the_expandable_rules(monkeypatch):
    monkeypatch.setenv("EC4SREC_DATA_DIR", "/srv/data")
    monkeypatch.setenv("HOME", "/home/alice")
    for path in ("/srv/data/beauty.txt.gz", "/home/alice/x.txt", "/opt/other"):
        # recorded then expanded is the path itself
        assert expand_path(recorded_path(path, expandable=True)) == path
    # only the two recorded forms are expanded: a "$" inside a folder name is a name
    assert expand_path("/data/a$b/x") == "/data/a$b/x" and expand_path("$HOME/x") == "$HOME/x"
    monkeypatch.delenv("EC4SREC_DATA_DIR")
    # an unset variable is named, not turned into a literal folder
    with pytest.raises(ValueError, match=r"\$EC4SREC_DATA_DIR is not set"):
        expand_path("$EC4SREC_DATA_DIR/beauty.txt.gz")


def test_a_dumped_config_records_the_data_dir_portably_and_resolves_back(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "beauty.txt").write_text("1 2 3\n")
    monkeypatch.setenv("EC4SREC_DATA_DIR", str(data_dir))
    config = Config()
    config.data.dataset, config.data.data_dir = "beauty", str(data_dir)
    (tmp_path / "config.yaml").write_text(dump_config(config))
    # the YAML names the variable, not this machine's folder
    assert "data_dir: $EC4SREC_DATA_DIR" in (tmp_path / "config.yaml").read_text()
    loaded = load_config(tmp_path / "config.yaml")
    # read back, it finds the same file
    assert resolve(loaded.data.dataset, loaded.data.data_dir) == data_dir / "beauty.txt"
    monkeypatch.delenv("EC4SREC_DATA_DIR")
    # without the variable: one DataError naming it
    with pytest.raises(DataError, match=r"\$EC4SREC_DATA_DIR is not set"):
        resolve(loaded.data.dataset, loaded.data.data_dir)


def test_export_records_json_paths_outside_the_study_portably(tmp_path, monkeypatch):
    monkeypatch.setenv("EC4SREC_DATA_DIR", "/srv/data")
    exp = tmp_path / "study"
    (exp / "seeds" / "run").mkdir(parents=True)
    record = {"path": str(exp / "run" / "trial_1"), "data": {"source": "/srv/data/beauty.txt.gz"}}
    (exp / "seeds" / "run" / "seed_2020.json").write_text(json.dumps(record))
    export_study(exp, tmp_path / "out")
    exported = json.loads((tmp_path / "out" / "seeds" / "run" / "seed_2020.json").read_text())
    # inside the study: relative to it; the data file: under the data-dir variable
    assert exported == {"path": "run/trial_1", "data": {"source": "$EC4SREC_DATA_DIR/beauty.txt.gz"}}


MACHINE_PATH = re.compile(r'(?<![\w.$~>/])/(?:work|root|tmp|home|check|Users|mnt|opt|srv|data|shared|scratch|efs|var)/')


def test_results_name_no_machine_path():
    offenders = []
    for path in sorted((ROOT / "results").rglob("*")):
        if not path.is_file() or path.suffix in (".png", ".pdf", ".parquet", ".gz", ".pt"):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                      if MACHINE_PATH.search(line)]
    # every path in results/ is relative, under $EC4SREC_DATA_DIR or ~, or has its prefix dropped
    assert not offenders, offenders[:10]


def test_a_config_read_back_from_its_yaml_shares_its_warmup(tmp_path, monkeypatch):
    from ec4srec.warmup import warmup_key, warmup_mismatch
    monkeypatch.setenv("EC4SREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = Config().with_overrides(["method.name=ec4srec"])
    config.data.data_dir = str(tmp_path / "data")
    config.data.dataset = str(tmp_path / "home" / "mine.txt")
    (tmp_path / "config.yaml").write_text(dump_config(config))
    loaded = load_config(tmp_path / "config.yaml")
    # the YAML holds $EC4SREC_DATA_DIR and ~/mine.txt, a checkpoint's config the absolute
    # paths: the same data, so the same warm-up (train --config RUN/config.yaml --warm-start RUN)
    assert loaded.data.data_dir == "$EC4SREC_DATA_DIR" and loaded.data.dataset == "~/mine.txt"
    assert warmup_mismatch(config, loaded) == [] and warmup_key(config) == warmup_key(loaded)
