"""Image-text data: captioned Fashion-MNIST (determinism, corruption, duplicates, rendering),
tokenizers, and the ArrayRecord / TFDS image-text source."""
import functools
import pickle
import sys

import numpy as np
import pytest

from big_vision_style import datasets
from big_vision_style import preprocess
from big_vision_style import tokenizers
from big_vision_style.datasets import captioned_fashion_mnist as cfm
from big_vision_style.datasets import captions
from big_vision_style.datasets import fashion_mnist
from big_vision_style.datasets import image_text

RATE = 0.3
CONFIG = {'name': 'captioned_fashion_mnist', 'corruption_rate': RATE, 'corruption_seed': 1}


@pytest.fixture(scope='module')
def pools():
  return {split: datasets.get_source(CONFIG, split) for split in ('train', 'holdout', 'test')}


def garment_words(garment_class):
  return {w for name in captions.GARMENTS[garment_class] for w in tokenizers.words(name)}


def test_records_ids_and_determinism(pools):
  train = pools['train']
  ex = train[3]
  assert set(ex) == {'image', 'text', 'label', 'id', 'corruption'}
  assert ex['image'].shape == (48, 48, 3) and ex['image'].dtype == np.uint8
  assert ex['text'].shape == (16,) and ex['text'].dtype == np.int32
  assert ex['label'].dtype == np.int32 and ex['id'].dtype == np.int64
  # Ids and labels are Fashion-MNIST's: same split, same images' classes.
  plain = fashion_mnist.make_source('train')
  np.testing.assert_array_equal(train.ids, plain.ids)
  np.testing.assert_array_equal(train.labels, plain.labels)
  assert len(pools['holdout']) == 10_000 and len(pools['test']) == 10_000
  assert pools['test'].ids[0] == 60_000
  # Rebuilt from scratch (caches cleared), everything is identical.
  cfm._texts.cache_clear()  # pylint: disable=protected-access
  cfm.attributes.cache_clear()
  again = datasets.get_source(CONFIG, 'train')
  assert again is not train and again.captions == train.captions
  np.testing.assert_array_equal(again.text, train.text)
  np.testing.assert_array_equal(again.corruption, train.corruption)
  for i in (0, 17, 4242):
    np.testing.assert_array_equal(again[i]['image'], train[i]['image'])
  # Another caption seed changes captions and renderings, not ids or labels.
  other = datasets.get_source({**CONFIG, 'caption_seed': 1}, 'train')
  np.testing.assert_array_equal(other.ids, train.ids)
  assert np.mean([a != b for a, b in zip(other.captions[:200], train.captions[:200])]) > 0.9
  assert not np.array_equal(other[0]['image'], train[0]['image'])


def test_batched_reads_equal_single_reads(pools):
  train = pools['train']
  indices = np.array([5, 0, len(train) - 1, 5, -2])
  batch = train.get_batch(indices)
  for row, index in enumerate(indices.tolist()):
    record = train[index]
    assert batch.keys() == record.keys()
    for key, value in record.items():
      np.testing.assert_array_equal(batch[key][row], value, err_msg=key)
      assert batch[key].dtype == np.asarray(value).dtype, key
  with pytest.raises(IndexError, match='out of range'):
    train.get_batch([len(train)])


def test_corruption_fraction_types_and_clean_pools(pools):
  train = pools['train']
  n = len(train)
  counts = np.bincount(train.corruption, minlength=4)
  assert counts[captions.CLEAN] == n - round(RATE * n)
  assert np.abs(counts[1:] - round(RATE * n) / 3).max() <= 1  # Equal shares of the three types.
  np.testing.assert_array_equal(train.corrupted_ids,
                                np.sort(train.ids[train.corruption != captions.CLEAN]))
  for split in ('holdout', 'test'):  # Curated and evaluation pools are clean.
    assert not pools[split].corruption.any() and len(pools[split].corrupted_ids) == 0
  attrs = cfm.attributes(0)
  clean = [captions.caption(attrs, i, c) for i, c in zip(train.ids, train.labels)]
  clean_set = set(clean)
  for p in range(2000):
    i, label, text = int(train.ids[p]), int(train.labels[p]), train.captions[p]
    kind = train.corruption[p]
    own = captions.caption(attrs, i, label)
    words = set(tokenizers.words(text))
    if kind == captions.CLEAN:
      assert text == own
    elif kind == captions.BOILERPLATE_TEXT:
      assert not words & set().union(*map(garment_words, range(10))), text
    elif kind == captions.WRONG_GARMENT:  # Same attributes and template, another garment.
      others = [c for c in range(10) if c != label and text == captions.caption(attrs, i, c)]
      assert len(others) == 1, text
    else:  # Another image of the pool's clean caption, which differs from this pair's own.
      assert text != own and text in clean_set
  # The corruption rate is what the config says, with any seed.
  with pytest.raises(ValueError, match=r'corruption_rate=1\.5'):
    datasets.get_source({**CONFIG, 'corruption_rate': 1.5}, 'train')


def test_few_duplicate_captions_per_batch(pools):
  rng = np.random.default_rng(0)
  for split in ('train', 'test'):
    source = pools[split]
    for _ in range(4):
      idx = rng.choice(len(source), 256, replace=False)
      texts = [source.captions[i] for i in idx]
      tokens = {tuple(source.text[i]) for i in idx}
      assert 256 - len(set(texts)) <= 4, split
      assert 256 - len(tokens) <= 4, split  # Tokenizing merges no distinct captions.


def test_word_tokenizer_covers_every_caption_and_prompt(pools, tmp_path):
  for source in pools.values():
    assert not (source.text == tokenizers.UNK).any()
    assert (source.text[:, -1] == tokenizers.PAD).all()  # Nothing truncated at 16 tokens.
    assert (source.text[:, 0] != tokenizers.PAD).all()  # Nothing empty.
  tok = pools['train'].tokenizer
  text = pools['train'].captions[7]
  assert tok.decode(tok(text)) == ' '.join(tokenizers.words(text))
  prompts = pools['test'].class_prompts
  assert len(prompts) == 10
  for c, per_class in enumerate(prompts):
    tokens = tok.batch(per_class)
    assert not (tokens == tokenizers.UNK).any()
    for prompt in per_class:  # Each prompt names its own class (and no other class's word).
      words = set(tokenizers.words(prompt))
      assert words & garment_words(c)
      assert not words & (set().union(*map(garment_words, range(10))) - garment_words(c)
                          - {'shirt', 'top'}), prompt
  vocab = tmp_path / 'vocab.txt'
  vocab.write_text('red\ndress\n')
  from_file = tokenizers.get_tokenizer(f'words:{vocab}', 4)
  np.testing.assert_array_equal(from_file('Red, red DRESS!'), [2, 2, 3, 0])
  np.testing.assert_array_equal(from_file('a red dress, red dress'), [tokenizers.UNK, 2, 3, 2])
  np.testing.assert_array_equal(from_file('red coat'), [2, tokenizers.UNK, 0, 0])
  assert pickle.loads(pickle.dumps(from_file))('dress')[0] == 3
  with pytest.raises(ValueError, match='Unknown tokenizer'):
    tokenizers.get_tokenizer('bpe', 8)
  with pytest.raises(ValueError, match='needs a vocabulary'):
    tokenizers.get_tokenizer('words', 8)


def test_rendering_follows_the_attributes(pools):
  source = pools['test']
  attrs = cfm.attributes(0)
  for index in range(0, 400, 7):
    a = attrs.row(int(source.ids[index]))
    image = source[index]['image']
    background = captions.BACKGROUNDS[captions.BACKGROUND_NAMES[a['background']]]
    side = max(4, round(captions.SIZES[captions.SIZE_NAMES[a['size']]] * 48))
    row, col = captions.POSITIONS[captions.POSITION_NAMES[a['position']]]
    y, x = row * (48 - side) // 2, col * (48 - side) // 2
    outside = np.ones((48, 48), bool)
    outside[y:y + side, x:x + side] = False
    # Outside its box the canvas is pure background; inside, the garment shows in its colour.
    assert (image[outside] == background).all()
    changed = (image != background).any(-1)
    assert changed.sum() > 0.1 * side * side
    colour = np.asarray(captions.COLOURS[captions.COLOUR_NAMES[a['colour']]])
    strongest = image[np.unravel_index(np.argmax(np.abs(image.astype(int) - background).sum(-1)),
                                       (48, 48))]
    assert np.abs(strongest.astype(int) - colour).max() < 60
  # The pipeline's preprocessing handles these records (text passes through).
  pp = preprocess.make(48, mean=(0.5,) * 3, std=(0.5,) * 3)
  out = pp(source[0])
  assert out['image'].shape == (48, 48, 3) and out['image'].dtype == np.float32
  np.testing.assert_array_equal(out['text'], source.text[0])


def test_alt_text_captions_and_centred_layout(pools):
  """The v2 benchmark's knobs (experiments/jest/common.py): captions name the garment and
  never its layout; every garment is drawn large in the centre; the corruption plan and the
  attributes are those of the same seeds in v1."""
  v2 = {**CONFIG, 'caption_style': 'alt_text', 'layout': 'centred', 'canvas_size': 32}
  train, test = datasets.get_source(v2, 'train'), datasets.get_source(v2, 'test')
  v1 = pools['train']
  np.testing.assert_array_equal(train.corruption, v1.corruption)
  np.testing.assert_array_equal(train.ids, v1.ids)
  layout_words = set(captions.SIZE_NAMES) | {'left', 'right', 'bottom', 'centre'}
  attrs = cfm.attributes(0)
  for source in (train, test):
    assert not (source.text == tokenizers.UNK).any()
    for i, text, label, kind in zip(source.ids[:3000], source.captions, source.labels,
                                    source.corruption):
      assert not set(tokenizers.words(text)) & layout_words, text
      named = [c for c in range(10) if text == captions.caption(attrs, i, c, 'alt_text')]
      if kind == captions.CLEAN:
        assert set(tokenizers.words(text)) & garment_words(label) and label in named, text
      elif kind == captions.WRONG_GARMENT:  # Another class's garment, in the same template.
        assert named and label not in named, text
  # Some captions mention a colour or background, most only the garment.
  colour_words = set(captions.COLOUR_NAMES) | set(captions.BACKGROUND_NAMES)
  mentions = np.mean([bool(set(tokenizers.words(t)) & colour_words) for t in test.captions])
  assert 0.2 < mentions < 0.5, mentions
  side = round(captions.SIZES['large'] * 32)
  for index in range(0, 300, 11):
    a = attrs.row(int(test.ids[index]))
    background = captions.BACKGROUNDS[captions.BACKGROUND_NAMES[a['background']]]
    image = test[index]['image']
    outside = np.ones((32, 32), bool)
    offset = (32 - side) // 2
    outside[offset:offset + side, offset:offset + side] = False
    assert (image[outside] == background).all()
    assert (image != background).any(-1).sum() > 0.1 * side * side
  with pytest.raises(ValueError, match="caption_style='poem'"):
    cfm.make_source('test', caption_style='poem')
  with pytest.raises(ValueError, match="layout='scattered'"):
    cfm.make_source('test', layout='scattered')


def test_captioned_errors():
  with pytest.raises(ValueError, match='corruption_rate instead'):
    cfm.make_source('train', label_noise=0.1)
  with pytest.raises(ValueError, match='canvas_size=20'):
    cfm.make_source('test', canvas_size=20)
  with pytest.raises(ValueError, match='corruption_types'):
    cfm.make_source('train', corruption_types=('typo',))
  with pytest.raises(ValueError, match="Unknown split 'val'"):
    cfm.make_source('val')
  with pytest.raises(ValueError, match="Unknown data source 'captioned_mnist'"):
    datasets.get_source({'name': 'captioned_mnist'}, 'train')


# ----- Image-text records from ArrayRecord and TFDS -----

def _tiny_pairs(n, seed):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  texts = [f'a red dress number {i}' if i % 2 else f'blue coat {i}' for i in range(n)]
  return images, texts


@pytest.fixture(scope='module')
def ar_pairs(tmp_path_factory):
  root = tmp_path_factory.mktemp('image_text')
  train_images, train_texts = _tiny_pairs(12, 0)
  test_images, test_texts = _tiny_pairs(4, 1)
  image_text.write_examples(root / 'train.array_record', train_images, train_texts)
  image_text.write_examples(root / 'test.array_record', test_images, test_texts,
                            labels=[0, 1, 2, 3])
  vocab = root / 'vocab.txt'
  vocab.write_text('\n'.join(['a', 'red', 'dress', 'number', 'blue', 'coat'] + list('0123456789')))
  config = {'name': 'image_text', 'format': 'array_record',
            'paths': str(root / '{split}.array_record'), 'holdout_size': 3,
            'tokenizer': f'words:{vocab}', 'max_text_len': 8}
  return {'root': root, 'config': config, 'train': (train_images, train_texts),
          'test': (test_images, test_texts)}


def test_image_text_array_record_round_trip(ar_pairs):
  config = ar_pairs['config']
  train, holdout = datasets.get_source(config, 'train'), datasets.get_source(config, 'holdout')
  assert len(train) == 9 and len(holdout) == 3
  assert not set(train.ids) & set(holdout.ids)
  images, texts = ar_pairs['train']
  for source in (train, holdout):
    for ex in source.__getitems__(range(len(source))):
      i = int(ex['id'])
      np.testing.assert_array_equal(ex['image'], images[i])
      assert source.tokenizer.decode(ex['text']) == ' '.join(tokenizers.words(texts[i]))[:100]
      assert ex['label'] == -1 and ex['corruption'] == -1
  test = datasets.get_source({**config, 'label_key': 'label'}, 'test')
  assert [int(ex['id']) for ex in (test[0], test[3])] == [12, 15]
  assert [int(test[i]['label']) for i in range(4)] == [0, 1, 2, 3]
  clone = pickle.loads(pickle.dumps(test))  # Grain ships sources to worker processes.
  np.testing.assert_array_equal(clone[2]['text'], test[2]['text'])
  with pytest.raises(ValueError, match="no bytes feature 'caption_en'"):
    datasets.get_source({**config, 'text_key': 'caption_en'}, 'train')[0]
  with pytest.raises(ValueError, match='Unknown image-text format'):
    datasets.get_source({**config, 'format': 'webdataset'}, 'train')
  with pytest.raises(ValueError, match='does not apply'):
    image_text.make_source('train', paths=config['paths'], tokenizer=config['tokenizer'],
                           label_noise=0.2)


def test_sentencepiece_tokenizer(ar_pairs, tmp_path, monkeypatch):
  spm = pytest.importorskip('sentencepiece')
  corpus = tmp_path / 'captions.txt'
  corpus.write_text('\n'.join(cfm.make_source('test').captions[:2000]))
  prefix = str(tmp_path / 'spm')
  spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=prefix, vocab_size=100,
                                 minloglevel=2)
  tok = tokenizers.get_tokenizer(f'sentencepiece:{prefix}.model', 32)
  ids = tok('a red dress on a white background')
  assert ids.dtype == np.int32 and ids.shape == (32,) and ids[0] != tokenizers.PAD
  assert ids[-1] == tokenizers.PAD  # Not truncated.
  assert tok.decode(ids) == 'a red dress on a white background'
  assert tok.vocab_size == 101
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(tok))('a red dress'), tok('a red dress'))
  source = datasets.get_source({**ar_pairs['config'], 'max_text_len': 32,
                                'tokenizer': f'sentencepiece:{prefix}.model'}, 'test')
  np.testing.assert_array_equal(source[1]['text'], tok(ar_pairs['test'][1][1]))
  with pytest.raises(FileNotFoundError, match='No sentencepiece model'):
    tokenizers.get_tokenizer(f'sentencepiece:{tmp_path}/missing.model', 8)
  monkeypatch.setitem(sys.modules, 'sentencepiece', None)  # As if it were not installed.
  with pytest.raises(ImportError, match='pip install sentencepiece'):
    tokenizers.get_tokenizer(f'sentencepiece:{prefix}.model', 8)


@functools.cache
def _bvstinycaptions():
  """The builder class, made on first use: importing TFDS imports TensorFlow (seconds of
  CPU), which only the pytest worker running these tests should pay."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class BvsTinyCaptions(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Like coco_captions: several captions per image, nested under captions/text."""
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(shape=(8, 8, 3)),
          'captions': tfds.features.Sequence({'text': tfds.features.Text()}),
      }))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples(0, 6), 'val': self._generate_examples(100, 2)}

    def _generate_examples(self, start, n):
      rng = np.random.default_rng(start)
      for key in range(start, start + n):
        yield key, {'image': rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                    'captions': [{'text': f'red dress {key}'}, {'text': 'second caption'}]}


  return BvsTinyCaptions


def test_image_text_tfds_source(tmp_path, ar_pairs):
  _bvstinycaptions()(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  config = {'name': 'image_text', 'format': 'tfds', 'tfds_name': 'bvs_tiny_captions',
            'data_dir': str(tmp_path), 'text_key': 'captions/text', 'test_split': 'val',
            'holdout_size': 2, 'tokenizer': ar_pairs['config']['tokenizer'], 'max_text_len': 8}
  train, test = datasets.get_source(config, 'train'), datasets.get_source(config, 'test')
  assert len(train) == 4 and len(test) == 2
  np.testing.assert_array_equal(test.ids, [6, 7])
  for i in range(2):  # The first caption of each image; ids follow the official train split.
    assert train.tokenizer.decode(test[i]['text']) == f'red dress {" ".join(str(100 + i))}'
  assert test[0]['image'].shape == (8, 8, 3)
  with pytest.raises(ValueError, match="no feature 'caption'"):
    datasets.get_source({**config, 'text_key': 'caption'}, 'train')
