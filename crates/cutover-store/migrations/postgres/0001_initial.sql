-- cutover schema for PostgreSQL. Timestamps are TIMESTAMPTZ (UTC), JSON is JSONB
-- (except the audit log's details, kept as the exact text that was hashed).

CREATE TABLE environments (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL DEFAULT 0,
    approval_required BOOLEAN NOT NULL DEFAULT FALSE,
    required_approvals BIGINT NOT NULL DEFAULT 0,
    auto_rollback BOOLEAN NOT NULL DEFAULT FALSE,
    max_concurrent_deployments BIGINT,
    config JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE targets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    environment TEXT NOT NULL REFERENCES environments(name),
    kind TEXT NOT NULL CHECK (kind IN ('device', 'host')),
    hardware_model TEXT,
    current_version TEXT,
    inventory JSONB NOT NULL DEFAULT '{}',
    credential_hash TEXT,
    last_seen_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX targets_environment ON targets(environment, kind);

CREATE TABLE target_groups (
    target_id TEXT NOT NULL REFERENCES targets(id) ON DELETE CASCADE,
    group_name TEXT NOT NULL,
    PRIMARY KEY (target_id, group_name)
);
CREATE INDEX target_groups_group ON target_groups(group_name);

CREATE TABLE target_labels (
    target_id TEXT NOT NULL REFERENCES targets(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (target_id, key)
);
CREATE INDEX target_labels_kv ON target_labels(key, value);

CREATE TABLE artifacts (
    id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    size_bytes BIGINT NOT NULL,
    signature TEXT,
    signing_key_id TEXT,
    storage_path TEXT,
    compatible_hardware JSONB NOT NULL DEFAULT '[]',
    min_current_version TEXT,
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (version, kind)
);

CREATE TABLE plans (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    artifact_id TEXT REFERENCES artifacts(id),
    version TEXT NOT NULL,
    source_environment TEXT REFERENCES environments(name),
    target_environment TEXT NOT NULL REFERENCES environments(name),
    strategy TEXT NOT NULL,
    spec JSONB NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    revision BIGINT NOT NULL DEFAULT 1,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX plans_created ON plans(created_at);

CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL REFERENCES plans(id),
    approver TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
    comment TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (plan_id, approver)
);

CREATE TABLE executions (
    id TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL REFERENCES plans(id),
    environment TEXT NOT NULL REFERENCES environments(name),
    status TEXT NOT NULL,
    spec JSONB NOT NULL DEFAULT '{}',
    state JSONB NOT NULL DEFAULT '{}',
    target_count BIGINT NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX executions_status ON executions(status, created_at);
CREATE INDEX executions_plan ON executions(plan_id);

CREATE TABLE waves (
    execution_id TEXT NOT NULL REFERENCES executions(id),
    wave_index BIGINT NOT NULL,
    status TEXT NOT NULL,
    target_count BIGINT NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    PRIMARY KEY (execution_id, wave_index)
);

CREATE TABLE actions (
    id TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES executions(id),
    target_id TEXT NOT NULL REFERENCES targets(id),
    wave_index BIGINT NOT NULL,
    status TEXT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    last_seq BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    UNIQUE (execution_id, target_id)
);
CREATE INDEX actions_target ON actions(target_id, status);

-- The engine's input log: replayed after a restart.
CREATE TABLE execution_events (
    execution_id TEXT NOT NULL REFERENCES executions(id),
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    payload JSONB NOT NULL DEFAULT '{}',
    at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (execution_id, seq)
);

-- Every reported transition of an action. No foreign keys: this is the hot ingest path.
CREATE TABLE action_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id TEXT NOT NULL,
    action_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    detail JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX action_events_execution ON action_events(execution_id, target_id, id);

CREATE TABLE gate_results (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES executions(id),
    wave_index BIGINT,
    gate TEXT NOT NULL,
    kind TEXT NOT NULL,
    phase TEXT NOT NULL,
    passed BOOLEAN NOT NULL,
    detail JSONB NOT NULL DEFAULT '{}',
    at TIMESTAMPTZ NOT NULL
);
CREATE INDEX gate_results_execution ON gate_results(execution_id, id);

CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    payload JSONB NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'claimed', 'done')),
    attempts BIGINT NOT NULL DEFAULT 0,
    available_at TIMESTAMPTZ NOT NULL,
    claimed_by TEXT,
    claimed_until TIMESTAMPTZ,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    completed_at TIMESTAMPTZ
);
CREATE INDEX outbox_ready ON outbox(status, available_at);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    source_ip TEXT,
    result TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log(at);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    prefix TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_by TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT,
    email TEXT,
    role TEXT NOT NULL,
    password_hash TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE leases (
    resource TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch BIGINT NOT NULL DEFAULT 1,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL REFERENCES plans(id),
    run_at TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'fired', 'canceled', 'missed')),
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    fired_at TIMESTAMPTZ
);
CREATE INDEX schedules_due ON schedules(status, run_at);

-- Append-only tables refuse changes (TRUNCATE too).
CREATE FUNCTION cutover_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER action_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON action_events
    FOR EACH STATEMENT EXECUTE FUNCTION cutover_refuse_change();
CREATE TRIGGER execution_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON execution_events
    FOR EACH STATEMENT EXECUTE FUNCTION cutover_refuse_change();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION cutover_refuse_change();
