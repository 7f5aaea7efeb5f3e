"""The hand-written backward against PyTorch autograd on the same GPT-2 weights (optional).

Runs with `python -m pytest -m reference` when torch and transformers are installed
(`pip install torch==2.13.0 transformers`); skipped with the reason otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

import minillm
from minillm.io import save_gpt2

torch = pytest.importorskip("torch", reason="PyTorch is the reference (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers", reason="transformers builds the reference GPT-2")

pytestmark = pytest.mark.reference


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_loss_and_every_gradient_match_pytorch_autograd(tmp_path, dtype):
    cfg = minillm.GPTConfig(vocab_size=97, block_size=24, n_layer=2, n_head=4, n_embd=32)
    model = minillm.GPT(cfg, seed=7)
    rng = np.random.default_rng(0)
    for w in model.params.values():  # non-trivial LayerNorms and biases
        w += rng.normal(0, 0.05, w.shape).astype(w.dtype)
    save_gpt2(model, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager")
    hf = hf.double() if dtype == "float64" else hf.float()
    hf.eval()  # no dropout
    idx = rng.integers(0, cfg.vocab_size, (3, 20))
    tgt = rng.integers(0, cfg.vocab_size, (3, 20))

    logits = hf(torch.from_numpy(idx)).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), torch.from_numpy(tgt).reshape(-1))
    loss.backward()
    torch_grads = {n.removeprefix("transformer."): p.grad.numpy() for n, p in hf.named_parameters()}

    if dtype == "float64":
        model.params = {k: v.astype(np.float64) for k, v in model.params.items()}
    ours_loss, ours = model.loss_and_grads(idx, tgt)
    assert ours_loss == pytest.approx(loss.item(), abs=1e-5)
    assert set(ours) <= set(torch_grads) | {"wte.weight"}
    tol = 1e-10 if dtype == "float64" else 1e-4
    for name, g in ours.items():
        ref = torch_grads[name]  # wte.weight: the tied gradient, head and embedding together
        assert g.shape == ref.shape, name
        err = np.abs(g - ref).max() / np.abs(ref).max()
        assert err <= tol, f"{name}: relative error {err:.2e}"
