//! Session reset, a feature (`ferry/reset/1`): either side of a pairing starts a fresh
//! handshake over the identity keys both already hold, with new ephemerals, and both replace
//! their ratchet session with the one it makes. No invite is needed.
//!
//! It runs when the user asks (`ferry reset`, Details), and by itself when a payload from a
//! contact cannot be opened because the session is gone, rolled back or replaced on one side
//! only ([`Signal::SessionBroken`]). The sender of such a payload is told to send it again
//! later; each side's commit seals again, with the new session, what waits for the other in
//! the outbox, so nothing queued before or during the reset is lost. The conversation shows
//! a line saying it is secured again.
//!
//! The handshake is the pairing one ([`crate::e2e`]): the four Diffie-Hellman terms include
//! both identity keys, so only the two contacts can derive the keys; the initiator's first
//! sealed message confirms both did. The responder stores first, then says `Done`; the
//! initiator stores on `Done`. If `Done` is lost, the initiator runs again at once (up to
//! [`MAX_ATTEMPTS`] runs), and otherwise the first payload that cannot be opened starts
//! another reset.
//!
//! Two resets between the same contacts at once: the one started by the smaller endpoint id
//! wins. Its side refuses the other's, and the other side takes it. Each side counts the resets
//! it stored with a contact, and a run (either role) stores its session only if none was
//! stored on its side since it began; the check and the count change together, under the
//! contact's session lock. So two runs that overlap never both store on one side.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};

use crate::bus::{Bus, Events, Signal};
use crate::e2e::{self, AssociatedData, InitiatorHandshake, Session};
use crate::identity::Identity;
use crate::invite::reset_binding;
use crate::model::{now_ms, Contact, ContactId, Event, MessageId, MessageState};
use crate::net::{self, Links, DIAL_TIMEOUT, REQUEST_TIMEOUT};
use crate::outbox::seal_item;
use crate::sessions::SessionLocks;
use crate::store::{OutboxItem, OutboxKind, Store};
use crate::wire::{self, Payload, ResetFrame, ALPN_RESET};
use crate::Error;

/// No automatic reset with a contact within this long of the last one that was stored: a
/// payload sealed just before it, still on its way, fails once and is sent again sealed anew.
pub const AUTO_RESET_QUIET: Duration = Duration::from_secs(10);
/// At most this many automatic resets with one contact in [`AUTO_RESET_WINDOW`]; beyond, what
/// cannot be opened is refused for good and the user is told.
pub const MAX_AUTO_RESETS: usize = 5;
/// The window [`MAX_AUTO_RESETS`] counts in.
pub const AUTO_RESET_WINDOW: Duration = Duration::from_secs(3600);
/// At most this many resets from one contact are answered in [`ANSWER_WINDOW`].
pub const MAX_ANSWERED_RESETS: usize = 10;
/// The window [`MAX_ANSWERED_RESETS`] counts in.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(60);
/// A reset this side's user did not ask for writes its line into the conversation at most
/// this often (a contact cannot fill the history with them).
pub const LINE_EVERY: Duration = Duration::from_secs(600);
/// Runs of one reset: the first, and more after a `Done` that did not come.
pub const MAX_ATTEMPTS: usize = 3;

/// The refusal while this side's own reset with the contact runs (and wins).
const UNDER_WAY: &str = "a reset from this side is under way";
/// The refusal when another reset was stored on the refusing side since this one began.
const STORED_MEANWHILE: &str = "another reset completed meanwhile";

/// Who started a reset, for the line and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// This side's user asked.
    User,
    /// A payload could not be opened.
    Auto,
    /// The other side started it.
    Theirs,
    /// This home was restored from a backup: its session is older than the contact's.
    Restored,
}

/// What this side knows of resets with one contact (in memory only), behind one mutex.
#[derive(Debug, Default)]
struct State {
    /// This side is running a reset with the contact, as initiator.
    running: bool,
    /// How many resets with the contact this side stored (either side's).
    generation: u64,
    /// When the last reset with the contact was stored here (either side's).
    last: Option<Instant>,
    /// When the last line about a reset was written.
    last_line: Option<Instant>,
    /// When the automatic resets in the window started.
    auto: VecDeque<Instant>,
    /// When resets from the contact were answered, in the window.
    answered: VecDeque<Instant>,
    /// The user was told that resets cannot repair this contact's session.
    told: bool,
}

/// The reset feature: what it uses, and nothing else.
#[derive(Debug)]
pub(crate) struct Resets {
    identity: Identity,
    store: Store,
    links: Links,
    events: Events,
    bus: Bus,
    sessions: Arc<SessionLocks>,
    states: Mutex<HashMap<ContactId, State>>,
    /// Test fault injection: the next `Done` is not sent (see `Config::drop_next_reset_done`).
    drop_next_done: AtomicBool,
    /// Signalled whenever a reset is stored (either side's).
    stored: tokio::sync::Notify,
}

/// A mutex's guard even if a panic elsewhere poisoned it (the map stays whole).
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Drops the instants older than `window`.
fn prune(q: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
}

/// The line both conversations show after a reset.
pub(crate) fn secured_line(name: &str) -> String {
    format!("Messages with {name} are secured again: the session was reset.")
}

/// Whether a failed dial says the other side does not speak the protocol (TLS alert 120,
/// "no application protocol"; iroh says "error 120: peer doesn't support any known
/// protocol"), as opposed to a network failure.
fn no_such_protocol(error: &str) -> bool {
    let e = error.to_ascii_lowercase().replace(['_', ' '], "");
    [
        "noapplicationprotocol",
        "error120",
        "doesn'tsupportanyknownprotocol",
    ]
    .iter()
    .any(|needle| e.contains(needle))
}

/// How a run ended short of storing.
enum Failed {
    /// Before the responder could have stored anything.
    Before(Error),
    /// Refused by the responder, for this reason (nothing stored there for this run).
    Refused(String),
    /// After the confirmation was sent: the responder may have stored the new session.
    AfterConfirm(Error),
}

impl Resets {
    pub(crate) fn new(
        identity: Identity,
        store: Store,
        links: Links,
        events: Events,
        bus: &Bus,
        sessions: Arc<SessionLocks>,
        drop_next_done: bool,
    ) -> Arc<Resets> {
        let resets = Arc::new(Resets {
            identity,
            store,
            links,
            events,
            bus: bus.clone(),
            sessions,
            states: Mutex::default(),
            drop_next_done: AtomicBool::new(drop_next_done),
            stored: tokio::sync::Notify::new(),
        });
        if resets.sessions.resets_enabled() {
            let weak: Weak<Resets> = Arc::downgrade(&resets);
            bus.subscribe(move |signal| match (signal, weak.upgrade()) {
                (Signal::SessionBroken(id), Some(resets)) => {
                    tokio::spawn(async move { resets.auto(id).await });
                }
                // A session restored from a backup is older than the contact's: reset it as
                // soon as the contact is there (nothing is sent to it before).
                (Signal::LinkUp(id), Some(resets))
                    if matches!(resets.store.restored(&id), Ok(true)) =>
                {
                    tokio::spawn(async move { resets.after_restore(id).await });
                }
                _ => {}
            });
        }
        resets
    }

    /// Resets the restored session with a contact (see [`crate::backup`]); a failure is tried
    /// again at the next link.
    async fn after_restore(&self, id: ContactId) {
        let Ok(Some(contact)) = self.store.admitted(&id) else {
            return;
        };
        match self.reset(&contact, Why::Restored).await {
            Ok(()) => tracing::info!(contact = %id.fmt_short(), "restored session reset"),
            // A contact on a release before resets can never renew it: only a pairing can.
            Err(_) if !self.sessions.resettable(&id) => self.tell_once(
                &contact,
                format!(
                    "This home was restored from a backup, and {}'s Ferry (an earlier release) \
                     cannot renew the secure session. Pair with {} again with a fresh invite; \
                     nothing is sent to them until then.",
                    contact.name, contact.name
                ),
            ),
            Err(e) => {
                tracing::info!(contact = %id.fmt_short(), "restored session not reset yet: {e}")
            }
        }
    }

    fn me(&self) -> ContactId {
        self.identity.id()
    }

    /// Whether this side's reset wins over the other side's when both run at once.
    fn wins_over(&self, other: &ContactId) -> bool {
        self.me().as_bytes() < other.as_bytes()
    }

    /// Runs `f` on the state kept for `id`.
    fn with_state<T>(&self, id: &ContactId, f: impl FnOnce(&mut State) -> T) -> T {
        f(locked(&self.states).entry(*id).or_default())
    }

    /// Tells the user once that resets cannot repair the session with `contact`.
    fn tell_once(&self, contact: &Contact, text: String) {
        if self.with_state(&contact.id, |s| std::mem::replace(&mut s.told, true)) {
            return;
        }
        tracing::warn!(contact = %contact.id.fmt_short(), "{text}");
        self.events.emit(Event::Notice {
            contact: contact.id,
            name: contact.name.clone(),
            text,
        });
    }

    /// An automatic reset after a payload from `id` could not be opened, unless one was stored
    /// just now, one is under way, or too many ran lately.
    async fn auto(&self, id: ContactId) {
        let Ok(Some(contact)) = self.store.admitted(&id) else {
            return;
        };
        // A changed identity key waits for the user; a reset would not change that.
        if matches!(self.store.key_changed(&id), Ok(true)) {
            return;
        }
        let now = Instant::now();
        let go = self.with_state(&id, |s| {
            if s.running
                || s.last
                    .is_some_and(|t| now.duration_since(t) < AUTO_RESET_QUIET)
            {
                return Some(true);
            }
            prune(&mut s.auto, AUTO_RESET_WINDOW, now);
            if s.auto.len() >= MAX_AUTO_RESETS {
                return None;
            }
            s.auto.push_back(now);
            Some(false)
        });
        match go {
            Some(true) => return,
            None => {
                self.sessions.set_resettable(&id, false);
                self.tell_once(
                    &contact,
                    format!(
                        "Messages from {} cannot be opened, and resetting the session did not \
                         help. Reset it again from Details, or pair again with a fresh invite.",
                        contact.name
                    ),
                );
                return;
            }
            Some(false) => {}
        }
        self.sessions.set_resettable(&id, true);
        if let Err(e) = self.reset(&contact, Why::Auto).await {
            tracing::info!(contact = %id.fmt_short(), "automatic reset: {e}");
            if !self.sessions.resettable(&id) {
                self.tell_once(
                    &contact,
                    format!(
                        "Messages from {} cannot be opened, and their Ferry is from before \
                         session resets. Pair again with a fresh invite.",
                        contact.name
                    ),
                );
            }
        }
    }

    /// Resets the session with `contact`: runs the handshake and stores the new session, with
    /// what waits for the contact sealed again. Returns once both sides have one session.
    pub(crate) async fn reset(&self, contact: &Contact, why: Why) -> Result<(), Error> {
        if self.store.admitted(&contact.id)?.is_none() {
            return Err(Error::Blocked(contact.name.clone()));
        }
        if self.store.key_changed(&contact.id)? {
            return Err(Error::KeyChanged(contact.name.clone()));
        }
        let begun = self.with_state(&contact.id, |s| {
            (!std::mem::replace(&mut s.running, true)).then_some(s.generation)
        });
        let Some(generation) = begun else {
            return Err(Error::Reset(format!(
                "a reset with {} is already under way",
                contact.name
            )));
        };
        tracing::info!(contact = %contact.id.fmt_short(), ?why, "resetting the session");
        let started = Instant::now();
        let mut outcome = Err(Error::Reset("not attempted".into()));
        for attempt in 1..=MAX_ATTEMPTS {
            let again = match self.attempt(contact, generation, why).await {
                Ok(()) => {
                    outcome = Ok(());
                    false
                }
                Err(Failed::Before(e)) => {
                    outcome = Err(e);
                    false
                }
                // The other side is resetting this very session: theirs secures it for both.
                Err(Failed::Refused(reason)) if reason == UNDER_WAY => {
                    outcome = self.stored_since(&contact.id, started).await;
                    false
                }
                // The other side stored another reset since this run began. If this side
                // stored one too since then, it was that one (the other side's): both hold
                // it. If not, it was an earlier run of this very reset whose `Done` was lost:
                // run again.
                Err(Failed::Refused(reason)) if reason == STORED_MEANWHILE => {
                    if self.with_state(&contact.id, |s| s.generation) != generation {
                        outcome = Ok(());
                        false
                    } else {
                        outcome = Err(Error::Reset(reason));
                        true
                    }
                }
                Err(Failed::Refused(reason)) => {
                    outcome = Err(Error::Reset(reason));
                    false
                }
                // The other side may have stored the new session without our hearing it: a
                // new run puts both on one session again.
                Err(Failed::AfterConfirm(e)) => {
                    outcome = Err(e);
                    true
                }
            };
            if !again {
                break;
            }
            tracing::info!(contact = %contact.id.fmt_short(), attempt, "reset ended early; again");
        }
        self.with_state(&contact.id, |s| s.running = false);
        outcome
    }

    /// Waits until a reset with `id` was stored after `since` (the other side's, which won).
    async fn stored_since(&self, id: &ContactId, since: Instant) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + 2 * REQUEST_TIMEOUT;
        loop {
            let stored = self.stored.notified();
            if self.with_state(id, |s| s.last.is_some_and(|t| t >= since)) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, stored).await.is_err() {
                return Err(Error::Reset(
                    "the other side started a reset at the same time, and it did not complete"
                        .into(),
                ));
            }
        }
    }

    /// One handshake as the initiator; stores the session on `Done` unless another reset was
    /// stored here since the reset began (`generation`).
    async fn attempt(&self, contact: &Contact, generation: u64, why: Why) -> Result<(), Failed> {
        let conn = self.connect(contact).await.map_err(Failed::Before)?;
        let result = self.initiate(&conn, contact, generation, why).await;
        conn.close(0u32.into(), b"done");
        result
    }

    async fn connect(&self, contact: &Contact) -> Result<Connection, Error> {
        // Reachable at all? The chat link says so quickly, and tells an earlier release
        // (which does not speak the reset protocol) from one that is offline.
        self.links.link(contact).await.map_err(|e| {
            Error::Reset(format!(
                "{} cannot be reached now ({e}); try again when they are online",
                contact.name
            ))
        })?;
        let addr = net::endpoint_addr(contact.id, &contact.addr);
        let dial = async {
            self.links
                .endpoint()
                .connect(addr, ALPN_RESET)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
            Ok(Ok(conn)) => {
                self.sessions.set_resettable(&contact.id, true);
                Ok(conn)
            }
            Ok(Err(e)) if no_such_protocol(&e) => {
                tracing::info!(contact = %contact.id.fmt_short(), "no reset protocol: {e}");
                self.sessions.set_resettable(&contact.id, false);
                Err(Error::Reset(format!(
                    "{}'s Ferry does not know session resets (an earlier release); pair again \
                     with a fresh invite instead",
                    contact.name
                )))
            }
            Ok(Err(e)) => Err(Error::Reset(format!("dialling {}: {e}", contact.name))),
            Err(_) => Err(Error::Reset(format!("{} did not answer", contact.name))),
        }
    }

    async fn initiate(
        &self,
        conn: &Connection,
        contact: &Contact,
        generation: u64,
        why: Why,
    ) -> Result<(), Failed> {
        let before = Failed::Before;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| before(Error::Network(e.to_string())))?;
        let (handshake, ephemeral) = InitiatorHandshake::start();
        write(&mut send, &ResetFrame::Hello { ephemeral })
            .await
            .map_err(before)?;
        let their_ephemeral = match read(&mut recv).await.map_err(before)? {
            ResetFrame::Accept { ephemeral } => ephemeral,
            ResetFrame::Refuse { reason } => return Err(Failed::Refused(reason)),
            other => return Err(before(Error::Protocol(format!("unexpected {other:?}")))),
        };
        let mut session = handshake
            .complete(
                self.identity.x25519_secret(),
                &contact.x25519,
                &their_ephemeral,
                &reset_binding(&self.me(), &contact.id),
            )
            .map_err(|e| before(e.into()))?;
        let message_id = MessageId::random();
        let confirm = postcard::to_allocvec(&Payload::PairConfirm).map_err(|e| before(e.into()))?;
        let envelope = session
            .seal(
                &confirm,
                &AssociatedData {
                    sender: *self.me().as_bytes(),
                    recipient: *contact.id.as_bytes(),
                    message_id: message_id.0,
                },
            )
            .map_err(|e| before(e.into()))?;
        write(
            &mut send,
            &ResetFrame::Confirm {
                message_id: message_id.0,
                envelope,
            },
        )
        .await
        .map_err(Failed::AfterConfirm)?;
        match read(&mut recv).await.map_err(Failed::AfterConfirm)? {
            ResetFrame::Done => {}
            // Refused after reading the confirmation: nothing was stored there.
            ResetFrame::Refuse { reason } => return Err(Failed::Refused(reason)),
            other => {
                return Err(Failed::AfterConfirm(Error::Protocol(format!(
                    "unexpected {other:?}"
                ))))
            }
        }
        let _ = send.finish();
        let guard = self.sessions.lock(&contact.id).await;
        let line = self.with_state(&contact.id, |s| {
            if s.generation != generation {
                // The other side's reset was stored here meanwhile (it won, and this side
                // took it); the other side stored that one after this one.
                return None;
            }
            Some(begin_store(s, why))
        });
        let Some(line) = line else {
            drop(guard);
            tracing::info!(contact = %contact.id.fmt_short(), "reset superseded by theirs");
            return Ok(());
        };
        let stored = self.commit(contact, session, line);
        drop(guard);
        stored.map_err(before)?;
        self.finished(contact).await.map_err(before)
    }

    /// Stores a new session with what waits sealed again, and the line if `line`; the caller
    /// holds the session lock and has counted the reset ([`begin_store`]).
    fn commit(&self, contact: &Contact, mut session: Session, line: bool) -> Result<(), Error> {
        let mut resealed = Vec::new();
        let mut lost: Vec<(u64, OutboxItem)> = Vec::new();
        for (seq, item, plain) in self.store.outbox_for(&contact.id)? {
            let plain = match plain {
                Some(p) => Some(p),
                None => self.rebuild(&item)?,
            };
            match plain {
                Some(plain) => {
                    let fresh = seal_item(
                        &self.me(),
                        &mut session,
                        &contact.id,
                        item.message_id,
                        &plain,
                        item.kind,
                    )?;
                    resealed.push((seq, fresh, plain));
                }
                None => lost.push((seq, item)),
            }
        }
        let text = secured_line(&contact.name);
        let applied = self.store.store_reset(
            contact,
            &session,
            &resealed,
            &lost,
            line.then_some(text.as_str()),
            now_ms(),
        )?;
        if !applied.failed.is_empty() {
            tracing::warn!(
                contact = %contact.id.fmt_short(),
                n = applied.failed.len(),
                "queued messages from an earlier release could not be sealed again"
            );
        }
        for id in applied.failed {
            self.events.emit(Event::DeliveryChanged {
                id,
                contact: contact.id,
                state: MessageState::Failed,
            });
        }
        if let Some(message) = applied.line {
            self.events.emit(Event::MessageSent {
                message,
                transfer: None,
            });
        }
        Ok(())
    }

    /// The plaintext of an item an earlier release queued (it kept none): a text can be
    /// rebuilt from its message; anything else cannot.
    fn rebuild(&self, item: &OutboxItem) -> Result<Option<Vec<u8>>, Error> {
        if item.kind != OutboxKind::Message {
            return Ok(None);
        }
        self.store
            .message(&item.message_id)?
            .map(rebuilt_text)
            .transpose()
            .map(Option::flatten)
    }

    /// After a stored reset: durable, and what waited goes out.
    async fn finished(&self, contact: &Contact) -> Result<(), Error> {
        self.store.flush().await?;
        self.stored.notify_waiters();
        self.sessions.set_resettable(&contact.id, true);
        tracing::info!(contact = %contact.id.fmt_short(), "session reset");
        self.bus.emit(Signal::SessionReset(contact.id));
        Ok(())
    }

    /// The responder's side of one reset.
    async fn answer(&self, conn: &Connection) -> Result<(), Error> {
        let remote = conn.remote_id();
        let (mut send, mut recv) = tokio::time::timeout(REQUEST_TIMEOUT, conn.accept_bi())
            .await
            .map_err(|_| Error::Reset("no request".into()))?
            .map_err(|e| Error::Network(e.to_string()))?;
        let contact = self
            .store
            .admitted(&remote)?
            .ok_or_else(|| Error::UnknownContact(remote.to_string()))?;
        let their_ephemeral = match read(&mut recv).await? {
            ResetFrame::Hello { ephemeral } => ephemeral,
            other => return Err(Error::Protocol(format!("unexpected {other:?}"))),
        };
        let generation = self.with_state(&contact.id, |s| s.generation);
        let refuse = |reason: String| ResetFrame::Refuse { reason };
        if let Some(reason) = self.refusal(&contact)? {
            write(&mut send, &refuse(reason.clone())).await?;
            let _ = send.finish();
            return Err(Error::Reset(reason));
        }
        let (mut session, ephemeral) = e2e::respond(
            self.identity.x25519_secret(),
            &contact.x25519,
            &their_ephemeral,
            &reset_binding(&remote, &self.me()),
        )?;
        write(&mut send, &ResetFrame::Accept { ephemeral }).await?;
        let (message_id, envelope) = match read(&mut recv).await? {
            ResetFrame::Confirm {
                message_id,
                envelope,
            } => (message_id, envelope),
            other => return Err(Error::Protocol(format!("unexpected {other:?}"))),
        };
        let confirmed = session
            .open(
                &envelope,
                &AssociatedData {
                    sender: *remote.as_bytes(),
                    recipient: *self.me().as_bytes(),
                    message_id,
                },
            )
            .ok()
            .and_then(|plain| postcard::from_bytes::<Payload>(&plain).ok());
        if confirmed != Some(Payload::PairConfirm) {
            // Not the keys this side holds for them: a changed identity key needs a pairing.
            let reason = "the keys do not match; pair again with a fresh invite".to_string();
            write(&mut send, &refuse(reason.clone())).await?;
            let _ = send.finish();
            return Err(Error::Reset(reason));
        }
        // Checked and counted together, under the session lock: no other reset with this
        // contact is stored in between.
        let guard = self.sessions.lock(&contact.id).await;
        let wins = self.wins_over(&contact.id);
        let verdict = self.with_state(&contact.id, |s| {
            if s.generation != generation {
                Err(STORED_MEANWHILE)
            } else if s.running && wins {
                Err(UNDER_WAY)
            } else {
                Ok(begin_store(s, Why::Theirs))
            }
        });
        let stored = match verdict {
            Ok(line) => self.commit(&contact, session, line).map_err(|e| match e {
                Error::Reset(reason) => reason,
                other => other.to_string(),
            }),
            Err(reason) => Err(reason.to_string()),
        };
        drop(guard);
        if let Err(reason) = stored {
            write(&mut send, &refuse(reason.clone())).await?;
            let _ = send.finish();
            return Err(Error::Reset(reason));
        }
        self.finished(&contact).await?;
        if self.drop_next_done.swap(false, Ordering::SeqCst) {
            tracing::warn!("test fault: not sending Done");
            let _ = send.finish();
            return Ok(());
        }
        write(&mut send, &ResetFrame::Done).await?;
        let _ = send.finish();
        Ok(())
    }

    /// Why a reset from `contact` is not answered now, if it is not.
    fn refusal(&self, contact: &Contact) -> Result<Option<String>, Error> {
        if self.store.key_changed(&contact.id)? {
            return Ok(Some(
                "your identity key changed and is not accepted here yet".into(),
            ));
        }
        let wins = self.wins_over(&contact.id);
        let now = Instant::now();
        Ok(self.with_state(&contact.id, |s| {
            if s.running && wins {
                return Some(UNDER_WAY.to_string());
            }
            prune(&mut s.answered, ANSWER_WINDOW, now);
            if s.answered.len() >= MAX_ANSWERED_RESETS {
                tracing::warn!(contact = %contact.id.fmt_short(), "too many resets; refused");
                return Some("too many session resets; try again in a minute".into());
            }
            s.answered.push_back(now);
            None
        }))
    }
}

/// The encoded payload of a queued text, from its stored message (`None` for a file offer,
/// whose payload the message does not hold).
fn rebuilt_text(m: crate::model::Message) -> Result<Option<Vec<u8>>, Error> {
    if m.transfer.is_some() || m.direction != crate::model::Direction::Outgoing {
        return Ok(None);
    }
    Ok(Some(postcard::to_allocvec(&Payload::Text {
        body: m.body,
        sent_at: m.sent_at,
    })?))
}

/// Counts a reset about to be stored (under the session lock, with the check that allowed it)
/// and says whether it writes its line: always when this side's user asked, otherwise at most
/// once per [`LINE_EVERY`].
fn begin_store(s: &mut State, why: Why) -> bool {
    let now = Instant::now();
    s.generation += 1;
    s.last = Some(now);
    let line = matches!(why, Why::User | Why::Restored)
        || s.last_line
            .is_none_or(|t| now.duration_since(t) >= LINE_EVERY);
    if line {
        s.last_line = Some(now);
    }
    line
}

async fn read<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Result<ResetFrame, Error> {
    tokio::time::timeout(REQUEST_TIMEOUT, wire::read_frame(r))
        .await
        .map_err(|_| Error::Reset("the other side stopped answering".into()))?
        .map_err(|e| Error::Reset(e.to_string()))
}

async fn write<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, f: &ResetFrame) -> Result<(), Error> {
    wire::write_frame(w, f)
        .await
        .map_err(|e| Error::Reset(e.to_string()))
}

/// The `ferry/reset/1` handler: answers resets from contacts (a stranger or a blocked contact
/// is closed before anything is read).
#[derive(Debug, Clone)]
pub(crate) struct ResetProtocol(pub(crate) Arc<Resets>);

impl ProtocolHandler for ResetProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let remote = conn.remote_id();
        if !matches!(self.0.store.admitted(&remote), Ok(Some(_))) {
            tracing::info!(peer = %remote.fmt_short(), "refused a reset from a stranger");
            conn.close(403u32.into(), b"not a contact");
            return Ok(());
        }
        match self.0.answer(&conn).await {
            Ok(()) => tracing::info!(peer = %remote.fmt_short(), "answered a session reset"),
            Err(e) => {
                tracing::info!(peer = %remote.fmt_short(), "session reset not completed: {e}")
            }
        }
        // Let the initiator read our last frame before the connection goes.
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn.closed()).await;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_release_is_told_from_a_network_failure() {
        // What iroh 1.4 says when the peer has no `ferry/reset/1`.
        assert!(no_such_protocol(
            "aborted by peer: the cryptographic handshake failed: error 120: peer doesn't \
             support any known protocol"
        ));
        assert!(no_such_protocol("TLS alert: NoApplicationProtocol"));
        assert!(!no_such_protocol("timed out"));
        assert!(!no_such_protocol("connection lost: no route to host"));
    }

    #[test]
    fn a_text_an_earlier_release_queued_is_rebuilt_from_its_message_but_an_offer_is_not() {
        use crate::model::{ConversationId, Direction, Message, MessageState, TransferId};
        let me = iroh::SecretKey::from_bytes(&[1; 32]).public();
        let m = Message {
            id: MessageId([1; 16]),
            conversation: ConversationId([2; 16]),
            contact: me,
            seq: 1,
            direction: Direction::Outgoing,
            body: "queued before the upgrade".into(),
            sent_at: 42,
            stored_at: 42,
            state: MessageState::Queued,
            transfer: None,
            author: me,
        };
        let plain = rebuilt_text(m.clone()).unwrap().unwrap();
        assert_eq!(
            postcard::from_bytes::<Payload>(&plain).unwrap(),
            Payload::Text {
                body: "queued before the upgrade".into(),
                sent_at: 42
            }
        );
        let offer = Message {
            transfer: Some(TransferId([3; 16])),
            ..m
        };
        assert_eq!(rebuilt_text(offer).unwrap(), None);
    }

    #[test]
    fn a_line_is_written_when_the_user_asks_and_otherwise_at_most_every_ten_minutes() {
        let mut s = State::default();
        assert!(begin_store(&mut s, Why::Theirs));
        assert!(!begin_store(&mut s, Why::Auto));
        assert!(!begin_store(&mut s, Why::Theirs));
        assert!(begin_store(&mut s, Why::User));
        assert_eq!(s.generation, 4);
        s.last_line = Instant::now().checked_sub(LINE_EVERY);
        assert!(begin_store(&mut s, Why::Auto));
    }
}
