-- The event that caused a job (a rule's action): the job's own writes and
-- its JobSucceeded/JobDead carry it as their `causation_id`, so rule chains
-- that pass through jobs are still counted.
ALTER TABLE jobs ADD COLUMN causation_id TEXT;
-- The span that enqueued the job (when traces are exported): the job's run
-- is its child, in the trace of `trace_id`.
ALTER TABLE jobs ADD COLUMN span_id TEXT;
