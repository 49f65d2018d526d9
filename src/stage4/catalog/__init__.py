"""What the database holds and who can see it: snapshots, visibility and RPC access taken
before and after a step, and drift against the catalog a revision makes (by replay)."""
