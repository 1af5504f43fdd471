r"""Local reproduction of the Bad Students Table 1: RHO-LOSS against ClassAct with three
references (held-out, in-domain, online).

  python -m experiments.bad_students.reproduce_rho_vs_classact --parallel 2 \
      --workdir workdirs/bs_arms --out results/bad_students/rho_vs_classact

Arms (experiments/bad_students/rho_vs_classact.py), all with the policy comparison's learner
(w96d4), Ti actor and Ti references, against uniform on the same seeds, at --noise label noise:
  ClassAct-HO         learnability, reference trained on the clean held-out split
  ClassAct-in-domain  learnability, reference trained on the learner's own (noisy) train split
  ClassAct-Online     learnability, reference trained online on each whole super-batch (2x lr)
  RHO-HO              RHO-LOSS (learner loss - reference loss) with ClassAct-HO's reference
  ClassAct-HO-cached  ClassAct-HO with the reference's scores computed once over the train split
                      and looked up by example id (experiments/bad_students/
                      compute_amortisation.py: the paper's Fig. 5 "reference scores
                      precomputed" level, measured rather than counted)
ClassAct-HO's runs are the actor-size sweep's `learnability_Ti` (the same config): with one
--workdir, either reproducer trains them once. Finished runs are skipped, unfinished ones resume.

Writes to --out: summary.json (per arm: `arms.compare`'s entry; each reference's test
accuracy), curves.json (mean and per-seed curves), table.md and rho_vs_classact.png.
"""
from __future__ import annotations

import os

from experiments import analysis
from experiments import sweep
from experiments.bad_students import arms as arms_lib
from experiments.bad_students import compute_amortisation
from experiments.bad_students import reference
from experiments.bad_students import reproduce_actor_size as actor_size
from experiments.bad_students import rho_vs_classact

MODULE = 'experiments.bad_students.reproduce_rho_vs_classact'
HOLDOUT = actor_size.reference_dir('Ti')


def in_domain_dir(args) -> str:
  return f'reference_train_noise{args.noise:g}'


def references(args) -> list[arms_lib.Reference]:
  return [arms_lib.Reference(HOLDOUT, reference.get_config),
          arms_lib.Reference(in_domain_dir(args), lambda: reference.get_config(
              f'split=train,label_noise={args.noise}'))]


# name: (rho_vs_classact variant, the reference it loads (None: trained online), run dir).
ARMS = {
    'ClassAct-HO': ('holdout', HOLDOUT, 'learnability_Ti'),
    'ClassAct-in-domain': ('in_domain', 'in_domain', ''),
    'ClassAct-Online': ('online', None, ''),
    'RHO-HO': ('rho', HOLDOUT, ''),
    'ClassAct-HO-cached': ('cached', HOLDOUT, ''),
}


def score_cache_path(args) -> str:
  return os.path.join(args.workdir, f'reference_scores_noise{args.noise:g}.npz')


def cached_config(args, seed: int):
  return compute_amortisation.get_config(
      f'seed={seed},label_noise={args.noise},steps={args.steps},'
      f'reference_workdir={os.path.join(args.workdir, HOLDOUT)},'
      f'score_cache={score_cache_path(args)}')


def prepare_score_cache(args):
  """The held-out reference's loss on every (noisy) training example, once (atomic write)."""
  if os.path.exists(score_cache_path(args)):
    return
  from big_vision_style import score_cache  # pylint: disable=g-import-not-at-top
  ids, scores, meta = score_cache.compute_reference_scores(cached_config(args, args.seeds[0]))
  score_cache.save(score_cache_path(args), ids, scores, meta)


def build_arms(args) -> list[arms_lib.Arm]:
  out = [actor_size.uniform_arm(args)]
  for name, (variant, ref_name, run_dir) in ARMS.items():
    ref_name = in_domain_dir(args) if ref_name == 'in_domain' else ref_name

    def config(seed, ref, variant=variant, ref_name=ref_name):
      if variant == 'cached':
        return cached_config(args, seed)
      flags = (f'variant={variant},seed={seed},label_noise={args.noise},steps={args.steps}' +
               (f',reference_workdir={ref(ref_name)}' if ref_name else ''))
      return rho_vs_classact.get_config(flags)

    out.append(arms_lib.Arm(name, config, dir=run_dir, cost=3 if variant == 'online' else 2))
  return out


def train_runs(args):
  arms_lib.train(args, MODULE, build_parser(), references(args), build_arms(args),
                 prepare=lambda: prepare_score_cache(args))


def analyze(args):
  result = arms_lib.compare(args, build_arms(args))
  if result is None:
    print('uniform has not finished: nothing to analyse yet.')
    return None
  refs = {}
  for ref in references(args):
    final = sweep.final_row(os.path.join(args.workdir, ref.name))
    refs[ref.name] = None if final is None else final['eval/test/accuracy']
  arms_lib.write(args.out, result, {'reference_test_accuracy': refs})
  lines = _table(result, refs, args)
  analysis.write_text(os.path.join(args.out, 'table.md'), lines)
  _plot(result, args)
  print('\n'.join(lines))
  return result


def _table(result, refs, args) -> list[str]:
  s = result['summary']
  rows = []
  for name, entry in s['arms'].items():
    ref_name = ARMS.get(name, (None, None))[1]
    ref_name = in_domain_dir(args) if ref_name == 'in_domain' else ref_name
    ref_acc = refs.get(ref_name) if ref_name else None
    rows.append([name, '-' if ref_acc is None else f'{100 * ref_acc:.2f}',
                 *arms_lib.table_cells(entry, name, len(args.seeds))])
  head = ['# Bad Students: RHO-LOSS vs ClassAct references (local)', '',
          f'Fashion-MNIST with {args.noise:g} label noise, learner w96d4, Ti actor and '
          f'references, {args.steps} learner steps, f = 0.5, seeds {args.seeds}. Target: '
          "uniform's final mean test accuracy "
          f'({100 * s["target_accuracy"]:.2f}%; per seed: that seed\'s). FLOPs ratios count '
          'everything but a frozen reference\'s training ("all counted": with it; an online '
          "reference's training is in every column).", '']
  return head + analysis.markdown_table(
      ['arm', 'reference test acc. (%)', *arms_lib.TABLE_HEADER], rows,
      'll' + 'r' * len(arms_lib.TABLE_HEADER)) + [
          '', f'Produced by `{analysis.command(MODULE, args)}`.']


def _plot(result, args):
  plt = analysis.pyplot()
  fig, axes = plt.subplots(1, 4, figsize=(22, 4.6))
  styles = {'uniform': dict(color='k'), **{name: dict(color=f'C{k}') for k, name in
                                          enumerate(ARMS)}}
  arms_lib.plot_curves(axes[:2], result, styles)
  arms_lib.plot_per_seed(axes[2:], result, [n for n in result['curves'] if n != 'uniform'],
                         styles)
  fig.suptitle(f'Bad Students, RHO-LOSS vs ClassAct references, Fashion-MNIST, label noise '
               f'{args.noise:g}: mean ± sample std over seeds')
  analysis.save_figure(fig, os.path.join(args.out, 'rho_vs_classact.png'), dpi=100)


def build_parser():
  parser = sweep.make_parser(__doc__, workdir='workdirs/bs_arms',
                             out='results/bad_students/rho_vs_classact')
  arms_lib.add_arguments(parser, noise=0.3, seeds='3,4,5')
  return parser


def main(argv=None):
  sweep.drive(sweep.parse(build_parser(), argv), train_runs, analyze)


if __name__ == '__main__':
  main()
