"""PyTorch implementations of the same model and step, to measure lvm_jax against.

Two Mamba stacks run inside the same step (input projection, blocks, final
RMSNorm, unit output; the projection head, 0.7 InfoNCE + 0.3 AR cosine,
clipping, AdamW):

- "loop": the Mamba-1 block math of lvm_jax.models.mamba (in_proj, causal
  depthwise conv, x_proj, dt_proj + softplus, selective scan, SiLU gate,
  out_proj, pre-RMSNorm, residual) with the scan as a Python loop over time
  steps, as the PyTorch reference ran it.
- "mambapy": the blocks of mambapy (pure-PyTorch Mamba-1 with a parallel scan,
  `pscan`), the fastest maintained PyTorch Mamba without CUDA kernels.

Only the benchmarks use it (torch and mambapy are the optional `bench` extra).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, Tuple

import torch
from torch import nn
from torch.nn import functional as F


class TorchMambaBlock(nn.Module):
  def __init__(self, d_model: int, d_state: int, d_conv: int = 4, expand: int = 2):
    super().__init__()
    d_inner = expand * d_model
    self.dt_rank = math.ceil(d_model / 16)
    self.d_state = d_state
    self.norm = nn.RMSNorm(d_model, eps=1e-6)
    self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
    self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
    self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
    self.dt_proj = nn.Linear(self.dt_rank, d_inner)
    self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1).float()).repeat(d_inner, 1))
    self.D = nn.Parameter(torch.ones(d_inner))
    self.out_proj = nn.Linear(d_inner, d_model, bias=False)

  def forward(self, x):  # [batch, L, d_model]
    length = x.shape[1]
    inner, gate = self.in_proj(self.norm(x)).chunk(2, dim=-1)
    inner = F.silu(self.conv(inner.transpose(1, 2))[..., :length].transpose(1, 2))
    dt, B, C = self.x_proj(inner).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
    delta = F.softplus(self.dt_proj(dt))
    A = -torch.exp(self.A_log)
    h = torch.zeros(x.shape[0], inner.shape[-1], self.d_state)
    ys = []
    for t in range(length):  # the reference's scan: a Python loop over time
      h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * inner[:, t])[:, :, None] * B[:, t, None, :]
      ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
    y = torch.stack(ys, dim=1) + self.D * inner
    return x + self.out_proj(y * F.silu(gate))


IMPLEMENTATIONS = ("loop", "mambapy")


def mamba_blocks(implementation: str, d_model: int, n_layers: int, d_state: int) -> nn.Module:
  """The residual Mamba-1 blocks of `implementation`: [batch, L, d_model] -> same."""
  if implementation == "loop":
    return nn.Sequential(*[TorchMambaBlock(d_model, d_state) for _ in range(n_layers)])
  if implementation == "mambapy":
    from mambapy import mamba  # pylint: disable=g-import-not-at-top
    return mamba.Mamba(mamba.MambaConfig(d_model=d_model, n_layers=n_layers, d_state=d_state,
                                         pscan=True))
  raise ValueError(f"torch_reference: unknown implementation {implementation!r}; choose one of "
                   f"{IMPLEMENTATIONS}.")


class TorchLatentModel(nn.Module):
  def __init__(self, vector_dim: int, d_model: int, n_layers: int, d_state: int,
               implementation: str = "loop"):
    super().__init__()
    self.input_proj = nn.Linear(vector_dim, d_model)
    self.blocks = mamba_blocks(implementation, d_model, n_layers, d_state)
    self.final_norm = nn.RMSNorm(d_model, eps=1e-6)
    self.output_head = nn.Linear(d_model, vector_dim, bias=False)

  def forward(self, contexts):
    x = self.blocks(self.input_proj(contexts))
    return F.normalize(self.output_head(self.final_norm(x)), dim=-1)


class TorchProjectionHead(nn.Module):
  def __init__(self, vector_dim: int, hidden_dim: int = 512, out_dim: int = 256):
    super().__init__()
    self.net = nn.Sequential(nn.Linear(vector_dim, hidden_dim), nn.GELU(),
                             nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, out_dim, bias=False))

  def forward(self, x):
    return F.normalize(self.net(x), dim=-1)


def make_torch_step(*, vector_dim: int, d_model: int, n_layers: int, d_state: int,
                    micro_batch: int, accum_steps: int = 1, context_length: int = 5,
                    implementation: str = "loop", threads: int = 0
                    ) -> Tuple[Callable[[], None], Dict]:
  """One optimizer step (accum_steps micro-batches) as a no-argument callable, and its facts."""
  if threads:
    torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = TorchLatentModel(vector_dim, d_model, n_layers, d_state, implementation)
  head = TorchProjectionHead(vector_dim)
  parameters = list(model.parameters()) + list(head.parameters())
  optimizer = torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.02)
  vectors = F.normalize(torch.randn(accum_steps, micro_batch, context_length + 1, vector_dim), dim=-1)

  def step():
    optimizer.zero_grad(set_to_none=True)
    for micro in vectors:
      contexts, targets = micro[:, :context_length], micro[:, context_length]
      predictions = model(contexts)[:, -1]
      with torch.no_grad():
        keys = head(targets)
      logits = head(predictions) @ keys.T / 0.07
      infonce = F.cross_entropy(logits, torch.arange(micro_batch))
      ar = 1 - F.cosine_similarity(predictions, targets).mean()
      ((0.7 * infonce + 0.3 * ar) / accum_steps).backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()

  info = {"implementation": implementation, "torch_version": torch.__version__,
          "torch_threads": torch.get_num_threads(),
          "parameters": sum(p.numel() for p in model.parameters())}
  if implementation == "mambapy":
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    info["mambapy_version"] = metadata.version("mambapy")
  return step, info


def benchmark_torch_step(*, vector_dim: int, d_model: int, n_layers: int, d_state: int,
                         micro_batch: int, accum_steps: int, context_length: int = 5,
                         steps: int = 3, threads: int = 0,
                         implementation: str = "loop") -> Dict[str, float]:
  """Median seconds of one optimizer step (accum_steps micro-batches) and sequences/s."""
  step, info = make_torch_step(vector_dim=vector_dim, d_model=d_model, n_layers=n_layers,
                               d_state=d_state, micro_batch=micro_batch, accum_steps=accum_steps,
                               context_length=context_length, implementation=implementation,
                               threads=threads)
  step()  # warm-up
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  times.sort()
  median = times[len(times) // 2]
  return dict(info, median_step_s=median, sequences_per_s=micro_batch * accum_steps / median)
