"""`python -m lvm_jax.adapt`: the project on a user's own text, in one command.

  plan       fine-tune the shipped model or train from scratch, the config, the time estimate
  judge_val  the learned system beside the untrained rows on val: margins and the table
  untrained_rerank  a reranker for the untrained pick, kept when it pays on held-out val
  __main__   the CLI: plan, train, fit the reranker, judge, record the choice
  (retrieval.choice holds the rule and the record that eval and predict read)
"""
