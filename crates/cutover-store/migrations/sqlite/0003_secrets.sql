-- Secrets (SMTP passwords, webhook tokens) encrypted by the server (AES-256-GCM); the store
-- keeps the id of the key that encrypted each row, so keys can be rotated row by row.
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX secrets_key ON secrets(key_id);
