"""Text for sequence models: subword tokenizers trained on a training split, and the arrays
(``source``/``target``/``y``, or ``tokens``/``y``) that seq2seq and language-model specs take.

Example:
    >>> from archlab.data import TextDataset, TextSplit
    >>> ds = TextDataset("toy", "seq2seq", {"train": TextSplit(("a cat", "a dog"), ("eine Katze", "ein Hund"))},
    ...                  "memory")
    >>> toks = train_tokenizers(ds, vocab_size=40)
    >>> enc = encode_text(ds, toks, {"source": 6, "target": 6})
    >>> enc.splits["train"].inputs["target"][0, 0] == BOS_ID, enc.truncated
    (np.True_, {})
"""

from ._encoding import (
    EncodedText,
    SequenceArrays,
    encode_for_spec,
    encode_text,
    lm_arrays,
    pad_sequences,
    seq2seq_arrays,
    source_array,
)
from ._tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    TOKENIZER_FILES,
    UNK_ID,
    SubwordTokenizer,
    TokenizerKind,
    Tokenizers,
    train_tokenizers,
)

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "SPECIAL_TOKENS", "TOKENIZER_FILES", "UNK_ID", "EncodedText",
           "SequenceArrays", "SubwordTokenizer", "TokenizerKind", "Tokenizers", "encode_for_spec", "encode_text",
           "lm_arrays", "pad_sequences", "seq2seq_arrays", "source_array", "train_tokenizers"]
