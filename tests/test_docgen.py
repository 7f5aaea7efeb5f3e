"""Numbers in the docs and README are generated from shipped artifacts and must be up to date."""

from __future__ import annotations

import pytest

from minillm import docgen


def test_generated_sections_match_the_shipped_artifacts():
    stale = docgen.update(check=True)
    assert not stale, f"run `python -m minillm.docgen` to refresh: {stale}"


def test_replace_section_round_trip():
    text = "a\n<!-- generated:x:start -->\nold\n<!-- generated:x:end -->\nb\n"
    new = docgen.replace_section(text, "x", "new body")
    assert docgen.section(new, "x") == "new body\n"
    assert new.startswith("a\n") and new.endswith("b\n")
    with pytest.raises(ValueError, match="generated:y"):
        docgen.section(text, "y")


def test_render_bench_states_every_target_met_or_missed():
    row = {"model": "gpt2", "backend": "numpy", "weights": "fp32", "decode_tok_s": [90.0, 100.0, 80.0],
           "median_tok_s": 90.0, "prefill_tok_s": 400.0, "bytes_per_token": 497_000_000, "median_gb_s": 44.7,
           "roofline_tok_s": 100.0, "roofline_frac": 0.9, "warmup_s": 0.4}
    slow = dict(row, backend="jax", roofline_frac=0.5)
    small = dict(row, model="teacher", roofline_frac=0.1)  # cache-resident: not held to the bound
    result = {"machine": {"cpu": "X", "cores": 2, "date": "today", "python": "3.11", "numpy": "2"},
              "threads": {"numba_layer": "omp", "numba_threads": 2}, "bandwidth_gb_s": 50.0,
              "peak_fp32_gflops": 200.0, "rounds": 3, "decode": [row, slow, small], "transformers_tok_s": [30.0],
              "ratios": {"numba int8 / numpy fp32 (gpt2)": {"per_round": [3.2, 2.9, 3.1], "median": 3.1},
                         "jax fp32 / numpy fp32 (gpt2)": {"per_round": [0.8], "median": 0.8},
                         "jax fp32 / numpy fp32 (teacher)": {"per_round": [0.997], "median": 0.997}}}
    text = docgen.render_bench(result)
    # three rounds: the interval of the median is their whole range (75 %), which holds the line
    assert "| numba int8 / numpy fp32 (gpt2) ≥ 3× | 3.10× | 2.90–3.20 | 3.20, 2.90, 3.10 | met, but the interval " \
           "straddles the line |" in text
    assert "| jax fp32 / numpy fp32 (gpt2) ≥ 1× | 0.80× | 0.80–0.80 | 0.80 | **missed** |" in text
    # a median that rounds up to the target is shown with the digit that misses it
    assert "| jax fp32 / numpy fp32 (teacher) ≥ 1× | 0.997× | 1.00–1.00 | 1.00 | **missed** |" in text
    assert "with 1 round, from the 1st smallest" in text
    assert [docgen._ordinal(k) for k in (1, 2, 3, 4, 6, 11, 12, 13, 21, 22, 23, 111)] == [
        "1st", "2nd", "3rd", "4th", "6th", "11th", "12th", "13th", "21st", "22nd", "23rd", "111th"]
    assert "with 3 rounds, from the 1st smallest to the 1st largest ratio, which holds the median of the " \
           "distribution the rounds come from with probability 75.0 %" in text
    assert "**missed** by jax fp32 (50.0 %)." in text and "90.0 | 80–100 |" in text
    assert "results/bench.png" not in text and "in this run" not in text  # no timeline: no plot, no range
    # with each round's limit kept, a miss shows the interval of its median fraction (3 rounds: their range)
    kept = dict(slow, bandwidth_gb_s=[100.0, 100.0, 100.0])  # 90, 100, 80 tok/s x 497 MB: 44.7, 49.7, 39.8 %
    text = docgen.render_bench(dict(result, decode=[row, kept, small]))
    assert "**missed** by jax fp32 (50.0 %; its median's interval 40–50 %)." in text
    timed = dict(result, bandwidth_range_gb_s=[38.5, 72.0], timeline=[{"t_s": 0.0, "entry": "gpt2/numpy/fp32"}])
    text = docgen.render_bench(timed)
    assert "median 50.0 GB/s, from 38.5 to 72 GB/s in this run" in text and "(results/bench.png)" in text
