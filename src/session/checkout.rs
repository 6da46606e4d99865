//! Making a server connection fit a client before its first message goes out: the tenant's
//! search_path and the client's session settings, with one round trip and only when they differ.

use std::sync::Arc;
use std::time::Duration;

use super::state::Settings;
use crate::pool::{ServerConn, ServerError};

/// Server-reported parameters a client may set; for these the server tells us the current value.
pub const REPORTED_SETTABLE: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
];

const SET_SEARCH_PATH: &str = "SET search_path TO ";

/// `quote_ident` for any schema name: always quoted, so mixed case, spaces and quotes survive.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    push_ident(&mut out, name);
    out
}

/// [`quote_ident`] appended to `out`.
fn push_ident(out: &mut String, name: &str) {
    out.push('"');
    for (i, part) in name.split('"').enumerate() {
        if i > 0 {
            out.push_str("\"\"");
        }
        out.push_str(part);
    }
    out.push('"');
}

/// A standard-conforming string literal (no backslash escapes are interpreted).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// What the server connection must run, or None when it already fits (and is then
/// remembered as fitting `wanted`, so the next client holding the same map skips this).
pub fn plan(conn: &mut ServerConn, schema: &str, wanted: &Settings) -> Option<(String, bool)> {
    let set_schema = conn.schema.as_deref() != Some(schema);
    let fits = conn
        .fitted
        .as_ref()
        .is_some_and(|f| Arc::ptr_eq(f, wanted.shared()));
    if fits && !set_schema {
        return None;
    }
    let mut sql = String::new();
    if set_schema {
        // One allocation: the common case, a tenant switch, sends only this.
        sql.reserve(SET_SEARCH_PATH.len() + schema.len() + 3);
        sql.push_str(SET_SEARCH_PATH);
        push_ident(&mut sql, schema);
        sql.push(';');
    }
    if !fits {
        for (k, v) in wanted {
            if conn.params.get(k) != Some(v) {
                sql.push_str(&format!("SET {} TO {};", quote_ident(k), quote_literal(v)));
            }
        }
        for k in &conn.extra_settings {
            if !wanted.contains_key(k) {
                sql.push_str(&format!("RESET {};", quote_ident(k)));
            }
        }
        if sql.is_empty() {
            conn.fitted = Some(wanted.shared().clone());
            return None;
        }
    }
    Some((sql, set_schema))
}

/// Runs the plan and records the new state on both sides. `wanted` gets the server's
/// normalised spelling of reported values, so the next comparison matches.
pub async fn apply(
    conn: &mut ServerConn,
    schema: &Arc<str>,
    wanted: &mut Settings,
    sql: &str,
    limit: Duration,
) -> Result<(), ServerError> {
    conn.fitted = None;
    conn.exec(sql, "SET search_path", limit).await?;
    conn.schema = Some(schema.clone());
    let stale: Vec<String> = conn
        .extra_settings
        .iter()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    for k in stale {
        conn.extra_settings.remove(&k);
        conn.params.remove(&k);
    }
    // Only values that differ are written back: an unchanged map stays shared with other
    // clients.
    let mut normalised = Vec::new();
    for (k, v) in wanted.iter() {
        if REPORTED_SETTABLE.contains(&k.as_str()) {
            if let Some(actual) = conn.params.get(k).filter(|a| *a != v) {
                normalised.push((k.clone(), actual.clone()));
            }
        } else {
            conn.params.insert(k.clone(), v.clone());
            conn.extra_settings.insert(k.clone());
        }
    }
    for (k, v) in normalised {
        wanted.insert(k, v);
    }
    conn.fitted = Some(wanted.shared().clone());
    Ok(())
}

/// After a transaction: read back the settings the client's SQL touched so they follow the
/// client to its next server connection, and note that this connection now carries them
/// (the next user of the connection gets them RESET).
pub async fn settle(
    conn: &mut ServerConn,
    st: &mut super::state::ClientState,
    limit: Duration,
) -> Result<(), ServerError> {
    if st.reset_all || !st.touched.is_empty() {
        conn.fitted = None;
    }
    if conn.prepared.is_stale() {
        conn.exec(
            "DEALLOCATE ALL",
            "dropping stale prepared statements",
            limit,
        )
        .await?;
        conn.prepared.clear();
    }
    if std::mem::take(&mut st.reset_all) {
        for k in std::mem::take(&mut conn.extra_settings) {
            conn.params.remove(&k);
        }
        st.wanted
            .retain(|k, _| REPORTED_SETTABLE.contains(&k.as_str()));
        for (k, v) in &st.startup_wanted {
            if !REPORTED_SETTABLE.contains(&k.as_str()) {
                st.wanted.insert(k.clone(), v.clone());
            }
        }
    }
    if st.touched.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = std::mem::take(&mut st.touched).into_iter().collect();
    let exprs: Vec<String> = names
        .iter()
        .map(|n| format!("current_setting({}, true)", quote_literal(n)))
        .collect();
    let sql = format!("SELECT {}", exprs.join(", "));
    let values = conn
        .query_row(&sql, "reading session settings", limit)
        .await?;
    for (name, value) in names.into_iter().zip(values) {
        let Some(value) = value else { continue };
        if REPORTED_SETTABLE.contains(&name.as_str()) {
            continue;
        }
        conn.params.insert(name.clone(), value.clone());
        conn.extra_settings.insert(name.clone());
        st.wanted.set(&name, &value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("My \"Schema\""), "\"My \"\"Schema\"\"\"");
        assert_eq!(quote_ident("\"\""), "\"\"\"\"\"\"");
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
