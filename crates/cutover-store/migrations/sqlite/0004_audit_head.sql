-- The newest audit row's seq and hash, moved forward in the same transaction that appends
-- the row. Removing the newest rows leaves a shorter chain that is valid on its own; the
-- head row is what shows that rows are gone.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    SELECT 1, seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1;
CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head
    WHEN NEW.seq <= OLD.seq
BEGIN SELECT RAISE(ABORT, 'audit_head only moves forward'); END;
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
BEGIN SELECT RAISE(ABORT, 'audit_head only moves forward'); END;
