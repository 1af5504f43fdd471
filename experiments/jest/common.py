"""Shared pieces of the JEST / ActiveCLIP configs: a two-tower learner, a frozen reference, and
each batch selected from a super-batch (big_vision_style/image_text.py).

Two scales:
  local (default): captioned Fashion-MNIST (datasets/captioned_fashion_mnist.py), 32x32 RGB
    canvases with alt-text-like captions. The learner trains on the *uncurated* `train` pool
    (50k pairs, `corruption` of them web-style noisy: 30% on the default v2 benchmark, half on v1;
    see BENCHMARKS); the reference on the
    *curated* `holdout` pool (10k clean pairs), or, for the Fig. 5 analogue, on the uncurated
    pool. Image tower: ViT width 64, depth 2, patch 8 (16 tokens; Flexi-JEST scores at patch
    16, 4 tokens); text tower: a transformer of width 64, depth 1 over 16 word tokens; a 64-d
    shared embedding; SigLIP loss. Learner and reference have the same architecture, as in
    the paper (ViT-B/16 both). Batch b = 128, so f = 0.8 scores a super-batch of 640.
  tpu: the paper's recipe (SigLIP, ViT-B/16 + text transformer B, 256 px, b = 32k, AdamW lr
    1e-3, 1% warm-up then cosine, wd 1e-4, clip 1.0, beta2 0.95). WebLI (the learner's data),
    ALIGN and LTIP (the papers' curated reference data) are private: the public substitutes
    are DataComp / LAION (uncurated, prepare as ArrayRecord of (image, caption)) for the
    learner and CC12M or COCO + CC3M (curated) for the reference; zero-shot on
    `tfds:imagenet2012`, retrieval on `tfds:coco_captions`.
"""
import ml_collections

from big_vision_style import config_utils

LOCAL_IMAGE = dict(width=64, depth=2, mlp_dim=256, num_heads=2, patch_size=(8, 8),
                   pool_type='gap')
LOCAL_TEXT = dict(width=64, depth=1, mlp_dim=256, num_heads=2)
# 32 px, not the dataset's default 48: a clean reference learns zero-shot as fast per step
# (15.2% vs 14.6% after 800 steps, measured) at half the FLOPs per step, which is what makes
# the 3-seed grid of reproduce.py affordable on 2 CPU cores (96.9 min wall, results/jest).
LOCAL_CANVAS = 32
LOCAL_FLEXI_PATCH = (16, 16)  # Coarse patch of Flexi-JEST: 4 tokens instead of 16.
# `towers=`: the local towers' proportions, for Flexi-JEST's cost (flexi_cost.py). Flexi shrinks
# only the image tower, so its saving depends on the text tower's share of a pair's forward:
# 31% locally against 19% for the paper's ViT-B/16 at 256 px next to a B text transformer over
# 64 tokens (the standard transformer count). 'paper_text' narrows the text MLP to 64 (text 19%);
# 'paper_ratios' instead deepens the image tower to 4 blocks, which also brings the coarse image
# forward closer to the paper's share of the native one (the patch embedding, whose FLOPs do not
# depend on the patch size, weighs less). Training with either needs a reference of the same
# architecture (and its cache).
TOWERS = {'local': ({}, {}), 'paper_text': ({}, {'mlp_dim': 64}),
          'paper_ratios': ({'depth': 4}, {})}
# A fixed centring and scaling of the RGB canvases to about [-2, 2] (not their measured
# statistics): normalised inputs train faster than raw [0, 1] ones.
LOCAL_PP = dict(image_size=LOCAL_CANVAS, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

# The local benchmark's versions (captioned Fashion-MNIST's knobs, datasets/
# captioned_fashion_mnist.py), and the share of the learner's pool that is corrupted:
#   v1: captions that describe colour, size, position and background; garments of 3 sizes on a
#     3x3 grid; half the pool corrupted. A 16-token ViT learned to match pairs by those
#     attributes, not by garment: the i.i.d. learner stayed near chance (12% zero-shot over 10
#     classes) and below its reference (25.5%), so it could not test JEST (issue #19).
#   v2 (the default): alt-text captions (the garment always, its colour or background in some,
#     never its layout), every garment large and centred, 30% corrupted. Measured (800 steps,
#     clean pool): v1 14.0%, alt-text captions alone 20.2%, both 61.7% zero-shot; at 50%
#     corruption the i.i.d. learner was still at chance after 800 steps (11.8%), at 30% it
#     reaches 56.0% in 1,600 (results/jest/v2/README.md).
BENCHMARKS = {
    'v1': dict(caption_style='attributes', layout='grid', corruption=0.5),
    'v2': dict(caption_style='alt_text', layout='centred', corruption=0.3),
}

ARGS = dict(runlocal=False, tpu=False, seed=0, policy='learnability', method='joint',
            filter_ratio=0.8, num_chunks=16, gain=1.0, scorer='learner', reference='pretrained',
            reference_workdir='', embedding_cache='', flexi=False, steps=1000, batch=128,
            lr=2e-3, b2=0.95, loss='sigmoid', benchmark='v2', corruption=-1.0, reuse=False,
            log_every=0, towers='local')


def parse(arg, **extra):
  return config_utils.parse_arg(arg, **{**ARGS, **extra})


def reference_workdir(pool: str = 'curated') -> str:
  """Where the local reference of `pool` (curated or uncurated) is trained (reproduce.py)."""
  if pool not in ('curated', 'uncurated'):
    raise ValueError(f'Unknown reference pool {pool!r}: expected curated or uncurated.')
  return f'workdirs/jest/reference_{pool}'


def base_config(arg) -> ml_collections.ConfigDict:
  """A contrastive run with the selection args of `arg` (policy=uniform: i.i.d. batches)."""
  config = ml_collections.ConfigDict()
  config.seed = arg.seed
  config.objective = 'contrastive'
  config.contrastive_loss = arg.loss
  if arg.tpu:
    _tpu(config, arg)
  else:
    _local(config, arg)
  if arg.policy == 'uniform':
    config.selection = dict(policy='uniform', filter_ratio=0.0)
  else:
    config.selection = dict(
        policy=arg.policy, method=arg.method, filter_ratio=arg.filter_ratio,
        num_chunks=arg.num_chunks, gain=arg.gain, scorer=arg.scorer, reference=arg.reference,
        reference_workdir=arg.reference_workdir or config.reference_workdir,
        embedding_cache=arg.embedding_cache or None,
        score_patch_size=config.flexi_patch if arg.flexi else None,
        # Off by default: on this CPU it saves 4-18% of the learner's FLOPs but not time (the
        # super-batch's activations are written out; results/bench/forward_reuse.md). At paper
        # scale (b = 32k, f = 0.8, 256 chips) a chip would keep the ViT-B/16 activations of 640
        # pairs, roughly 40 GB by a count of its layers' tensors: more than a v4 chip has.
        reuse_scoring_forward=arg.reuse)
  if arg.log_every:  # Training metrics every this many steps (1: every step's loss, for spikes).
    config.log_training_steps = arg.log_every
  if arg.runlocal:  # Seconds, for tests and smoke runs.
    for model in (config.model, config.reference_model, config.actor_model):
      model.image.update(width=16, depth=1, mlp_dim=32, num_heads=1)
      model.text.update(width=16, depth=1, mlp_dim=32, num_heads=1)
      model.embed_dim = 16
    config.total_steps = 4
    config.input.batch_size = 16
    if arg.policy != 'uniform':
      config.selection.num_chunks = min(arg.num_chunks, 4)
    config.log_training_steps = 2
    config.ckpt_steps = 2
    for ev in config.evals.values():
      ev.update(log_steps=4, batch_size=256)
    config.evals.retrieval.max_examples = 512
  return config


def benchmark_data(arg) -> dict:
  """The data knobs of `arg.benchmark`; `corruption` >= 0 overrides its corrupted share."""
  if arg.benchmark not in BENCHMARKS:
    raise ValueError(f'benchmark={arg.benchmark!r}: expected one of {", ".join(BENCHMARKS)}.')
  knobs = dict(BENCHMARKS[arg.benchmark])
  corruption = knobs.pop('corruption') if arg.corruption < 0 else arg.corruption
  return dict(knobs, corruption_rate=corruption)


def _local(config, arg):
  config.data = dict(name='captioned_fashion_mnist', data_dir=None, holdout_size=10_000,
                     split_seed=0, canvas_size=LOCAL_CANVAS, max_text_len=16, tokenizer='words',
                     corruption_seed=0, **benchmark_data(arg))
  # No augmentation: scores are of the pair the learner trains on, and the reference
  # embedding cache (of un-augmented images) then equals the live reference.
  config.input = dict(batch_size=arg.batch, channels=3, augment=(), num_threads=2, prefetch=4,
                      pp=dict(LOCAL_PP))
  config.model_name = 'two_towers'
  if arg.towers not in TOWERS:
    raise ValueError(f'Unknown towers {arg.towers!r}: expected one of {", ".join(TOWERS)}.')
  image_kw, text_kw = TOWERS[arg.towers]
  config.model = ml_collections.ConfigDict(dict(
      embed_dim=64, image=dict(LOCAL_IMAGE, **image_kw),
      text=dict(LOCAL_TEXT, vocab_size=128, **text_kw)))
  config.reference_model_name = 'two_towers'
  config.reference_model = ml_collections.ConfigDict(config.model.to_dict())
  config.actor_model_name = 'two_towers'  # ActiveCLIP's small online actor.
  config.actor_model = ml_collections.ConfigDict(dict(
      embed_dim=64, image=dict(LOCAL_IMAGE, width=32, mlp_dim=128),
      text=dict(LOCAL_TEXT, width=32, mlp_dim=128, vocab_size=128)))
  config.reference_workdir = reference_workdir('curated')
  config.flexi_patch = LOCAL_FLEXI_PATCH
  config.total_steps = arg.steps
  # JEST: Adam beta2 0.95 avoids loss spikes at high filter ratios.
  config.optax = dict(lr=arg.lr, wd=1e-4, b1=0.9, b2=arg.b2, warmup_frac=0.05, clip_norm=1.0)
  config.actor_optax = dict(config.optax)
  config.log_training_steps = 50
  config.ckpt_steps = 500
  config.evals = ml_collections.ConfigDict()
  config.evals.zeroshot = dict(type='zero_shot', split='test', log_steps=250, batch_size=1000)
  config.evals.retrieval = dict(type='retrieval', split='test', log_steps=250, batch_size=1000,
                                max_examples=2000)


def _tpu(config, arg):
  if arg.towers != 'local':
    raise ValueError('towers= reshapes the local towers; the TPU config has the paper\'s own.')
  config.data = dict(name='image_text', format='array_record',
                     paths='gs://YOUR_BUCKET/datacomp_medium/{split}-*.array_record',
                     tokenizer='sentencepiece:gs://big_vision/paligemma_tokenizer.model',
                     max_text_len=64, holdout_size=0)
  config.input = dict(batch_size=32_768, channels=3, augment=(), num_threads=32, prefetch=2,
                      pp=dict(image_size=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
  config.model_name = 'two_towers'
  # bf16 matmuls (float32 parameters, optimiser state, residual stream and norms) and both
  # towers' blocks rematerialised: without them the step needs 42 GiB per chip on 256 v4 chips
  # (results/aot/README.md). The reference only runs forward: remat does nothing there.
  tower = dict(dtype_mm='bfloat16', remat=True)
  config.model = ml_collections.ConfigDict(dict(
      embed_dim=768, image=dict(variant='B/16', pool_type='gap', **tower),
      text=dict(variant='B', vocab_size=257_152, **tower)))
  config.reference_model_name = 'two_towers'
  config.reference_model = ml_collections.ConfigDict(config.model.to_dict())
  config.actor_model_name = 'two_towers'
  config.actor_model = ml_collections.ConfigDict(dict(
      embed_dim=768, image=dict(variant='Ti/16', pool_type='gap', dtype_mm='bfloat16'),
      text=dict(variant='Ti', vocab_size=257_152, dtype_mm='bfloat16')))
  config.reference_workdir = 'gs://YOUR_BUCKET/jest/reference_cc12m'
  config.flexi_patch = (32, 32)
  config.total_steps = arg.steps if arg.steps != ARGS['steps'] else 100_000  # 3.3B examples.
  config.optax = dict(lr=1e-3, wd=1e-4, b1=0.9, b2=arg.b2, warmup_frac=0.01, clip_norm=1.0)
  config.actor_optax = dict(config.optax)
  config.log_training_steps = 100
  config.ckpt_steps = 1000
  config.evals = ml_collections.ConfigDict()
  # ImageNet zero-shot (class names: put the 1,000 CLIP class names in a file and load them
  # here) and COCO retrieval, each read from its own TFDS dataset.
  config.evals.zeroshot = dict(type='zero_shot', data=dict(name='tfds:imagenet2012',
                                                           test_split='validation'),
                               split='test', log_steps=5000, batch_size=4096,
                               tokenizer=config.data.tokenizer, max_text_len=64)
  config.evals.retrieval = dict(type='retrieval', split='test', log_steps=5000,
                                batch_size=4096, max_examples=5000,
                                data=dict(config.data, format='tfds', tfds_name='coco_captions',
                                          text_key='captions/text', test_split='val'))
