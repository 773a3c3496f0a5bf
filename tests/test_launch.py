"""launch/*.sh: syntax, --help, and the command each prints (dry run) or runs (fake python)."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

LAUNCH_DIR = pathlib.Path(__file__).resolve().parent.parent / "launch"
SCRIPTS = ("cpu.sh", "gpu.sh", "metal.sh", "multihost_gpu.sh")
BACKENDS = {"cpu.sh": "cpu", "gpu.sh": "gpu", "metal.sh": "metal", "multihost_gpu.sh": "gpu"}
MULTIHOST_ENV = {"COORDINATOR_ADDRESS": "host0:12345", "NUM_PROCESSES": "2", "PROCESS_ID": "1"}
# Variables that would change what the scripts print if the test runner happened to have them.
_SCRUBBED = ("CONFIG", "WORKDIR", "DEVICES", "PYTHON", "LAUNCH_DRY_RUN", "XLA_FLAGS",
             "CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_MEM_FRACTION",
             "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_ALLOCATOR",
             "TF_CPP_MIN_LOG_LEVEL", "ENABLE_PJRT_COMPATIBILITY", "NCCL_DEBUG",
             "NCCL_SOCKET_IFNAME", "SLURM_NTASKS", "SLURM_PROCID", "COORDINATOR_ADDRESS",
             "NUM_PROCESSES", "PROCESS_ID", "PORT", "LVM_JAX_INIT_TIMEOUT_S",
             "LVM_JAX_HEARTBEAT_TIMEOUT_S", "LVM_JAX_BARRIER_TIMEOUT_S")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run_script(script, *args, dry_run=True, **env):
  full_env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
  if dry_run:
    full_env["LAUNCH_DRY_RUN"] = "1"
  if script == "multihost_gpu.sh":
    full_env.update(MULTIHOST_ENV)
  full_env.update(env)
  return subprocess.run(["bash", str(LAUNCH_DIR / script), *args], env=full_env,
                        capture_output=True, text=True, timeout=30, check=False)


def printed_command(result):
  """The words of the `+ ...` line the script printed, shell-unquoted."""
  assert result.returncode == 0, result.stderr
  (line,) = [l for l in result.stdout.splitlines() if l.startswith("+ ")]
  return shlex.split(line[2:])


@pytest.mark.parametrize("script", SCRIPTS + ("common.sh", "multihost_cpu.sh"))
def test_syntax(script):
  result = subprocess.run(["bash", "-n", str(LAUNCH_DIR / script)], capture_output=True,
                          text=True, check=False)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS + ("multihost_cpu.sh",))
def test_help_prints_documentation(script):
  for flag in ("--help", "-h"):
    result = run_script(script, flag, dry_run=False)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and f"launch/{script}" in result.stdout
    assert "LAUNCH_DRY_RUN" in result.stdout
    assert "set -euo pipefail" not in result.stdout  # stops at the end of the comment block
    assert "python -m lvm_jax.main" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_prints_command_with_backend_and_extra_args(script):
  words = printed_command(
      run_script(script, "--config.total_steps=3", "--note=two words", "it's"))
  main_at = words.index("-m")
  assert words[main_at - 1] == "python" and words[main_at + 1] == "lvm_jax.main"
  assert words[main_at + 2:] == [
      "--config=configs/s_contrastive.py", "--workdir=runs/s_contrastive",
      f"--backend={BACKENDS[script]}", "--config.total_steps=3", "--note=two words", "it's"
  ]


@pytest.mark.parametrize("script", SCRIPTS)
def test_config_workdir_and_python_from_environment(script):
  words = printed_command(
      run_script(script, CONFIG="configs/s_contrastive.py:tiny", PYTHON="/opt/py/bin/python3"))
  assert words[words.index("-m") - 1] == "/opt/py/bin/python3"
  assert "--config=configs/s_contrastive.py:tiny" in words
  assert "--workdir=runs/s_contrastive_tiny" in words
  words = printed_command(run_script(script, WORKDIR="/tmp/my run"))
  assert "--workdir=/tmp/my run" in words


def test_cpu_devices_set_xla_flags():
  words = printed_command(run_script("cpu.sh", DEVICES="4", XLA_FLAGS="--xla_dump_to=/tmp/d"))
  assert words[0] == ("XLA_FLAGS=--xla_dump_to=/tmp/d "
                      "--xla_force_host_platform_device_count=4")
  assert "--backend=cpu" in words
  assert not any(w.startswith("XLA_FLAGS") for w in printed_command(run_script("cpu.sh")))
  result = run_script("cpu.sh", DEVICES="four")
  assert result.returncode != 0 and "DEVICES" in result.stderr


def test_gpu_prints_memory_settings_it_passes():
  words = printed_command(run_script("gpu.sh", XLA_PYTHON_CLIENT_MEM_FRACTION=".9"))
  assert words[0] == "XLA_PYTHON_CLIENT_MEM_FRACTION=.9"


def test_multihost_exports_distributed_variables():
  words = printed_command(run_script("multihost_gpu.sh", "--x=1"))
  assert words[:3] == ["JAX_COORDINATOR_ADDRESS=host0:12345", "JAX_NUM_PROCESSES=2",
                       "JAX_PROCESS_ID=1"]
  assert words[-2:] == ["--backend=gpu", "--x=1"]


def test_multihost_falls_back_to_slurm():
  words = printed_command(run_script("multihost_gpu.sh", NUM_PROCESSES="", PROCESS_ID="",
                                     SLURM_NTASKS="4", SLURM_PROCID="3"))
  assert words[1:3] == ["JAX_NUM_PROCESSES=4", "JAX_PROCESS_ID=3"]


@pytest.mark.parametrize("env, variable", [
    ({"COORDINATOR_ADDRESS": ""}, "COORDINATOR_ADDRESS"),
    ({"COORDINATOR_ADDRESS": "host0"}, "COORDINATOR_ADDRESS"),
    ({"NUM_PROCESSES": "0"}, "NUM_PROCESSES"),
    ({"PROCESS_ID": "2"}, "PROCESS_ID"),
    ({"PROCESS_ID": "-1"}, "PROCESS_ID"),
])
def test_multihost_rejects_bad_settings(env, variable):
  result = run_script("multihost_gpu.sh", **env)
  assert result.returncode != 0
  assert variable in result.stderr and "+ " not in result.stdout


def test_runs_the_printed_command(tmp_path):
  """Without the dry run the script execs the command: a fake python records argv and env."""
  record = tmp_path / "record.txt"
  fake_python = tmp_path / "python"
  fake_python.write_text("#!/usr/bin/env bash\n"
                         f"printf '%s\\n' \"XLA_FLAGS=$XLA_FLAGS\" \"$@\" > {record}\n")
  fake_python.chmod(0o755)
  result = run_script("cpu.sh", "--config.total_steps=3", "two words", dry_run=False,
                      PYTHON=str(fake_python), DEVICES="2")
  assert result.returncode == 0, result.stderr
  assert record.read_text().splitlines() == [
      "XLA_FLAGS=--xla_force_host_platform_device_count=2", "-m", "lvm_jax.main",
      "--config=configs/s_contrastive.py", "--workdir=runs/s_contrastive", "--backend=cpu",
      "--config.total_steps=3", "two words"
  ]


def test_metal_refuses_other_platforms():
  if os.uname().sysname == "Darwin" and os.uname().machine == "arm64":
    pytest.skip("this is an Apple-silicon Mac")
  result = run_script("metal.sh", dry_run=False, PYTHON="false")
  assert result.returncode != 0 and "Apple silicon" in result.stderr


def test_multihost_cpu_prints_one_command_per_process():
  result = run_script("multihost_cpu.sh", "--config.train.num_epochs=2", NUM_PROCESSES="3",
                      PORT="23456", LVM_JAX_HEARTBEAT_TIMEOUT_S="20")
  assert result.returncode == 0, result.stderr
  lines = [shlex.split(l[2:]) for l in result.stdout.splitlines() if l.startswith("+ ")]
  assert len(lines) == 3
  for process_id, words in enumerate(lines):
    assert words[:5] == ["JAX_COORDINATOR_ADDRESS=127.0.0.1:23456", "JAX_NUM_PROCESSES=3",
                         "LVM_JAX_HEARTBEAT_TIMEOUT_S=20", f"JAX_PROCESS_ID={process_id}",
                         "python"]
    assert words[-2:] == ["--backend=cpu", "--config.train.num_epochs=2"]


@pytest.mark.parametrize("env, variable", [
    ({"NUM_PROCESSES": "1"}, "NUM_PROCESSES"),
    ({"NUM_PROCESSES": "two"}, "NUM_PROCESSES"),
    ({"PORT": "http"}, "PORT"),
    ({"PORT": "70000"}, "PORT"),
])
def test_multihost_cpu_rejects_bad_settings(env, variable):
  result = run_script("multihost_cpu.sh", **env)
  assert result.returncode != 0
  assert variable in result.stderr and "+ " not in result.stdout


def test_multihost_cpu_runs_every_process_and_returns_the_first_failure(tmp_path):
  """A fake python records each process's id and fails as process 1: the script waits for
  all and exits with that status; process 1's output goes to WORKDIR.process1.log."""
  fake_python = tmp_path / "python"
  fake_python.write_text("#!/usr/bin/env bash\n"
                         f"echo \"$JAX_PROCESS_ID $JAX_NUM_PROCESSES\" >> {tmp_path}/ids.txt\n"
                         "echo output of $JAX_PROCESS_ID\n"
                         "[[ $JAX_PROCESS_ID == 1 ]] && exit 7\nexit 0\n")
  fake_python.chmod(0o755)
  workdir = tmp_path / "runs" / "w"
  result = run_script("multihost_cpu.sh", dry_run=False, PYTHON=str(fake_python),
                      WORKDIR=str(workdir))
  assert result.returncode == 7, result.stderr
  assert sorted((tmp_path / "ids.txt").read_text().splitlines()) == ["0 2", "1 2"]
  assert "output of 0" in result.stdout
  assert (tmp_path / "runs" / "w.process1.log").read_text() == "output of 1\n"
  assert "process 1 exited with status 7" in result.stderr


def test_a_config_field_that_does_not_exist_is_one_error_line_before_jax_starts(tmp_path):
  """launch/README.md's first example once passed --config.total_steps, which no config has:
  it ended in a chained traceback and exit 1 (issue 31)."""
  result = run_script("cpu.sh", "--config.total_steps=20", dry_run=False, PYTHON=sys.executable,
                      CONFIG="configs/s_contrastive.py:tiny", DEVICES="2",
                      WORKDIR=str(tmp_path / "run"),
                      PYTHONPATH=str(LAUNCH_DIR.parent) + os.pathsep + os.environ.get(
                          "PYTHONPATH", ""))
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
      "error: --config.total_steps=20: config field total_steps does not exist in "
      "configs/s_contrastive.py:tiny. Fix: pass one of config's fields: augment, backend, data, "
      "eval, evals, head, loss, model, seed, train."]
