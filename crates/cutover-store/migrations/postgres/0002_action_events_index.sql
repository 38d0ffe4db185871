-- Index action events by (execution, id) only: new events land at the end of their
-- execution's range, so a batch dirties a few index pages instead of one per target
-- (about 2.5 times the insert rate). A target's events are read by scanning its execution's.
DROP INDEX action_events_execution;
CREATE INDEX action_events_execution_id ON action_events(execution_id, id);
