"""The special token ids every archlab tokenizer, task and decoder agrees on, in one place that
imports nothing (the tokenizers library stays out of decoding and of the CLI's start-up)."""

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "SPECIAL_TOKENS", "UNK_ID"]

#: The special tokens, in id order.
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
