//! Audit events: one structured `tracing` event, target `audit`, per refused request and per
//! change to keys or projects. Fields: `key_id` (who; `-` when no well-formed key was sent),
//! `rpc` (what), `project`/`index`/`target` (which), `outcome`, and for refusals `code` and
//! `reason`. Never a secret: callers pass key ids, and errors never carry key material.
//!
//! Route them with a filter such as `LARCH_LOG=info,audit=info`, or keep only them with
//! `LARCH_LOG=warn,audit=info`.

use std::net::IpAddr;

use crate::{Error, Principal};

/// The `tracing` target of every audit event.
pub const TARGET: &str = "audit";

/// A request refused by authentication or authorization.
pub(crate) fn refused(
    key_id: &str,
    rpc: &str,
    project: Option<&str>,
    index: Option<&str>,
    peer: Option<IpAddr>,
    error: &Error,
) {
    tracing::info!(
        target: TARGET,
        key_id,
        rpc,
        project = project.unwrap_or("-"),
        index = index.unwrap_or("-"),
        peer = %peer.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
        outcome = "denied",
        code = error.code_name(),
        reason = %error,
        "request refused",
    );
}

/// A refusal decided by a handler (e.g. an index outside the key's allow-list, named in the
/// request body).
pub fn denied(principal: &Principal, rpc: &str, index: Option<&str>, error: &Error) {
    refused(
        &principal.key_id,
        rpc,
        Some(&principal.project_id),
        index,
        None,
        error,
    );
}

/// A change to keys or projects, made (`outcome` "ok") or refused (the error's code).
pub fn change(
    actor: &Principal,
    rpc: &str,
    project: Option<&str>,
    target: Option<&str>,
    result: Result<(), &Error>,
) {
    let (outcome, reason) = match result {
        Ok(()) => ("ok", String::new()),
        Err(err) => (err.code_name(), err.to_string()),
    };
    tracing::info!(
        target: TARGET,
        key_id = %actor.key_id,
        rpc,
        project = project.unwrap_or("-"),
        target = target.unwrap_or("-"),
        outcome,
        reason,
        "access changed",
    );
}
