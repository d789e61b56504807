//! The pairing protocol (`ferry/pair/1`) over an [`Invite`].
//!
//! The joiner dials the inviter, proves it holds the secret, and both run the
//! [`crate::e2e`] handshake; the joiner's first sealed message confirms both derived the same
//! keys. The invite is consumed in the same store transaction that records the contact.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use rand_core::RngCore;

use crate::bus::Events;
use crate::contacts::Roster;
use crate::e2e::{self, AssociatedData, InitiatorHandshake};
use crate::identity::{verify_binding, Identity};
use crate::invite::{pair_binding, Invite, INVITE_VERSION};
use crate::model::{now_ms, Contact, ContactId, Event, Message, MessageId};
use crate::naming::clean_display_name;
use crate::net::{self, Links, REQUEST_TIMEOUT};
use crate::sessions::SessionLocks;
use crate::store::{InviteRecord, InviteRefusal, Store};
use crate::wire::{self, PairFrame, PairIdentity, Payload, ALPN_PAIR};
use crate::Error;

/// The most invites that may be open at once (issued, unused, unexpired); making another is
/// refused with a clear error until one is used or expires.
pub const MAX_OPEN_INVITES: usize = 100;

/// The pairing feature: what it uses, and nothing else.
#[derive(Debug)]
pub(crate) struct Pairing {
    identity: Identity,
    store: Store,
    links: Links,
    roster: Roster,
    events: Events,
    /// Test fault injection: the next `Done` is not sent (see `Config::drop_next_pair_done`).
    drop_next_done: AtomicBool,
    /// The per-contact session locks: a pairing replaces a session, so it must not interleave
    /// with a send or a delivery that read the old one.
    sessions: Arc<SessionLocks>,
}

impl Pairing {
    pub(crate) fn new(
        identity: Identity,
        store: Store,
        links: Links,
        roster: Roster,
        events: Events,
        sessions: Arc<SessionLocks>,
        drop_next_done: bool,
    ) -> Arc<Pairing> {
        Arc::new(Pairing {
            identity,
            store,
            links,
            roster,
            events,
            drop_next_done: AtomicBool::new(drop_next_done),
            sessions,
        })
    }

    fn id(&self) -> ContactId {
        self.identity.id()
    }

    fn completed(&self, contact: &Contact, key_changed: Option<Message>) {
        match self.roster.view(contact) {
            Ok(view) => self.events.emit(Event::PairingCompleted { contact: view }),
            Err(e) => tracing::warn!("{e}"),
        }
        if let Some(line) = key_changed {
            tracing::warn!(contact = %contact.id.fmt_short(), "identity key changed");
            self.events.emit(Event::MessageReceived {
                message: line,
                from: contact.name.clone(),
            });
        }
        // Dial at once, so presence shows without waiting for the next round.
        self.links.dial_soon(contact.id);
    }
}

async fn my_identity(ctx: &Pairing) -> Result<PairIdentity, Error> {
    Ok(PairIdentity {
        name: ctx.store.my_name()?,
        x25519: ctx.identity.x25519_public(),
        signature: ctx.identity.binding_signature(),
        addr: ctx.links.current_addr(Duration::from_secs(1)).await,
    })
}

pub(crate) async fn create_invite(ctx: &Pairing, ttl: Duration) -> Result<String, Error> {
    let open = ctx.store.open_invites(now_ms())?;
    if open >= MAX_OPEN_INVITES {
        return Err(Error::Quota(crate::Quota::OpenInvites(open)));
    }
    let mut secret = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut secret);
    let expires_ms = now_ms().saturating_add(ttl.as_millis() as u64);
    ctx.store.put_invite(
        secret,
        InviteRecord {
            expires_at: expires_ms,
            used: false,
        },
    )?;
    ctx.store.flush().await?;
    let addr = ctx.links.current_addr(Duration::from_secs(5)).await;
    Ok(Invite {
        version: INVITE_VERSION,
        id: ctx.id(),
        addr,
        x25519: ctx.identity.x25519_public(),
        name: ctx.store.my_name()?,
        secret,
        expires_at: expires_ms / 1000,
    }
    .to_text()?)
}

async fn read<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Result<PairFrame, Error> {
    tokio::time::timeout(REQUEST_TIMEOUT, wire::read_frame(r))
        .await
        .map_err(|_| Error::Pairing("the other side stopped answering".into()))?
        .map_err(|e| Error::Pairing(e.to_string()))
}

async fn write<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, f: &PairFrame) -> Result<(), Error> {
    wire::write_frame(w, f)
        .await
        .map_err(|e| Error::Pairing(e.to_string()))
}

/// The joiner's side: dials the inviter and pairs. Stores the contact on success.
pub(crate) async fn join(ctx: &Arc<Pairing>, text: &str) -> Result<Contact, Error> {
    let invite = Invite::parse(text)?;
    if invite.is_expired() {
        return Err(Error::InviteExpired);
    }
    if invite.id == ctx.id() {
        return Err(Error::InvalidInvite("this is your own invite".into()));
    }
    if ctx.store.is_blocked(&invite.id)? {
        return Err(Error::InvalidInput(format!(
            "{} is blocked; unblock them before pairing again",
            invite.name
        )));
    }
    // Pairing again with a contact replaces the pairing (it repairs one the other side lost);
    // what was stored when it began is checked again when it is written.
    let seen = ctx.store.contact(&invite.id)?.map(|c| c.paired_at);
    let addr = net::endpoint_addr(invite.id, &invite.addr);
    let conn = tokio::time::timeout(
        Duration::from_secs(15),
        ctx.links.endpoint().connect(addr, ALPN_PAIR),
    )
    .await
    .map_err(|_| {
        Error::Network(format!(
            "{} did not answer; is their Ferry running?",
            invite.name
        ))
    })?
    .map_err(|e| Error::Network(format!("dialling {}: {e}", invite.name)))?;
    let result = join_on(ctx, &conn, &invite, seen).await;
    conn.close(0u32.into(), b"done");
    let (contact, key_changed) = result?;
    ctx.completed(&contact, key_changed);
    Ok(contact)
}

async fn join_on(
    ctx: &Arc<Pairing>,
    conn: &Connection,
    invite: &Invite,
    seen: Option<u64>,
) -> Result<(Contact, Option<Message>), Error> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| Error::Network(e.to_string()))?;
    let (handshake, ephemeral) = InitiatorHandshake::start();
    write(
        &mut send,
        &PairFrame::Hello {
            secret: invite.secret,
            identity: my_identity(ctx).await?,
            ephemeral,
        },
    )
    .await?;
    let (theirs, their_ephemeral) = match read(&mut recv).await? {
        PairFrame::Accept {
            identity,
            ephemeral,
        } => (identity, ephemeral),
        PairFrame::Refuse { reason } => return Err(Error::PairingRefused(reason)),
        other => return Err(Error::Pairing(format!("unexpected {other:?}"))),
    };
    if theirs.x25519 != invite.x25519
        || !verify_binding(&invite.id, &theirs.x25519, &theirs.signature)
    {
        return Err(Error::Pairing(
            "the other side's keys do not match the invite".into(),
        ));
    }
    let name = clean_display_name(&theirs.name).unwrap_or_else(|_| invite.name.clone());
    let mut session = handshake.complete(
        ctx.identity.x25519_secret(),
        &theirs.x25519,
        &their_ephemeral,
        &pair_binding(&invite.id, &ctx.id(), &invite.secret),
    )?;
    let message_id = MessageId::random();
    let confirm = postcard::to_allocvec(&Payload::PairConfirm)?;
    let envelope = session.seal(
        &confirm,
        &AssociatedData {
            sender: *ctx.id().as_bytes(),
            recipient: *invite.id.as_bytes(),
            message_id: message_id.0,
        },
    )?;
    write(
        &mut send,
        &PairFrame::Confirm {
            message_id: message_id.0,
            envelope,
        },
    )
    .await?;
    match read(&mut recv).await? {
        PairFrame::Done => {}
        PairFrame::Refuse { reason } => return Err(Error::PairingRefused(reason)),
        other => return Err(Error::Pairing(format!("unexpected {other:?}"))),
    }
    let _ = send.finish();
    let mut addr = theirs.addr;
    if addr.direct.is_empty() && addr.relay.is_none() {
        addr = invite.addr.clone();
    }
    let contact = Contact {
        id: invite.id,
        name,
        x25519: theirs.x25519,
        addr,
        paired_at: now_ms(),
        verified: false,
    };
    let _guard = ctx.sessions.lock(&contact.id).await;
    let key_changed = ctx.store.store_pairing(
        &contact,
        &session,
        None,
        seen,
        now_ms(),
        &key_changed_line(&contact.name),
    )?;
    ctx.store.flush().await?;
    Ok((contact, key_changed))
}

/// The line a conversation shows when a pairing brings a new identity key for a contact.
pub(crate) fn key_changed_line(name: &str) -> String {
    format!(
        "{name}'s safety number changed: their identity key is new (they may have reinstalled \
         Ferry or moved to another computer). Compare the new number with them; sending waits \
         until you accept it."
    )
}

/// The `ferry/pair/1` handler: answers pairings for invites this home issued.
#[derive(Debug, Clone)]
pub(crate) struct PairProtocol(pub(crate) Arc<Pairing>);

impl ProtocolHandler for PairProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let remote = conn.remote_id();
        if matches!(self.0.store.is_blocked(&remote), Ok(true)) {
            tracing::info!(peer = %remote.fmt_short(), "refused pairing from a blocked contact");
            conn.close(403u32.into(), b"refused");
            return Ok(());
        }
        match answer(&self.0, &conn).await {
            Ok((contact, key_changed)) => {
                tracing::info!(peer = %remote.fmt_short(), name = %contact.name, "paired");
                self.0.completed(&contact, key_changed);
            }
            Err(e) => tracing::info!(peer = %remote.fmt_short(), "pairing not completed: {e}"),
        }
        // Let the joiner read our last frame before the connection goes.
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn.closed()).await;
        Ok(())
    }
}

async fn answer(
    ctx: &Arc<Pairing>,
    conn: &Connection,
) -> Result<(Contact, Option<Message>), Error> {
    let remote = conn.remote_id();
    let (mut send, mut recv) = tokio::time::timeout(REQUEST_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| Error::Pairing("no request".into()))?
        .map_err(|e| Error::Network(e.to_string()))?;
    // Pairing again with a contact replaces the pairing (it repairs one the other side lost);
    // what was stored when it began is checked again when it is written.
    let seen = ctx.store.contact(&remote)?.map(|c| c.paired_at);
    let refuse = |reason: &str| PairFrame::Refuse {
        reason: reason.to_string(),
    };
    let (secret, theirs, their_ephemeral) = match read(&mut recv).await? {
        PairFrame::Hello {
            secret,
            identity,
            ephemeral,
        } => (secret, identity, ephemeral),
        other => return Err(Error::Pairing(format!("unexpected {other:?}"))),
    };
    let verdict = match ctx.store.check_invite(&secret, now_ms()) {
        Ok(()) => None,
        Err(InviteRefusal::Unknown) => Some("this invite is not known here"),
        Err(InviteRefusal::Used) => Some("this invite was already used"),
        Err(InviteRefusal::Expired) => Some("this invite has expired"),
    };
    let verdict = verdict.or_else(|| {
        if !verify_binding(&remote, &theirs.x25519, &theirs.signature) {
            Some("your identity key is not signed by your endpoint key")
        } else if clean_display_name(&theirs.name).is_err() {
            Some("your display name is not acceptable")
        } else {
            None
        }
    });
    if let Some(reason) = verdict {
        write(&mut send, &refuse(reason)).await?;
        let _ = send.finish();
        return Err(Error::PairingRefused(reason.into()));
    }
    let (mut session, ephemeral) = e2e::respond(
        ctx.identity.x25519_secret(),
        &theirs.x25519,
        &their_ephemeral,
        &pair_binding(&ctx.id(), &remote, &secret),
    )?;
    write(
        &mut send,
        &PairFrame::Accept {
            identity: my_identity(ctx).await?,
            ephemeral,
        },
    )
    .await?;
    let (message_id, envelope) = match read(&mut recv).await? {
        PairFrame::Confirm {
            message_id,
            envelope,
        } => (message_id, envelope),
        other => return Err(Error::Pairing(format!("unexpected {other:?}"))),
    };
    let plain = session.open(
        &envelope,
        &AssociatedData {
            sender: *remote.as_bytes(),
            recipient: *ctx.id().as_bytes(),
            message_id,
        },
    )?;
    if postcard::from_bytes::<Payload>(&plain).ok() != Some(Payload::PairConfirm) {
        return Err(Error::Pairing("bad key confirmation".into()));
    }
    let contact = Contact {
        id: remote,
        name: clean_display_name(&theirs.name)?,
        x25519: theirs.x25519,
        addr: theirs.addr,
        paired_at: now_ms(),
        verified: false,
    };
    let guard = ctx.sessions.lock(&contact.id).await;
    let stored = ctx.store.store_pairing(
        &contact,
        &session,
        Some(secret),
        seen,
        now_ms(),
        &key_changed_line(&contact.name),
    );
    drop(guard);
    let key_changed = match stored {
        Ok(line) => line,
        Err(e) => {
            write(&mut send, &refuse(&e.to_string())).await?;
            let _ = send.finish();
            return Err(e);
        }
    };
    ctx.store.flush().await?;
    if ctx.drop_next_done.swap(false, Ordering::SeqCst) {
        tracing::warn!("test fault: not sending Done");
        return Ok((contact, key_changed));
    }
    write(&mut send, &PairFrame::Done).await?;
    let _ = send.finish();
    Ok((contact, key_changed))
}
