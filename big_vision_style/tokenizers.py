"""Text -> fixed-length int32 token ids, for the text tower.

  tok = get_tokenizer('words', max_len=16)                      # captioned benchmark's words
  tok = get_tokenizer('words:/data/vocab.txt', max_len=16)      # one word per line
  tok = get_tokenizer('sentencepiece:/data/spm.model', max_len=64)  # TPU / real captions
  tok('a red dress') -> int32 [max_len]; tok.batch([...]) -> int32 [N, max_len]

Conventions shared by both kinds, which the text tower relies on: id 0 is padding (and only
padding), sequences are truncated to `max_len`, no BOS/EOS tokens (the tower pools over the
non-padding tokens). Tokenizers are picklable: grain ships data sources, which hold one, to
worker processes.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

PAD, UNK = 0, 1
_WORD = re.compile(r'[a-z]+|[0-9]')


def words(text: str) -> list[str]:
  """The word tokenizer's words: lower case, punctuation dropped, numbers split into digits."""
  return _WORD.findall(text.lower())


class WordTokenizer:
  """A fixed vocabulary of lower-case words (digits are words of their own); unknown -> UNK.

  Deterministic and dependency-free: the local benchmark's captions come from templates, so
  their vocabulary is known in advance (`datasets.captions.VOCABULARY`).
  """

  def __init__(self, vocabulary: Sequence[str], max_len: int):
    if max_len < 1:
      raise ValueError(f'max_text_len={max_len} must be >= 1.')
    vocabulary = list(dict.fromkeys(vocabulary))  # Dedupe, keep order.
    self.max_len = int(max_len)
    self.vocabulary = ['<pad>', '<unk>'] + vocabulary
    self._ids = {w: i for i, w in enumerate(self.vocabulary)}
    self.vocab_size = len(self.vocabulary)

  @classmethod
  def from_file(cls, path: str, max_len: int) -> 'WordTokenizer':
    with open(path) as f:
      return cls([line.strip() for line in f if line.strip()], max_len)

  def encode(self, text: str) -> list[int]:
    return [self._ids.get(w, UNK) for w in words(text)]

  def decode(self, tokens) -> str:
    return ' '.join(self.vocabulary[int(t)] for t in tokens if int(t) != PAD)

  def __call__(self, text: str) -> np.ndarray:
    return pad(self.encode(text), self.max_len)

  def batch(self, texts: Sequence[str]) -> np.ndarray:
    return np.stack([self(t) for t in texts]) if texts else np.zeros([0, self.max_len], np.int32)


class SentencePieceTokenizer:
  """A trained sentencepiece model (`.model` file); its ids shifted by one so that 0 is PAD.

  sentencepiece reserves ids for <unk>, <s>, </s> (and <pad> if trained with one); shifting every
  id by one keeps our PAD = 0 convention whatever the model's own layout.
  """

  def __init__(self, model_path: str, max_len: int):
    if max_len < 1:
      raise ValueError(f'max_text_len={max_len} must be >= 1.')
    self.model_path, self.max_len = str(model_path), int(max_len)
    self._processor = _load_sentencepiece(self.model_path)
    self.vocab_size = self._processor.get_piece_size() + 1

  def __getstate__(self):
    return {'model_path': self.model_path, 'max_len': self.max_len}

  def __setstate__(self, state):
    self.__init__(state['model_path'], state['max_len'])

  def encode(self, text: str) -> list[int]:
    return [i + 1 for i in self._processor.encode(text)]

  def decode(self, tokens) -> str:
    return self._processor.decode([int(t) - 1 for t in tokens if int(t) != PAD])

  def __call__(self, text: str) -> np.ndarray:
    return pad(self.encode(text), self.max_len)

  def batch(self, texts: Sequence[str]) -> np.ndarray:
    return np.stack([self(t) for t in texts]) if texts else np.zeros([0, self.max_len], np.int32)


def _load_sentencepiece(model_path: str):
  try:
    import sentencepiece  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "The 'sentencepiece:' tokenizer needs the sentencepiece package: "
        "`pip install sentencepiece` (or `pip install -e '.[text]'`).") from e
  if not os.path.exists(model_path):
    raise FileNotFoundError(
        f'No sentencepiece model at {model_path!r} (config.data.tokenizer). Train one with '
        'sentencepiece.SentencePieceTrainer.train(input=captions.txt, model_prefix=..., '
        'vocab_size=...) or use a published one (e.g. the SigLIP / T5 models).')
  return sentencepiece.SentencePieceProcessor(model_file=model_path)


def pad(ids: Sequence[int], max_len: int) -> np.ndarray:
  out = np.full([max_len], PAD, np.int32)
  ids = list(ids)[:max_len]
  out[:len(ids)] = ids
  return out


def get_tokenizer(spec: str, max_len: int, default_vocabulary: Sequence[str] | None = None):
  """'words' (needs `default_vocabulary`), 'words:<vocab file>' or 'sentencepiece:<model>'."""
  kind, _, arg = spec.partition(':')
  if kind == 'words':
    if arg:
      return WordTokenizer.from_file(arg, max_len)
    if default_vocabulary is None:
      raise ValueError("tokenizer='words' needs a vocabulary here: use 'words:<file with one "
                       "word per line>' or 'sentencepiece:<model file>'.")
    return WordTokenizer(default_vocabulary, max_len)
  if kind == 'sentencepiece':
    if not arg:
      raise ValueError("tokenizer='sentencepiece' needs a model path: 'sentencepiece:<file>'.")
    return SentencePieceTokenizer(arg, max_len)
  raise ValueError(f'Unknown tokenizer {spec!r} (config.data.tokenizer): expected words, '
                   'words:<vocab file> or sentencepiece:<model file>.')
