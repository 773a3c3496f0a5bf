"""The package's shape (issue 20): imports run one way down the layers of docs/layout.md and
never in a circle, and no module grows past 400 lines. Since issue 33 train/ is one layer: no
evaluator reaches into train/ for its predictions (models.predict_fns holds them)."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "lvm_jax")
MAX_LINES = 400

# A module may import from its own layer or one listed before it; docs/layout.md states the
# same order. The longest listed prefix names a module's layer.
LAYERS = (
    ("base", ("lvm_jax", "lvm_jax.cli", "lvm_jax.atomic", "lvm_jax.workdir", "lvm_jax.distributed",
              "lvm_jax.backend", "lvm_jax.config_base", "lvm_jax.ops")),
    ("data", ("lvm_jax.data",)),
    ("corpus", ("lvm_jax.corpus",)),
    ("models", ("lvm_jax.models", "lvm_jax.losses", "lvm_jax.config_checks")),
    ("checkpoint", ("lvm_jax.checkpoint",)),
    ("retrieval", ("lvm_jax.retrieval",)),
    ("evaluators", ("lvm_jax.evaluators",)),
    ("train", ("lvm_jax.train",)),  # one floor: step, augment, training_sets, parallel, hooks, loop
    ("entry points", ("lvm_jax.eval", "lvm_jax.main", "lvm_jax.status", "lvm_jax.import_torch",
                      "lvm_jax.predict", "lvm_jax.adapt", "lvm_jax.export")),
)


def modules():
  """{module name: path} of every .py file under lvm_jax/."""
  found = {}
  for directory, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        found[".".join(parts)] = path
  return found


def imports_of(path, known):
  """The lvm_jax modules `path` imports anywhere in it (function-level imports count too)."""
  targets = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.Import):
      targets.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        targets.add(full if full in known else node.module)
  return {t for t in targets if t.split(".")[0] == "lvm_jax"}


def layer_of(module):
  best = None
  for rank, (_, prefixes) in enumerate(LAYERS):
    for prefix in prefixes:
      if module == prefix or module.startswith(prefix + "."):
        if best is None or len(prefix) > len(best[1]):
          best = (rank, prefix)
  assert best is not None, f"{module}: in no layer of tests/test_structure.LAYERS; add it there " \
                           "and to docs/layout.md"
  return best[0]


@pytest.fixture(scope="module")
def graph():
  known = modules()
  return {module: imports_of(path, known) for module, path in known.items()}


def test_no_import_runs_back_up(graph):
  upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
            for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)]
  assert not upward, "\n".join(sorted(upward))


def test_no_import_cycle(graph):
  state, stack, cycles = {}, [], []

  def visit(module):
    state[module] = "open"
    stack.append(module)
    for target in sorted(graph.get(module, ())):
      if state.get(target) == "open":
        cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
      elif target in graph and target not in state:
        visit(target)
    stack.pop()
    state[module] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module)
  assert not cycles, "\n".join(cycles)


def test_the_checker_sees_an_upward_import(graph):
  # The walker must see function-level imports, or the two tests above could pass vacuously.
  assert "lvm_jax.train.step" in graph["lvm_jax.import_torch"]
  assert layer_of("lvm_jax.train.step") == layer_of("lvm_jax.train.loop")
  # The multi-process plumbing is one package in the base layer, below everything that uses it.
  assert "lvm_jax.distributed.multihost" in graph["lvm_jax.backend"]
  assert layer_of("lvm_jax.distributed.workdir_lock") == layer_of("lvm_jax.cli") < \
      layer_of("lvm_jax.data.payload")
  assert layer_of("lvm_jax.train.loop") > layer_of("lvm_jax.evaluators.retrieval") > \
      layer_of("lvm_jax.retrieval.index") > \
      layer_of("lvm_jax.corpus.build")


def test_data_holds_no_corpus_making_and_no_module_is_long():
  data = os.listdir(os.path.join(PACKAGE, "data"))
  for moved in ("ingest", "chunking", "synthetic", "import_torch", "build", "legacy", "convert",
                "augment", "training_sets", "text_sources"):
    assert f"{moved}.py" not in data, moved
  long = {module: n for module, path in modules().items()
          if (n := sum(1 for _ in open(path, encoding="utf-8"))) > MAX_LINES}
  assert not long, f"modules over {MAX_LINES} lines: {long}; split them by concern"


def test_judges_take_a_predict_fn_never_the_trainer(graph):
  # Issue 33: evaluators are built from models.predict_fns (as big_vision's from a predict_fn);
  # neither they nor the CLIs that judge a model reach into train/ for predictions.
  judges = [m for m in graph if m.startswith(("lvm_jax.evaluators", "lvm_jax.eval"))
            or m in ("lvm_jax.predict",)]
  assert "lvm_jax.evaluators.validation" in judges and "lvm_jax.eval.fit_reranker" in judges
  reaching = {m: sorted(t for t in graph[m] if t.startswith("lvm_jax.train"))
              for m in judges}
  assert not {m: t for m, t in reaching.items() if t}
  for module in ("lvm_jax.evaluators.base", "lvm_jax.evaluators.retrieval", "lvm_jax.eval.__main__",
                 "lvm_jax.eval.fit_reranker", "lvm_jax.predict", "lvm_jax.train.step",
                 "lvm_jax.train.loop"):
    assert any(t.startswith("lvm_jax.models.predict_fns") for t in graph[module]), module
