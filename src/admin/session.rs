//! One admin console session: cleartext password login against `AdminSettings.Users`, then
//! simple queries answered as result sets until the operator leaves.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::actions::execute;
use super::command::{parse, statements};
use super::resultset::{command_complete, empty_query, write_table};
use crate::error::ClientError;
use crate::proto::frame::header;
use crate::proto::startup::StartupParams;
use crate::proto::{backend, frontend};
use crate::session::client::fatal;
use crate::session::forward::ClientBufs;
use crate::session::startup::read_password;
use crate::session::tenant::TenantError;
use crate::session::{Shared, SharedRef};

/// Console commands are short; a larger message is a mistake or an attack.
const MAX_ADMIN_MESSAGE: usize = 1 << 20;

/// Serves a client whose StartupMessage asked for the admin database; the login must finish
/// by `deadline`.
pub async fn serve<S>(
    mut s: S,
    mut bufs: ClientBufs,
    params: StartupParams,
    peer: SocketAddr,
    shared: SharedRef,
    deadline: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let login = tokio::time::timeout_at(deadline, login(&mut s, &mut bufs, &params, &shared, peer));
    let user = match login.await {
        Ok(Ok(Some(user))) => user,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, sqlstate = e.sqlstate(), "admin login refused");
            return fatal(&mut s, &e).await;
        }
        Err(_) => {
            tracing::info!(%peer, "admin login timed out");
            return fatal(&mut s, &ClientError::LoginTimeout(shared.login_timeout)).await;
        }
    };
    // A key of its own so a stray CancelRequest finds nothing to cancel rather than a tenant.
    let key = shared.cancel.register();
    let mut out = BytesMut::new();
    backend::auth_ok(&mut out);
    for (name, value) in [
        ("server_version", format!("15.0 ({})", super::version())),
        ("server_encoding", "UTF8".into()),
        ("client_encoding", "UTF8".into()),
        ("DateStyle", "ISO".into()),
        ("integer_datetimes", "on".into()),
        ("standard_conforming_strings", "on".into()),
        ("application_name", String::new()),
    ] {
        backend::parameter_status(&mut out, name, &value);
    }
    backend::backend_key_data(&mut out, key.pid, key.secret);
    backend::ready_for_query(&mut out, b'I');
    if s.write_all(&out).await.is_err() {
        return;
    }
    tracing::info!(%peer, %user, "admin console login");
    let end = run(&mut s, &mut bufs, &shared, &user).await;
    if let Err(e) = &end {
        fatal(&mut s, e).await;
    }
    tracing::info!(%peer, %user, secs = started.elapsed().as_secs_f64(),
        error = end.err().map(|e| e.to_string()), "admin console disconnected");
}

/// Checks the admin user's password; None when the client went away.
async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bufs: &mut ClientBufs,
    params: &StartupParams,
    shared: &Shared,
    peer: SocketAddr,
) -> Result<Option<String>, ClientError> {
    let user = params
        .get("user")
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or(TenantError::NoUser)?;
    if shared.shutdown.is_cancelled() {
        return Err(ClientError::Shutdown);
    }
    let Some(password) = read_password(s, &mut bufs.input).await? else {
        return Ok(None);
    };
    // Failed admin logins count toward the same per-address limit as tenant logins.
    let failed = || {
        shared.auth_limit.failed(peer.ip());
        ClientError::AuthFailed(user.clone())
    };
    let stored = shared.admin.config().admin.users.get(&user).cloned();
    let Some(stored) = stored else {
        tracing::info!(%peer, %user, "admin auth failed: not an admin user");
        return Err(failed());
    };
    match shared.verifier.verify(&stored, &password).await {
        Ok(true) => Ok(Some(user)),
        Ok(false) => {
            tracing::info!(%peer, %user, "admin auth failed: wrong password");
            Err(failed())
        }
        Err(e) => {
            tracing::warn!(%peer, %user, error = %e, "admin auth failed: configured hash unusable");
            Err(failed())
        }
    }
}

/// Answers messages until the operator leaves (Ok) or the session must end (Err).
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bufs: &mut ClientBufs,
    shared: &Shared,
    user: &str,
) -> Result<(), ClientError> {
    let max = shared.max_message.clamp(5, MAX_ADMIN_MESSAGE);
    // After an extended-protocol message is refused, the rest of its batch is skipped until
    // Sync, as PostgreSQL does after an error.
    let mut skipping = false;
    let mut out = BytesMut::new();
    loop {
        while let Some(h) = header(&bufs.input, max)? {
            if bufs.input.len() < h.frame_len {
                break;
            }
            let frame = bufs.input.split_to(h.frame_len);
            let body = &frame[5..];
            if skipping && !matches!(h.tag, b'S' | b'X') {
                continue;
            }
            match h.tag {
                b'Q' => {
                    let sql = String::from_utf8_lossy(frontend::query(body)?).into_owned();
                    answer(&sql, shared, user, &mut out).await;
                    backend::ready_for_query(&mut out, b'I');
                }
                b'X' => return Ok(()),
                b'S' => {
                    skipping = false;
                    backend::ready_for_query(&mut out, b'I');
                }
                b'P' | b'B' | b'D' | b'E' | b'C' => {
                    skipping = true;
                    refuse_extended(&mut out);
                }
                // Flush: everything is written after each batch of messages anyway.
                b'H' => {}
                b'F' => {
                    refuse_extended(&mut out);
                    backend::ready_for_query(&mut out, b'I');
                }
                // Stray COPY messages outside COPY are ignored, as PostgreSQL does.
                b'd' | b'c' | b'f' => {}
                other => {
                    return Err(ClientError::Unexpected {
                        expected: "a simple query",
                        got: other as char,
                    });
                }
            }
        }
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                return Ok(());
            }
            out.clear();
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return Err(ClientError::Shutdown),
            r = s.read_buf(&mut bufs.input) => match r {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            },
        }
    }
}

fn refuse_extended(out: &mut BytesMut) {
    backend::error(
        out,
        "ERROR",
        "0A000",
        "the admin console accepts simple queries only (extended query protocol is not supported)",
    );
}

/// Runs each statement of a Query in turn; the first error ends the batch, as in PostgreSQL.
async fn answer(sql: &str, shared: &Shared, user: &str, out: &mut BytesMut) {
    let stmts = statements(sql);
    if stmts.is_empty() {
        empty_query(out);
        return;
    }
    for stmt in stmts {
        let cmd = match parse(stmt) {
            Ok(cmd) => cmd,
            Err(e) => {
                backend::error(out, "ERROR", e.sqlstate(), &e.to_string());
                return;
            }
        };
        tracing::debug!(%user, ?cmd, "admin command");
        match execute(&cmd, shared).await {
            Ok(reply) => match &reply.table {
                Some(t) => write_table(out, t, reply.tag),
                None => command_complete(out, reply.tag),
            },
            Err(e) => {
                tracing::warn!(%user, error = %e, "admin command failed");
                backend::error(out, "ERROR", e.sqlstate(), &e.to_string());
                return;
            }
        }
    }
}
