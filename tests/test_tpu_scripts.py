"""tpu/*.sh against a stub gcloud that plays a 2-worker TPU pod on localhost.

tests/stub_gcloud/gcloud keeps the VMs' state in a temp dir and runs `tpu-vm ssh --command`
in one fake $HOME per worker (with its own `hostname`); tests/stub_gcloud/fake_python stands in
for the workers' Python (venv, pip, and a trainer that records its argv and exits as told).
The scripts run from a copy of tpu/ in a small temp repo, so setup.sh packs only that.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB_DIR = os.path.join(ROOT, 'tests', 'stub_gcloud')
FAKE_PYTHON = os.path.join(STUB_DIR, 'fake_python')
SSH_FLAGS = ['--internal-ip', '--tunnel-through-iap']
CONFIG = 'experiments/fake.py:a=1'
WORKDIR = 'gs://bkt/exp/run1'
TRAINER_ARGS = ['--config', CONFIG, '--workdir', WORKDIR, '--config.x=1']

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith('linux') or not all(
        shutil.which(c) for c in ('setsid', 'flock', 'git')),
    reason='the stub gcloud and its workers need Linux (/proc, setsid, flock) and git')

# Variables of the user's shell that would change what the scripts do.
_SCRIPT_VARS = ('NAME', 'ZONE', 'PROJECT', 'ACCELERATOR_TYPE', 'RUNTIME_VERSION', 'SPOT', 'QUEUED',
                'WAIT', 'RUN', 'CONSTRAINTS', 'PYTHON', 'CREATE_FLAGS', 'GCLOUD_SSH_FLAGS',
                'GCLOUD_SSH_TRACK', 'TFDS_DATA_DIR', 'XLA_FLAGS', 'LIBTPU_INIT_ARGS', 'LOG_DIR',
                'BVS_REMOTE_DIR', 'BVS_REMOTE_VENV', 'BVS_REMOTE_LOGS', 'WORKER')


class Pod:
  """A temp repo with tpu/, the stub's state dir, and helpers to run the scripts."""

  def __init__(self, tmp_path):
    self.repo = tmp_path / 'repo'
    self.state = tmp_path / 'state'
    self.state.mkdir()
    (self.repo / 'experiments').mkdir(parents=True)
    shutil.copytree(os.path.join(ROOT, 'tpu'), self.repo / 'tpu')
    for f in ('constraints.txt', 'pyproject.toml'):
      shutil.copy(os.path.join(ROOT, f), self.repo / f)
    (self.repo / 'experiments' / 'fake.py').write_text('def get_config(arg=None):\n  return arg\n')
    subprocess.run(['git', 'init', '-q', str(self.repo)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in _SCRIPT_VARS}
    env.update(
        PATH=STUB_DIR + os.pathsep + env['PATH'],
        BVS_STUB_STATE=str(self.state),
        NAME='bvs-test', ZONE='us-test1-a', ACCELERATOR_TYPE='v4-16', PYTHON=FAKE_PYTHON,
        GCLOUD_SSH_FLAGS=' '.join(SSH_FLAGS),
        TFDS_DATA_DIR='gs://bkt/tfds',
        START_CHECK_SECONDS='0.3', POLL_SECONDS='0.2', STOP_TIMEOUT='10',
        LOG_SYNC_SECONDS='0',  # on only where a test checks it (it adds a gcloud call per stop)
        BVS_FAKE_RUN_SECONDS='0.6',
    )
    self.env = env

  def run(self, *args, check=True, timeout=60, **env):
    """Runs tpu/<args[0]> with the pod's env plus env; returns the CompletedProcess."""
    script = os.path.join(self.repo, 'tpu', args[0])
    proc = subprocess.run([script, *args[1:]], cwd=self.repo, env=dict(self.env, **env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    self.n_runs = getattr(self, 'n_runs', 0) + 1  # the output, kept for post-mortems
    (self.repo.parent / f'{self.n_runs:02d}.{args[0]}.out').write_text(proc.stdout + proc.stderr)
    if check and proc.returncode:
      raise AssertionError(f'{args} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n'
                           f'--- stderr\n{proc.stderr}')
    return proc

  def gcloud(self, *args):
    return subprocess.run([os.path.join(STUB_DIR, 'gcloud'), *args], env=self.env,
                          capture_output=True, text=True, check=True).stdout

  def _jsonl(self, name):
    path = self.state / name
    if not path.exists():
      return []
    return [json.loads(line) for line in path.read_text().splitlines()]

  def calls(self):
    """Every gcloud argv so far, the release track (alpha/beta) dropped into ('track', argv)."""
    out = []
    for argv in self._jsonl('calls.jsonl'):
      track = argv[0] if argv[:1] in (['alpha'], ['beta']) else 'ga'
      out.append((track, argv[1:] if track != 'ga' else argv))
    return out

  def verbs(self, *prefix):
    return [argv for _, argv in self.calls() if argv[:len(prefix)] == list(prefix)]

  def events(self, event=None):
    return [e for e in self._jsonl('trainer.jsonl') if event is None or e['event'] == event]

  def pip_installs(self):
    return [e for e in self._jsonl('pip.jsonl') if e['argv'][:1] == ['install'] and
            '-e' in e['argv']]

  def home(self, vm, worker):
    return self.state / 'nodes' / vm / f'w{worker}' / 'home'

  def wait_for(self, predicate, timeout=20, what='condition'):
    end = time.time() + timeout
    while time.time() < end:
      if predicate():
        return
      time.sleep(0.05)
    raise AssertionError(f'timed out waiting for {what}')

  def assert_ssh_flags_everywhere(self):
    """Every tpu-vm ssh/scp call carried GCLOUD_SSH_FLAGS, on the alpha track (IAP)."""
    remote = [(t, a) for t, a in self.calls() if a[:4] in (['compute', 'tpus', 'tpu-vm', 'ssh'],
                                                          ['compute', 'tpus', 'tpu-vm', 'scp'])]
    assert remote, 'no ssh/scp calls'
    for track, argv in remote:
      assert track == 'alpha', argv
      for flag in SSH_FLAGS:
        assert flag in argv, argv
    return remote

  def kill_all(self):
    self.gcloud('_stub', 'killall')


@pytest.fixture
def pod(tmp_path):
  p = Pod(tmp_path)
  yield p
  p.kill_all()  # fake trainers left running by a failed test


def test_missing_settings_are_named(pod):
  env = dict(pod.env)
  del env['NAME'], env['ZONE']
  pod.env = env
  proc = pod.run('launch.sh', CONFIG, WORKDIR, check=False)
  assert proc.returncode == 1
  assert 'required environment variable(s) not set: NAME ZONE' in proc.stderr
  assert 'Usage:' in proc.stderr
  proc = pod.run('recover.sh', CONFIG, WORKDIR, check=False, NAME='x', ZONE='z',
                 ACCELERATOR_TYPE='')
  assert proc.returncode == 1
  assert 'not set: ACCELERATOR_TYPE' in proc.stderr
  proc = pod.run('setup.sh', check=False, NAME='x')
  assert proc.returncode == 1 and 'not set: ZONE' in proc.stderr
  proc = pod.run('recover.sh', CONFIG, 'workdirs/local', check=False, NAME='x', ZONE='z')
  assert proc.returncode == 1 and 'WORKDIR must be gs://' in proc.stderr
  proc = pod.run('launch.sh', '--status', check=False, NAME='x', ZONE='z',
                 GCLOUD_SSH_TRACK='gamma')
  assert proc.returncode == 1 and 'GCLOUD_SSH_TRACK must be ga, alpha or beta' in proc.stderr
  assert pod.calls() == []  # all refused before any gcloud call


def test_launch_status_stop_on_two_workers(pod):
  pod.run('create.sh')
  pod.run('setup.sh')
  # setup installed the pinned set on both workers, jax[tpu] through the project's tpu extra.
  installs = pod.pip_installs()
  assert sorted(e['worker'] for e in installs) == [0, 1]
  for e in installs:
    dest = str(pod.home('bvs-test-1', e['worker']) / 'bvs')
    argv = e['argv']
    assert argv[argv.index('-c') + 1] == dest + '/constraints.txt'
    assert argv[argv.index('-e') + 1] == dest + '[tpu]'
  assert (pod.home('bvs-test-1', 1) / 'bvs' / 'experiments' / 'fake.py').exists()

  proc = pod.run('launch.sh', CONFIG, WORKDIR, '--config.x=1', BVS_FAKE_PLAN='wait',
                 LOG_SYNC_SECONDS='300')
  assert 'bvs-test-w-0] started pid' in proc.stdout and 'bvs-test-w-1] started pid' in proc.stdout
  starts = pod.events('start')
  assert sorted(e['host'] for e in starts) == ['bvs-test-w-0', 'bvs-test-w-1']
  for e in starts:
    assert e['argv'] == TRAINER_ARGS
    assert e['cwd'] == str(pod.home('bvs-test-1', e['worker']) / 'bvs')
    assert e['distributed'] == 1 and e['tfds_data_dir'] == 'gs://bkt/tfds'

  status = pod.run('launch.sh', '--status').stdout
  for w in (0, 1):
    assert f'[bvs-test-w-{w}] run1: running (pid' in status

  # Launching again resumes: the running trainers are stopped (SIGTERM) first.
  pod.run('launch.sh', CONFIG, WORKDIR, '--config.x=1', BVS_FAKE_PLAN='wait',
          LOG_SYNC_SECONDS='300')
  assert len(pod.events('sigterm')) == 2 and len(pod.events('start')) == 4

  proc = pod.run('launch.sh', '--stop')
  assert proc.stdout.count('stopping trainer pid') == 2
  assert len(pod.events('sigterm')) == 4
  status = pod.run('launch.sh', '--status').stdout
  for w in (0, 1):
    assert f'[bvs-test-w-{w}] run1: exited 75 (stopped before the end' in status
    logs = pod.home('bvs-test-1', w) / 'bvs_logs'
    assert (logs / 'run1.exit').read_text().strip() == '75'
    assert (logs / 'run1.stopped').exists()  # so recover.sh does not relaunch it
    # The log went to the gs:// workdir when the trainer ended.
    synced = pod.state / 'gcs' / 'bkt' / 'exp' / 'run1' / 'logs' / f'bvs-test-w-{w}.log'
    assert 'trainer exited with code 75' in synced.read_text()
  pod.assert_ssh_flags_everywhere()


def test_collect_logs_from_every_worker(pod):
  pod.run('create.sh')
  pod.run('setup.sh')
  pod.run('launch.sh', CONFIG, WORKDIR, '--config.x=1', BVS_FAKE_PLAN='0')
  pod.wait_for(lambda: len(pod.events('exit')) == 2, what='both trainers to exit')
  pod.wait_for(lambda: all((pod.home('bvs-test-1', w) / 'bvs_logs' / 'run1.exit').exists()
                           for w in (0, 1)), what='exit codes')
  assert 'run1: exited 0 (finished)' in pod.run('launch.sh', '--status').stdout

  dest = pod.repo / 'collected'
  n_calls = len(pod.calls())
  pod.run('launch.sh', '--collect-logs', '', str(dest))  # '' = the latest run
  assert sorted(os.listdir(dest)) == ['worker-0.log', 'worker-1.log']
  for w in (0, 1):
    text = (dest / f'worker-{w}.log').read_text()
    assert f'fake trainer on bvs-test-w-{w}:' in text
    assert f'bvs-test-w-{w}: trainer exited with code 0' in text
  # One scp per worker, each naming its worker; all with the extra flags.
  scps = [a for _, a in pod.calls()[n_calls:] if a[3:4] == ['scp']]
  assert sorted(next(x for x in a if x.startswith('--worker=')) for a in scps) == [
      '--worker=0', '--worker=1']
  pod.assert_ssh_flags_everywhere()


def test_ssh_track_follows_the_flags(pod):
  pod.run('create.sh')
  # Without --tunnel-through-iap the GA track is used, with the flags passed through.
  pod.run('launch.sh', '--status', GCLOUD_SSH_FLAGS='--internal-ip')
  track, argv = pod.calls()[-1]
  assert track == 'ga' and '--internal-ip' in argv
  # GA tpu-vm ssh has no --tunnel-through-iap (the stub, like gcloud, refuses it).
  proc = pod.run('launch.sh', '--status', check=False, GCLOUD_SSH_TRACK='ga')
  assert proc.returncode != 0 and 'unrecognized arguments: --tunnel-through-iap' in proc.stderr
  pod.run('launch.sh', '--status')  # auto: alpha
  assert pod.calls()[-1][0] == 'alpha'


def test_recover_recreates_a_preempted_vm_until_exit_0(pod):
  # No VM yet. Attempt 0 is preempted (worker 0 flips the VM to PREEMPTED and its processes
  # die), attempt 1 exits 75 (stopped after saving), attempt 2 finishes.
  log_dir = pod.repo / 'workdirs' / 'logs'
  proc = pod.run('recover.sh', CONFIG, WORKDIR, '--config.x=1', BVS_FAKE_PLAN='preempt,75,0',
                 SPOT='1', CREATE_FLAGS='--labels=team=bvs', LOG_DIR=str(log_dir),
                 DELETE_WHEN_DONE='1')
  assert 'PREEMPTED' in proc.stderr
  assert 'finished: the trainer exited 0 on all 2 worker(s)' in proc.stderr

  creates = pod.verbs('compute', 'tpus', 'tpu-vm', 'create')
  assert len(creates) == 2
  for argv in creates:
    assert '--spot' in argv and '--labels=team=bvs' in argv and '--accelerator-type=v4-16' in argv
  # Deleted once to recreate it, once at the end (DELETE_WHEN_DONE=1).
  assert len(pod.verbs('compute', 'tpus', 'tpu-vm', 'delete')) == 2
  assert not (pod.state / 'vms' / 'bvs-test').exists()

  # Every start, on both VMs and both workers, went to the same workdir with the same flags.
  starts = pod.events('start')
  assert len(starts) == 6
  assert all(e['argv'] == TRAINER_ARGS for e in starts)
  assert sorted((e['vm'], e['worker'], e['attempt']) for e in starts) == [
      ('bvs-test-1', 0, 0), ('bvs-test-1', 1, 0),
      ('bvs-test-2', 0, 1), ('bvs-test-2', 0, 2), ('bvs-test-2', 1, 1), ('bvs-test-2', 1, 2)]
  # The recreated VM was set up again (both workers) before the relaunch.
  assert sorted((e['vm'], e['worker']) for e in pod.pip_installs()) == [
      ('bvs-test-1', 0), ('bvs-test-1', 1), ('bvs-test-2', 0), ('bvs-test-2', 1)]
  assert sorted((e['worker'], e['code']) for e in pod.events('exit')) == [
      (0, 0), (0, 75), (1, 0), (1, 75)]
  # The logs of the last VM, from both workers.
  for w in (0, 1):
    text = (log_dir / f'worker-{w}.log').read_text()
    assert text.count('trainer exited with code') == 2 and text.rstrip().endswith('code 0')
  pod.assert_ssh_flags_everywhere()


def test_recover_a_suspended_queued_resource(pod):
  proc = pod.run('recover.sh', CONFIG, WORKDIR, '--config.x=1', BVS_FAKE_PLAN='preempt,0',
                 QUEUED='1', BVS_STUB_QR_PENDING='2', COLLECT_LOGS='0')
  assert 'queued resource SUSPENDED' in proc.stderr
  assert len(pod.verbs('compute', 'tpus', 'queued-resources', 'create')) == 2
  deletes = pod.verbs('compute', 'tpus', 'queued-resources', 'delete')
  assert len(deletes) == 1 and '--force' in deletes[0]
  starts = pod.events('start')
  assert sorted((e['vm'], e['worker']) for e in starts) == [
      ('bvs-test-1', 0), ('bvs-test-1', 1), ('bvs-test-2', 0), ('bvs-test-2', 1)]
  assert all(e['argv'] == TRAINER_ARGS for e in starts)


def test_recover_waits_for_capacity_then_reports_a_failure(pod):
  # Two creates fail for lack of capacity; then the trainer fails with exit code 3 on both.
  log_dir = pod.repo / 'failed_logs'
  proc = pod.run('recover.sh', CONFIG, WORKDIR, check=False, BVS_FAKE_PLAN='3',
                 BVS_STUB_CREATE_FAILURES='2', LOG_DIR=str(log_dir))
  assert proc.returncode == 3, proc.stderr
  assert proc.stderr.count('create failed (no capacity?)') == 2
  assert 'with exit code 3' in proc.stderr
  assert len(pod.verbs('compute', 'tpus', 'tpu-vm', 'create')) == 3
  assert len(pod.events('start')) == 2  # no relaunch after a real failure
  assert 'trainer exited with code 3' in (log_dir / 'worker-1.log').read_text()


def test_recover_gives_up_after_max_wait(pod):
  proc = pod.run('recover.sh', CONFIG, WORKDIR, check=False, BVS_STUB_CREATE_FAILURES='1000',
                 MAX_WAIT='1')
  assert proc.returncode == 1
  assert 'giving up: no READY bvs-test after MAX_WAIT=1s' in proc.stderr
  assert pod.events() == []


def test_recover_attaches_and_respects_a_stop(pod):
  pod.run('create.sh')
  pod.run('setup.sh')
  pod.run('launch.sh', CONFIG, WORKDIR, '--config.x=1', BVS_FAKE_PLAN='wait')
  err_path = pod.repo.parent / 'recover.err'
  with open(err_path, 'w') as err_file:
    watcher = subprocess.Popen(
        [str(pod.repo / 'tpu' / 'recover.sh'), CONFIG, WORKDIR, '--config.x=1'], cwd=pod.repo,
        env=dict(pod.env, COLLECT_LOGS='0'), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=err_file)
  try:
    # Once it has found the trainer running everywhere (attached), stop the run by hand.
    pod.wait_for(lambda: 'watching it' in err_path.read_text(), what='recover.sh to attach')
    pod.run('launch.sh', '--stop')
    watcher.wait(timeout=30)
  finally:
    if watcher.poll() is None:
      watcher.kill()
  err = err_path.read_text()
  assert watcher.returncode == 75, err
  assert 'running on all 2 worker(s): watching it' in err
  assert 'stopped with tpu/launch.sh --stop' in err
  assert len(pod.events('start')) == 2  # attached: never relaunched
