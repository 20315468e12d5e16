"""The special token ids every genloom-text vocabulary starts with (tasks, BPE, models agree on them)."""

PAD_ID, BOS_ID, EOS_ID, MASK_ID, BLANK_ID = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<mask>", "<blank>")
NUM_SPECIAL = len(SPECIAL_TOKENS)
