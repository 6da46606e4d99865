//! Tenant fixtures: the perseus_auth table, tenant rows made the way operators make them
//! (easy-scrypt hash, KMS-encrypted destination password), and tenant schemas.

use std::path::PathBuf;

use perseus::config::AwsSettings;
use tokio_postgres::Client;

use super::quote_ident;

/// The migration that creates perseus_auth, as operators apply it with psql.
pub fn auth_migration_path() -> PathBuf {
    super::repo_root().join("migrations/001_perseus_auth.sql")
}

/// Creates perseus_auth (idempotent) through the library's migration code, the same path
/// as `perseus --migrate`.
pub async fn apply_migrations(auth: &Client) {
    perseus::migrate::apply(auth)
        .await
        .unwrap_or_else(|e| panic!("apply migrations: {e}"));
}

/// One perseus_auth row, in plain text; [`add_tenant`] hashes and encrypts.
#[derive(Clone, Debug)]
pub struct TenantSpec {
    pub source_db: String,
    pub source_schema: String,
    pub source_user: String,
    /// The password clients give Perseus.
    pub password: String,
    /// `host` or `host:port`.
    pub dest_host: String,
    pub dest_db: String,
    pub dest_user: String,
    /// The destination role's password, stored KMS-encrypted.
    pub dest_password: String,
}

/// Inserts `spec` into perseus_auth: the password hashed with the library's easy-scrypt,
/// the destination password encrypted with the library's KMS client under `aws`'s key.
/// Returns the row's id.
pub async fn add_tenant(auth: &Client, aws: &AwsSettings, spec: &TenantSpec) -> i32 {
    let hashed = perseus::auth::hash::hash_password(spec.password.as_bytes());
    let encrypted = encrypt(aws, &spec.dest_password).await;
    let row = auth
        .query_one(
            "INSERT INTO perseus_auth (source_db, source_schema, source_user, source_pass_hashed, \
             dest_host, dest_db, dest_user, dest_pass_enc) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &spec.source_db,
                &spec.source_schema,
                &spec.source_user,
                &hashed,
                &spec.dest_host,
                &spec.dest_db,
                &spec.dest_user,
                &encrypted,
            ],
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "insert tenant {}/{} into perseus_auth: {e}",
                spec.source_db, spec.source_schema
            )
        });
    row.get(0)
}

/// Encrypts `plaintext` with the library's KMS client; standard base64 of the blob.
pub async fn encrypt(aws: &AwsSettings, plaintext: &str) -> String {
    perseus::secrets::kms::Kms::new(aws)
        .await
        .encrypt(&aws.kms_key_arn, plaintext.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("KMS encrypt at {}: {e}", aws.endpoint))
}

/// Creates `schema` (any name: it is quoted) in the destination database.
pub async fn create_schema(dest: &Client, schema: &str) {
    dest.batch_execute(&format!("CREATE SCHEMA {}", quote_ident(schema)))
        .await
        .unwrap_or_else(|e| panic!("create schema {schema:?}: {e}"));
}
