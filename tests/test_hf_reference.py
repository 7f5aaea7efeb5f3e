"""Hugging Face GPT-2 import/export, checked against transformers (minGPT's three-level oracle).

1. the same logits (max |diff| <= 1e-4) for a checkpoint written by ``save_pretrained``;
2. the same 20 greedy tokens as ``generate(do_sample=False)``;
3. the same decoded text; and ``save_gpt2`` output loads back into transformers with the same
   logits. Run with the reference environment:
   ``/work/refenv/bin/python -m pytest tests/test_hf_reference.py -m reference``.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import minillm
from minillm.tokenizer import GPT2Tokenizer

pytestmark = pytest.mark.reference

torch = pytest.importorskip("torch", reason="PyTorch is the reference (install torch to run)")
transformers = pytest.importorskip("transformers", reason="transformers is the reference (install transformers to run)")

CORPUS = (
    "the cat sat on the mat. The café served crème brûlée; 日本語 and 日本 again. "
    "🙂 Hello hello, it's 1234 numbers 12 34.\nI'm sure they're here, we've seen it.\n"
) * 3
N_NEW = 20


def hf_model(config_kwargs: dict, seed: int = 0, scale: float = 0.0):
    """A random GPT2LMHeadModel in eval mode; `scale` perturbs every parameter (even LN gains).

    A perturbed model also gets 10x larger position embeddings: a random model otherwise tends to
    repeat one token forever, which would make the greedy comparison weak. With them, the 20
    greedy tokens vary and the smallest top-1/top-2 logit gap stays far above the rounding error.
    """
    torch.manual_seed(seed)
    # No EOS/BOS: generation must run all N_NEW steps without suppressing any token.
    cfg = transformers.GPT2Config(**config_kwargs, bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    if scale:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * scale)
            model.transformer.wpe.weight.mul_(10.0)
    return model


def hf_logits(model, idx: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(idx)).logits.numpy()


def hf_greedy(model, prompt: list[int]) -> tuple[np.ndarray, float]:
    """Greedy ids from transformers' generate, and the smallest top-1/top-2 logit gap seen."""
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=N_NEW,
            do_sample=False,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    gaps = [float(np.diff(np.sort(s[0].numpy())[-2:])[0]) for s in out.logits]
    return out.sequences.numpy(), min(gaps)


def report(request, **numbers) -> None:
    for k, v in numbers.items():
        request.node.user_properties.append((k, v))
    print(f"\n{request.node.name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))


@pytest.fixture(scope="module")
def bpe() -> GPT2Tokenizer:
    return GPT2Tokenizer.train(CORPUS, 60)


def test_small_model_three_level_oracle(tmp_path, bpe, request):
    model = hf_model(
        dict(vocab_size=bpe.vocab_size, n_positions=64, n_embd=64, n_layer=3, n_head=4),
        scale=0.1,
    )
    src = tmp_path / "hf"
    model.save_pretrained(src)
    (src / "vocab.json").write_text(bpe.to_vocab_json(), encoding="utf-8")
    (src / "merges.txt").write_text(bpe.to_merges_txt(), encoding="utf-8")
    ours = minillm.load_gpt2(src)
    assert ours.tokenizer == bpe

    # 1. logits
    rng = np.random.default_rng(0)
    idx = rng.integers(0, bpe.vocab_size, size=(2, 40))
    ref = hf_logits(model, idx)
    got = ours.forward(idx)
    diff = float(np.abs(got - ref).max())
    assert got.shape == ref.shape and diff <= 1e-4

    # 2. greedy tokens
    prompt = bpe.encode("the cat sat on the")
    ref_ids, gap = hf_greedy(model, prompt)
    got_ids = minillm.generate(ours, [prompt], N_NEW, temperature=0)
    assert ref_ids.shape == (1, len(prompt) + N_NEW)
    assert got_ids.tolist() == ref_ids.tolist()
    assert len(set(got_ids[0, -N_NEW:].tolist())) >= 10  # a varied continuation, not one token

    # 3. decoded text
    hf_tok = transformers.GPT2Tokenizer.from_pretrained(src)
    text = ours.tokenizer.decode(got_ids[0])
    assert text == hf_tok.decode(ref_ids[0].tolist(), clean_up_tokenization_spaces=False)

    # transformers 5 saves a tokenizer as tokenizer.json only: load_gpt2 reads that too.
    both = tmp_path / "hf_tokenizer_json"
    model.save_pretrained(both)
    hf_tok.save_pretrained(both)
    assert minillm.load_gpt2(both).tokenizer == bpe

    # 4. save_gpt2 -> transformers
    dst = tmp_path / "ours"
    minillm.save_gpt2(ours, dst)
    back, info = transformers.GPT2LMHeadModel.from_pretrained(dst, output_loading_info=True)
    back.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    back_diff = float(np.abs(hf_logits(back, idx) - ref).max())
    assert back_diff == 0.0  # the same float32 bits through the same code
    assert transformers.GPT2Tokenizer.from_pretrained(dst).encode(CORPUS) == bpe.encode(CORPUS)
    report(request, max_abs_diff=f"{diff:.2e}", min_greedy_gap=f"{gap:.3f}",
           greedy_match=True, back_diff=back_diff, text=repr(text[-30:]))  # fmt: skip


def test_prefixless_hf_file_with_lm_head_and_mask_buffers(tmp_path):
    """The layout of old hub files: no `transformer.` prefix, attn.bias buffers, lm_head kept."""
    from minillm.io import write_safetensors

    model = hf_model(dict(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2), scale=0.05)
    sd = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    tensors = {k.removeprefix("transformer."): v for k, v in sd.items()}
    tensors["lm_head.weight"] = sd["transformer.wte.weight"].copy()
    for i in range(2):
        tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((32, 32), np.float32))[None, None]
        tensors[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    write_safetensors(tmp_path / "model.safetensors", tensors, {"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    ours = minillm.load_gpt2(tmp_path)
    idx = np.arange(20).reshape(1, 20)
    assert float(np.abs(ours.forward(idx) - hf_logits(model, idx)).max()) <= 1e-4


def test_gpt2_124m_shape(tmp_path, request):
    """The real GPT-2 small shape (random weights: no hub here), once."""
    t0 = time.perf_counter()
    model = hf_model({})  # GPT2Config(): 124M parameters
    model.save_pretrained(tmp_path)
    t1 = time.perf_counter()
    ours = minillm.load_gpt2(tmp_path)
    t2 = time.perf_counter()
    assert ours.config == minillm.GPTConfig.preset("gpt2")
    idx = np.random.default_rng(1).integers(0, 50257, size=(1, 16))
    ref = hf_logits(model, idx)
    diff = float(np.abs(ours.forward(idx) - ref).max())
    assert diff <= 1e-4
    prompt = idx[0].tolist()
    ref_ids, gap = hf_greedy(model, prompt)
    t3 = time.perf_counter()
    got_ids = minillm.generate(ours, [prompt], N_NEW, temperature=0)
    t4 = time.perf_counter()
    assert got_ids.tolist() == ref_ids.tolist()
    report(request, max_abs_diff=f"{diff:.2e}", min_greedy_gap=f"{gap:.4f}", greedy_match=True,
           hf_init_save_s=round(t1 - t0, 1), load_gpt2_s=round(t2 - t1, 1),
           minillm_generate_s=round(t4 - t3, 1))  # fmt: skip
