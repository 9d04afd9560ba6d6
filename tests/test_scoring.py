import pytest

from unified_lm.scoring import normalize_text, score_corpus, score_utterances


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Hello, World!", "hello world"),
        ("  Don't   STOP  ", "don't stop"),
        ("It\u2019s state-of-the-art.", "it's state of the art"),
        ('"Quoted" (parens); semi: colon?', "quoted parens semi colon"),
        ("tab\tand\nnewline", "tab and newline"),
        ("...", ""),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_wer_cer_hand_computed():
    # ref "the cat sat" vs hyp "the bat sat down": 1 substitution + 1 insertion over 3 words.
    # chars: "the cat sat" (11) vs "the bat sat down" (16): c->b, then " down" inserted = 6 edits.
    scores = score_corpus(["The cat sat."], ["the bat sat down"])
    assert scores["word_errors"] == 2 and scores["ref_words"] == 3
    assert scores["wer"] == pytest.approx(2 / 3)
    assert scores["char_errors"] == 6 and scores["ref_chars"] == 11
    assert scores["cer"] == pytest.approx(6 / 11)


def test_rates_are_pooled_and_split_by_subset():
    refs = ["a b c d", "x y", "p q r"]
    hyps = ["a b c d", "x", "p z r s"]  # 0 errors / 4, 1 deletion / 2, 1 sub + 1 ins / 3
    scores = score_corpus(refs, hyps, ["seen_voice", "heldout_voice", "heldout_voice"])
    assert scores["num_utts"] == 3
    assert scores["wer"] == pytest.approx(3 / 9)
    assert scores["subsets"]["seen_voice"]["wer"] == 0.0
    assert scores["subsets"]["heldout_voice"]["wer"] == pytest.approx(3 / 5)
    assert scores["subsets"]["heldout_voice"]["num_utts"] == 2
    assert [u["word_errors"] for u in scores["utterances"]] == [0, 1, 2]
    assert [u["ref_words"] for u in scores["utterances"]] == [4, 2, 3]


def test_normalisation_applies_to_both_sides():
    assert score_corpus(["Hello, world!"], ["HELLO WORLD"])["wer"] == 0.0


def test_empty_hypothesis_is_all_deletions():
    [row] = score_utterances(["one two three"], [""])
    assert row == {"word_errors": 3, "ref_words": 3, "char_errors": 13, "ref_chars": 13}


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        score_corpus(["a", "b"], ["a"])
