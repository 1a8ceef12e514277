"""Subword tokenizers: round trips of held-out text, special ids, unknown characters, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models

from archlab.data import DataError, TextDataset, TextSplit
from archlab.text import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    SubwordTokenizer,
    Tokenizers,
    encode_text,
    train_tokenizers,
)

EN = ("A man rides a bike down the street.", "Two dogs play in the snow.", "A woman is reading a book.",
      "Children are playing football in a park.", "A man in a red shirt is cooking dinner.",
      "The girl jumps into the water.", "People walk past a shop window.", "A boy throws a ball to his dog.")
DE = ("Ein Mann fährt mit dem Fahrrad die Straße entlang.", "Zwei Hunde spielen im Schnee.",
      "Eine Frau liest ein Buch.", "Kinder spielen Fußball in einem Park.",
      "Ein Mann in einem roten Hemd kocht das Abendessen.", "Das Mädchen springt ins Wasser.",
      "Leute gehen an einem Schaufenster vorbei.", "Ein Junge wirft seinem Hund einen Ball zu.")
# held out: never trained on, written with characters the training text has
HELD_OUT = ("A dog rides in the park.", "Two children are reading.", "Ein Hund spielt im Wasser.")


def _dataset() -> TextDataset:
    return TextDataset("toy", "seq2seq", {"train": TextSplit(EN, DE),
                                          "test": TextSplit(("A cat naps.", "Ça va?"), ("Eine Katze döst.", "Ça va?"))},
                       "memory", test_splits=("test",))


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_held_out_sentences_round_trip_and_special_ids_are_fixed(kind: str) -> None:
    tok = SubwordTokenizer.train([*EN, *DE], kind, 120)
    assert [tok.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [PAD_ID, UNK_ID, BOS_ID, EOS_ID] == [0, 1, 2, 3]
    assert 4 < tok.vocab_size <= 120
    ids = tok.encode(HELD_OUT)
    assert all(i > EOS_ID for row in ids for i in row)  # no special token added, nothing unknown
    assert [tok.decode(row) for row in ids] == list(HELD_OUT)
    # decode stops at </s> and drops <s> and padding, as decoders' outputs carry them
    assert tok.decode([BOS_ID, *ids[0], EOS_ID, *ids[1], PAD_ID]) == HELD_OUT[0]
    assert tok.decode_batch([[BOS_ID, *ids[2], PAD_ID, PAD_ID]]) == [HELD_OUT[2]]


def test_unseen_characters_become_unk_and_are_counted() -> None:
    tok = SubwordTokenizer.train([*EN, *DE], "bpe", 120)
    sentence = "Ça va? Élan, éé!"  # Ç ? É , é ! never occur in the training text
    assert tok.unknown_characters([sentence]) == {"Ç": 1, "?": 1, "É": 1, ",": 1, "é": 2, "!": 1}
    assert tok.encode([sentence])[0].count(UNK_ID) == 7  # one <unk> per unseen character
    assert tok.decode(tok.encode(["va?"])[0]) == "va<unk>"
    assert tok.unknown_characters(HELD_OUT) == {}


def test_tokenizers_learn_from_the_train_split_only_and_count_unknowns_per_split() -> None:
    ds = _dataset()
    toks = train_tokenizers(ds, vocab_size=120)
    assert toks.shared
    # 'ö' and 'Ç' are in the test split only: a tokenizer trained on it would know them
    enc = encode_text(ds, toks, {"source": 12, "target": 12})
    assert enc.unknown == {"test": {"Ç": 2, "?": 2, "ö": 1}}
    assert enc.summary()["unknown_characters"] == {"test": 5}


def test_lowercase_tokenizer_lowercases_before_encoding() -> None:
    tok = SubwordTokenizer.train([s.lower() for s in EN], "bpe", 80, lowercase=True)
    assert tok.encode(["A MAN rides"]) == tok.encode(["a man rides"])
    assert tok.decode(tok.encode(["A MAN rides"])[0]) == "a man rides"


@pytest.mark.parametrize("shared", [True, False])
def test_saved_tokenizers_load_back_giving_the_same_ids(tmp_path: Path, shared: bool) -> None:
    toks = train_tokenizers(_dataset(), kind="unigram", vocab_size=60, shared=shared)
    written = sorted(p.name for p in toks.save(tmp_path))
    assert written == (["tokenizer.json"] if shared else ["tokenizer-source.json", "tokenizer-target.json"])
    back = Tokenizers.load(tmp_path)
    assert back.shared == shared
    for before, after in ((toks.source, back.source), (toks.target, back.target)):
        assert after == before
        assert after.encode([*HELD_OUT, "Ça va?"]) == before.encode([*HELD_OUT, "Ça va?"])
    if not shared:  # one vocabulary per side: German words are in the target's only
        assert toks.target.vocab_size != toks.source.vocab_size or toks.source.encode(DE) != toks.target.encode(DE)


def test_loading_a_missing_or_foreign_tokenizer_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no tokenizer"):
        Tokenizers.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(DataError, match=r"tokenizer\.json: not a tokenizer file"):
        Tokenizers.load(tmp_path)
    foreign = Tokenizer(models.WordLevel({"<unk>": 0, "<pad>": 1, "<s>": 2, "</s>": 3}, unk_token="<unk>"))
    foreign.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(DataError, match="<pad> must have id 0"):
        Tokenizers.load(tmp_path)
