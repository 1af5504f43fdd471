#!/bin/bash
# The three chaos runs, one after another, from the clone at a fixed commit.
cd /tmp/chaos_clone
export JAX_PLATFORMS=cpu JAX_COMPILATION_CACHE_DIR=/tmp/chaos_jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 TF_CPP_MIN_LOG_LEVEL=3
PY=/tmp/chaos_clone/.venv/bin/python
OUT=/tmp/chaos/results
mkdir -p $OUT
nice -n 10 $PY -m big_vision_style.tools.chaos --name baseline --kills 30 \
  --config experiments/baseline/fashion_mnist.py:runlocal \
  --set total_steps=100 --set ckpt_steps=5 --set log_training_steps=5 --set evals.test.log_steps=20 \
  --base /tmp/chaos --out $OUT/baseline.json
nice -n 10 $PY -m big_vision_style.tools.chaos --name bad_students --kills 30 \
  --prereq experiments/bad_students/reference.py:runlocal=/tmp/chaos/bs_reference \
  --config experiments/bad_students/policy_comparison.py:runlocal,policy=learnability,reference_workdir=/tmp/chaos/bs_reference \
  --set total_steps=60 --set ckpt_steps=5 --set log_training_steps=5 --set evals.test.log_steps=15 \
  --base /tmp/chaos --out $OUT/bad_students.json
nice -n 10 $PY -m big_vision_style.tools.chaos --name jest --kills 30 \
  --prereq experiments/jest/reference.py:runlocal=/tmp/chaos/jest_reference \
  --config experiments/jest/filter_ratio.py:runlocal,policy=learnability,method=joint,reference_workdir=/tmp/chaos/jest_reference \
  --set total_steps=60 --set ckpt_steps=5 --set log_training_steps=5 --set evals.zeroshot.log_steps=20 --set evals.retrieval.log_steps=20 \
  --base /tmp/chaos --out $OUT/jest.json
