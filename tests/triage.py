"""The README's triage queries, as the tests run them."""

from __future__ import annotations

RETRIES_EXPLAINED = """
WITH rounds AS (
  SELECT step_id, attempt_base, deliveries, round_input FROM app.step_rounds WHERE run_id = :r
  UNION ALL
  SELECT step_id, attempt_base, deliveries, round_input FROM app.step_runs WHERE run_id = :r)
SELECT r.retry_count,
       (SELECT coalesce(sum(greatest(deliveries - 1, 0)), 0) FROM rounds)
     + (SELECT count(*) FROM app.opencode_calls c WHERE c.run_id = r.id
        AND NOT EXISTS (SELECT 1 FROM rounds o
          WHERE o.step_id = c.step_id AND c.attempt = o.attempt_base + 1))
     + (SELECT count(*) FROM rounds WHERE round_input->>'kind' = 'retry')
       AS explained
FROM app.runs r WHERE r.id = :r
"""
"""The README's triage query: retry_count, and what the rounds and the ledger say it is."""
