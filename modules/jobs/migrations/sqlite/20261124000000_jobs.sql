-- The durable job queue. A job is claimable when it is `queued` (new) or
-- `failed` (waiting for its retry) and `run_at` has passed; a worker claims
-- it by setting `running`, its own id as `lease_owner` and `lease_until`.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    result TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    priority BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    run_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_until TEXT,
    -- 1 once cancellation of a running job was asked for; its worker stops it.
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    -- The collection of the item the job is about, for permissions.
    collection_id TEXT,
    workflow_id TEXT,
    workflow_step BIGINT,
    created_by TEXT,
    request_id TEXT NOT NULL DEFAULT '',
    trace_id TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
-- Claim order: highest priority first, then earliest due.
CREATE INDEX jobs_claimable ON jobs (priority DESC, run_at, id) WHERE status IN ('queued', 'failed');
-- Expired leases of crashed workers.
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE status = 'running';
-- Idempotency keys are scoped to the creating user.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_by_creator ON jobs (created_by, id);
CREATE INDEX jobs_by_collection ON jobs (collection_id, id);

-- A workflow: an ordered list of steps, each run as a job. `steps` holds
-- each step's name, status, attempts, output, error and job id as JSON; it
-- is updated in the transaction that finishes the step's job, together with
-- the next step's job, so a crash never loses or repeats a finished step.
CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    steps TEXT NOT NULL,
    collection_id TEXT,
    created_by TEXT,
    request_id TEXT NOT NULL DEFAULT '',
    trace_id TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT
);
