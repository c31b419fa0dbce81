"""The speed targets of the hot path, measured against a baseline source tree in the same run.

Every measurement runs in a fresh child interpreter whose ``PYTHONPATH`` puts one source tree's
``ec4srec`` first: the current checkout, or ``--baseline`` (an exported older commit, e.g.
``git archive 1caab7b | tar -x -C /tmp/base``). Children of the two trees alternate round by
round or, with ``--parallel``, run at the same time pinned to one core each, so both see the
same load; each number is the median over ``--rounds``.

Measured per tree (SASRec backbone, default configs, one dataset):
- ``sasrec epoch``: one whole training epoch of plain full-CE SASRec (``Trainer.train_epoch``,
  nothing extrapolated);
- ``eval``: the full ranking of every validation user (``Trainer.validate``);
- ``<method> / sasrec``: every method's step time over the same fixed sample of ``--batches``
  batches, divided by SASRec's over the same sample (EC4SRec variants in their guided phase:
  importance scores from the attention explainer (saliency on other backbones) are set first);
- ``<explainer> update / sasrec epoch``: one importance update over all training rows,
  extrapolated from a fixed random subset of its length-sorted 1024-row batches
  (``--explain-batches``), divided by the whole SASRec epoch.

    python benchmarks/speed_vs_baseline.py --baseline /tmp/base --write
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("sasrec", "cl4srec", "duorec", "ec4srec_ssl", "ec4srec_sl", "ec4srec")
EXPLAINERS = ("occlusion", "saliency", "integrated_gradients", "attention")


# ----------------------------------------------------------------------------- child side
def _child(spec: dict) -> dict:
    import numpy as np
    import torch

    from ec4srec.config import Config
    from ec4srec.data import load_dataset
    from ec4srec.data.batches import make_batch, train_order
    from ec4srec.explain import compute_importance
    from ec4srec.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    base = [f"data.dataset={spec['dataset']}", f"data.data_dir={spec['data_dir']}",
            "train.progress=off", "train.tensorboard=false", *spec.get("overrides", [])]
    dataset = load_dataset(Config().with_overrides(base).data)
    split = dataset.split

    def trainer_for(method: str, extra=()) -> Trainer:
        explainer = "attention" if "model.backbone=sasrec" in base or not any(
            o.startswith("model.backbone=") for o in base) else "saliency"
        config = Config().with_overrides(base + [f"method.name={method}",
                                                 f"method.explainer={explainer}", *extra])
        return Trainer(config, dataset, log=lambda m: None)

    kind = spec["kind"]
    if kind == "sasrec_epoch":
        trainer = trainer_for("sasrec")
        started = time.perf_counter()
        trainer.train_epoch(1)
        epoch = time.perf_counter() - started
        evals = []
        for _ in range(spec["eval_runs"]):
            started = time.perf_counter()
            trainer.validate()
            evals.append(time.perf_counter() - started)
        return {"epoch": epoch, "eval": statistics.median(evals)}
    if kind == "methods":
        # the batch order the config trains with (--set train.bucket_batches=1: random batches)
        tc = Config().with_overrides(base).train
        order = train_order(split.train.length, tc.batch_size, np.random.default_rng(0),
                            tc.bucket_batches)
        sample = order[:spec["batches"]]
        out = {}
        for method in spec["methods"]:
            trainer = trainer_for(method)
            if trainer.method.update_epochs:          # enter the guided phase
                trainer.method.on_epoch_start(trainer.method.update_epochs[0])
            trainer.model.train()
            torch.manual_seed(0)
            times = []
            for _ in range(spec["runs"] + 1):         # the first pass warms caches, untimed
                started = time.perf_counter()
                for rows in sample:
                    loss, _ = trainer.method.loss(make_batch(split.items, split.train, rows), epoch=999)
                    trainer.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    trainer.optimizer.step()
                times.append(time.perf_counter() - started)
            out[method] = statistics.median(times[1:]) * len(order) / len(sample)
        return out
    if kind == "explain":
        # The update's own length-sorted batches (as compute_importance cuts them), a fixed
        # random subset of them timed and scaled: a random subset of ROWS would be padded to
        # its longest row and cost far more per row than the real update.
        from ec4srec.data.batches import eval_order
        from ec4srec.data.split import Examples
        trainer = trainer_for("sasrec")
        batches = eval_order(split.train.length, 1024)
        pick = np.random.default_rng(0).choice(len(batches), spec["batches"], replace=False)
        kwargs = {"ig_steps": spec["ig_steps"]} if spec["explainer"] == "integrated_gradients" else {}
        total = 0.0
        for b in pick:
            rows = batches[b]
            sub = Examples(**{f: getattr(split.train, f)[rows] for f in ("end", "length", "user")})
            started = time.perf_counter()
            compute_importance(trainer.model, split.items, sub, spec["explainer"],
                               max_len=split.max_len, **kwargs)
            total += time.perf_counter() - started
        return {"update": total * len(batches) / len(pick)}
    raise ValueError(kind)


# ----------------------------------------------------------------------------- parent side
def start_child(tree: Path, spec: dict, core: int | None = None) -> subprocess.Popen:
    """A child interpreter measuring ``spec`` with ``tree``'s ec4srec (pinned to ``core``)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    return subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env=env)


def finish_child(proc: subprocess.Popen, tree: Path, spec: dict) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} in {tree} failed:\n{err[-4000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run_child(tree: Path, spec: dict) -> dict:
    return finish_child(start_child(tree, spec), tree, spec)


def run_pair(trees: dict[str, Path], spec: dict, swap: bool) -> dict[str, dict]:
    """Both trees' children at once, pinned to cores 0 and 1 (swapped every other round), so
    that they measure under the same conditions at the same time."""
    procs = {name: start_child(path, spec, core=(i + swap) % 2)
             for i, (name, path) in enumerate(trees.items())}
    return {name: finish_child(proc, trees[name], spec) for name, proc in procs.items()}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(_child(json.loads(sys.argv[2]))))
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import append_markdown, data_dir, header, table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, help="source tree of the baseline commit")
    p.add_argument("--baseline-name", default=None, help="label, e.g. its commit")
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--eval-runs", type=int, default=3)
    p.add_argument("--batches", type=int, default=32)
    p.add_argument("--explain-batches", type=int, default=16,
                   help="timed batches of 1024 rows per update (of 129 on Beauty), scaled")
    p.add_argument("--ig-steps", type=int, nargs="+", default=[20])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--explainers", nargs="+", default=list(EXPLAINERS), choices=EXPLAINERS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", action="store_true",
                   help="run the two trees' children at once, pinned to cores 0 and 1 (with "
                        "--threads 1, on an otherwise idle 2-core machine)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="config override for both trees, e.g. model.backbone=gru4rec")
    p.add_argument("--note", default=None)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    trees = {"baseline": Path(args.baseline).resolve(), "current": ROOT}
    common = {"dataset": args.dataset, "data_dir": data_dir(args.data_dir), "threads": args.threads,
              "overrides": args.overrides}
    load_before = open("/proc/loadavg").read().split()[:3]
    res: dict[str, dict[str, list[float]]] = {t: {} for t in trees}

    def add(tree: str, out: dict, prefix: str = "") -> None:
        for key, value in out.items():
            res[tree].setdefault(prefix + key, []).append(value)

    specs = [({**common, "kind": "sasrec_epoch", "eval_runs": args.eval_runs}, ""),
             ({**common, "kind": "methods", "methods": args.methods, "batches": args.batches,
               "runs": 1}, "method:")]
    for e in args.explainers:
        for steps in (args.ig_steps if e == "integrated_gradients" else [20]):
            name = f"{e} ({steps} steps)" if e == "integrated_gradients" else e
            specs.append(({**common, "kind": "explain", "explainer": e, "batches": args.explain_batches,
                           "ig_steps": steps, "name": name}, "explain:"))

    def record(tree: str, spec: dict, prefix: str, out: dict) -> None:
        add(tree, {spec["name"]: out["update"]} if "name" in spec else out, prefix)

    for r in range(args.rounds):
        if args.parallel:
            for spec, prefix in specs:
                for tree, out in run_pair(trees, spec, swap=bool(r % 2)).items():
                    record(tree, spec, prefix, out)
        else:
            for tree, path in (trees.items() if r % 2 == 0 else reversed(trees.items())):
                for spec, prefix in specs:
                    record(tree, spec, prefix, run_child(path, spec))
        for tree in trees:
            print(f"round {r + 1} {tree}: " + json.dumps({k: round(v[-1], 2) for k, v in res[tree].items()}),
                  flush=True)
    med = {t: {k: statistics.median(v) for k, v in res[t].items()} for t in trees}
    base_label = args.baseline_name or str(trees["baseline"])

    def ratio_rows() -> list[list[str]]:
        rows = []
        for tree in trees:
            m = med[tree]
            rows.append([tree, f"{m['epoch']:.2f}", f"{m['eval']:.3f}"] +
                        [f"{m['method:' + x] / m['method:sasrec']:.2f}x" for x in args.methods[1:]])
        return rows

    what = f"{args.dataset}, {' '.join(args.overrides)}" if args.overrides else args.dataset
    text = header(f"Hot-path speed vs {base_label} ({what}, same run)", args.threads, args.note)
    load_after = open("/proc/loadavg").read().split()[:3]
    mode = ("the two trees' children ran at the same time, pinned to one core each, cores "
            "swapped every round" if args.parallel else "children alternate")
    text += (f"- baseline tree: {base_label}; rounds: {args.rounds} ({mode}; median "
             f"shown); method ratios over the same {args.batches} batches; explainer updates over "
             f"{args.explain_batches} random batches of its 1024-row length-sorted batches, scaled "
             f"to all\n- load average (1/5/15 min): {' '.join(load_before)} before, "
             f"{' '.join(load_after)} after\n\n")
    text += table(["code", "sasrec epoch (s, whole)", "eval all users (s)"] +
                  [f"{x} / sasrec" for x in args.methods[1:]], ratio_rows())
    cur, old = med["current"], med["baseline"]
    text += (f"\nSpeed-up, current vs baseline: SASRec epoch {old['epoch'] / cur['epoch']:.2f}x, "
             f"evaluation {old['eval'] / cur['eval']:.2f}x.\n\n")
    names = [k.split(":", 1)[1] for k in cur if k.startswith("explain:")]
    text += table(["explainer", "baseline update (s)", "current update (s)", "speed-up",
                   "baseline / its sasrec epoch", "current / its sasrec epoch"],
                  [[n, f"{old['explain:' + n]:.1f}", f"{cur['explain:' + n]:.1f}",
                    f"{old['explain:' + n] / cur['explain:' + n]:.2f}x",
                    f"{old['explain:' + n] / old['epoch']:.2f}", f"{cur['explain:' + n] / cur['epoch']:.2f}"]
                   for n in names])
    print(text)
    if args.write:
        append_markdown(text)


if __name__ == "__main__":
    main()
