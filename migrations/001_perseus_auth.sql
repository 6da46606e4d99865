-- The tenant directory Perseus reads: one row per tenant (source_db, source_schema), with the
-- destination it is routed to. Column names and sizes match the Go Perseus, so a database it
-- created is already up to date and this statement does nothing there.
CREATE TABLE IF NOT EXISTS perseus_auth (
    id                 serial PRIMARY KEY,
    source_db          varchar(64)   NOT NULL,
    source_schema      varchar(64)   NOT NULL,
    source_user        varchar(64)   NOT NULL,
    -- standard base64 of an easy-scrypt v1 hash of the tenant's password
    source_pass_hashed varchar(128)  NOT NULL,
    -- `host` or `host:port`
    dest_host          varchar(512)  NOT NULL,
    dest_db            varchar(64)   NOT NULL,
    dest_user          varchar(64)   NOT NULL,
    -- standard base64 of a KMS CiphertextBlob
    dest_pass_enc      varchar(2048) NOT NULL,
    UNIQUE (source_db, source_schema)
);
