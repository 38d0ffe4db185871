-- cutover schema for SQLite. Timestamps are UTC, stored as RFC 3339 text (sqlx's encoding),
-- which sorts in time order. JSON is stored as text.

CREATE TABLE environments (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL DEFAULT 0,
    approval_required INTEGER NOT NULL DEFAULT 0,
    required_approvals INTEGER NOT NULL DEFAULT 0,
    auto_rollback INTEGER NOT NULL DEFAULT 0,
    max_concurrent_deployments INTEGER,
    config TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE targets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    environment TEXT NOT NULL REFERENCES environments(name),
    kind TEXT NOT NULL CHECK (kind IN ('device', 'host')),
    hardware_model TEXT,
    current_version TEXT,
    inventory TEXT NOT NULL DEFAULT '{}',
    credential_hash TEXT,
    last_seen_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
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
    size_bytes INTEGER NOT NULL,
    signature TEXT,
    signing_key_id TEXT,
    storage_path TEXT,
    compatible_hardware TEXT NOT NULL DEFAULT '[]',
    min_current_version TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
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
    spec TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    revision INTEGER NOT NULL DEFAULT 1,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX plans_created ON plans(created_at);

CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL REFERENCES plans(id),
    approver TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
    comment TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (plan_id, approver)
);

CREATE TABLE executions (
    id TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL REFERENCES plans(id),
    environment TEXT NOT NULL REFERENCES environments(name),
    status TEXT NOT NULL,
    spec TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT '{}',
    target_count INTEGER NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX executions_status ON executions(status, created_at);
CREATE INDEX executions_plan ON executions(plan_id);

CREATE TABLE waves (
    execution_id TEXT NOT NULL REFERENCES executions(id),
    wave_index INTEGER NOT NULL,
    status TEXT NOT NULL,
    target_count INTEGER NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    PRIMARY KEY (execution_id, wave_index)
);

CREATE TABLE actions (
    id TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES executions(id),
    target_id TEXT NOT NULL REFERENCES targets(id),
    wave_index INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (execution_id, target_id)
);
CREATE INDEX actions_target ON actions(target_id, status);

-- The engine's input log: replayed after a restart.
CREATE TABLE execution_events (
    execution_id TEXT NOT NULL REFERENCES executions(id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    at TEXT NOT NULL,
    PRIMARY KEY (execution_id, seq)
);

-- Every reported transition of an action. No foreign keys: this is the hot ingest path.
CREATE TABLE action_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    action_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX action_events_execution ON action_events(execution_id, target_id, id);

CREATE TABLE gate_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL REFERENCES executions(id),
    wave_index INTEGER,
    gate TEXT NOT NULL,
    kind TEXT NOT NULL,
    phase TEXT NOT NULL,
    passed INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    at TEXT NOT NULL
);
CREATE INDEX gate_results_execution ON gate_results(execution_id, id);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'claimed', 'done')),
    attempts INTEGER NOT NULL DEFAULT 0,
    available_at TEXT NOT NULL,
    claimed_by TEXT,
    claimed_until TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    completed_at TEXT
);
CREATE INDEX outbox_ready ON outbox(status, available_at);

CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
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
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT,
    email TEXT,
    role TEXT NOT NULL,
    password_hash TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE leases (
    resource TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 1,
    acquired_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL REFERENCES plans(id),
    run_at TEXT NOT NULL,
    window_end TEXT,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'fired', 'canceled', 'missed')),
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    fired_at TEXT
);
CREATE INDEX schedules_due ON schedules(status, run_at);

-- Append-only tables refuse changes.
CREATE TRIGGER action_events_no_update BEFORE UPDATE ON action_events
BEGIN SELECT RAISE(ABORT, 'action_events is append-only'); END;
CREATE TRIGGER action_events_no_delete BEFORE DELETE ON action_events
BEGIN SELECT RAISE(ABORT, 'action_events is append-only'); END;
CREATE TRIGGER execution_events_no_update BEFORE UPDATE ON execution_events
BEGIN SELECT RAISE(ABORT, 'execution_events is append-only'); END;
CREATE TRIGGER execution_events_no_delete BEFORE DELETE ON execution_events
BEGIN SELECT RAISE(ABORT, 'execution_events is append-only'); END;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
