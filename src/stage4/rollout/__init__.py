"""The gated rollout and its verdict: pre-flight, one step at a time through Alembic, each
step judged (its promises, who sees what, the benchmark) and kept or rolled back."""
