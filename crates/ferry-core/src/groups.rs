//! Groups, a feature: group conversations over the pairwise sessions between contacts.
//!
//! A group is a log of signed entries ([`ferry_proto::group`]): membership changes and sealed
//! messages. Every entry goes from its author to each member who is the author's contact, as
//! a [`Payload::GroupEntries`] through the outbox; a member passes what it takes on to its
//! member contacts the payload says were not sent it yet (`covered`). A member's sender chain
//! goes the same way as a signed [`KeyShare`] ([`Payload::GroupKey`]), passed on only to
//! members who were in the group when the share was made and still are. When a link comes up,
//! both sides say what they hold of each group they share ([`Payload::GroupHave`]) and each
//! sends the other what it lacks: a member who was away catches up from whichever member it
//! meets first. Entries whose parents have not arrived wait (a gap, shown as "waiting"), and so
//! do sealed entries whose chain has not.
//!
//! No session is ever made with a member who is not a contact: Ferry talks only to people the
//! user paired with. ARCHITECTURE.md ("Groups") gives the threat model.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};

use ferry_proto::group::{
    check_in_log, group_id, Body, Content, Entry, EntryHash, GroupError, GroupState, KeyShare,
    LogView, MemberCard, OrderKey, Receipt, SenderChain, SignedEntry, SignedReceipt,
    MAX_GROUP_NAME, MAX_MEMBERS, MAX_PARENTS, MAX_RECEIPT_MEMBERS,
};
use rand_core::{OsRng, RngCore};
use tokio::sync::Mutex;

use crate::bus::{Bus, Events, Signal};
use crate::identity::Identity;
use crate::inbox::{BoxFuture, Handled, Incoming, PayloadHandler, PayloadKind};
use crate::model::{
    now_ms, Contact, ContactId, Conversation, ConversationId, ConversationKind, Direction, Event,
    GroupMember, GroupView, MemberKind, Message, MessageId, MessageReceipt, MessageState, Presence,
    Transfer, TransferId,
};
use crate::net::Links;
use crate::outbox::Outbox;
use crate::store::{GroupFile, GroupRecord, GroupWrite, Pending, Store, StoredChain, MAX_PENDING};
use crate::wire::{Payload, MAX_GROUP_ENTRIES};
use crate::Error;
use ferry_proto::limits::{MAX_FOLDER_FILES, MAX_PENDING_OFFERS};
use ferry_proto::naming;

/// Bytes of entries one [`Payload::GroupEntries`] carries at most (with its `covered` list it
/// stays well inside a frame; one entry at its largest fits).
const ENTRIES_BUDGET: usize = 40 * 1024;
/// Sender chains kept for one author in one group (a new one comes at each change of
/// members; more than this is a member making them up).
const MAX_CHAINS_PER_AUTHOR: usize = 64;
/// The longest `heads` or `keys` list of a [`Payload::GroupHave`].
const MAX_HAVE: usize = MAX_MEMBERS * 4;

/// What to send once a change is stored: payloads for contacts, in order.
type Sends = Vec<(ContactId, Payload)>;

/// The groups feature: a cheap handle.
#[derive(Debug, Clone)]
pub(crate) struct Groups(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    identity: Identity,
    store: Store,
    outbox: Outbox,
    links: Links,
    events: Events,
    bus: Bus,
    /// Held while a group's record and log change (every group: changes are small).
    lock: Mutex<()>,
}

/// A file offered in a group, as stored: its transfer and what the group says of it.
type Offered = (Transfer, GroupFile);

/// An entry that joined a log: the entry, who sent it, and whom it was already sent to.
type Joined = (SignedEntry, [u8; 32], Vec<[u8; 32]>);

/// What taking entries did.
#[derive(Default)]
struct Taken {
    /// Entries that joined a log, by group, in the order they joined, each with whom it came
    /// from and whom it was already sent to (to pass it on to the others).
    joined: BTreeMap<[u8; 16], Vec<Joined>>,
    /// Messages to announce.
    messages: Vec<Message>,
    /// Groups whose membership or name changed.
    changed: BTreeSet<[u8; 16]>,
    /// Groups with entries waiting for parents: ask the sender for what it has.
    ask: BTreeSet<[u8; 16]>,
    /// Chains whose `needs` may now be met.
    shares: BTreeSet<[u8; 16]>,
    /// Groups with sealed entries newly waiting for a chain: ask the sender for it.
    locked: BTreeSet<[u8; 16]>,
    /// Groups with a member's newer receipt.
    receipts: BTreeSet<[u8; 16]>,
    /// Files offered in groups, now stored.
    offers: Vec<Transfer>,
    /// What goes on to others as it is (receipts passed on).
    sends: Sends,
}

/// What a group file's offer says, and the transfer id this home gives it.
#[derive(Debug)]
struct GroupOffer {
    id: TransferId,
    author: ContactId,
    root: [u8; 32],
    folder: bool,
    name: String,
    size: u64,
    files: u32,
}

/// The incoming transfer a group file's offer makes (stored with its message; the transfer
/// feature fetches it once accepted), after the checks a contact's offer gets: a file is one
/// file, a folder at most [`MAX_FOLDER_FILES`]; an author with [`MAX_PENDING_OFFERS`] offers
/// waiting is refused.
fn group_offer(store: &Store, offer: GroupOffer) -> Result<Transfer, Error> {
    let files = offer.files as usize;
    if (offer.folder && (files == 0 || files > MAX_FOLDER_FILES)) || (!offer.folder && files != 1) {
        return Err(Error::Protocol(format!(
            "an offer of {} with {files} files",
            if offer.folder { "a folder" } else { "a file" }
        )));
    }
    let pending = store.offers_waiting(&offer.author)?;
    if pending >= MAX_PENDING_OFFERS {
        return Err(Error::Quota(crate::Quota::PendingOffers(pending)));
    }
    let kind = naming::classify_remote(&offer.name);
    Ok(Transfer {
        size: offer.size,
        hash: data_encoding::HEXLOWER.encode(&offer.root),
        files: offer.files,
        ..Transfer::offered(
            offer.id,
            offer.author,
            Direction::Incoming,
            naming::safe_name(&offer.name),
            offer.folder,
            kind.media_type,
            kind.dangerous,
        )
    })
}

/// The id of the transfer a group file's offer is on every member but its author: the last 16
/// bytes of the entry's hash (not the author's choice, so it cannot collide with another).
fn file_transfer_id(hash: &EntryHash) -> TransferId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash[16..]);
    TransferId(id)
}

/// The id of the message a group entry shows as: the first 16 bytes of its hash.
fn message_id(hash: &EntryHash) -> MessageId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash[..16]);
    MessageId(id)
}

fn key_of(e: &Entry, hash: &EntryHash) -> OrderKey {
    OrderKey {
        lamport: e.lamport,
        hash: *hash,
    }
}

fn member_name(state: &GroupState, id: &[u8; 32]) -> String {
    state
        .members
        .get(id)
        .map(|m| m.name.clone())
        .unwrap_or_else(|| {
            ContactId::from_bytes(id)
                .map(|c| c.fmt_short().to_string())
                .unwrap_or_default()
        })
}

impl Groups {
    pub(crate) fn new(
        identity: Identity,
        store: Store,
        outbox: Outbox,
        links: Links,
        events: Events,
        bus: &Bus,
    ) -> Groups {
        let groups = Groups(Arc::new(Inner {
            identity,
            store,
            outbox,
            links,
            events,
            bus: bus.clone(),
            lock: Mutex::new(()),
        }));
        // A contact came online: say what we hold of each group we share, so each side sends
        // the other what it lacks.
        let weak = Arc::downgrade(&groups.0);
        bus.subscribe(move |signal| {
            let Some(inner) = weak.upgrade() else { return };
            match signal {
                Signal::LinkUp(id) => {
                    tokio::spawn(async move {
                        let groups = Groups(inner);
                        if let Err(e) = groups.say_have(&id).await {
                            tracing::debug!(peer = %id.fmt_short(), "group catch-up: {e}");
                        }
                    });
                }
                // A group with entries still waiting asks a member contact that is online
                // again, each presence round: what one missed, another may have.
                Signal::Tick => {
                    tokio::spawn(async move {
                        if let Err(e) = Groups(inner).ask_for_what_waits().await {
                            tracing::debug!("group catch-up: {e}");
                        }
                    });
                }
                _ => {}
            }
        });
        groups
    }

    /// The payload kinds groups take.
    pub(crate) fn handlers(&self) -> Vec<(PayloadKind, Arc<dyn PayloadHandler>)> {
        vec![(
            PayloadKind::Group,
            Arc::new(Handler(Arc::downgrade(&self.0))) as Arc<dyn PayloadHandler>,
        )]
    }

    fn me(&self) -> [u8; 32] {
        *self.0.identity.id().as_bytes()
    }

    // ---- what front ends see ----

    /// Whether this home is, or was, in the group (the others are not shown).
    fn visible(&self, rec: &GroupRecord) -> bool {
        rec.state.spans.contains_key(&self.me())
    }

    /// Every group this home is or was in, newest first.
    pub(crate) fn list(&self) -> Result<Vec<GroupView>, Error> {
        let mut out: Vec<GroupView> = self
            .0
            .store
            .groups()?
            .iter()
            .filter(|r| self.visible(r))
            .map(|r| self.view(r))
            .collect::<Result<_, _>>()?;
        out.sort_by_key(|g| std::cmp::Reverse(g.created_at));
        Ok(out)
    }

    /// A group by name (case-insensitive) or id prefix; `None` when none matches.
    pub(crate) fn find(&self, query: &str) -> Result<Vec<GroupRecord>, Error> {
        let q = query.trim().to_lowercase();
        if q.is_empty() {
            return Ok(Vec::new());
        }
        let all: Vec<GroupRecord> = self
            .0
            .store
            .groups()?
            .into_iter()
            .filter(|r| self.visible(r))
            .collect();
        let by_name: Vec<GroupRecord> = all
            .iter()
            .filter(|r| r.state.name.to_lowercase() == q)
            .cloned()
            .collect();
        if !by_name.is_empty() {
            return Ok(by_name);
        }
        // An id prefix names a group from 4 characters on.
        if q.len() < 4 {
            return Ok(Vec::new());
        }
        Ok(all
            .into_iter()
            .filter(|r| ConversationId(r.id).to_string().starts_with(&q))
            .collect())
    }

    /// What a front end shows of a group.
    pub(crate) fn view(&self, rec: &GroupRecord) -> Result<GroupView, Error> {
        let store = &self.0.store;
        let me = self.me();
        let mut members = Vec::new();
        for (id, m) in &rec.state.members {
            let Ok(cid) = ContactId::from_bytes(id) else {
                continue;
            };
            let contact = store.contact(&cid)?;
            let (kind, name, online) = if *id == me {
                (MemberKind::You, store.my_name()?, true)
            } else if let Some(c) = contact {
                let kind = if store.is_blocked(&cid)? {
                    MemberKind::Blocked
                } else if c.verified {
                    MemberKind::Verified
                } else {
                    MemberKind::Contact
                };
                let online = matches!(self.0.links.presence_of(&cid), Presence::Online { .. });
                (kind, c.name, online)
            } else {
                (MemberKind::NotYourContact, m.name.clone(), false)
            };
            members.push(GroupMember {
                id: cid,
                name,
                admin: m.admin,
                kind,
                online,
            });
        }
        members.sort_by(|a, b| {
            b.admin
                .cmp(&a.admin)
                .then(a.name.to_lowercase().cmp(&b.name.to_lowercase()))
        });
        let waiting = store.group_pending(&rec.id)?.len() + store.group_locked_count(&rec.id)?;
        Ok(GroupView {
            id: ConversationId(rec.id),
            name: rec.state.name.clone(),
            online: members.iter().filter(|m| m.online).count() as u32,
            members,
            member: rec.state.members.contains_key(&me),
            admin: rec.state.is_admin(&me),
            unread: store.unread_count(&ConversationId(rec.id))?,
            waiting: u32::try_from(waiting).unwrap_or(u32::MAX),
            created_at: rec.created_at,
        })
    }

    /// A page of a group's conversation; with `mark_read`, its incoming messages become seen.
    pub(crate) async fn history(
        &self,
        rec: &GroupRecord,
        before: Option<u64>,
        limit: usize,
        mark_read: bool,
    ) -> Result<Vec<Message>, Error> {
        let store = &self.0.store;
        let mut page = store.history(&ConversationId(rec.id), before, limit)?;
        if mark_read && page.iter().any(|m| m.state == MessageState::Received) {
            let sends = {
                let _guard = self.0.lock.lock().await;
                let mut read = store.group_read(&rec.id)?;
                for m in page.iter().filter(|m| m.state == MessageState::Received) {
                    if let Some((author, seq)) = store.group_message_entry(&rec.id, &m.id)? {
                        let r = read.entry(author).or_default();
                        *r = (*r).max(seq);
                    }
                }
                store.mark_group_seen(&page)?;
                store.set_group_read(&rec.id, &read)?;
                self.receipt_sends(&self.record(&rec.id)?)?
            };
            for m in page.iter_mut() {
                if m.state == MessageState::Received {
                    m.state = MessageState::Seen;
                }
            }
            store.flush().await?;
            self.send(sends).await;
        }
        Ok(page)
    }

    /// How far this home's messages in a group have got: for each of `ids`, how many of the
    /// other members hold it and have read it, by their newest receipts.
    pub(crate) fn receipts(
        &self,
        rec: &GroupRecord,
        ids: &[MessageId],
    ) -> Result<Vec<MessageReceipt>, Error> {
        let store = &self.0.store;
        let me = self.me();
        let others: Vec<[u8; 32]> = rec
            .state
            .members
            .keys()
            .filter(|m| **m != me)
            .copied()
            .collect();
        let receipts: BTreeMap<[u8; 32], SignedReceipt> = store
            .group_receipts(&rec.id)?
            .into_iter()
            .map(|r| (r.receipt.member, r))
            .collect();
        let mut out = Vec::new();
        for id in ids {
            let Some((author, seq)) = store.group_message_entry(&rec.id, id)? else {
                continue;
            };
            let (mut delivered, mut read) = (0u32, 0u32);
            for m in others.iter().filter(|m| **m != author) {
                let Some(r) = receipts.get(m) else { continue };
                let has =
                    |list: &[([u8; 32], u64)]| list.iter().any(|(a, s)| *a == author && *s >= seq);
                if has(&r.receipt.delivered) {
                    delivered += 1;
                }
                if has(&r.receipt.read) {
                    read += 1;
                    if !has(&r.receipt.delivered) {
                        delivered += 1;
                    }
                }
            }
            out.push(MessageReceipt {
                id: *id,
                delivered,
                read,
                of: u32::try_from(others.iter().filter(|m| **m != author).count()).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// This home's receipt for a group, to every member contact (groups small enough only).
    fn receipt_sends(&self, rec: &GroupRecord) -> Result<Sends, Error> {
        let store = &self.0.store;
        let me = self.me();
        if !rec.state.members.contains_key(&me) || rec.state.members.len() > MAX_RECEIPT_MEMBERS {
            return Ok(Vec::new());
        }
        let at = store
            .group_receipt(&rec.id, &me)?
            .map_or(0, |r| r.receipt.at + 1)
            .max(now_ms());
        let receipt = Receipt {
            group: rec.id,
            member: me,
            at,
            delivered: rec
                .vector
                .iter()
                .map(|(a, s)| (*a, *s))
                .take(MAX_HAVE)
                .collect(),
            read: store
                .group_read(&rec.id)?
                .into_iter()
                .take(MAX_HAVE)
                .collect(),
        }
        .sign(self.0.identity.secret_key());
        store.put_group_receipt(&receipt)?;
        let targets = self.member_contacts(rec, &[])?;
        let covered = covered_with(&[me], &targets);
        Ok(targets
            .into_iter()
            .map(|t| {
                (
                    t,
                    Payload::GroupReceipt {
                        receipt: receipt.clone(),
                        covered: covered.clone(),
                    },
                )
            })
            .collect())
    }

    /// Takes a member's receipt: kept if it is newer than the one held, and passed on.
    fn take_receipt(
        &self,
        from: &ContactId,
        receipt: SignedReceipt,
        covered: Vec<[u8; 32]>,
        taken: &mut Taken,
    ) -> Result<(), Error> {
        let store = &self.0.store;
        if let Err(e) = receipt.verify() {
            tracing::info!("a group receipt refused: {e}");
            return Ok(());
        }
        let r = &receipt.receipt;
        let Some(rec) = store.group(&r.group)? else {
            return Ok(());
        };
        if r.member == self.me()
            || !rec.state.members.contains_key(&r.member)
            || rec.state.members.len() > MAX_RECEIPT_MEMBERS
            || covered.len() > MAX_MEMBERS + 1
        {
            return Ok(());
        }
        if store
            .group_receipt(&r.group, &r.member)?
            .is_some_and(|held| held.receipt.at >= r.at)
        {
            return Ok(());
        }
        store.put_group_receipt(&receipt)?;
        let mut except = covered.clone();
        except.push(*from.as_bytes());
        except.push(r.member);
        let targets = self.member_contacts(&rec, &except)?;
        let covered = covered_with(&covered, &targets);
        for t in targets {
            taken.sends.push((
                t,
                Payload::GroupReceipt {
                    receipt: receipt.clone(),
                    covered: covered.clone(),
                },
            ));
        }
        taken.receipts.insert(r.group);
        Ok(())
    }

    // ---- what the user does ----

    /// Creates a group with these contacts; returns it once its first entry is stored.
    pub(crate) async fn create(&self, name: &str, members: &[Contact]) -> Result<GroupView, Error> {
        let name = clean_group_name(name)?;
        if members.len() + 1 > MAX_MEMBERS {
            return Err(Error::InvalidInput(format!(
                "a group has at most {MAX_MEMBERS} members"
            )));
        }
        let store = &self.0.store;
        let me = self.me();
        let mut cards = vec![MemberCard {
            id: me,
            name: store.my_name()?,
        }];
        for c in members {
            if cards.iter().any(|m| m.id == *c.id.as_bytes()) {
                continue;
            }
            cards.push(MemberCard {
                id: *c.id.as_bytes(),
                name: c.name.clone(),
            });
        }
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let at = now_ms();
        let id = group_id(&me, &nonce, at);
        let entry = Entry {
            group: id,
            author: me,
            seq: 1,
            lamport: 1,
            parents: Vec::new(),
            at,
            body: Body::Create {
                name,
                nonce,
                members: cards,
            },
        };
        let (rec, sends) = {
            let _guard = self.0.lock.lock().await;
            let signed = entry.sign(self.0.identity.secret_key());
            let mut taken = Taken::default();
            if !self.take_one(signed.clone(), None, &[], &mut taken)? {
                return Err(Error::Corrupt(
                    "this home's own group entry did not join its log".into(),
                ));
            }
            let rec = self.record(&id)?;
            let sends = self.direct_sends(&rec, &[signed], None)?;
            (rec, sends)
        };
        self.send(sends).await;
        self.announce_group(&rec)
    }

    /// Writes an entry of this home's into a group (an admin's change, a leave, a rename).
    async fn write(&self, group: &[u8; 16], body: Body) -> Result<GroupView, Error> {
        let (rec, sends) = {
            let _guard = self.0.lock.lock().await;
            let rec = self.record(group)?;
            let signed = self.sign_next(&rec, body)?;
            let mut taken = Taken::default();
            if !self.take_one(signed.clone(), None, &[], &mut taken)? {
                return Err(Error::Corrupt(
                    "this home's own group entry did not join its log".into(),
                ));
            }
            let after = self.record(group)?;
            // The members before it (a removed member hears of the removal) and after (an
            // added one gets the log).
            let sends = self.direct_sends(&after, &[signed], Some(&rec.state))?;
            (after, sends)
        };
        self.send(sends).await;
        self.announce_group(&rec)
    }

    /// Adds a contact to a group (admins only).
    pub(crate) async fn add(
        &self,
        rec: &GroupRecord,
        contact: &Contact,
    ) -> Result<GroupView, Error> {
        self.must_be_admin(rec)?;
        if rec.state.members.contains_key(contact.id.as_bytes()) {
            return Err(Error::InvalidInput(format!(
                "{} is already in {}",
                contact.name, rec.state.name
            )));
        }
        if rec.state.members.len() >= MAX_MEMBERS {
            return Err(Error::InvalidInput(format!(
                "{} is full: a group has at most {MAX_MEMBERS} members",
                rec.state.name
            )));
        }
        let body = Body::Add {
            member: MemberCard {
                id: *contact.id.as_bytes(),
                name: contact.name.clone(),
            },
        };
        self.write(&rec.id, body).await
    }

    /// Removes a member (admins only; not the creator).
    pub(crate) async fn remove(
        &self,
        rec: &GroupRecord,
        member: &[u8; 32],
    ) -> Result<GroupView, Error> {
        self.must_be_admin(rec)?;
        if *member == rec.state.creator {
            return Err(Error::InvalidInput(
                "the group's creator cannot be removed".into(),
            ));
        }
        if *member == self.me() {
            return Err(Error::InvalidInput("to leave a group, use leave".into()));
        }
        self.write(&rec.id, Body::Remove { member: *member }).await
    }

    /// Writes an entry whatever the rules say (tests of what other members reject).
    pub(crate) async fn write_unchecked(
        &self,
        rec: &GroupRecord,
        body: Body,
    ) -> Result<GroupView, Error> {
        self.write(&rec.id, body).await
    }

    /// Leaves a group.
    pub(crate) async fn leave(&self, rec: &GroupRecord) -> Result<GroupView, Error> {
        self.must_be_member(rec)?;
        self.write(&rec.id, Body::Leave).await
    }

    /// Renames a group (any member).
    pub(crate) async fn rename(&self, rec: &GroupRecord, name: &str) -> Result<GroupView, Error> {
        self.must_be_member(rec)?;
        let name = clean_group_name(name)?;
        self.write(&rec.id, Body::Rename { name }).await
    }

    /// Makes a member an admin (admins only).
    pub(crate) async fn make_admin(
        &self,
        rec: &GroupRecord,
        member: &[u8; 32],
    ) -> Result<GroupView, Error> {
        self.must_be_admin(rec)?;
        self.write(&rec.id, Body::MakeAdmin { member: *member })
            .await
    }

    /// Sends a text to a group: sealed under this home's sender chain (a new one first when
    /// the members changed since the last), stored, and queued for every member contact.
    pub(crate) async fn send_text(&self, rec: &GroupRecord, text: &str) -> Result<Message, Error> {
        crate::outbox::check_text(text)?;
        let content = Content::Text {
            body: text.to_string(),
        };
        self.post(rec, content, text.to_string(), None).await
    }

    /// Offers a file or folder to a group: `t` is this home's outgoing transfer (its content
    /// imported and tagged by the transfer feature); the offer is sealed like a text, and every
    /// member may then fetch the content from this home or from any member who holds it.
    pub(crate) async fn send_file(&self, rec: &GroupRecord, t: Transfer) -> Result<Message, Error> {
        let hash: [u8; 32] = data_encoding::HEXLOWER
            .decode(t.hash.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Corrupt(format!("transfer {} has a bad hash", t.id)))?;
        let content = Content::FileOffer {
            transfer: t.id.0,
            hash,
            folder: t.folder,
            name: t.name.clone(),
            size: t.size,
            files: t.files,
        };
        let file = GroupFile {
            group: rec.id,
            hash,
            folder: t.folder,
            author: self.me(),
        };
        self.post(rec, content, t.name.clone(), Some((t, file)))
            .await
    }

    /// Writes a sealed entry (a text, or a file's offer with its transfer) into a group.
    async fn post(
        &self,
        rec: &GroupRecord,
        content: Content,
        shown: String,
        file: Option<(Transfer, GroupFile)>,
    ) -> Result<Message, Error> {
        self.must_be_member(rec)?;
        let store = &self.0.store;
        let me = self.me();
        let (message, sends) = {
            let _guard = self.0.lock.lock().await;
            let mut rec = self.record(&rec.id)?;
            let others: Vec<[u8; 32]> = rec
                .state
                .members
                .keys()
                .filter(|id| **id != me)
                .copied()
                .collect();
            // A new chain when the members changed: a member who left cannot read on, and
            // one who joined cannot read back.
            let mut new_share = None;
            let current = match rec.my_epoch {
                Some(epoch) if rec.shared_for == others => {
                    store.group_chain(&rec.id, &me, epoch)?
                }
                _ => None,
            };
            let mut chain = match current {
                Some(chain) => chain,
                None => {
                    let epoch = rec.my_epoch.map_or(0, |e| e.wrapping_add(1));
                    let chain = SenderChain::new(epoch);
                    let share = chain.share(rec.id, self.0.identity.secret_key());
                    new_share = Some((share.clone(), rec.heads.clone()));
                    rec.my_epoch = Some(epoch);
                    rec.shared_for = others.clone();
                    StoredChain {
                        chain,
                        share,
                        needs: rec.heads.clone(),
                        passed_on: true,
                        covered: Vec::new(),
                    }
                }
            };
            let body = chain.chain.seal(&rec.id, &me, &content);
            let epoch = chain.chain.epoch();
            let signed = self.sign_next(&rec, body)?;
            let hash = signed.entry.hash();
            let message = Message {
                id: message_id(&hash),
                conversation: ConversationId(rec.id),
                contact: self.0.identity.id(),
                seq: store.free_group_seq(&rec.id, signed.entry.lamport, &hash)?,
                direction: Direction::Outgoing,
                body: shown,
                sent_at: signed.entry.at,
                stored_at: signed.entry.at,
                state: MessageState::Delivered,
                transfer: file.as_ref().map(|(t, _)| t.id),
                author: self.0.identity.id(),
            };
            // The record (new epoch), the chain, the message and its file first, then the entry.
            store.apply_group(&GroupWrite {
                group: rec.id,
                record: Some(rec.clone()),
                chains: vec![(me, epoch, chain)],
                messages: vec![message.clone()],
                files: file.clone().into_iter().collect(),
                ..GroupWrite::default()
            })?;
            let mut taken = Taken::default();
            if !self.take_one(signed.clone(), None, &[], &mut taken)? {
                return Err(Error::Corrupt(
                    "this home's own group entry did not join its log".into(),
                ));
            }
            let rec = self.record(&rec.id)?;
            let mut sends = Vec::new();
            if let Some((share, needs)) = new_share {
                let targets = self.member_contacts(&rec, &[])?;
                let covered = covered_with(&[me], &targets);
                for t in &targets {
                    sends.push((
                        *t,
                        Payload::GroupKey {
                            share: share.clone(),
                            needs: needs.clone(),
                            covered: covered.clone(),
                        },
                    ));
                }
            }
            sends.extend(self.direct_sends(&rec, &[signed], None)?);
            (message, sends)
        };
        store.flush().await?;
        self.0.events.emit(Event::MessageSent {
            message: message.clone(),
            transfer: file.map(|(t, _)| t),
        });
        self.send(sends).await;
        Ok(message)
    }

    fn must_be_member(&self, rec: &GroupRecord) -> Result<(), Error> {
        if rec.state.members.contains_key(&self.me()) {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "you are no longer in {}",
                rec.state.name
            )))
        }
    }

    fn must_be_admin(&self, rec: &GroupRecord) -> Result<(), Error> {
        self.must_be_member(rec)?;
        if rec.state.is_admin(&self.me()) {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "only an admin of {} can do that",
                rec.state.name
            )))
        }
    }

    fn record(&self, group: &[u8; 16]) -> Result<GroupRecord, Error> {
        self.0
            .store
            .group(group)?
            .ok_or_else(|| Error::InvalidInput("no such group".into()))
    }

    /// This home's next entry in a group: after its previous one and the log's heads.
    fn sign_next(&self, rec: &GroupRecord, body: Body) -> Result<SignedEntry, Error> {
        if rec.restored {
            return Err(Error::InvalidInput(format!(
                "{} is catching up after this home was restored from a backup: try again once \
                 a member is online",
                rec.state.name
            )));
        }
        let me = self.me();
        let store = &self.0.store;
        let log = store.group_log(&rec.id);
        let seq = rec.vector.get(&me).copied().unwrap_or(0) + 1;
        let mut heads: Vec<(u64, EntryHash)> = rec
            .heads
            .iter()
            .filter_map(|h| log.lamport_of(h).map(|l| (l, *h)))
            .collect();
        heads.sort_by(|a, b| b.cmp(a));
        let prev = if seq > 1 {
            log.by_author(&me, seq - 1)
        } else {
            None
        };
        let mut parents: Vec<EntryHash> = heads
            .iter()
            .take(MAX_PARENTS - 1)
            .map(|(_, h)| *h)
            .collect();
        parents.extend(prev);
        parents.sort();
        parents.dedup();
        let top = parents
            .iter()
            .filter_map(|h| log.lamport_of(h))
            .max()
            .unwrap_or(0);
        let entry = Entry {
            group: rec.id,
            author: me,
            seq,
            lamport: top + 1,
            parents,
            at: now_ms(),
            body,
        };
        Ok(entry.sign(self.0.identity.secret_key()))
    }

    // ---- taking entries ----

    /// Takes one verified entry into its log if its parents are there (else it waits, if
    /// `from` is given), and then whatever was waiting for it. Call with the lock held.
    fn take_one(
        &self,
        signed: SignedEntry,
        from: Option<&ContactId>,
        covered: &[[u8; 32]],
        taken: &mut Taken,
    ) -> Result<bool, Error> {
        let hash = match signed.verify() {
            Ok(h) => h,
            Err(e) => {
                tracing::info!("a group entry refused: {e}");
                return Ok(false);
            }
        };
        let group = signed.entry.group;
        let origin = from.map_or([0; 32], |f| *f.as_bytes());
        match self.join_log(&signed, &hash, taken)? {
            Ok(true) => {
                taken
                    .joined
                    .entry(group)
                    .or_default()
                    .push((signed, origin, covered.to_vec()))
            }
            Ok(false) => return Ok(true), // had it
            Err(GroupError::Missing(_)) => {
                if let Some(from) = from {
                    // Ask the sender for what it has only when this is news (no loop of
                    // asking for what it cannot give).
                    if self.hold(group, hash, signed, from, covered)? {
                        taken.ask.insert(group);
                    }
                }
                return Ok(false);
            }
            Err(e) => {
                tracing::info!(group = %ConversationId(group), "a group entry refused: {e}");
                return Ok(false);
            }
        }
        // What waited for it may join now, in turn (and is passed on as it came).
        loop {
            let mut progressed = false;
            let mut pending = self.0.store.group_pending(&group)?;
            pending.sort_by_key(|(_, p)| p.entry.entry.lamport);
            for (h, p) in pending {
                match self.join_log(&p.entry, &h, taken)? {
                    Err(GroupError::Missing(_)) => continue,
                    Ok(joined) => {
                        progressed = true;
                        if joined {
                            taken
                                .joined
                                .entry(group)
                                .or_default()
                                .push((p.entry, p.from, p.covered));
                        }
                    }
                    Err(e) => tracing::info!("a held group entry refused: {e}"),
                }
                self.0.store.apply_group(&GroupWrite {
                    group,
                    unpend: vec![h],
                    ..GroupWrite::default()
                })?;
            }
            if !progressed {
                break;
            }
        }
        Ok(true)
    }

    /// Whether an entry adding this home to `group` waits for the group's log.
    fn invited(&self, group: &[u8; 16]) -> Result<bool, Error> {
        let me = self.me();
        Ok(self
            .0
            .store
            .group_pending(group)?
            .iter()
            .any(|(_, p)| matches!(&p.entry.entry.body, Body::Add { member } if member.id == me)))
    }

    /// Holds an entry until its parents arrive; whether it is new here. Only for a group
    /// this home knows, or one whose entry makes this home a member (an admin's add, or the
    /// creation): a contact cannot make it hold anything else.
    fn hold(
        &self,
        group: [u8; 16],
        hash: EntryHash,
        entry: SignedEntry,
        from: &ContactId,
        covered: &[[u8; 32]],
    ) -> Result<bool, Error> {
        let me = self.me();
        let invites_me = match &entry.entry.body {
            Body::Add { member } => member.id == me,
            Body::Create { members, .. } => members.iter().any(|m| m.id == me),
            _ => false,
        };
        if !invites_me && self.0.store.group(&group)?.is_none() {
            tracing::debug!("an entry of a group this home is not in; dropped");
            return Ok(false);
        }
        let held = self.0.store.group_pending(&group)?;
        if held.iter().any(|(h, _)| *h == hash) {
            return Ok(false);
        }
        if held.len() >= MAX_PENDING {
            tracing::warn!(group = %ConversationId(group), "too many group entries wait for their parents; one dropped (it comes again with the next catch-up)");
            return Ok(false);
        }
        self.0.store.apply_group(&GroupWrite {
            group,
            pend: vec![(
                hash,
                Pending {
                    from: *from.as_bytes(),
                    entry,
                    covered: covered.to_vec(),
                },
            )],
            ..GroupWrite::default()
        })?;
        Ok(true)
    }

    /// Checks an entry against its log and, if it fits, stores it with what it shows. The
    /// outer error is the store's; the inner one says why the entry does not join (yet).
    fn join_log(
        &self,
        signed: &SignedEntry,
        hash: &EntryHash,
        taken: &mut Taken,
    ) -> Result<Result<bool, GroupError>, Error> {
        let store = &self.0.store;
        let e = &signed.entry;
        let existing = store.group(&e.group)?;
        if store.group_lamport(&e.group, hash)?.is_some() {
            return Ok(Ok(false)); // had it
        }
        let me = self.me();
        let mut rec = match (existing, &e.body) {
            (Some(r), _) => r,
            // A new group only if this home is in it, or an add of this home waits for it.
            (None, Body::Create { members, .. })
                if members.iter().any(|m| m.id == me) || self.invited(&e.group)? =>
            {
                GroupRecord {
                    id: e.group,
                    state: GroupState::default(),
                    heads: Vec::new(),
                    vector: BTreeMap::new(),
                    my_epoch: None,
                    shared_for: Vec::new(),
                    created_at: now_ms(),
                    restored: false,
                    named: Vec::new(),
                }
            }
            (None, Body::Create { .. }) => {
                return Ok(Err(GroupError::Invalid(
                    "a group this home is not invited to".into(),
                )))
            }
            (None, _) => {
                return Ok(Err(GroupError::Missing(e.parents.clone())));
            }
        };
        // Only someone a membership entry ever named may write: a signature from any key is
        // not enough (once named, always: every member decides this the same way).
        if !matches!(e.body, Body::Create { .. }) && rec.named.binary_search(&e.author).is_err() {
            return Ok(Err(GroupError::Invalid(
                "its author was never named a member".into(),
            )));
        }
        if let Err(err) = check_in_log(e, hash, &store.group_log(&e.group)) {
            return Ok(Err(err));
        }
        match &e.body {
            Body::Create { members, .. } => rec.named.extend(members.iter().map(|m| m.id)),
            Body::Add { member } => rec.named.push(member.id),
            _ => {}
        }
        rec.named.sort();
        rec.named.dedup();
        rec.heads.retain(|h| !e.parents.contains(h));
        rec.heads.push(*hash);
        rec.heads.sort();
        let seq = rec.vector.entry(e.author).or_default();
        *seq = (*seq).max(e.seq);
        let key = key_of(e, hash);
        let mut w = GroupWrite {
            group: e.group,
            ..GroupWrite::default()
        };
        if e.body.is_membership() {
            let mut all: Vec<Entry> = store
                .group_entries(&e.group)?
                .into_iter()
                .map(|s| s.entry)
                .filter(|e| e.body.is_membership())
                .collect();
            all.push(e.clone());
            let before = rec.state.clone();
            rec.state = ferry_proto::group::fold(&all);
            if rec.state != before {
                taken.changed.insert(e.group);
            }
            if !rec.state.rejected.contains_key(hash) {
                if let Some(line) = self.event_line(&before, &rec.state, e, hash)? {
                    w.messages.push(Message {
                        id: message_id(hash),
                        conversation: ConversationId(e.group),
                        contact: ContactId::from_bytes(&e.author).unwrap_or(self.0.identity.id()),
                        seq: store.free_group_seq(&e.group, e.lamport, hash)?,
                        direction: Direction::System,
                        body: line,
                        sent_at: e.at,
                        stored_at: now_ms(),
                        state: MessageState::Seen,
                        transfer: None,
                        author: ContactId::from_bytes(&e.author).unwrap_or(self.0.identity.id()),
                    });
                }
            }
            let mut members: Vec<ContactId> = rec
                .state
                .members
                .keys()
                .filter_map(|id| ContactId::from_bytes(id).ok())
                .collect();
            members.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            w.conversation = Some(Conversation {
                id: ConversationId(e.group),
                kind: ConversationKind::Group,
                members,
                created_at: rec.created_at,
            });
        } else if let Body::Sealed {
            epoch,
            index,
            nonce,
            ciphertext,
        } = &e.body
        {
            let id = message_id(hash);
            if e.author == me && store.message(&id)?.is_none() {
                // This home's own message it no longer has: written after the backup it was
                // restored from, and come back from a member. Its chain (restored, never
                // sealed with again) still opens it.
                if let Some(mut chain) = store.group_chain(&e.group, &me, *epoch)? {
                    if let Ok(Content::Text { body }) =
                        chain.chain.open(&e.group, &me, *index, nonce, ciphertext)
                    {
                        w.messages.push(Message {
                            id,
                            conversation: ConversationId(e.group),
                            contact: self.0.identity.id(),
                            seq: store.free_group_seq(&e.group, e.lamport, hash)?,
                            direction: Direction::Outgoing,
                            body,
                            sent_at: e.at,
                            stored_at: now_ms(),
                            state: MessageState::Delivered,
                            transfer: None,
                            author: self.0.identity.id(),
                        });
                        w.chains.push((me, *epoch, chain));
                    }
                }
            } else if e.author != me {
                match store.group_chain(&e.group, &e.author, *epoch)? {
                    Some(mut chain) => {
                        match chain
                            .chain
                            .open(&e.group, &e.author, *index, nonce, ciphertext)
                        {
                            Ok(content) => {
                                if let Some((m, file)) = self.shown(&rec, e, hash, &key, content)? {
                                    if let Some(f) = file {
                                        taken.offers.push(f.0.clone());
                                        w.files.push(f);
                                    }
                                    w.messages.push(m);
                                }
                                w.chains.push((e.author, *epoch, chain));
                            }
                            Err(err) => {
                                tracing::info!("a group message does not open: {err}");
                            }
                        }
                    }
                    // From before this home joined: no key will ever come for it.
                    None if !rec.state.member_at(&me, &key) => {}
                    None => {
                        w.lock.push((e.author, *epoch, e.lamport, *hash));
                        taken.locked.insert(e.group);
                    }
                }
            }
        }
        taken.messages.extend(
            w.messages
                .iter()
                .filter(|m| m.direction == Direction::Incoming)
                .cloned(),
        );
        w.record = Some(rec);
        w.entry = Some((signed.clone(), *hash));
        let joined = store.apply_group(&w)?;
        if joined {
            taken.shares.insert(e.group);
        }
        Ok(Ok(joined))
    }

    /// The message an opened group entry shows as, if it is shown: its author was a member
    /// there, and is not blocked here (blocking hides their messages for this home only). A
    /// file's offer comes with its transfer record, which waits for the user.
    fn shown(
        &self,
        rec: &GroupRecord,
        e: &Entry,
        hash: &EntryHash,
        key: &OrderKey,
        content: Content,
    ) -> Result<Option<(Message, Option<Offered>)>, Error> {
        let store = &self.0.store;
        let Ok(author) = ContactId::from_bytes(&e.author) else {
            return Ok(None);
        };
        if !rec.state.member_at(&e.author, key) {
            tracing::info!("a group message from someone who was not a member there; not shown");
            return Ok(None);
        }
        if store.is_blocked(&author)? {
            return Ok(None);
        }
        let id = message_id(hash);
        let (body, file) = match content {
            Content::Text { body } => (body, None),
            Content::FileOffer {
                hash: root,
                folder,
                name,
                size,
                files,
                ..
            } => {
                let offer = GroupOffer {
                    // The author's id for it is theirs to choose; this home's is the entry's.
                    id: file_transfer_id(hash),
                    author,
                    root,
                    folder,
                    name,
                    size,
                    files,
                };
                match group_offer(store, offer) {
                    Ok(t) => {
                        let gf = GroupFile {
                            group: e.group,
                            hash: root,
                            folder,
                            author: e.author,
                        };
                        (t.name.clone(), Some((t, gf)))
                    }
                    Err(why) => {
                        tracing::info!("a group file offer refused: {why}");
                        (format!("(a file that could not be offered: {why})"), None)
                    }
                }
            }
        };
        Ok(Some((
            Message {
                id,
                conversation: ConversationId(e.group),
                contact: author,
                seq: store.free_group_seq(&e.group, e.lamport, hash)?,
                direction: Direction::Incoming,
                body,
                sent_at: e.at,
                stored_at: now_ms(),
                state: MessageState::Received,
                transfer: file.as_ref().map(|(t, _)| t.id),
                author,
            },
            file,
        )))
    }

    /// The line a membership entry writes into the conversation.
    fn event_line(
        &self,
        before: &GroupState,
        after: &GroupState,
        e: &Entry,
        hash: &EntryHash,
    ) -> Result<Option<String>, Error> {
        let _ = hash;
        let name = |id: &[u8; 32]| -> Result<String, Error> {
            if *id == self.me() {
                return Ok("You".into());
            }
            if let Ok(c) = ContactId::from_bytes(id) {
                if let Some(c) = self.0.store.contact(&c)? {
                    return Ok(c.name);
                }
            }
            Ok(if after.members.contains_key(id) {
                member_name(after, id)
            } else {
                member_name(before, id)
            })
        };
        let who = name(&e.author)?;
        Ok(Some(match &e.body {
            Body::Create { name: g, .. } => format!("{who} created the group \u{201c}{g}\u{201d}"),
            Body::Add { member } => format!("{who} added {}", name(&member.id)?),
            Body::Remove { member } => format!("{who} removed {}", name(member)?),
            Body::Leave => format!("{who} left"),
            Body::Rename { name: g } => format!("{who} renamed the group \u{201c}{g}\u{201d}"),
            Body::MakeAdmin { member } => format!("{who} made {} an admin", name(member)?),
            Body::Sealed { .. } => return Ok(None),
        }))
    }

    /// Takes a key share: keeps the chain (opening what waited for it) if it is new.
    fn take_share(
        &self,
        share: KeyShare,
        needs: Vec<EntryHash>,
        covered: Vec<[u8; 32]>,
        taken: &mut Taken,
    ) -> Result<(), Error> {
        let store = &self.0.store;
        if let Err(e) = share.verify() {
            tracing::info!("a group key share refused: {e}");
            return Ok(());
        }
        let Some(rec) = store.group(&share.group)? else {
            tracing::debug!("a key share of a group not known here; dropped");
            return Ok(());
        };
        if share.author == self.me() || !rec.state.spans.contains_key(&share.author) {
            return Ok(());
        }
        if needs.len() > MAX_PARENTS * 4 || covered.len() > MAX_MEMBERS {
            tracing::info!("a group key share with too long lists; dropped");
            return Ok(());
        }
        if store
            .group_chain(&share.group, &share.author, share.epoch)?
            .is_some()
        {
            return Ok(());
        }
        let held = store
            .group_chains(&share.group)?
            .iter()
            .filter(|(a, _, _)| *a == share.author)
            .count();
        if held >= MAX_CHAINS_PER_AUTHOR {
            tracing::info!("a member sent more sender chains than a group keeps; one dropped");
            return Ok(());
        }
        let (group, author, epoch) = (share.group, share.author, share.epoch);
        let mut chain = StoredChain {
            chain: SenderChain::from_share(&share),
            share,
            needs,
            passed_on: false,
            covered,
        };
        // Open what waited for this chain, in log order.
        let mut w = GroupWrite {
            group,
            ..GroupWrite::default()
        };
        for (lamport, hash) in store.group_locked(&group, &author, epoch)? {
            w.unlock.push((author, epoch, lamport, hash));
            let Some(signed) = store.group_entry(&group, &hash)? else {
                continue;
            };
            let e = &signed.entry;
            if let Body::Sealed {
                index,
                nonce,
                ciphertext,
                ..
            } = &e.body
            {
                match chain.chain.open(&group, &author, *index, nonce, ciphertext) {
                    Ok(content) => {
                        let key = key_of(e, &hash);
                        if let Some((m, file)) = self.shown(&rec, e, &hash, &key, content)? {
                            if let Some(f) = file {
                                taken.offers.push(f.0.clone());
                                w.files.push(f);
                            }
                            w.messages.push(m);
                        }
                    }
                    Err(err) => tracing::info!("a held group message does not open: {err}"),
                }
            }
        }
        // Two messages of one write never share a seq (the first 24 bits of two hashes at one
        // clock may meet).
        let mut used = Vec::new();
        for m in w.messages.iter_mut() {
            m.seq = store.free_seq_from(&group, m.seq, &used)?;
            used.push(m.seq);
        }
        taken.messages.extend(w.messages.iter().cloned());
        w.chains.push((author, epoch, chain));
        store.apply_group(&w)?;
        taken.shares.insert(group);
        Ok(())
    }

    // ---- passing on ----

    /// Member contacts of a group this home may send to now (admitted, not `except`, not this
    /// home), sorted.
    fn member_contacts(
        &self,
        rec: &GroupRecord,
        except: &[[u8; 32]],
    ) -> Result<Vec<ContactId>, Error> {
        let me = self.me();
        let mut out = Vec::new();
        for id in rec.state.members.keys() {
            if *id == me || except.contains(id) {
                continue;
            }
            let Ok(cid) = ContactId::from_bytes(id) else {
                continue;
            };
            if self.0.store.admitted(&cid)?.is_some() {
                out.push(cid);
            }
        }
        Ok(out)
    }

    /// What this home sends its member contacts after writing `entries` itself: the entries,
    /// or the whole log for a member it just added; with `before`, members it just removed
    /// hear of it too.
    fn direct_sends(
        &self,
        rec: &GroupRecord,
        entries: &[SignedEntry],
        before: Option<&GroupState>,
    ) -> Result<Sends, Error> {
        let me = self.me();
        let mut targets = self.member_contacts(rec, &[])?;
        let mut gone = Vec::new();
        if let Some(before) = before {
            for id in before.members.keys() {
                if rec.state.members.contains_key(id) || *id == me {
                    continue;
                }
                if let Ok(cid) = ContactId::from_bytes(id) {
                    if self.0.store.admitted(&cid)?.is_some() {
                        gone.push(cid);
                    }
                }
            }
        }
        targets.extend(gone.iter().copied());
        let covered = covered_with(&[me], &targets);
        self.entry_sends(rec, entries, &targets, &covered, &gone)
    }

    /// The payloads that take `entries` to `targets`: a target the entries add gets the whole
    /// log, one they remove only the membership entries.
    fn entry_sends(
        &self,
        rec: &GroupRecord,
        entries: &[SignedEntry],
        targets: &[ContactId],
        covered: &[[u8; 32]],
        gone: &[ContactId],
    ) -> Result<Sends, Error> {
        let mut sends = Vec::new();
        let mut log: Option<Vec<SignedEntry>> = None;
        for t in targets {
            let added = entries.iter().any(
                |s| matches!(&s.entry.body, Body::Add { member } if member.id == *t.as_bytes()),
            );
            let list: Vec<SignedEntry> = if added {
                if log.is_none() {
                    log = Some(self.0.store.group_entries(&rec.id)?);
                }
                // The add first: it tells the new member it is invited, so it takes the rest.
                entries
                    .iter()
                    .filter(|s| {
                        matches!(&s.entry.body, Body::Add { member } if member.id == *t.as_bytes())
                    })
                    .cloned()
                    .chain(log.clone().unwrap_or_default())
                    .collect()
            } else if gone.contains(t) {
                entries
                    .iter()
                    .filter(|s| s.entry.body.is_membership())
                    .cloned()
                    .collect()
            } else {
                entries.to_vec()
            };
            for chunk in chunks(list) {
                sends.push((
                    *t,
                    Payload::GroupEntries {
                        group: rec.id,
                        entries: chunk,
                        covered: covered.to_vec(),
                    },
                ));
            }
        }
        Ok(sends)
    }

    /// Passes on what a payload from `from` brought: entries to the member contacts it did
    /// not cover, and chains whose membership is now known to those they are for.
    fn pass_on(&self, from: &ContactId, taken: &Taken) -> Result<Sends, Error> {
        let mut sends = Vec::new();
        for (group, joined) in &taken.joined {
            let Some(rec) = self.0.store.group(group)? else {
                continue;
            };
            if !rec.state.members.contains_key(&self.me()) {
                continue;
            }
            // Each entry to the member contacts it was not sent to yet, as it came; one from a
            // catch-up answer too (nothing covered), or members who met only this home would
            // wait for their next link. Each home passes an entry on once, when it first joins
            // its log, so an entry crosses each link between members at most twice.
            let mut per_target: BTreeMap<ContactId, (Vec<SignedEntry>, Vec<[u8; 32]>)> =
                BTreeMap::new();
            for (entry, origin, covered) in joined {
                let mut except = covered.clone();
                except.push(*origin);
                except.push(entry.entry.author);
                let targets = self.member_contacts(&rec, &except)?;
                let now_covered = covered_with(covered, &targets);
                for t in targets {
                    let slot = per_target.entry(t).or_default();
                    slot.0.push(entry.clone());
                    slot.1.extend(now_covered.iter().copied());
                }
            }
            for (t, (entries, covered)) in per_target {
                let covered = covered_with(&covered, &[]);
                sends.extend(self.entry_sends(&rec, &entries, &[t], &covered, &[])?);
            }
        }
        for group in &taken.shares {
            sends.extend(self.pass_on_shares(group, from)?);
        }
        Ok(sends)
    }

    /// Passes on the chains of a group not passed on yet whose `needs` are in the log now.
    fn pass_on_shares(&self, group: &[u8; 16], from: &ContactId) -> Result<Sends, Error> {
        let store = &self.0.store;
        let Some(rec) = store.group(group)? else {
            return Ok(Vec::new());
        };
        let mut sends = Vec::new();
        for (author, epoch, mut chain) in store.group_chains(group)? {
            if chain.passed_on {
                continue;
            }
            let Some(targets) = self.share_targets(&rec, &chain, &[*from.as_bytes(), author])?
            else {
                continue; // its membership is not known here yet
            };
            let covered = covered_with(&chain.covered, &targets);
            for t in targets {
                sends.push((
                    t,
                    Payload::GroupKey {
                        share: chain.share.clone(),
                        needs: chain.needs.clone(),
                        covered: covered.clone(),
                    },
                ));
            }
            chain.passed_on = true;
            store.apply_group(&GroupWrite {
                group: *group,
                chains: vec![(author, epoch, chain)],
                ..GroupWrite::default()
            })?;
        }
        Ok(sends)
    }

    /// Who may be given a chain: member contacts who were members where the share was made
    /// and still are, not covered and not `except`. `None` while the share's `needs` are not
    /// all in the log.
    fn share_targets(
        &self,
        rec: &GroupRecord,
        chain: &StoredChain,
        except: &[[u8; 32]],
    ) -> Result<Option<Vec<ContactId>>, Error> {
        let store = &self.0.store;
        let mut at: Option<OrderKey> = None;
        for h in &chain.needs {
            let Some(lamport) = store.group_lamport(&rec.id, h)? else {
                return Ok(None);
            };
            let k = OrderKey { lamport, hash: *h };
            at = Some(at.map_or(k, |a| a.max(k)));
        }
        let Some(at) = at else {
            return Ok(Some(Vec::new()));
        };
        let mut except = except.to_vec();
        except.extend(chain.covered.iter().copied());
        Ok(Some(
            self.member_contacts(rec, &except)?
                .into_iter()
                .filter(|c| rec.state.member_at(c.as_bytes(), &at))
                .collect(),
        ))
    }

    // ---- catching up ----

    /// Tells a contact who just came online what this home holds of each group both are in.
    async fn say_have(&self, peer: &ContactId) -> Result<(), Error> {
        let me = self.me();
        let mut sends = Vec::new();
        for rec in self.0.store.groups()? {
            if !rec.state.members.contains_key(&me)
                || !rec.state.spans.contains_key(peer.as_bytes())
            {
                continue;
            }
            sends.push((*peer, self.have(&rec)?));
        }
        self.send(sends).await;
        Ok(())
    }

    /// For each group this home is in with entries waiting (for parents or for a chain): a
    /// catch-up request to one member contact that is online, a different one each round.
    async fn ask_for_what_waits(&self) -> Result<(), Error> {
        let store = &self.0.store;
        let me = self.me();
        let mut sends = Vec::new();
        for rec in store.groups()? {
            if !rec.state.members.contains_key(&me) {
                continue;
            }
            if store.group_pending(&rec.id)?.is_empty() && store.group_locked_count(&rec.id)? == 0 {
                continue;
            }
            let online: Vec<ContactId> = self
                .member_contacts(&rec, &[])?
                .into_iter()
                .filter(|c| matches!(self.0.links.presence_of(c), Presence::Online { .. }))
                .collect();
            if online.is_empty() {
                continue;
            }
            let pick = online[(OsRng.next_u32() as usize) % online.len()];
            sends.push((pick, self.have(&rec)?));
        }
        self.send(sends).await;
        Ok(())
    }

    fn have(&self, rec: &GroupRecord) -> Result<Payload, Error> {
        let keys = self
            .0
            .store
            .group_chains(&rec.id)?
            .into_iter()
            .map(|(a, e, _)| (a, e))
            .take(MAX_HAVE)
            .collect();
        Ok(Payload::GroupHave {
            group: rec.id,
            heads: rec
                .vector
                .iter()
                .map(|(a, s)| (*a, *s))
                .take(MAX_HAVE)
                .collect(),
            keys,
        })
    }

    /// Answers a catch-up request: the entries the peer lacks (only membership entries for
    /// one no longer in the group), and the chains it lacks and may have.
    fn answer_have(
        &self,
        from: &ContactId,
        group: [u8; 16],
        heads: Vec<([u8; 32], u64)>,
        keys: Vec<([u8; 32], u32)>,
    ) -> Result<Sends, Error> {
        if heads.len() > MAX_HAVE || keys.len() > MAX_HAVE {
            return Err(Error::Protocol(
                "a group catch-up request over its limits".into(),
            ));
        }
        let store = &self.0.store;
        let Some(rec) = store.group(&group)? else {
            return Ok(Vec::new());
        };
        let peer = *from.as_bytes();
        if !rec.state.spans.contains_key(&peer) || !rec.state.spans.contains_key(&self.me()) {
            return Ok(Vec::new());
        }
        let member = rec.state.members.contains_key(&peer);
        // A past member gets the log up to where it left (so it learns it was removed, with
        // the entries that removal follows), and nothing after.
        let until: Option<OrderKey> = if member {
            None
        } else {
            rec.state
                .spans
                .get(&peer)
                .and_then(|s| s.last())
                .and_then(|(_, to)| *to)
        };
        let has: BTreeMap<[u8; 32], u64> = heads.into_iter().collect();
        let mut missing: Vec<SignedEntry> = store
            .group_entries(&group)?
            .into_iter()
            .filter(|s| s.entry.seq > has.get(&s.entry.author).copied().unwrap_or(0))
            .filter(|s| until.is_none_or(|u| s.entry.order_key() <= u))
            .collect();
        if has.is_empty() {
            // A new member's first catch-up: the add that invites it first.
            if let Some(i) = missing
                .iter()
                .position(|s| matches!(&s.entry.body, Body::Add { member } if member.id == peer))
            {
                let add = missing[i].clone();
                missing.insert(0, add);
            }
        }
        // At least one answer, empty if nothing is missing: it tells the asker it caught up.
        let mut runs = chunks(missing);
        if runs.is_empty() {
            runs.push(Vec::new());
        }
        let mut sends: Sends = runs
            .into_iter()
            .map(|entries| {
                (
                    *from,
                    Payload::GroupEntries {
                        group,
                        entries,
                        covered: Vec::new(),
                    },
                )
            })
            .collect();
        if member {
            let held: BTreeSet<([u8; 32], u32)> = keys.into_iter().collect();
            for (author, epoch, chain) in store.group_chains(&group)? {
                if author == peer || held.contains(&(author, epoch)) {
                    continue;
                }
                let mut c = chain.clone();
                c.covered.clear();
                let allowed = self
                    .share_targets(&rec, &c, &[author])?
                    .is_some_and(|t| t.contains(from));
                if allowed {
                    sends.push((
                        *from,
                        Payload::GroupKey {
                            share: chain.share.clone(),
                            needs: chain.needs.clone(),
                            covered: Vec::new(),
                        },
                    ));
                }
            }
        }
        Ok(sends)
    }

    // ---- sending ----

    /// Queues payloads in order; a blocked contact is skipped.
    async fn send(&self, sends: Sends) {
        for (to, payload) in sends {
            // Nothing goes to a blocked contact; what waits for one whose key changed, or
            // whose session is being reset, waits in the outbox as anything else does.
            if !matches!(self.0.store.admitted(&to), Ok(Some(_))) {
                continue;
            }
            let r = self
                .0
                .outbox
                .queue(
                    &to,
                    MessageId::random(),
                    &payload,
                    crate::store::OutboxKind::Control,
                    None,
                    None,
                )
                .await;
            if let Err(e) = r {
                tracing::warn!(peer = %to.fmt_short(), "a group payload was not queued: {e}");
            }
        }
    }

    fn announce_group(&self, rec: &GroupRecord) -> Result<GroupView, Error> {
        let view = self.view(rec)?;
        self.0.events.emit(Event::GroupChanged {
            group: view.clone(),
        });
        Ok(view)
    }

    /// After a payload's changes are stored: events, then what goes on to others.
    async fn after_taking(&self, from: ContactId, mut taken: Taken) {
        let passed_receipts = std::mem::take(&mut taken.sends);
        let sends = {
            let _guard = self.0.lock.lock().await;
            // What came as an answer to a catch-up (nothing covered: not even its author) is
            // not passed on: the others catch up themselves when they meet a member.
            let passed = self.pass_on(&from, &taken);
            let mut sends = match passed {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("passing group entries on: {e}");
                    Vec::new()
                }
            };
            // Messages from others arrived: this home's receipt says it holds them.
            for (group, joined) in &taken.joined {
                let news = joined
                    .iter()
                    .any(|(e, _, _)| e.entry.author != self.me() && !e.entry.body.is_membership());
                if !news {
                    continue;
                }
                if let Ok(Some(rec)) = self.0.store.group(group) {
                    match self.receipt_sends(&rec) {
                        Ok(s) => sends.extend(s),
                        Err(e) => tracing::warn!("a group receipt: {e}"),
                    }
                }
            }
            for group in taken.ask.union(&taken.locked) {
                match self.0.store.group(group) {
                    Ok(Some(rec)) => match self.have(&rec) {
                        Ok(p) => sends.push((from, p)),
                        Err(e) => tracing::warn!("{e}"),
                    },
                    // Not known yet: ask for all of it.
                    _ => sends.push((
                        from,
                        Payload::GroupHave {
                            group: *group,
                            heads: Vec::new(),
                            keys: Vec::new(),
                        },
                    )),
                }
            }
            sends
        };
        self.send(passed_receipts).await;
        for group in &taken.receipts {
            self.0.events.emit(Event::GroupReceiptsChanged {
                group: ConversationId(*group),
            });
        }
        for m in taken.messages {
            let from = self.author_name(&m);
            self.0
                .events
                .emit(Event::MessageReceived { message: m, from });
        }
        for t in taken.offers {
            self.0.events.emit(Event::TransferOffered {
                transfer: t.clone(),
            });
            // The transfer feature decides whether it is accepted without asking.
            self.0.bus.emit(Signal::GroupFileOffered(Box::new(t)));
        }
        for group in &taken.changed {
            if let Ok(Some(rec)) = self.0.store.group(group) {
                if self.visible(&rec) {
                    let _ = self.announce_group(&rec);
                }
            }
        }
        self.send(sends).await;
    }

    fn author_name(&self, m: &Message) -> String {
        if let Ok(Some(c)) = self.0.store.contact(&m.author) {
            return c.name;
        }
        self.0
            .store
            .group(&m.conversation.0)
            .ok()
            .flatten()
            .map(|r| member_name(&r.state, m.author.as_bytes()))
            .unwrap_or_default()
    }

    /// Takes a payload from a contact (the inbox's handler, and tests that hand entries over).
    async fn take_payload(&self, from: &Contact, payload: Payload) -> Result<Handled, Error> {
        let (_covered, taken, answer) = {
            let _guard = self.0.lock.lock().await;
            let mut taken = Taken::default();
            match payload {
                Payload::GroupEntries {
                    group,
                    entries,
                    covered,
                } => {
                    if entries.len() > MAX_GROUP_ENTRIES || covered.len() > MAX_MEMBERS + 1 {
                        return Err(Error::Protocol("group entries over their limits".into()));
                    }
                    for e in entries {
                        if e.entry.group != group {
                            tracing::info!("an entry of another group in a payload; dropped");
                            continue;
                        }
                        self.take_one(e, Some(&from.id), &covered, &mut taken)?;
                    }
                    if covered.is_empty() {
                        // An answer to a catch-up: a home restored from a backup may write
                        // again once a member has told it what it missed.
                        self.caught_up(&group, &from.id)?;
                    }
                    (covered, taken, Vec::new())
                }
                Payload::GroupKey {
                    share,
                    needs,
                    covered,
                } => {
                    self.take_share(share, needs, covered.clone(), &mut taken)?;
                    (covered, taken, Vec::new())
                }
                Payload::GroupReceipt { receipt, covered } => {
                    self.take_receipt(&from.id, receipt, covered, &mut taken)?;
                    (Vec::new(), taken, Vec::new())
                }
                Payload::GroupHave { group, heads, keys } => {
                    let answer = self.answer_have(&from.id, group, heads, keys)?;
                    (Vec::new(), taken, answer)
                }
                other => return Err(Error::Protocol(format!("groups cannot take {other:?}"))),
            }
        };
        let this = self.clone();
        let from = from.id;
        Ok(Handled {
            changes: Default::default(),
            after: Some(Box::new(move |_| {
                Box::pin(async move {
                    this.send(answer).await;
                    this.after_taking(from, taken).await;
                })
            })),
        })
    }

    /// After a catch-up answer from `from`: a group restored from a backup is caught up once
    /// a member answered (what this home wrote after the backup came back with it).
    fn caught_up(&self, group: &[u8; 16], from: &ContactId) -> Result<(), Error> {
        let store = &self.0.store;
        let Some(mut rec) = store.group(group)? else {
            return Ok(());
        };
        if rec.restored && rec.state.members.contains_key(from.as_bytes()) {
            rec.restored = false;
            store.apply_group(&GroupWrite {
                group: *group,
                record: Some(rec),
                ..GroupWrite::default()
            })?;
        }
        Ok(())
    }

    /// Hands entries to this node as if `from` had sent them (tests of forged entries).
    pub(crate) async fn inject(
        &self,
        from: &Contact,
        group: [u8; 16],
        entries: Vec<SignedEntry>,
    ) -> Result<(), Error> {
        let handled = self
            .take_payload(
                from,
                Payload::GroupEntries {
                    group,
                    entries,
                    covered: vec![*from.id.as_bytes()],
                },
            )
            .await?;
        self.0.store.flush().await?;
        if let Some(after) = handled.after {
            after(Default::default()).await;
        }
        Ok(())
    }

    /// A group's log as stored (tests).
    pub(crate) fn entries(&self, rec: &GroupRecord) -> Result<Vec<SignedEntry>, Error> {
        self.0.store.group_entries(&rec.id)
    }
}

/// `covered` with `more` added, sorted, without repeats.
fn covered_with(covered: &[[u8; 32]], more: &[ContactId]) -> Vec<[u8; 32]> {
    let mut all: Vec<[u8; 32]> = covered
        .iter()
        .copied()
        .chain(more.iter().map(|c| *c.as_bytes()))
        .collect();
    all.sort();
    all.dedup();
    all.truncate(MAX_MEMBERS);
    all
}

/// Entries cut into payload-sized runs, in order.
fn chunks(entries: Vec<SignedEntry>) -> Vec<Vec<SignedEntry>> {
    let mut out = Vec::new();
    let mut run = Vec::new();
    let mut bytes = 0;
    for e in entries {
        let size = postcard::to_allocvec(&e).map_or(ENTRIES_BUDGET, |v| v.len());
        if !run.is_empty() && (bytes + size > ENTRIES_BUDGET || run.len() == MAX_GROUP_ENTRIES) {
            out.push(std::mem::take(&mut run));
            bytes = 0;
        }
        bytes += size;
        run.push(e);
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// A group name as stored: trimmed, within [`MAX_GROUP_NAME`], no control characters.
fn clean_group_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(Error::InvalidInput(
            "a group name cannot be empty or hold control characters".into(),
        ));
    }
    if name.len() > MAX_GROUP_NAME {
        return Err(Error::TooLong {
            what: "group name",
            len: name.len(),
            max: MAX_GROUP_NAME,
        });
    }
    Ok(name.to_string())
}

/// Groups' part of the inbox.
struct Handler(Weak<Inner>);

impl PayloadHandler for Handler {
    fn handle(&self, incoming: Incoming) -> BoxFuture<'_, Result<Handled, Error>> {
        Box::pin(async move {
            let groups = Groups(self.0.upgrade().ok_or(Error::Closed)?);
            groups.take_payload(&incoming.from, incoming.payload).await
        })
    }
}
