"""Search overhead per trial: what a trial of the hyperparameter search spends outside training
and validation (actor start or reuse, dataset load, model build, checkpoint restore, checkpoint
saves, reporting), as a share of the trial's wall time. The issue's target: <= 5 %.

    python benchmarks/search_overhead.py                                  # synthetic data
    python benchmarks/search_overhead.py --dataset /tmp/beauty-5k.txt --epochs 4 --explainers saliency
    python benchmarks/search_overhead.py ... --write                      # append to BENCHMARKS.md

(/tmp/beauty-5k.txt: ``zcat /work/shared/data/beauty.txt.gz | head -n 5000 > /tmp/beauty-5k.txt``;
data never goes into the repository.)

Method:
- A real study through the project's own code path: ``ec4srec.search.tuner`` builds the Tuner
  (``connect`` + ``make_tuner``: OptunaSearch with the project's search space, reuse_actors on,
  CheckpointConfig/FailureConfig as in a real study, checkpoint every epoch, shared warm-up
  cache on unless ``--no-warm-start``), FIFO scheduler, ``--trials`` trials x ``--epochs`` epochs,
  at most ``--max-concurrent`` trials at a time, ``--cpus-per-trial`` each, in a local Ray
  instance (``--address local``) and a throw-away experiment folder under /tmp.
- The one substitution: the study's trainable ``train_trial`` is replaced by a probe that calls
  the same ``ec4srec.search.trainable.run_trial`` with a subclass of its ``TuneSession`` and, in
  the trial's worker process, wraps (by subclassing / monkeypatching, not by editing ec4srec/)
  ``dataset_for``, ``Trainer.__init__`` / ``save_checkpoint`` / ``load_checkpoint`` / ``fit``,
  ``WarmupCache.store`` / ``load_into`` and the session's ``restore`` / ``report`` with timers.
  The probe writes one JSON per trial; nothing it measures changes what the trial does.
- On the driver, Ray's ``TuneController._schedule_trial_actor`` (the moment a trial gets a slot:
  a new actor is requested or a cached one reset) and a Tune callback (``on_trial_start``,
  ``on_trial_complete``) are timestamped.
- Per trial: **wall** = slot granted -> trial complete on the driver; **train** = the trainer's
  own epoch time (``LoopState.train_seconds`` accumulated during this trial: importance update +
  training epoch + validation); **overhead** = wall - train, split into actor (slot -> actor
  started/reset), launch (-> the trial function runs), data (dataset load; cached per worker
  with reuse_actors), build (Trainer: model, optimizer, method), restore (Ray checkpoint and/or
  warm-up cache load), ckpt save (trainer checkpoints + warm-up cache stores), report
  (``tune.report`` incl. persisting the checkpoint, minus the save itself) and other (the rest:
  per-epoch bookkeeping such as the best-weights copy, end of fit, Ray's result processing).
  Ray's own ``time_total_s`` (setup to last report) is listed as well. Medians over trials.
- Study level: ``Tuner.fit`` wall time and slot utilisation = sum(train) / (fit wall x slots).
- Direct checkpoint timing: a Trainer of the same base config for ``sasrec`` and ``ec4srec``,
  given Adam state (a few training steps), best weights and (ec4srec) importance scores (one
  importance update with the cheapest listed explainer), ``save_checkpoint`` then
  ``load_checkpoint`` into a fresh Trainer; median of ``--ckpt-runs``.
- Load: /proc/loadavg is read before and after; above 1.5 on this 2-core machine the section
  says that other jobs were running at the same time.
"""
from __future__ import annotations

import os

for _k, _v in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
               "RAY_CHDIR_TO_TRIAL_DIR": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}.items():
    os.environ.setdefault(_k, _v)

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402

PARTS = ["actor", "launch", "data", "build", "restore", "save", "report", "other"]


# ------------------------------------------------------------------ the probe (Ray worker side)
def make_probe(out_dir: str):
    """The replacement for ``ec4srec.search.tuner.train_trial``: same ``run_trial``, timed.
    A closure so that cloudpickle ships it (and ``out_dir``) to the workers by value."""

    def probe_trial(params, study):
        import json as _json
        import os as _os
        import time as _time
        from pathlib import Path as _Path

        from ray import tune as _tune

        import ec4srec.search.trainable as T
        from ec4srec.search import warmcache as W

        t_enter = _time.time()
        rec = {"t_enter": t_enter, "pid": _os.getpid(), "trial_id": _tune.get_context().get_trial_id(),
               "reused_process": bool(getattr(T, "_probe_installed", False)), "params": params}
        for key in ("dataset_s", "build_s", "save_s", "load_s", "restore_s", "report_s",
                    "warm_store_s", "warm_load_s", "train_s"):
            rec[key] = 0.0
        for key in ("n_save", "n_report", "n_warm_store", "epochs", "start_epoch", "ckpt_bytes"):
            rec[key] = 0
        T._probe_rec = rec
        clock = _time.perf_counter

        def add(key, dt, n=None):
            r = T._probe_rec
            r[key] += dt
            if n:
                r[n] += 1

        if not getattr(T, "_probe_installed", False):   # once per worker process
            T._probe_installed = True
            base_trainer, base_dataset_for = T.Trainer, T.dataset_for
            store, load_into = W.WarmupCache.store, W.WarmupCache.load_into

            class ProbeTrainer(base_trainer):
                def __init__(self, *a, **k):
                    t = clock()
                    super().__init__(*a, **k)
                    add("build_s", clock() - t)

                def save_checkpoint(self, path=None):
                    t = clock()
                    p = super().save_checkpoint(path)
                    add("save_s", clock() - t, "n_save")
                    T._probe_rec["ckpt_bytes"] = _Path(p).stat().st_size
                    return p

                def load_checkpoint(self, path):
                    t = clock()
                    super().load_checkpoint(path)
                    add("load_s", clock() - t)

                def fit(self, run_test=True):
                    r = T._probe_rec
                    s0, r["start_epoch"], r["t_fit_start"] = self.state.train_seconds, self.state.epoch, _time.time()
                    try:
                        return super().fit(run_test)
                    finally:
                        r["train_s"] = self.state.train_seconds - s0
                        r["epochs"] = self.state.epoch - r["start_epoch"]
                        r["t_fit_end"] = _time.time()

            def dataset_for(data_config):
                t = clock()
                try:
                    return base_dataset_for(data_config)
                finally:
                    add("dataset_s", clock() - t)

            def timed_store(self, trainer, epoch):
                t = clock()
                existed = (self._dir(trainer.config) / f"epoch_{epoch}.pt").exists()
                try:
                    return store(self, trainer, epoch)
                finally:
                    add("warm_store_s", clock() - t, None if existed else "n_warm_store")

            def timed_load_into(self, trainer, first_update):
                t = clock()
                try:
                    return load_into(self, trainer, first_update)
                finally:
                    add("warm_load_s", clock() - t)

            T.Trainer, T.dataset_for = ProbeTrainer, dataset_for
            W.WarmupCache.store, W.WarmupCache.load_into = timed_store, timed_load_into

        class ProbeSession(T.TuneSession):
            def restore(self, trainer):
                t = clock()
                try:
                    return super().restore(trainer)
                finally:
                    add("restore_s", clock() - t)

            def report(self, metrics, trainer):
                t = clock()
                try:
                    super().report(metrics, trainer)
                finally:
                    add("report_s", clock() - t, "n_report")

        try:
            T.run_trial(params, study, ProbeSession())
        finally:
            r = T._probe_rec
            r["t_exit"] = _time.time()
            out = _Path(out_dir) / f"{r['trial_id']}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(_json.dumps(r, default=str))

    probe_trial.__name__ = "train_trial"
    return probe_trial


# ------------------------------------------------------------------ driver side
def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_study(args, exp_root: Path, probe_dir: Path) -> dict:
    import ray
    from ray import tune
    from ray.tune.execution import tune_controller

    from ec4srec.search import study as S
    from ec4srec.search import tuner as tuner_mod
    from ec4srec.search.ranges import load_ranges

    opts = S.StudyOptions(
        dataset=args.dataset, methods=[args.method], backbones=[args.backbone],
        num_samples=args.trials, max_epochs=args.epochs, cpus_per_trial=args.cpus_per_trial,
        max_concurrent=args.max_concurrent, storage_path=str(exp_root), name="overhead",
        scheduler="fifo", seeds=0, overrides=list(args.overrides), address="local",
        warm_start=args.warm_start, checkpoint_every=1, seed=args.seed)
    opts.finalize()
    # study.connect() starts a local Ray with include_dashboard=True unless smoke_test is set,
    # and that raises "Cannot include dashboard with missing packages" with this venv's minimal
    # ray (no aiohttp). smoke_test is only read by finalize() (already applied) and connect(),
    # so setting it now just turns the dashboard off.
    opts.smoke_test = True
    if args.explainers:
        space = load_ranges(None)
        space["params"]["method.explainer"] = {"choices": list(args.explainers)}
        path = exp_root / "space.yaml"
        import yaml
        path.write_text(yaml.safe_dump(space))
        opts.search_space = str(path)
    opts.exp_dir.mkdir(parents=True, exist_ok=True)
    ranges = load_ranges(opts.search_space)
    t0 = time.time()
    tuner_mod.connect(opts)
    init_s = time.time() - t0

    tuner_mod.train_trial = make_probe(str(probe_dir))       # the only substitution (see docstring)
    stamps: dict[str, dict[str, float]] = {}
    original_schedule = tune_controller.TuneController._schedule_trial_actor

    def schedule(self, trial):
        stamps.setdefault(trial.trial_id, {})["sched"] = time.time()
        return original_schedule(self, trial)

    tune_controller.TuneController._schedule_trial_actor = schedule

    class Stamp(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            stamps.setdefault(trial.trial_id, {})["start"] = time.time()

        def on_trial_complete(self, iteration, trials, trial, **info):
            stamps.setdefault(trial.trial_id, {})["complete"] = time.time()

        on_trial_error = on_trial_complete

    key = opts.runs()[0]
    tuner, num = tuner_mod.make_tuner(opts, key, ranges)
    run_config = tuner._local_tuner.get_run_config()
    run_config.callbacks = [*(run_config.callbacks or []), Stamp()]
    t0 = time.time()
    grid = tuner.fit()
    fit_s = time.time() - t0
    tune_controller.TuneController._schedule_trial_actor = original_schedule
    ray_totals = {}
    for result in grid:
        m = result.metrics or {}
        tid = m.get("trial_id") or Path(result.path).name.removeprefix("trial_")
        ray_totals[tid] = {"time_total_s": m.get("time_total_s"), "error": repr(result.error)[:300]
                           if result.error else None, "warm_start_epoch": m.get("warm_start_epoch", 0),
                           "best": m.get("valid/best_ndcg@10")}
    ray.shutdown()
    return {"opts": opts, "num": num, "fit_s": fit_s, "init_s": init_s, "stamps": stamps,
            "ray": ray_totals}


def trial_rows(study: dict, probe_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(probe_dir.glob("*.json")):
        p = json.loads(path.read_text())
        tid = p["trial_id"]
        st = study["stamps"].get(tid, {})
        if not {"sched", "start", "complete"} <= set(st):
            continue
        wall = st["complete"] - st["sched"]
        parts = {
            "actor": st["start"] - st["sched"],
            "launch": p["t_enter"] - st["start"],
            "data": p["dataset_s"],
            "build": p["build_s"],
            "restore": p["restore_s"] + p["warm_load_s"],
            "save": p["save_s"] + p["warm_store_s"],
            "report": p["report_s"] - p["save_s"],
        }
        parts["other"] = wall - p["train_s"] - sum(parts.values())
        ray_info = study["ray"].get(tid, {})
        rows.append({"trial": tid, "sched": st["sched"], "wall": wall, "train": p["train_s"],
                     "overhead": wall - p["train_s"], "parts": parts, "epochs": p["epochs"],
                     "warm": ray_info.get("warm_start_epoch") or p["start_epoch"],
                     "reused": p["reused_process"], "n_save": p["n_save"],
                     "n_warm_store": p["n_warm_store"], "ckpt_mb": p["ckpt_bytes"] / 2**20,
                     "ray_total": ray_info.get("time_total_s"), "error": ray_info.get("error"),
                     "params": p["params"]})
    rows.sort(key=lambda r: r["sched"])
    return rows


def short_params(params: dict) -> str:
    names = {"method.updates": "p", "method.explainer": "expl"}
    return ", ".join(f"{names.get(k, k.split('.')[-1])}={v}" for k, v in params.items()) or "-"


# ------------------------------------------------------------------ direct checkpoint timing
def checkpoint_timing(args, explainer: str) -> list[list[str]]:
    import torch

    from ec4srec.data import load_dataset
    from ec4srec.data.batches import make_batch, train_order
    from ec4srec.trainer import Trainer
    from ec4srec.search import study as S

    torch.set_num_threads(1)
    opts = S.StudyOptions(dataset=args.dataset, max_epochs=args.epochs, cpus_per_trial=1,
                          overrides=list(args.overrides)).finalize()
    rows = []
    dataset = None
    tmp = Path(tempfile.mkdtemp(prefix="ec4srec-ckpt-bench-"))
    try:
        for method in ("sasrec", "ec4srec"):
            config = S.base_config(opts, method, args.backbone)
            config.method.explainer = explainer
            config.method.updates = 1
            dataset = dataset or load_dataset(config.data)
            trainer = Trainer(config, dataset, log=lambda m: None)
            data = trainer.data
            order = train_order(data.train.length, config.train.batch_size, trainer.rng,
                                config.train.bucket_batches)
            first = trainer.method.update_epochs[0] if trainer.method.update_epochs else 1
            t = time.perf_counter()
            trainer.method.on_epoch_start(first)            # importance scores (ec4srec)
            update_s = time.perf_counter() - t
            trainer.model.train()
            for rows_ in order[:5]:                         # Adam state
                batch = make_batch(data.items, data.train, rows_)
                loss, _ = trainer.method.loss(batch, first)
                trainer.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                trainer.optimizer.step()
            trainer.state.epoch = first
            trainer.best_weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            saves, loads = [], []
            fresh = Trainer(config, dataset, log=lambda m: None)
            for i in range(args.ckpt_runs):
                path = tmp / f"{method}_{i}.pt"
                t = time.perf_counter()
                trainer.save_checkpoint(path)
                saves.append(time.perf_counter() - t)
                t = time.perf_counter()
                fresh.load_checkpoint(path)
                loads.append(time.perf_counter() - t)
            size = path.stat().st_size / 2**20
            rows.append([method, f"{size:.1f}", f"{statistics.median(saves):.3f}",
                         f"{statistics.median(loads):.3f}",
                         f"{update_s:.1f}" if method != "sasrec" else "-"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


# ------------------------------------------------------------------ output
def render(args, study: dict, rows: list[dict], ckpt_rows, load_before: str, load_after: str) -> str:
    f = lambda x: f"{x:.2f}"  # noqa: E731
    opts = study["opts"]
    table_rows = []
    for r in rows:
        table_rows.append([r["trial"], short_params(r["params"]), f"{r['epochs']}"
                           + (f" (+{r['warm']} warm)" if r["warm"] else ""),
                           "yes" if r["reused"] else "no", f(r["wall"]), f(r["train"]),
                           f(r["overhead"]), f"{100 * r['overhead'] / r['wall']:.1f}",
                           *[f(r["parts"][k]) for k in PARTS],
                           f(r["ray_total"]) if r["ray_total"] is not None else "-"])
    med = lambda key: statistics.median(key(r) for r in rows)  # noqa: E731
    table_rows.append(["**median**", "", "", "", f(med(lambda r: r["wall"])),
                       f(med(lambda r: r["train"])), f(med(lambda r: r["overhead"])),
                       f"**{statistics.median(100 * r['overhead'] / r['wall'] for r in rows):.1f}**",
                       *[f(med(lambda r, k=k: r["parts"][k])) for k in PARTS],
                       f(statistics.median(r["ray_total"] for r in rows if r["ray_total"] is not None))
                       if any(r["ray_total"] is not None for r in rows) else "-"])
    columns = ["trial", "params", "epochs", "reused worker", "wall s", "train s", "overhead s",
               "overhead %", *[f"{k} s" for k in PARTS], "Ray time_total_s"]
    sum_train = sum(r["train"] for r in rows)
    slots = min(opts.max_concurrent or args.trials, int(2 // args.cpus_per_trial) or 1)
    util = 100 * sum_train / (study["fit_s"] * slots)
    med_pct = statistics.median(100 * r["overhead"] / r["wall"] for r in rows)
    loads = [float(x) for x in (load_before.split()[0], load_after.split()[0])]
    busy = max(loads) > 1.5
    note = args.note
    if busy:
        extra = ("other training jobs were running on the same 2 cores during this run "
                 f"(load average {load_before} before, {load_after} after), so absolute times "
                 "are pessimistic and noisy")
        note = f"{note}; {extra}" if note else extra
    def split(reused: str, label: str) -> str:
        sel = [100 * r["overhead"] / r["wall"] for r in rows if ("yes" if r["reused"] else "no") == reused]
        if not sel:
            return f"no {label}"
        return f"median {statistics.median(sel):.1f} % over {len(sel)} {label}"

    title = f"Search overhead per trial ({Path(args.dataset).name}, {args.method}/{args.backbone})"
    errored = [r["trial"] for r in rows if r["error"]]
    ckpt_saves = statistics.median(r["n_save"] for r in rows)
    detail = [
        f"- study: `ec4srec.search.tuner` (connect + make_tuner, trainable swapped for the timing "
        f"probe), {opts.num_samples} trials x {opts.max_epochs} epochs, FIFO, reuse_actors on, "
        f"{args.cpus_per_trial:g} CPU per trial, at most {opts.max_concurrent} at a time, "
        f"checkpoint every epoch, warm-up cache {'on' if opts.warm_start else 'off'}, "
        f"overrides {list(opts.overrides) or 'none'}"
        + (f", explainer choices {list(args.explainers)}" if args.explainers else ""),
        f"- load average (1/5/15 min): {load_before} before, {load_after} after"
        + (" -- **other training jobs were running on the same 2 cores at the same time**"
           if busy else ""),
        f"- Tuner.fit: {study['fit_s']:.1f} s for {len(rows)} trials (Ray init {study['init_s']:.1f} s, "
        f"not counted); slot utilisation sum(train) / (fit wall x {slots} slots) = {util:.0f} %",
        f"- checkpoints per trial (median): {ckpt_saves:g} trainer checkpoints of "
        f"{statistics.median(r['ckpt_mb'] for r in rows):.1f} MiB",
        f"- **median overhead: {med_pct:.1f} % of trial wall time** (target <= 5 %: "
        f"{'met' if med_pct <= 5 else 'not met'})" + (f"; errored trials: {errored}" if errored else ""),
        f"- split by worker: {split('no', 'trials on a new worker process (actor start, imports)')}; "
        f"{split('yes', 'trials on a reused worker')}; pooled sum(overhead) / sum(wall) = "
        f"{100 * sum(r['overhead'] for r in rows) / sum(r['wall'] for r in rows):.1f} %. A study "
        f"starts at most one worker per slot, so with n trials on k slots only k of n trials pay "
        f"the new-worker cost",
        "",
        "Per trial (wall = slot granted -> trial complete on the driver; train = the trainer's "
        "own epoch time, importance updates included; overhead = wall - train = the columns "
        "actor ... other):",
        "",
    ]
    text = common.header(title, 1, note) + "\n".join(detail) + "\n" + common.table(columns, table_rows)
    if ckpt_rows:
        text += ("\nDirect checkpoint timing (same base config, Adam state + best weights"
                 " (+ importance scores), median of "
                 f"{args.ckpt_runs}):\n\n" + common.table(
                     ["method", "size MiB", "save_checkpoint s", "load_checkpoint s",
                      "importance update s (for reference)"], ckpt_rows))
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="synthetic", help="synthetic | beauty | ... | PATH")
    p.add_argument("--method", default="ec4srec")
    p.add_argument("--backbone", default="sasrec")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--explainers", nargs="+", help="restrict the searched explainer choices")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-warm-start", dest="warm_start", action="store_false")
    p.add_argument("--seed", type=int, default=0, help="TPE seed")
    p.add_argument("--ckpt-runs", type=int, default=5, help="0: skip the direct checkpoint timing")
    p.add_argument("--keep", action="store_true", help="keep the experiment folder under /tmp")
    p.add_argument("--write", action="store_true", help="append the section to BENCHMARKS.md")
    p.add_argument("--note")
    args = p.parse_args(argv)
    if "/" in args.dataset or args.dataset.endswith(".txt"):
        args.dataset = str(Path(args.dataset).expanduser().resolve())

    load_before = loadavg()
    print(f"load average before: {load_before}", flush=True)
    exp_root = Path(tempfile.mkdtemp(prefix="ec4srec-overhead-"))
    probe_dir = exp_root / "probe"
    try:
        study = run_study(args, exp_root, probe_dir)
        rows = trial_rows(study, probe_dir)
        if not rows:
            print("no trial finished; nothing to report", file=sys.stderr)
            return 1
        ckpt_rows = (checkpoint_timing(args, (args.explainers or ["saliency"])[0])
                     if args.ckpt_runs > 0 else [])
    finally:
        if args.keep:
            print(f"experiment folder kept: {exp_root}")
        else:
            shutil.rmtree(exp_root, ignore_errors=True)
    load_after = loadavg()
    print(f"load average after: {load_after}", flush=True)
    text = render(args, study, rows, ckpt_rows, load_before, load_after)
    print("\n" + text)
    if args.write:
        common.append_markdown(text)
        print(f"appended to {common.BENCHMARKS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
