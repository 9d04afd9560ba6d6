"""The CTC probe (unified_lm.bench.ctc_probe) learns a toy code and reads both input kinds."""

import random

import torch

from unified_lm.bench.ctc_probe import Example, pad, run


def toy(n, seed):
    """Each letter is spoken as two to three frames of its own unit: a code any probe can learn
    (no letter twice in a row, whose frames would be one indistinguishable run)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = rng.choice("abcd")
        while len(text) < rng.randint(2, 5):
            text += rng.choice("abcd".replace(text[-1], ""))
        units = [u for c in text for u in [ord(c) - ord("a") + 1] * rng.randint(2, 3)]
        out.append(Example(torch.tensor(units), text))
    return out


def test_probe_learns_a_unit_code():
    rows = run(toy(64, 0), toy(20, 1), steps=120)
    assert [r[0] for r in rows] == [30, 60, 90, 120]
    assert rows[-1][3] < 0.05  # dev CER


def test_feature_inputs_pad_with_zeros_and_mask():
    a, b = Example(torch.ones(3, 4), "a"), Example(torch.ones(5, 4), "b")
    x, mask = pad([a, b])
    assert x.shape == (2, 5, 4) and x[0, 3:].abs().sum() == 0
    assert mask.sum(1).tolist() == [3, 5]
    rows = run([a, b] * 4, [a], steps=4, batch_size=2)
    assert len(rows) == 4 and all(0.0 <= r[3] for r in rows)


def test_upsampling_repeats_units_so_ctc_can_align_short_sequences(tmp_path):
    import json

    from unified_lm.bench.ctc_probe import load_units

    # "aab" needs a blank between its a's: four CTC frames for three units is too few.
    lines = [{"id": f"u{i}", "text": "aab", "speaker": "s", "units": [0, 0, 1], "tokenizer": {"name": "toy"}}
             for i in range(32)]
    path = tmp_path / "units.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    plain = load_units(str(path))
    assert plain[0].inputs.tolist() == [1, 1, 2]
    assert run(plain, plain[:4], steps=120)[-1][3] > 0.3  # no alignment exists: nothing to learn from
    twice = load_units(str(path), upsample=2)
    assert twice[0].inputs.tolist() == [1, 1, 1, 1, 2, 2] and twice[0].text == "aab"
    assert run(twice, twice[:4], steps=120)[-1][3] < 0.05  # dev CER: learnable with the room
