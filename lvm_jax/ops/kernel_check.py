"""A fused kernel's one-time check against mode "sequential", before "auto" trusts it.

A kernel that compiles is not yet a kernel that is right: a new GPU, compiler
or jax version can miscompile it silently. `compare_with_sequential` runs one
at a few small shapes and compares its outputs and gradients with the XLA
recurrence; the Pallas kernel (on GPU) and the native CPU kernel use it.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lvm_jax.ops import recurrences

# (batch, L, D, N, chunk or None, with an initial and final state)
Case = Tuple[int, int, int, int, Optional[int], bool]
NAMES = ("y", "final state", "du", "ddelta", "dA", "dB", "dC", "dh0")


def compare_with_sequential(kernel: Callable, cases: Sequence[Case], tolerance: float,
                            ) -> Optional[str]:
  """None if `kernel` matches mode "sequential" at every case, else why not.

  kernel(u, delta, A, B, C, h0 or None, return_state, chunk) -> y, or (y, h)
  when return_state. Compares y, the final state and the gradients of u,
  delta, A, B, C and h0 of a random linear loss, each as its largest error over
  the largest |value|. Any exception (a lowering or compile error) is a failure
  too, reported as its first line.
  """
  for batch, length, channels, state, chunk, with_state in cases:
    rng = np.random.default_rng(length)
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    args = (normal(batch, length, channels),
            rng.uniform(0.05, 0.6, (batch, length, channels)).astype(np.float32),
            -np.exp(0.5 * normal(channels, state)), normal(batch, length, state),
            normal(batch, length, state), normal(batch, channels, state))
    g_y, g_h = normal(batch, length, channels), normal(batch, channels, state)

    def outputs(recurrence):
      def loss(u, delta, A, B, C, h0):
        y, h = recurrence(u, delta, A, B, C, h0 if with_state else None)
        return jnp.sum(y * g_y) + (jnp.sum(h * g_h) if with_state else 0.0), (y, h)
      grads, (y, h) = jax.jit(jax.grad(loss, argnums=tuple(range(6)), has_aux=True))(*args)
      return (y, h) + grads

    def under_test(u, delta, A, B, C, h0):
      out = kernel(u, delta, A, B, C, h0, with_state, chunk)
      return out if with_state else (out, jnp.zeros((batch, channels, state)))

    def sequential(u, delta, A, B, C, h0):  # mode "sequential" of scan.selective_scan
      h = jnp.zeros((batch, channels, state), jnp.float32) if h0 is None else h0
      return recurrences.fused_recurrence(u, delta, A, B, C, h, False,
                                          recurrences.DEFAULT_CHUNK_SIZE)

    where = f"batch {batch}, L {length}, D {channels}, N {state}"
    try:
      got = outputs(under_test)
    except Exception as error:  # pylint: disable=broad-except  (every failure means: don't use it)
      first_line = (str(error).strip().splitlines() or [""])[0][:200]
      return f"{type(error).__name__} at {where}: {first_line}"
    expected = outputs(sequential)
    for name, actual, wanted in zip(NAMES, got, expected):
      if name in ("final state", "dh0") and not with_state:
        continue
      actual, wanted = np.asarray(actual, np.float64), np.asarray(wanted, np.float64)
      scale = max(float(np.max(np.abs(wanted))), 1e-30)
      error = float(np.max(np.abs(actual - wanted))) / scale
      if not error <= tolerance:  # NaN fails too
        return (f"{name} differs from mode 'sequential' by {error:.1e} of its largest value "
                f"(tolerance {tolerance:.0e}) at {where}")
  return None
