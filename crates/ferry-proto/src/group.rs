//! Groups, without I/O: the signed entries of a group's causal log, the one order every member
//! shows them in, the membership they fold to (who may add and remove whom), and the sender
//! chains that seal group messages.
//!
//! - **Entries.** Each is signed by its author's endpoint key (Ed25519; a member's id *is*
//!   that key), so any member may pass it on unchanged and nobody can forge or alter one. It
//!   carries its author's sequence number in the group (1, 2, 3, … with no gap), a Lamport
//!   clock, and the hashes of the latest entries its author had seen (its parents, the
//!   author's own previous entry always among them).
//! - **Order.** Every member sorts entries by `(lamport, hash)`: parents always come first,
//!   and concurrent entries by their hash, so members holding the same entries show them in
//!   the same order.
//! - **Membership** is the fold of the membership entries in that order ([`fold`]): a
//!   deterministic function of the set of entries, so members that hold the same entries agree
//!   whatever order they arrived in (a CRDT by construction; property-tested below). An entry
//!   whose author was not allowed to make it at its place in the order (a non-admin adding or
//!   removing, a removed member writing) is kept in the log, since later entries may name it as
//!   a parent, but has no effect and is not shown.
//! - **Sender chains.** A member seals its group messages with its own chain: the Double
//!   Ratchet's chain KDF (HMAC-SHA256) feeding XChaCha20-Poly1305 ([`SenderChain`]). It gives the chain's current
//!   position to each member as a [`KeyShare`] it signs, so a member who passes a share on can
//!   withhold it but not forge it. After a member is removed or leaves, every remaining member
//!   starts a new chain (a new epoch) before its next message and shares it only with the
//!   members left.

use std::collections::{BTreeMap, BTreeSet};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use iroh_base::{PublicKey, SecretKey, Signature};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::e2e::{hmac32, Key32, CK_CHAIN, CK_MESSAGE};
use crate::limits::{MAX_CHAIN_GAP, MAX_NAME, MAX_SKIP, MAX_TEXT};

/// The most members a group may have, its creator included.
pub const MAX_MEMBERS: usize = 256;
/// The longest group name, in bytes of UTF-8.
pub const MAX_GROUP_NAME: usize = 64;
/// The most parents one entry may name.
pub const MAX_PARENTS: usize = 16;
/// The largest sealed content of one entry (a text at its limit, or a file offer, sealed).
pub const MAX_SEALED: usize = MAX_TEXT + 1024;

const LABEL_ID: &[u8] = b"ferry/group-id/1";
const LABEL_HASH: &[u8] = b"ferry/group-entry/1";
const LABEL_SIG: &[u8] = b"ferry/group-sig/1";
const LABEL_KEY: &[u8] = b"ferry/group-key/1";
const LABEL_SEALED: &[u8] = b"ferry/group-sealed/1";
const LABEL_RECEIPT: &[u8] = b"ferry/group-receipt/1";

/// Receipts (delivered to, read by) are kept in groups of at most this many members: each
/// member's receipt goes to every other member, which a larger group should not pay for.
pub const MAX_RECEIPT_MEMBERS: usize = 32;

/// The hash that names an entry.
pub type EntryHash = [u8; 32];

/// What is wrong with an entry, a key share or sealed content.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The entry breaks a rule that holds whatever else the log holds.
    #[error("invalid group entry: {0}")]
    Invalid(String),
    /// The signature does not verify under the author's key.
    #[error("the group entry's signature does not verify")]
    BadSignature,
    /// These parents are not in the log yet: the entry waits for them.
    #[error("the group entry waits for {} earlier entries", .0.len())]
    Missing(Vec<EntryHash>),
    /// The author signed two different entries with one sequence number.
    #[error("the author signed two different entries as number {0}")]
    Equivocation(u64),
    /// Sealed content whose chain key this member does not have (yet).
    #[error("no key yet for this member's messages (epoch {0})")]
    NoKey(u32),
    /// Sealed content that does not open with its key.
    #[error("the group message does not open")]
    Decrypt,
}

fn invalid(why: impl Into<String>) -> GroupError {
    GroupError::Invalid(why.into())
}

/// A member as an entry names them: their id and the name the group shows for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCard {
    /// Their endpoint id (an Ed25519 public key).
    pub id: [u8; 32],
    /// The name the adding admin gave them (for members who are not your contacts).
    pub name: String,
}

/// What an entry does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// The first entry of a group, by its creator, who is its first admin.
    Create {
        /// The group's name.
        name: String,
        /// Random, so that the group's id is new.
        nonce: [u8; 16],
        /// The first members, the creator among them (with the name the creator goes by).
        members: Vec<MemberCard>,
    },
    /// An admin adds a member.
    Add {
        /// Who.
        member: MemberCard,
    },
    /// An admin removes a member (not the creator).
    Remove {
        /// Who.
        member: [u8; 32],
    },
    /// The author leaves.
    Leave,
    /// A member renames the group.
    Rename {
        /// The new name.
        name: String,
    },
    /// An admin makes a member an admin too.
    MakeAdmin {
        /// Who.
        member: [u8; 32],
    },
    /// A message, sealed under the author's sender chain ([`Content`] inside).
    Sealed {
        /// The chain's epoch.
        epoch: u32,
        /// The message key's index in the chain.
        index: u32,
        /// XChaCha20-Poly1305 nonce.
        nonce: [u8; 24],
        /// Ciphertext and tag.
        ciphertext: Vec<u8>,
    },
}

impl Body {
    /// Whether this entry changes who is in the group or what it is called (everything but
    /// sealed messages).
    pub fn is_membership(&self) -> bool {
        !matches!(self, Body::Sealed { .. })
    }
}

/// What a sealed entry holds once opened (appended variants only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// A text message.
    Text {
        /// The text.
        body: String,
    },
    /// A file or folder any member may fetch, from the author or from members who have it.
    FileOffer {
        /// Transfer id.
        transfer: [u8; 16],
        /// BLAKE3 root hash.
        hash: [u8; 32],
        /// A folder (collection) rather than one file.
        folder: bool,
        /// The author's name for it (receivers clean it).
        name: String,
        /// Total payload bytes (checked against verified data before fetching).
        size: u64,
        /// Number of files.
        files: u32,
    },
}

/// One entry of a group's log, before its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The group.
    pub group: [u8; 16],
    /// Who wrote it.
    pub author: [u8; 32],
    /// The author's sequence number in this group, from 1.
    pub seq: u64,
    /// 1 + the largest Lamport clock among the parents (1 for the first entry).
    pub lamport: u64,
    /// The hashes of the latest entries the author had seen, sorted, at most
    /// [`MAX_PARENTS`]; the author's own previous entry is always one of them.
    pub parents: Vec<EntryHash>,
    /// The author's clock (Unix ms); shown, never trusted for order.
    pub at: u64,
    /// What it does.
    pub body: Body,
}

/// An entry with its author's signature: what members store and pass on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    /// The entry.
    pub entry: Entry,
    /// Ed25519 by `entry.author` over `"ferry/group-sig/1" ‖ postcard(entry)`.
    #[serde(with = "crate::e2e::serde_sig")]
    pub sig: [u8; 64],
}

/// Where an entry sorts: every member shows a group's entries in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderKey {
    /// The entry's Lamport clock.
    pub lamport: u64,
    /// The entry's hash, which breaks ties between concurrent entries.
    pub hash: EntryHash,
}

/// The id of the group that `creator` makes with `nonce` at `at`: the `Create` entry proves it.
pub fn group_id(creator: &[u8; 32], nonce: &[u8; 16], at: u64) -> [u8; 16] {
    let d = Sha256::new()
        .chain_update(LABEL_ID)
        .chain_update(creator)
        .chain_update(nonce)
        .chain_update(at.to_be_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        // An entry is plain data with no maps: encoding cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// The entry's name.
    pub fn hash(&self) -> EntryHash {
        Sha256::new()
            .chain_update(LABEL_HASH)
            .chain_update(self.encode())
            .finalize()
            .into()
    }

    /// Where it sorts.
    pub fn order_key(&self) -> OrderKey {
        OrderKey {
            lamport: self.lamport,
            hash: self.hash(),
        }
    }

    /// Signs it with the author's key (which must be `author`'s).
    pub fn sign(self, key: &SecretKey) -> SignedEntry {
        let sig = key.sign(&[LABEL_SIG, &self.encode()].concat()).to_bytes();
        SignedEntry { entry: self, sig }
    }

    /// The checks that need nothing but the entry itself.
    pub fn check(&self) -> Result<(), GroupError> {
        let e = self;
        if e.seq == 0 || e.lamport == 0 {
            return Err(invalid("sequence numbers and clocks start at 1"));
        }
        if e.parents.len() > MAX_PARENTS {
            return Err(invalid(format!("more than {MAX_PARENTS} parents")));
        }
        if e.parents.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid("parents not sorted or repeated"));
        }
        let first = e.seq == 1 && e.parents.is_empty();
        match &e.body {
            Body::Create {
                name,
                nonce,
                members,
            } => {
                if !first || e.lamport != 1 {
                    return Err(invalid("a group is created by its first entry only"));
                }
                if group_id(&e.author, nonce, e.at) != e.group {
                    return Err(invalid("the group id is not the creator's"));
                }
                check_name(name, MAX_GROUP_NAME, "group name")?;
                if members.len() > MAX_MEMBERS {
                    return Err(invalid(format!("more than {MAX_MEMBERS} members")));
                }
                let mut ids = BTreeSet::new();
                for m in members {
                    check_name(&m.name, MAX_NAME, "member name")?;
                    if !ids.insert(m.id) {
                        return Err(invalid("a member is listed twice"));
                    }
                }
                if !ids.contains(&e.author) {
                    return Err(invalid("the creator is not among the first members"));
                }
            }
            _ if e.parents.is_empty() => {
                return Err(invalid("only the first entry has no parents"));
            }
            Body::Add { member } => check_name(&member.name, MAX_NAME, "member name")?,
            Body::Rename { name } => check_name(name, MAX_GROUP_NAME, "group name")?,
            Body::Sealed { ciphertext, .. } => {
                if ciphertext.len() > MAX_SEALED {
                    return Err(invalid(format!(
                        "sealed content of {} bytes, at most {MAX_SEALED}",
                        ciphertext.len()
                    )));
                }
            }
            Body::Remove { .. } | Body::Leave | Body::MakeAdmin { .. } => {}
        }
        Ok(())
    }
}

fn check_name(name: &str, max: usize, what: &str) -> Result<(), GroupError> {
    if name.len() > max {
        return Err(invalid(format!(
            "{what} of {} bytes, at most {max}",
            name.len()
        )));
    }
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err(invalid(format!("{what} empty or with control characters")));
    }
    Ok(())
}

impl SignedEntry {
    /// Checks the entry on its own and its signature; returns its hash.
    pub fn verify(&self) -> Result<EntryHash, GroupError> {
        self.entry.check()?;
        let author = PublicKey::from_bytes(&self.entry.author)
            .map_err(|_| invalid("the author is not a valid key"))?;
        author
            .verify(
                &[LABEL_SIG, &self.entry.encode()].concat(),
                &Signature::from_bytes(&self.sig),
            )
            .map_err(|_| GroupError::BadSignature)?;
        Ok(self.entry.hash())
    }
}

/// What a log must answer for [`check_in_log`].
pub trait LogView {
    /// The group whose log this is.
    fn group(&self) -> [u8; 16];
    /// The Lamport clock of a stored entry.
    fn lamport_of(&self, hash: &EntryHash) -> Option<u64>;
    /// The hash of `author`'s entry number `seq`, if stored.
    fn by_author(&self, author: &[u8; 32], seq: u64) -> Option<EntryHash>;
}

/// The checks against the log an entry joins: it is of this group, its parents are all there
/// (or it waits: [`GroupError::Missing`]), its clock is one more than theirs, it follows its
/// author's previous entry, and its author signed no other entry with its number.
pub fn check_in_log(entry: &Entry, hash: &EntryHash, log: &impl LogView) -> Result<(), GroupError> {
    if entry.group != log.group() {
        return Err(invalid("an entry of another group"));
    }
    if let Some(other) = log.by_author(&entry.author, entry.seq) {
        return if &other == hash {
            Ok(())
        } else {
            Err(GroupError::Equivocation(entry.seq))
        };
    }
    let mut missing = Vec::new();
    let mut top = 0u64;
    for p in &entry.parents {
        match log.lamport_of(p) {
            Some(l) => top = top.max(l),
            None => missing.push(*p),
        }
    }
    if !missing.is_empty() {
        return Err(GroupError::Missing(missing));
    }
    if !entry.parents.is_empty() && entry.lamport != top.saturating_add(1) {
        return Err(invalid("the clock is not one more than its parents'"));
    }
    if entry.seq > 1 {
        match log.by_author(&entry.author, entry.seq - 1) {
            Some(prev) if entry.parents.contains(&prev) => {}
            Some(_) => return Err(invalid("the author's previous entry is not a parent")),
            None => return Err(invalid("the author's previous entry is missing")),
        }
    }
    Ok(())
}

/// A member as the group's state has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The name the group gives them.
    pub name: String,
    /// May add, remove and make admins.
    pub admin: bool,
    /// Where they (last) joined.
    pub since: OrderKey,
}

/// What a group is after its membership entries: its name, its members, and the entries that
/// had no effect.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupState {
    /// The creator (never removed).
    pub creator: [u8; 32],
    /// The name in force.
    pub name: String,
    /// Who is in it now.
    pub members: BTreeMap<[u8; 32], Member>,
    /// For each member, past or present, the stretches of the order they were in: from where
    /// they joined to where they left (or `None`: still in).
    pub spans: BTreeMap<[u8; 32], Vec<(OrderKey, Option<OrderKey>)>>,
    /// Membership entries that had no effect, and why.
    pub rejected: BTreeMap<EntryHash, String>,
}

impl GroupState {
    /// Whether `author` was a member at `key`: what decides if a message there is shown.
    pub fn member_at(&self, author: &[u8; 32], key: &OrderKey) -> bool {
        self.spans.get(author).is_some_and(|spans| {
            spans
                .iter()
                .any(|(from, to)| from <= key && to.is_none_or(|to| key < &to))
        })
    }

    /// Whether `id` is an admin now.
    pub fn is_admin(&self, id: &[u8; 32]) -> bool {
        self.members.get(id).is_some_and(|m| m.admin)
    }

    fn join(&mut self, id: [u8; 32], name: String, admin: bool, at: OrderKey) {
        self.members.insert(
            id,
            Member {
                name,
                admin,
                since: at,
            },
        );
        self.spans.entry(id).or_default().push((at, None));
    }

    fn part(&mut self, id: &[u8; 32], at: OrderKey) {
        self.members.remove(id);
        if let Some(open) = self
            .spans
            .get_mut(id)
            .and_then(|s| s.last_mut())
            .filter(|s| s.1.is_none())
        {
            open.1 = Some(at);
        }
        // A group never runs out of admins while it has members: the longest-standing member
        // (then the smallest id) becomes one.
        if !self.members.values().any(|m| m.admin) {
            if let Some((_, m)) = self
                .members
                .iter_mut()
                .min_by(|a, b| a.1.since.cmp(&b.1.since).then(a.0.cmp(b.0)))
            {
                m.admin = true;
            }
        }
    }

    /// Applies one membership entry at its place in the order; an entry its author may not
    /// make there is recorded in `rejected` and changes nothing else.
    fn apply(&mut self, key: OrderKey, e: &Entry) {
        let author_in = self.members.contains_key(&e.author);
        let admin = self.is_admin(&e.author);
        let outcome: Result<(), &str> = match &e.body {
            Body::Create { .. } if !self.spans.is_empty() => Err("a second creation"),
            Body::Create { name, members, .. } => {
                self.creator = e.author;
                self.name = name.clone();
                for m in members {
                    self.join(m.id, m.name.clone(), m.id == e.author, key);
                }
                Ok(())
            }
            _ if !author_in => Err("the author is not a member here"),
            Body::Add { .. } | Body::Remove { .. } | Body::MakeAdmin { .. } if !admin => {
                Err("only admins add, remove and make admins")
            }
            Body::Add { member } => {
                if self.members.contains_key(&member.id) {
                    Err("already a member")
                } else if self.members.len() >= MAX_MEMBERS {
                    Err("the group is full")
                } else {
                    self.join(member.id, member.name.clone(), false, key);
                    Ok(())
                }
            }
            Body::Remove { member } => {
                if member == &self.creator {
                    Err("the creator cannot be removed")
                } else if !self.members.contains_key(member) {
                    Err("not a member")
                } else {
                    self.part(member, key);
                    Ok(())
                }
            }
            Body::Leave => {
                self.part(&e.author, key);
                Ok(())
            }
            Body::Rename { name } => {
                self.name = name.clone();
                Ok(())
            }
            Body::MakeAdmin { member } => match self.members.get_mut(member) {
                Some(m) => {
                    m.admin = true;
                    Ok(())
                }
                None => Err("not a member"),
            },
            Body::Sealed { .. } => Ok(()),
        };
        if let Err(why) = outcome {
            self.rejected.insert(key.hash, why.to_string());
        }
    }
}

/// The state a group's membership entries fold to, applied in order. `entries` may hold
/// messages too (they are skipped) and may come in any order: they are sorted here.
pub fn fold<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> GroupState {
    let mut sorted: Vec<(OrderKey, &Entry)> = entries
        .into_iter()
        .filter(|e| e.body.is_membership())
        .map(|e| (e.order_key(), e))
        .collect();
    sorted.sort_by_key(|(key, _)| *key);
    let mut state = GroupState::default();
    for (key, e) in sorted {
        state.apply(key, e);
    }
    state
}

fn sealed_ad(group: &[u8; 16], author: &[u8; 32], epoch: u32, index: u32) -> Vec<u8> {
    [
        LABEL_SEALED,
        group,
        author,
        &epoch.to_be_bytes(),
        &index.to_be_bytes(),
    ]
    .concat()
}

/// One member's sender chain in one group and epoch: the author's own, which seals, or a copy
/// from a [`KeyShare`], which opens. Message key `i` is HMAC(chain key `i`, 1); chain key
/// `i + 1` is HMAC(chain key `i`, 2). Used keys are forgotten; keys skipped over (messages
/// that arrive out of order) are kept, at most [`MAX_SKIP`].
#[derive(Clone, Serialize, Deserialize)]
pub struct SenderChain {
    epoch: u32,
    next: u32,
    chain: Key32,
    skipped: BTreeMap<u32, Key32>,
}

impl std::fmt::Debug for SenderChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderChain")
            .field("epoch", &self.epoch)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl SenderChain {
    /// A new random chain for `epoch`.
    pub fn new(epoch: u32) -> Self {
        let mut chain = Key32([0; 32]);
        OsRng.fill_bytes(&mut chain.0);
        SenderChain {
            epoch,
            next: 0,
            chain,
            skipped: BTreeMap::new(),
        }
    }

    /// The chain a share gives.
    pub fn from_share(share: &KeyShare) -> Self {
        SenderChain {
            epoch: share.epoch,
            next: share.index,
            chain: Key32(share.chain),
            skipped: BTreeMap::new(),
        }
    }

    /// Its epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The index of the next message.
    pub fn next_index(&self) -> u32 {
        self.next
    }

    /// The share of this chain from its current position, signed by its author: whoever gets
    /// it can open the author's messages from here on, not the ones before.
    pub fn share(&self, group: [u8; 16], author: &SecretKey) -> KeyShare {
        let mut share = KeyShare {
            group,
            author: *author.public().as_bytes(),
            epoch: self.epoch,
            index: self.next,
            chain: self.chain.0,
            sig: [0; 64],
        };
        share.sig = author.sign(&share.signed_bytes()).to_bytes();
        share
    }

    /// Seals `content` as the author's next message.
    pub fn seal(&mut self, group: &[u8; 16], author: &[u8; 32], content: &Content) -> Body {
        let mk = hmac32(&self.chain, CK_MESSAGE);
        let index = self.next;
        self.chain = hmac32(&self.chain, CK_CHAIN);
        // 2^32 messages in one chain never happen: a new one starts whenever members change.
        self.next = self.next.saturating_add(1);
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        let plain = Zeroizing::new(postcard::to_allocvec(content).unwrap_or_default());
        let aad = sealed_ad(group, author, self.epoch, index);
        let ciphertext = XChaCha20Poly1305::new((&mk.0).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        Body::Sealed {
            epoch: self.epoch,
            index,
            nonce,
            ciphertext,
        }
    }

    /// Opens the message at `index` of this chain. A failure leaves the chain as it was.
    pub fn open(
        &mut self,
        group: &[u8; 16],
        author: &[u8; 32],
        index: u32,
        nonce: &[u8; 24],
        ciphertext: &[u8],
    ) -> Result<Content, GroupError> {
        let mut next = self.clone();
        let mk = if index < next.next {
            next.skipped.remove(&index).ok_or(GroupError::Decrypt)?
        } else {
            if index - next.next > MAX_CHAIN_GAP {
                return Err(GroupError::Invalid(format!(
                    "a gap of {} messages in one chain",
                    index - next.next
                )));
            }
            while next.next < index {
                next.skipped
                    .insert(next.next, hmac32(&next.chain, CK_MESSAGE));
                next.chain = hmac32(&next.chain, CK_CHAIN);
                next.next += 1;
            }
            let mk = hmac32(&next.chain, CK_MESSAGE);
            next.chain = hmac32(&next.chain, CK_CHAIN);
            next.next = next
                .next
                .checked_add(1)
                .ok_or_else(|| invalid("a chain at its last index"))?;
            while next.skipped.len() > MAX_SKIP {
                next.skipped.pop_first();
            }
            mk
        };
        let aad = sealed_ad(group, author, self.epoch, index);
        let plain = Zeroizing::new(
            XChaCha20Poly1305::new((&mk.0).into())
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| GroupError::Decrypt)?,
        );
        let content: Content =
            postcard::from_bytes(&plain).map_err(|e| invalid(format!("sealed content: {e}")))?;
        if let Content::Text { body } = &content {
            if body.len() > MAX_TEXT {
                return Err(invalid("a group text over the limit"));
            }
        }
        *self = next;
        Ok(content)
    }
}

/// A member's sender chain from one position on, signed by that member: sent to each member
/// over the pairwise session, and passed on by members to members who are not the author's
/// contacts.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyShare {
    /// The group.
    pub group: [u8; 16],
    /// Whose chain.
    pub author: [u8; 32],
    /// Its epoch.
    pub epoch: u32,
    /// The index `chain` is at.
    pub index: u32,
    /// The chain key at `index`.
    pub chain: [u8; 32],
    /// Ed25519 by `author` over `"ferry/group-key/1" ‖ group ‖ author ‖ epoch ‖ index ‖
    /// SHA-256(chain)`.
    #[serde(with = "crate::e2e::serde_sig")]
    pub sig: [u8; 64],
}

impl Drop for KeyShare {
    fn drop(&mut self) {
        self.chain.zeroize();
    }
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("epoch", &self.epoch)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl KeyShare {
    fn signed_bytes(&self) -> Vec<u8> {
        [
            LABEL_KEY,
            &self.group,
            &self.author,
            &self.epoch.to_be_bytes(),
            &self.index.to_be_bytes(),
            &Sha256::digest(self.chain),
        ]
        .concat()
    }

    /// Checks that the author signed it.
    pub fn verify(&self) -> Result<(), GroupError> {
        let author = PublicKey::from_bytes(&self.author)
            .map_err(|_| invalid("the author is not a valid key"))?;
        author
            .verify(&self.signed_bytes(), &Signature::from_bytes(&self.sig))
            .map_err(|_| GroupError::BadSignature)
    }
}

/// What one member holds and has read of a group, per author: the number of the author's
/// last entry it holds (entries are held from 1 with no gap) and of the last it has read.
/// Signed by the member, so a member who passes it on cannot forge or alter it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The group.
    pub group: [u8; 16],
    /// Whose receipt.
    pub member: [u8; 32],
    /// When it was made (the member's clock, Unix ms, always above its previous receipt's):
    /// a newer receipt replaces an older one.
    pub at: u64,
    /// Per author, the last entry held.
    pub delivered: Vec<([u8; 32], u64)>,
    /// Per author, the last entry read.
    pub read: Vec<([u8; 32], u64)>,
}

/// A [`Receipt`] with its member's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// The receipt.
    pub receipt: Receipt,
    /// Ed25519 by `receipt.member` over `"ferry/group-receipt/1" ‖ postcard(receipt)`.
    #[serde(with = "crate::e2e::serde_sig")]
    pub sig: [u8; 64],
}

impl Receipt {
    fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Signs it with the member's key.
    pub fn sign(self, key: &SecretKey) -> SignedReceipt {
        let sig = key
            .sign(&[LABEL_RECEIPT, &self.encode()].concat())
            .to_bytes();
        SignedReceipt { receipt: self, sig }
    }
}

impl SignedReceipt {
    /// Checks its size and that its member signed it.
    pub fn verify(&self) -> Result<(), GroupError> {
        let r = &self.receipt;
        if r.delivered.len() > MAX_MEMBERS * 4 || r.read.len() > MAX_MEMBERS * 4 {
            return Err(invalid("a receipt naming too many authors"));
        }
        let member = PublicKey::from_bytes(&r.member)
            .map_err(|_| invalid("the member is not a valid key"))?;
        member
            .verify(
                &[LABEL_RECEIPT, &r.encode()].concat(),
                &Signature::from_bytes(&self.sig),
            )
            .map_err(|_| GroupError::BadSignature)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
