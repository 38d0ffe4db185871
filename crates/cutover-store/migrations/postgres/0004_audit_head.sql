-- The newest audit row's seq and hash, moved forward in the same transaction that appends
-- the row. Removing the newest rows leaves a shorter chain that is valid on its own; the
-- head row is what shows that rows are gone.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    SELECT 1, seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1;
CREATE FUNCTION cutover_audit_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.seq > OLD.seq THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_head only moves forward' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_head_forward_only BEFORE UPDATE OR DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION cutover_audit_head_forward();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION cutover_refuse_change();
