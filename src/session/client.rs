//! One client session from accept to goodbye: login, welcome, then transaction after
//! transaction on whichever server connection the pool hands out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::cancel::{CANCEL_SETTLE_LIMIT, ServerKey};
use super::checkout::{self, REPORTED_SETTABLE};
use super::forward::{ClientBufs, IdleEnd, IdleLimits, Outcome, forward};
use super::registry::{Admission, ClientEntry, IDLE_SHRINK, Phase, say_killed, signal};
use super::startup::read_password;
use super::state::{ClientState, Settings};
use super::tenant::{ClientIdentity, identify};
use super::{Shared, SharedRef};
use crate::auth::directory::DirectoryError;
use crate::error::ClientError;
use crate::metrics::AuthResult;
use crate::pool::{DestPool, PooledConn, RouteError};
use crate::proto::backend;
use crate::proto::startup::StartupParams;

/// A logged-in client, ready for its first query.
struct Login<'a> {
    _tenant_slot: super::limits::TenantSlot<'a>,
    id: ClientIdentity,
    pool: Arc<DestPool>,
    state: ClientState,
}

/// Serves a client whose StartupMessage (`params`) has been read; the login must finish by
/// `deadline`.
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
    if let Err(t) = shared.auth_limit.check(peer.ip()) {
        tracing::debug!(%peer, "login refused: address blocked after failed attempts");
        return fatal(&mut s, &t.into()).await;
    }
    if shared.admin.is_console(&params) {
        // Boxed for the same reason as the login below: it is the rare path.
        return Box::pin(crate::admin::serve(s, bufs, params, peer, shared, deadline)).await;
    }
    // When the connection was accepted, without a clock read: its login deadline is a fixed
    // time after that.
    let started = (deadline.into_std())
        .checked_sub(shared.login_timeout)
        .unwrap_or_else(Instant::now);
    // Boxed so the login's state (directory lookup, scrypt wait, pool setup: kilobytes) is
    // freed once it is done instead of sizing this task for the whole session.
    let login = Box::pin(login(&mut s, &mut bufs, params, &shared, peer));
    let login = tokio::time::timeout_at(deadline, login);
    // Used in place, not taken apart: each part would be one more copy in this task's state.
    let mut login = match login.await {
        Ok(Ok(Some(l))) => l,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            if matches!(e, ClientError::AuthFailed(_)) {
                shared.auth_limit.failed(peer.ip());
            }
            tracing::info!(%peer, error = %e, sqlstate = e.sqlstate(), "login refused");
            return fatal(&mut s, &e).await;
        }
        Err(_) => {
            tracing::info!(%peer, "login timed out");
            return fatal(&mut s, &ClientError::LoginTimeout(shared.login_timeout)).await;
        }
    };
    let _active = shared.metrics.client_connected();
    let cancel = shared.cancel.register();
    let me = shared.clients.register(
        peer,
        login.id.database.clone(),
        login.id.schema.clone(),
        login.id.user.clone(),
        login.pool.name().clone(),
    );
    cancel.slot.attach(me.entry.clone());
    // The ParameterStatus block is the same for every client sharing this settings map.
    let welcome = login.pool.welcome(login.state.wanted.shared());
    let mut out = BytesMut::with_capacity(welcome.len() + 64);
    backend::auth_ok(&mut out);
    out.extend_from_slice(&welcome);
    backend::backend_key_data(&mut out, cancel.pid, cancel.secret);
    backend::ready_for_query(&mut out, b'I');
    if s.write_all(&out).await.is_err() {
        return;
    }
    // Not kept for the session: an idle client should hold no buffer.
    drop(out);
    tracing::info!(%peer, db = %login.id.database, schema = %login.id.schema, user = %login.id.user,
        pool = %login.pool.name(), login_ms = started.elapsed().as_millis() as u64, "client logged in");
    // What the startup left in the input buffer is read; an idle client keeps no buffer.
    bufs.shrink_idle();
    let end = run(
        &mut s,
        &mut bufs,
        &login.pool,
        &mut login.state,
        &shared,
        &cancel.slot,
        &me.entry,
    )
    .await;
    if let Err(e) = &end {
        let _ = s.write_all(&bufs.output).await;
        fatal(&mut s, e).await;
    }
    tracing::info!(%peer, db = %login.id.database, schema = %login.id.schema,
        secs = started.elapsed().as_secs_f64(), error = end.err().map(|e| e.to_string()),
        "client disconnected");
}

pub async fn fatal<S: AsyncWrite + Unpin>(s: &mut S, e: &ClientError) {
    let mut out = BytesMut::new();
    e.write_fatal(&mut out);
    let _ = s.write_all(&out).await;
    let _ = s.shutdown().await;
}

async fn login<'a, S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bufs: &mut ClientBufs,
    params: StartupParams,
    shared: &'a Shared,
    peer: SocketAddr,
) -> Result<Option<Box<Login<'a>>>, ClientError> {
    let mut id = identify(&params)?;
    if shared.shutdown.is_cancelled() {
        return Err(ClientError::Shutdown);
    }
    let Some(tenant_slot) = shared.limits.enter_tenant(&id.database, &id.schema) else {
        return Err(ClientError::TooManyClients(format!(
            "too many connections for tenant {}/{} (MaxClientConnsPerTenant is {})",
            id.database, id.schema, shared.limits.max_per_tenant
        )));
    };
    let Some(password) = read_password(s, &mut bufs.input).await? else {
        return Ok(None);
    };
    let failed = || ClientError::AuthFailed(id.user.to_string());
    let row = match shared.directory.lookup(&id.database, &id.schema).await {
        Ok(row) => row,
        Err(DirectoryError::NotFound) => {
            tracing::info!(%peer, db = %id.database, schema = %id.schema, "auth failed: unknown tenant");
            shared.metrics.auth_result(AuthResult::UnknownTenant);
            return Err(failed());
        }
        Err(DirectoryError::Unavailable(why)) => {
            tracing::warn!(%peer, db = %id.database, schema = %id.schema, reason = %why,
                "auth database unavailable");
            shared.metrics.auth_result(AuthResult::Unavailable);
            return Err(ClientError::DirectoryUnavailable);
        }
    };
    if *row.source_user != *id.user {
        tracing::info!(%peer, db = %id.database, schema = %id.schema, user = %id.user,
            "auth failed: user does not match source_user");
        shared.metrics.auth_result(AuthResult::UserMismatch);
        return Err(failed());
    }
    // Attempts queued while this address crossed the threshold stop here, before scrypt.
    shared.auth_limit.check(peer.ip())?;
    match shared
        .verifier
        .verify(&row.source_pass_hashed, &password)
        .await
    {
        Ok(true) => shared.metrics.auth_result(AuthResult::Ok),
        Ok(false) => {
            tracing::info!(%peer, db = %id.database, schema = %id.schema, "auth failed: wrong password");
            shared.metrics.auth_result(AuthResult::WrongPassword);
            return Err(failed());
        }
        Err(e) => {
            tracing::warn!(%peer, db = %id.database, schema = %id.schema, error = %e,
                "auth failed: stored hash unusable");
            shared.metrics.auth_result(AuthResult::BadHash);
            return Err(failed());
        }
    }
    let key = row.dest.as_ref().map_err(|e| RouteError::from(e.clone()))?;
    let pool = shared.registry.pool_for(key, &row.dest_pass_enc).await?;
    // A checkout learns the server's parameters (first login to a destination) and proves
    // other settings valid. Logins that only set reported parameters (what psql, pgbench and
    // drivers send) skip it once the parameters are known: reconnect storms cost no checkout.
    let known = !pool.startup_params().is_empty();
    let only_reported = id
        .settings
        .keys()
        .all(|k| REPORTED_SETTABLE.contains(&k.as_str()));
    let quick = known && only_reported;
    let state = match quick.then(|| pool.settings_asked(&id.settings)).flatten() {
        Some(map) => {
            // Not kept for the session: the map holds them.
            id.settings = Default::default();
            ClientState::new(
                id.schema.clone(),
                shared.max_message,
                Settings::from_shared(map),
            )
        }
        // Boxed: the rare path (a destination's first login, settings beyond the reported
        // ones) should not size every login's state.
        None => Box::pin(fit_settings(&pool, &mut id, quick, shared.max_message)).await?,
    };
    // Boxed: it lives as long as the session, and inline it would be stored twice in the
    // session's state (as this function's result and as the session's own).
    Ok(Some(Box::new(Login {
        _tenant_slot: tenant_slot,
        id,
        pool,
        state,
    })))
}

/// The session settings of a login the memo of asked settings does not answer: the
/// server's reported parameters with the client's own on top, proved on a checked-out
/// connection unless `quick` (only reported parameters, already known).
async fn fit_settings(
    pool: &DestPool,
    id: &mut ClientIdentity,
    quick: bool,
    max_message: usize,
) -> Result<ClientState, ClientError> {
    let mut state = ClientState::new(id.schema.clone(), max_message, Settings::default());
    let asked = quick.then(|| id.settings.clone());
    let mut conn = if quick {
        None
    } else {
        Some(pool.checkout(&state.schema).await.0?)
    };
    for (k, v) in pool.startup_params() {
        if REPORTED_SETTABLE.contains(&k.as_str()) {
            state.wanted.insert(k.clone(), v.clone());
        }
    }
    // Moved, not cloned: `id` lives as long as the session and needs them no more.
    state.wanted.extend(std::mem::take(&mut id.settings));
    if let Some(mut c) = conn.take() {
        let ready = prepare(pool, &mut c, &mut state).await;
        pool.release(c, ready.is_ok());
        ready?;
    }
    // Clients wanting the same settings share one map, so a connection fitted to one of
    // them is known to fit the others without comparing settings.
    state.wanted = Settings::from_shared(pool.intern_settings(state.wanted.shared()));
    if let Some(asked) = asked {
        pool.remember_asked(asked, state.wanted.shared().clone());
    }
    state.startup_wanted = state.wanted.clone();
    Ok(state)
}

/// Brings a checked-out connection to the client's schema and settings.
async fn prepare(
    pool: &DestPool,
    conn: &mut PooledConn,
    st: &mut ClientState,
) -> Result<(), ClientError> {
    if let Some((sql, set_schema)) = checkout::plan(conn, &st.schema, &st.wanted) {
        let limit = pool.settings().schema_exec_timeout;
        checkout::apply(conn, &st.schema, &mut st.wanted, &sql, limit).await?;
        let stats = &pool.stats;
        let counter = if set_schema {
            &stats.search_path_sets
        } else {
            &stats.param_sets
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// Serves transactions until the client leaves (Ok) or something ends the session (Err).
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bufs: &mut ClientBufs,
    pool: &DestPool,
    st: &mut ClientState,
    shared: &Shared,
    cancel_slot: &super::cancel::CancelSlot,
    me: &ClientEntry,
) -> Result<(), ClientError> {
    // Held while the session is pinned; it ends with the session.
    let mut pin_gauge = None;
    let idle = shared.idle_timeout;
    let limits = IdleLimits {
        between: idle,
        in_transaction: shared.idle_in_transaction_timeout,
    };
    // Listed clients are told of a shutdown by a signal bit; one that began after it was
    // raised for everyone finds it here.
    if shared.shutdown.is_cancelled() {
        return Err(ClientError::Shutdown);
    }
    loop {
        if !bufs.output.is_empty() {
            if s.write_all(&bufs.output).await.is_err() {
                return Ok(());
            }
            shared.metrics.bytes_out(bufs.output.len());
            bufs.output.clear();
        }
        let since = Instant::now();
        // The idle limits are watched by the registry's sweep, which raises TICK.
        me.went_quiet(shared.clients.stamp(since));
        while bufs.input.len() < 5 {
            // A client without a buffer (new, or back from idle) gets one from its first
            // read: a buffer made up front and freed idle leaves a hole the allocator keeps.
            if bufs.input.capacity() > 0 && bufs.input.capacity() - bufs.input.len() < 1024 {
                bufs.input.reserve(4096);
            }
            tokio::select! {
                biased;
                r = s.read_buf(&mut bufs.input) => match r {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(n) => shared.metrics.bytes_in(n),
                },
                raised = me.signaled(signal::SHUTDOWN | signal::KILLED | signal::TICK) => {
                    if raised & signal::SHUTDOWN != 0 {
                        return Err(ClientError::Shutdown);
                    }
                    if raised & signal::KILLED != 0 {
                        return say_killed(s).await;
                    }
                    me.clear(signal::TICK);
                    let quiet = since.elapsed();
                    if !idle.is_zero() && quiet >= idle {
                        return Err(ClientError::IdleTimeout(idle));
                    }
                    if !me.buffers_released() && quiet >= IDLE_SHRINK {
                        // A client idle for a while gives its buffers back: thousands of
                        // idle clients should cost little memory.
                        bufs.shrink_idle();
                        me.released_buffers();
                    }
                }
            }
        }
        if bufs.input[0] == b'X' {
            return Ok(());
        }
        if super::local::answer_prepare_batch(&mut bufs.input, &mut bufs.output, st)? {
            continue;
        }
        me.set_phase(Phase::Waiting);
        let mut conn = match shared.clients.admit(me, &shared.shutdown).await {
            Admission::Go => match pool.checkout_now(&st.schema) {
                Some(c) => {
                    shared.metrics.checkout_wait(std::time::Duration::ZERO);
                    shared.metrics.transaction();
                    c
                }
                None => {
                    // A whole request can be refused if its client cancels it in the queue.
                    let whole = super::local::whole_request(&bufs.input, st.max_message)?;
                    if whole.is_some() {
                        cancel_slot.queue();
                    }
                    // Inline, not boxed: the pool boxes the large part (opening a connection)
                    // itself, so waiting costs this task no allocation.
                    let cancel = if whole.is_some() { signal::CANCEL } else { 0 };
                    let got = tokio::select! {
                        c = timed_checkout(pool, &st.schema, &shared.metrics) => Some(c),
                        raised = me.signaled(signal::KILLED | cancel) => {
                            if raised & signal::KILLED != 0 {
                                return say_killed(s).await;
                            }
                            None
                        }
                    };
                    if whole.is_some() {
                        cancel_slot.unqueue();
                        // A cancel that came as the checkout succeeded is dropped: it raced
                        // the query, as on a direct connection.
                        me.clear(signal::CANCEL);
                    }
                    let Some(c) = got else {
                        // Leaving the queue dropped the checkout; nothing reached a server.
                        if let Some(len) = whole {
                            super::local::refuse_cancelled(&mut bufs.input, len, &mut bufs.output);
                        }
                        me.set_phase(Phase::Idle);
                        continue;
                    };
                    c?
                }
            },
            Admission::Killed => return say_killed(s).await,
            Admission::Shutdown => return Err(ClientError::Shutdown),
        };
        me.set_phase(Phase::Active);
        st.refuse_pinning = shared
            .refuse_pinning
            .load(std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = prepare(pool, &mut conn, st).await {
            pool.release(conn, false);
            return Err(e);
        }
        cancel_slot.set(ServerKey {
            addr: conn.addr,
            pid: conn.backend_pid,
            secret: conn.backend_secret,
        });
        let mut on_pin = |reason| {
            me.set_pinned(Some(reason));
            if pin_gauge.is_none() {
                pin_gauge = Some(shared.metrics.client_pinned());
            }
        };
        let outcome = tokio::select! {
            o = forward(s, &mut conn, bufs, st, &shared.metrics, limits, &mut on_pin) => o,
            raised = me.signaled(signal::HARD_STOP | signal::KILLED) => {
                // Cancel what still runs so the transaction ends with the client.
                pool.discard(conn).await;
                if raised & signal::HARD_STOP != 0 {
                    return Err(ClientError::Shutdown);
                }
                return say_killed(s).await;
            }
        };
        me.set_pinned(st.pinned);
        me.set_phase(Phase::Idle);
        let cancel_pending = cancel_slot.clear();
        match outcome {
            Outcome::Released => {
                // A cancel sent to this connection must be over before anyone's next query
                // runs on it (see the cancel module); one not over in time closes it.
                if cancel_pending && !cancel_slot.settled(CANCEL_SETTLE_LIMIT).await {
                    pool.discard(conn).await;
                    continue;
                }
                let limit = pool.settings().schema_exec_timeout;
                match checkout::settle(&mut conn, st, limit).await {
                    Ok(()) => pool.release(conn, true),
                    Err(e) => {
                        tracing::warn!(pool = %pool.name(), error = %e, "cannot read back session settings");
                        pool.release(conn, false);
                    }
                }
            }
            Outcome::ClientGone { clean } => {
                // Settings changed but not yet read back would leak to the next user; a
                // statement still running for a vanished client is cancelled.
                if clean && st.touched.is_empty() && !cancel_pending {
                    pool.release(conn, true);
                } else {
                    pool.discard(conn).await;
                }
                return Ok(());
            }
            Outcome::Idle(end) => {
                // The transaction (or pinned session) goes with the client; a statement
                // still running on the server is cancelled.
                tracing::info!(pool = %pool.name(), ?end, "client idle while holding a server connection");
                pool.discard(conn).await;
                return Err(match end {
                    IdleEnd::InTransaction => ClientError::IdleInTransaction(limits.in_transaction),
                    IdleEnd::Between => ClientError::IdleTimeout(limits.between),
                });
            }
            Outcome::ServerLost(e) => {
                tracing::warn!(pool = %pool.name(), error = %e, "server connection lost mid-transaction");
                pool.release(conn, false);
                return Err(ClientError::ServerLost);
            }
            Outcome::Protocol(e) => {
                pool.release(conn, false);
                return Err(e.into());
            }
            Outcome::ServerProtocol(e) => {
                tracing::warn!(pool = %pool.name(), error = %e, "server protocol error");
                pool.release(conn, false);
                return Err(ClientError::ServerLost);
            }
        }
    }
}

/// A checkout, counted as a transaction, with its wait in the histogram.
async fn timed_checkout(
    pool: &DestPool,
    schema: &Arc<str>,
    metrics: &crate::metrics::Metrics,
) -> Result<PooledConn, crate::pool::CheckoutError> {
    let _waiting = metrics.waiting_for_server();
    let (conn, waited) = pool.checkout(schema).await;
    metrics.checkout_wait(waited);
    if conn.is_ok() {
        metrics.transaction();
    }
    conn
}
