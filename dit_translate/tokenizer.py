"""A CLIP BPE tokenizer built offline from the vocabulary that ships inside open_clip.

The files written here (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``,
``special_tokens_map.json``) are the standard Hugging Face ``CLIPTokenizer`` folder layout, so
``transformers.CLIPTokenizer.from_pretrained(folder)`` loads them exactly like the tokenizer folder
of a Stable Diffusion checkpoint. Token ids equal open_clip's ``SimpleTokenizer`` ids.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407


def write_clip_tokenizer(folder: str | Path, model_max_length: int = CONTEXT_LENGTH) -> Path:
    """Write CLIP tokenizer files generated from open_clip's bundled BPE merges into ``folder``."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the 48894 merges CLIP uses
    byte_tokens = list(bytes_to_unicode().values())
    vocab = byte_tokens + [t + "</w>" for t in byte_tokens]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder
