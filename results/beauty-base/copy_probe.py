"""Where the "recommend the item just seen" behaviour lives: on 3,000 validation users (or, with
a second argument, 3,000 training rows) of a run's checkpoint, the share whose top-1 item is
their own last item, the mean probability of that item and of the target, in eval mode and in
training mode (dropout on).

    python results/beauty-base/copy_probe.py RUN/checkpoint.pt          # validation users
    python results/beauty-base/copy_probe.py RUN/checkpoint.pt train    # training rows
"""
import os, sys, torch, numpy as np
from ec4srec.checkpoint import load_torch
from ec4srec.config import Config
from ec4srec.data import load_dataset
from ec4srec.models import build_model, refresh_dropout_banks
from ec4srec.data.batches import make_batch
torch.set_num_threads(1); torch.manual_seed(0)
ck = load_torch(sys.argv[1]); cfg = Config.from_dict(ck["config"]); cfg.data.data_dir = os.environ.get("EC4SREC_DATA_DIR")
ds = load_dataset(cfg.data); sp = ds.split
m = build_model(cfg.model, sp.num_items, sp.max_len); m.load_state_dict(ck["model"])
ex = sp.train if len(sys.argv) > 2 else sp.valid
rows = np.random.default_rng(0).choice(len(ex), 3000, replace=False)
b = make_batch(sp.items, ex, rows)
last = b.items.gather(1, (b.lengths - 1).view(-1, 1)).view(-1)
with torch.no_grad():
    for mode in ("eval", "train"):
        m.train(mode == "train"); refresh_dropout_banks(m); m.begin_step()
        h = m(b.items, b.lengths); s = m.scores(h)
        p = s.softmax(1)
        top = s.argmax(1) + 1
        print(mode, "top1=last %.3f" % (top == last).float().mean(), "p(last) %.3f" % p.gather(1, (last-1).view(-1,1)).mean(),
              "p(target) %.4f" % p.gather(1, (b.targets-1).view(-1,1)).mean(), "top1=target %.3f" % (top == b.targets).float().mean())
