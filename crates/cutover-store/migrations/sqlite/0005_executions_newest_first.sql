-- Deployment lists read the newest executions first (`ORDER BY created_at DESC, id DESC
-- LIMIT n`). Without this index every list sorted the whole table and extracted the
-- version and strategy from each row's spec before keeping n of them.
CREATE INDEX executions_created ON executions(created_at, id);
