"""Every exact shortcut of the hot path against the plain computation it replaces."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ec4srec.config import ModelConfig
from ec4srec.models import build_model
from ec4srec.models.base import SequenceEncoder, last_real

NUM_ITEMS, MAX_LEN, D = 40, 12, 16
BACKBONES = ["sasrec", "gru4rec", "caser"]


def make(backbone: str, layers: int = 2, dropout: float = 0.5, gru_layers: int = 1):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, hidden_size=D, num_layers=layers, num_heads=2,
                      inner_size=32, gru_hidden_size=24, gru_layers=gru_layers, caser_window=3,
                      caser_nv=2, caser_nh=2,
                      dropout=dropout, attn_dropout=dropout, gru_dropout=dropout,
                      caser_dropout=dropout)
    return build_model(cfg, NUM_ITEMS, MAX_LEN)


def batch(seed: int = 1, rows: int = 7, width: int = 9):
    """Right-padded histories of mixed lengths (1 .. width), random ids."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (rows,), generator=gen)
    lengths[0] = width
    lengths[1] = 1
    items = torch.randint(1, NUM_ITEMS + 1, (rows, width), generator=gen)
    items[torch.arange(width)[None, :] >= lengths[:, None]] = 0
    return items, lengths


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_sasrec_last_position_block_equals_all_positions(layers):
    model = make("sasrec", layers).eval()
    items, lengths = batch()
    emb = model.embed_items(items)
    with torch.no_grad():
        fast = model.encode_embedded(emb, lengths)
        plain = last_real(model.hidden_states(emb), lengths)
    # Running the last block on the last real position only gives the all-positions state there.
    assert torch.allclose(fast, plain, atol=1e-5)


def test_sasrec_last_position_block_same_gradients_in_training():
    model = make("sasrec", 2, dropout=0.0).train()
    items, lengths = batch(seed=3)
    grads = []
    for fast in (True, False):
        model.zero_grad()
        emb = model.embed_items(items)
        h = model.encode_embedded(emb, lengths) if fast else last_real(model.hidden_states(emb), lengths)
        (h * torch.linspace(-1, 1, D)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    # Training mode (dropout 0, so both paths are deterministic): the same parameter gradients.
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_sasrec_attention_row_of_last_query_matches_full_weights():
    model = make("sasrec", 2).eval()
    items, lengths = batch()
    emb = model.embed_items(items)
    with torch.no_grad():
        _, weights = model.encode_embedded(emb, lengths, return_attention=True)
        x = model._input(emb)
        x = model.ffn[0](model.attn[0](x)[0])
        _, full = model.attn[1](x, need_weights=True)                          # [B, H, L, L]
    row = full.gather(2, (lengths - 1).view(-1, 1, 1, 1).expand(-1, 2, 1, full.shape[-1]))
    # The last block's weights are the full weights' row at the last real query.
    assert weights[-1].shape == (7, 2, 1, 9)
    assert torch.allclose(weights[-1], row, atol=1e-6)


@pytest.mark.parametrize("backbone, gru_layers", [(b, 1) for b in BACKBONES] + [("gru4rec", 3)])
def test_occlusion_states_equal_one_pass_per_copy(backbone, gru_layers):
    model = make(backbone, gru_layers=gru_layers).eval()
    items, lengths = batch(seed=5, rows=9)
    emb = model.embed_items(items).detach()
    fast = model.occlusion_states(emb, lengths)
    plain = SequenceEncoder.occlusion_states(model, emb, lengths, internal_batch_size=5)
    # Each backbone's shortcut equals re-encoding every occluded copy in full.
    assert torch.allclose(fast, plain, atol=1e-5)
    # Columns past each row's length stay exactly 0.
    pad = torch.arange(items.shape[1])[None, :] >= lengths[:, None]
    assert (fast[pad] == 0).all()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_occlusion_states_need_eval_mode(backbone):
    model = make(backbone).train()
    items, lengths = batch()
    # The shortcuts assume deterministic (dropout-free) encoders.
    if type(model).occlusion_states is not SequenceEncoder.occlusion_states:
        with pytest.raises(RuntimeError, match="eval mode"):
            model.occlusion_states(model.embed_items(items), lengths)


# ------------------------------------------------------------------ ertrl+ util table
def _retrieval_split(seed: int = 0):
    from ec4srec.data.io import RawSequences
    from ec4srec.data.split import leave_one_out
    rng = np.random.default_rng(seed)
    # 60 users over 12 items: many shared targets, groups above and below the candidate cap.
    seqs = [list(rng.choice(12, rng.integers(3, 9), replace=False) + 1) for _ in range(60)]
    return leave_one_out(RawSequences.from_lists([[int(v) for v in s] for s in seqs]), max_len=8)


@pytest.mark.parametrize("max_candidates", [3, 64])
def test_util_table_gives_the_same_partners_as_per_batch_util(max_candidates):
    from ec4srec.methods.retrieval import SameTargetIndex
    split = _retrieval_split()
    index = SameTargetIndex(split.items, split.train)
    R = len(split.train)
    importance = torch.rand(R, 8, generator=torch.Generator().manual_seed(0))
    table = index.util_table(importance, chunk=37)                 # several chunks
    rows = torch.arange(R)
    items, lengths = index.histories(rows)
    scores = importance[:, :items.shape[1]]
    # One entry per (row, other member of its group).
    assert table.shape == (index.pair_count(),)
    for seed in range(3):
        plain = index.guided_partner(rows, items, lengths, scores, split.num_items, max_candidates,
                                     generator=torch.Generator().manual_seed(seed))
        fast = index.guided_partner(rows, items, lengths, scores, split.num_items, max_candidates,
                                    generator=torch.Generator().manual_seed(seed), util_table=table)
        # The same random draws pick the same partners with the table as with per-batch util.
        assert torch.equal(plain, fast)


def test_util_table_entries_equal_the_definition():
    from ec4srec.methods.retrieval import SameTargetIndex
    split = _retrieval_split(1)
    index = SameTargetIndex(split.items, split.train)
    R = len(split.train)
    importance = torch.rand(R, 8, generator=torch.Generator().manual_seed(1))
    table = index.util_table(importance)
    hist, length = index.histories(torch.arange(R))
    for r in range(0, R, 7):
        others = int(index.size[r]) - 1
        for j in range(others):
            k = int(index._member(torch.tensor([r]), torch.tensor([j]))[0])
            a = hist[r, :length[r]].tolist()
            c = hist[k, :length[k]].tolist()
            shared = set(a) & set(c)
            score = dict(zip(a, importance[r, :len(a)].tolist()))
            expected = len(shared) / len(set(a) | set(c)) * sum(score[v] for v in shared)
            # util(s_k) = |s_u ∩ s_k| / |s_u ∪ s_k| * sum of the anchor's scores over the intersection.
            assert abs(float(table[int(index.pair_start[r]) + j]) - expected) < 1e-5


# ------------------------------------------------------------------ views a step does not read
@pytest.mark.parametrize("method, zero", [("duorec", "lambda_sl"), ("cl4srec", "lambda_cl"),
                                          ("ec4srec_sl", "lambda_sl_pos")])
def test_zero_lambda_term_encodes_nothing_and_equals_rec_only(method, zero):
    from conftest import tiny_config
    from ec4srec.data import load_dataset
    from ec4srec.data.batches import make_batch
    from ec4srec.trainer import Trainer

    # ec4srec_sl's guided phase reads lambda_sl_pos only (warm-up terms off: rec-only warm-up).
    config = tiny_config(method__name=method, method__explainer="attention",
                         method__warmup_loss="rec_only", method__updates=1,
                         **{f"method__{zero}": 0.0})
    dataset = load_dataset(config.data)
    trainer = Trainer(config, dataset, log=lambda m: None)
    if trainer.method.update_epochs:
        trainer.method.on_epoch_start(trainer.method.update_epochs[0])
    batch = make_batch(dataset.split.items, dataset.split.train, np.arange(16))
    calls = []
    forward = trainer.model.forward
    trainer.model.forward = lambda items, lengths: calls.append(len(items)) or forward(items, lengths)
    trainer.model.eval()                                   # deterministic encodings
    loss, parts = trainer.method.loss(batch, epoch=99)
    # Only the anchors are encoded: 16 rows in all.
    assert sum(calls) == 16
    # The loss is then exactly L_rec.
    assert set(parts) == {"rec"} and torch.equal(loss, parts["rec"])
