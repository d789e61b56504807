//! `ferry`: the headless Ferry peer. Every subcommand is a thin call into `ferry-core`, made
//! in-process when no other process holds the home, or through the holder's control socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ferry_core::control::{self, Answer, Call, Client, InviteText};
use ferry_core::node::NetSettings;
use ferry_core::vault::{self, Passphrase};
use ferry_core::{
    Config, ContactView, Event, Message, Node, Profile, Protection, RelayChoice, Transfer,
    TransferState,
};
use std::io::IsTerminal;

mod demo;
mod render;

/// Ferry: message people and send them files directly, end-to-end encrypted.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    /// The home folder (identity, store); default: the platform's data folder.
    #[arg(long, global = true, env = "FERRY_HOME")]
    home: Option<PathBuf>,
    /// Relay servers: `default`, `disabled`, or a relay URL (stored by `init`, overridden here).
    #[arg(long, global = true)]
    relay: Option<RelayChoice>,
    /// Address to bind, e.g. 127.0.0.1:0 (port 0 keeps this home's stable port).
    #[arg(long, global = true)]
    bind: Option<SocketAddr>,
    /// Local-network discovery (mDNS): on or off.
    #[arg(long, global = true, value_parser = parse_on_off)]
    local_discovery: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    ferry_core::parse_switch(s).ok_or_else(|| format!("expected on or off, not {s:?}"))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create this home's identity.
    Init {
        /// Your display name, as contacts will see it.
        #[arg(long)]
        name: String,
    },
    /// Print your id, name and addresses.
    Whoami {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a single-use invite (the invite is the only line on stdout).
    Invite {
        /// Also draw it as a QR code (on stderr).
        #[arg(long)]
        qr: bool,
        /// Lifetime, e.g. 30m, 2h, 1d (default 24h).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Pair with someone using their invite.
    Pair {
        /// The `ferry:…` invite text.
        invite: String,
    },
    /// List contacts with their online state and path.
    Contacts {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a text message.
    Send {
        /// Display name or id prefix.
        contact: String,
        /// The message.
        text: String,
        /// Without a running daemon: how long to try delivering before leaving it queued.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        wait: Duration,
        /// Print the stored message as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the conversation with a contact (marks what it shows as read).
    History {
        /// Display name or id prefix.
        contact: String,
        /// How many of the newest messages.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the safety number you share with a contact (digits on stdout, a QR code the
    /// contact can scan on stderr); with --mark, mark the contact verified after comparing.
    Verify {
        /// Display name or id prefix.
        contact: String,
        /// Mark the contact verified (the numbers matched).
        #[arg(long, conflicts_with = "unmark")]
        mark: bool,
        /// Remove the verified mark.
        #[arg(long, alias = "undo", conflicts_with = "accept")]
        unmark: bool,
        /// Accept their changed identity key without marking them verified (sending waits
        /// until you accept it or mark them verified).
        #[arg(long, conflicts_with = "mark")]
        accept: bool,
    },
    /// Block a contact: nothing it sends is taken, nothing goes to it, until you unblock it.
    Block {
        /// Display name or id prefix.
        contact: String,
    },
    /// Unblock a contact: the conversation goes on as it was.
    Unblock {
        /// Display name or id prefix.
        contact: String,
    },
    /// Remove a contact, with its history unless --keep-history.
    Remove {
        /// Display name or id prefix.
        contact: String,
        /// Keep the conversation's messages (they show again if you pair with them again).
        #[arg(long)]
        keep_history: bool,
    },
    /// Reset the session with a contact: a fresh handshake over the keys you both hold, with
    /// no invite (they must be online). What waits for them goes out after it.
    Reset {
        /// Display name or id prefix.
        contact: String,
    },
    /// Disappearing messages with a contact: off, 5m, 1h, 1d or 1w (without one, prints the
    /// timer in force). New messages are deleted on both sides that long after they are sent.
    Timer {
        /// Display name or id prefix.
        contact: String,
        /// off, 5m, 1h, 1d or 1w.
        value: Option<String>,
    },
    /// Offer a file or folder to a contact (returns once the offer is stored).
    SendFile {
        /// Display name or id prefix.
        contact: String,
        /// The file or folder.
        path: PathBuf,
        /// Print the transfer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List transfers.
    Transfers {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Accept an offered file or folder.
    Accept {
        /// Transfer id (or its first characters).
        id: String,
    },
    /// Decline an offered file or folder.
    Decline {
        /// Transfer id (or its first characters).
        id: String,
    },
    /// Cancel a transfer.
    Cancel {
        /// Transfer id (or its first characters).
        id: String,
    },
    /// Accept a contact's files automatically up to a size (e.g. 100MB, 2GiB), or `off`.
    AutoAccept {
        /// Display name or id prefix.
        contact: String,
        /// Largest size, or `off`.
        size: String,
    },
    /// Stay online: deliver the outbox, serve and fetch files, answer pairings, print events.
    Daemon {
        /// Print events as JSON lines.
        #[arg(long)]
        json: bool,
        /// Accept every file offer from every contact.
        #[arg(long)]
        accept_files: bool,
        /// Where received files go (stored; the desktop app uses the same setting).
        #[arg(long)]
        downloads: Option<PathBuf>,
    },
    /// Two real nodes in temporary homes on loopback: pair, chat, print what happened.
    Demo,
    /// Protect this home's data with a passphrase, change it, or remove it. Only the wrapped
    /// key changes; the data stays sealed as it is. Passphrases are asked on a terminal, or
    /// read from FERRY_PASSPHRASE (the current one) and FERRY_NEW_PASSPHRASE (the new one).
    Passphrase {
        #[command(subcommand)]
        action: PassphraseAction,
    },
    /// Group conversations: create one, add and remove members, leave, rename.
    Group {
        #[command(subcommand)]
        action: GroupAction,
    },
    /// List your groups with their members and how each stands.
    Groups {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Back up this home to one file (identity, contacts, sessions, history, settings), or
    /// restore one into a new home. The backup's passphrase is asked on a terminal, or read
    /// from FERRY_BACKUP_PASSPHRASE; it is separate from the home's passphrase.
    Backup {
        #[command(subcommand)]
        action: BackupAction,
    },
}

#[derive(Debug, Subcommand)]
enum GroupAction {
    /// Create a group with contacts (prints its id); you are its first admin.
    Create {
        /// The group's name.
        name: String,
        /// Contacts to add, by name or id prefix, separated by commas.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Add a contact to a group (admins only).
    Add {
        /// The group's name or id prefix.
        group: String,
        /// The contact's name or id prefix.
        contact: String,
    },
    /// Remove a member from a group (admins only): they get nothing written after it.
    Remove {
        /// The group's name or id prefix.
        group: String,
        /// The member: your name for them, the group's, or an id prefix.
        contact: String,
    },
    /// Make a member of a group an admin (admins only).
    Admin {
        /// The group's name or id prefix.
        group: String,
        /// The member: your name for them, the group's, or an id prefix.
        member: String,
    },
    /// Leave a group.
    Leave {
        /// The group's name or id prefix.
        group: String,
    },
    /// Rename a group.
    Rename {
        /// The group's name or id prefix.
        group: String,
        /// The new name.
        name: String,
    },
}

async fn group(cli: &Cli, action: &GroupAction) -> Result<()> {
    let call = match action {
        GroupAction::Create { name, members } => Call::GroupCreate {
            name: name.clone(),
            members: members.clone(),
        },
        GroupAction::Add { group, contact } => Call::GroupAdd {
            group: group.clone(),
            contact: contact.clone(),
        },
        GroupAction::Remove { group, contact } => Call::GroupRemove {
            group: group.clone(),
            member: contact.clone(),
        },
        GroupAction::Admin { group, member } => Call::GroupAdmin {
            group: group.clone(),
            member: member.clone(),
        },
        GroupAction::Leave { group } => Call::GroupLeave {
            group: group.clone(),
        },
        GroupAction::Rename { group, name } => Call::GroupRename {
            group: group.clone(),
            name: name.clone(),
        },
    };
    let mut b = cli.backend().await?;
    let v = b.call(call).await;
    if let Backend::Local(node) = &b {
        // Give the change a moment to reach the members online.
        let _ = node.wait_outbox_drained(None, Duration::from_secs(5)).await;
    }
    b.close().await;
    let g: ferry_core::GroupView = v?.try_into()?;
    match action {
        GroupAction::Create { .. } => {
            println!("{}", g.id);
            eprintln!("Created {} with {} members.", g.name, g.members.len());
        }
        GroupAction::Leave { .. } => eprintln!("You left {}.", g.name),
        _ => render::groups(std::slice::from_ref(&g)),
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum BackupAction {
    /// Write a backup of this home to FILE (replaced atomically if it exists).
    Export {
        /// The backup file.
        file: PathBuf,
    },
    /// Restore FILE into the home given by --home (or FERRY_HOME), which must be empty. Each
    /// contact's session is reset when the contact is next online.
    Import {
        /// The backup file.
        file: PathBuf,
    },
    /// Back up by itself into DIR every so often, keeping the newest few (written while this
    /// home is online: `ferry daemon` or the app). Without DIR, shows the schedule.
    Schedule {
        /// The folder for the backups.
        dir: Option<PathBuf>,
        /// How often, e.g. 12h, 1d, 7d (at least 1h).
        #[arg(long, value_parser = parse_duration, default_value = "1d")]
        every: Duration,
        /// How many of the newest to keep.
        #[arg(long, default_value_t = 7)]
        keep: u32,
        /// Stop the automatic backups.
        #[arg(long, conflicts_with = "dir")]
        off: bool,
    },
}

/// The backup's passphrase: FERRY_BACKUP_PASSPHRASE, or asked on the terminal (twice when it
/// is new).
fn backup_passphrase(new: bool) -> Result<Passphrase> {
    const ENV: &str = "FERRY_BACKUP_PASSPHRASE";
    if new {
        return ask_new_passphrase(&[ENV], "Backup passphrase: ");
    }
    ask_passphrase("Backup passphrase: ", ENV)?
        .with_context(|| format!("no terminal to ask for the backup's passphrase: set {ENV}"))
}

async fn backup(cli: &Cli, action: &BackupAction) -> Result<()> {
    match action {
        BackupAction::Export { file } => {
            let path = std::path::absolute(file).context("the backup file's path")?;
            let passphrase = backup_passphrase(true)?;
            let mut b = cli.backend().await?;
            let v = b
                .call(Call::BackupExport {
                    path: path.clone(),
                    passphrase,
                })
                .await;
            b.close().await;
            let done: ferry_core::backup::BackupSummary = v?.try_into()?;
            eprintln!(
                "Wrote {} ({} entries, {}). Keep its passphrase: without it the backup cannot \
                 be opened.",
                path.display(),
                done.entries,
                render::bytes(done.bytes)
            );
        }
        BackupAction::Schedule {
            dir,
            every,
            keep,
            off,
        } => {
            let dir = dir
                .as_ref()
                .map(std::path::absolute)
                .transpose()
                .context("the backup folder's path")?;
            let passphrase = match dir {
                Some(_) => Some(backup_passphrase(true)?),
                None => None,
            };
            let mut b = cli.backend().await?;
            let v = b
                .call(Call::BackupSchedule {
                    dir,
                    every_secs: Some(every.as_secs()),
                    keep: Some(*keep),
                    passphrase,
                    off: *off,
                })
                .await;
            b.close().await;
            let view: Option<ferry_core::backup::ScheduleView> = v?.try_into()?;
            match view {
                None => println!("no automatic backups"),
                Some(v) => {
                    println!(
                        "every {} into {}, keeping the newest {}",
                        render::duration(v.every_secs),
                        v.dir.display(),
                        v.keep
                    );
                    match (v.last_file, v.last_error) {
                        (_, Some(e)) => println!("the last one failed: {e}"),
                        (Some(f), None) => println!("the last one: {}", f.display()),
                        (None, None) => {
                            println!("the first one is written when this home is online")
                        }
                    }
                }
            }
        }
        BackupAction::Import { file } => {
            let home = cli.home()?;
            let passphrase = backup_passphrase(false)?;
            let store_passphrase = Passphrase::from_env("FERRY_PASSPHRASE");
            let (id, done) = tokio::task::spawn_blocking({
                let (file, home) = (file.clone(), home.clone());
                move || {
                    ferry_core::backup::import(&file, &home, &passphrase, store_passphrase.as_ref())
                }
            })
            .await??;
            println!("{id}");
            eprintln!(
                "Restored {} entries into {}. Each conversation's session is reset when the \
                 contact is next online (`ferry daemon` or the app); until then nothing is sent.",
                done.entries,
                home.display()
            );
            if let Some(p) = vault::protection(&home)? {
                eprintln!("The data key is {}.", p.describe());
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum PassphraseAction {
    /// Protect the data key with a passphrase (asked at every start from then on).
    Set,
    /// Change the passphrase.
    Change,
    /// Remove the passphrase: the key goes to the OS keychain, or else a file beside the data.
    Remove,
}

/// The passphrase in `env` if it is set, else one asked on the terminal, else none.
fn ask_passphrase(prompt: &str, env: &str) -> Result<Option<Passphrase>> {
    if let Some(p) = Passphrase::from_env(env) {
        return Ok(Some(p));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let p = rpassword::prompt_password(prompt).context("reading the passphrase")?;
    Ok((!p.is_empty()).then(|| Passphrase::from(p)))
}

/// A new passphrase: from the first of `envs` that is set, or asked twice on the terminal;
/// long enough either way.
fn ask_new_passphrase(envs: &[&str], prompt: &str) -> Result<Passphrase> {
    if let Some(p) = envs.iter().find_map(|env| Passphrase::from_env(env)) {
        p.check_new()?;
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no terminal to ask for the new passphrase: set {}",
            envs.first().copied().unwrap_or("it")
        );
    }
    let first = Passphrase::from(rpassword::prompt_password(prompt)?);
    first.check_new()?;
    let again = Passphrase::from(rpassword::prompt_password("The same again: ")?);
    if !first.same_as(&again) {
        bail!("the two passphrases differ; nothing was done");
    }
    Ok(first)
}

async fn passphrase(cli: &Cli, action: &PassphraseAction) -> Result<()> {
    let home = cli.home()?;
    if !Node::is_initialized(&home) {
        bail!("{}", ferry_core::Error::NotInitialized(home));
    }
    let now = vault::protection(&home)?;
    let has = now == Some(Protection::Passphrase);
    let current = || -> Result<Passphrase> {
        ask_passphrase("Current passphrase: ", "FERRY_PASSPHRASE")?
            .context("no terminal to ask for the current passphrase: set FERRY_PASSPHRASE")
    };
    let done = match action {
        PassphraseAction::Set if has => {
            bail!("this home already has a passphrase: use `ferry passphrase change`")
        }
        PassphraseAction::Set => {
            let new = ask_new_passphrase(
                &["FERRY_NEW_PASSPHRASE", "FERRY_PASSPHRASE"],
                "New passphrase: ",
            )?;
            vault::change_passphrase(&home, None, Some(&new))?
        }
        PassphraseAction::Change | PassphraseAction::Remove if !has => {
            bail!("this home has no passphrase: use `ferry passphrase set`")
        }
        PassphraseAction::Change => {
            let old = current()?;
            let new = ask_new_passphrase(&["FERRY_NEW_PASSPHRASE"], "New passphrase: ")?;
            vault::change_passphrase(&home, Some(&old), Some(&new))?
        }
        PassphraseAction::Remove => {
            let old = current()?;
            vault::change_passphrase(&home, Some(&old), None)?
        }
    };
    eprintln!("The data key is now {}.", done.describe());
    if done == Protection::Passphrase {
        eprintln!(
            "Keep the passphrase safe: without it nothing in this home can be read, not even \
             by you."
        );
    }
    Ok(())
}

/// Follows a transfer this process fetches until it ends or pauses, printing progress.
async fn follow_transfer(b: &Backend, t: &Transfer) -> Result<()> {
    let Backend::Local(node) = b else {
        return Ok(());
    };
    let mut events = node.subscribe();
    let mut current = node.transfer_by_id(&t.id)?.unwrap_or_else(|| t.clone());
    loop {
        if current.state.is_final() || current.state == TransferState::Paused {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Ok(Event::TransferProgress {
                id,
                bytes_done,
                total,
                rate,
            })) if id == t.id => {
                eprint!("\r{}", render::progress(bytes_done, total, rate));
            }
            Ok(Ok(Event::TransferChanged { transfer })) if transfer.id == t.id => {
                current = transfer;
            }
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                if let Some(now) = node.transfer_by_id(&t.id)? {
                    current = now;
                }
            }
        }
    }
    eprintln!();
    match current.state {
        TransferState::Done => {
            let path = current.path.unwrap_or_default();
            println!("{}", path.display());
            eprintln!(
                "Saved {} ({}), BLAKE3-verified.",
                current.name,
                render::bytes(current.size)
            );
            Ok(())
        }
        TransferState::Paused => {
            eprintln!(
                "Paused at {} of {}: {}. It resumes where it stopped when this home is online (`ferry daemon`) together with the sender.",
                render::bytes(current.bytes_done),
                render::bytes(current.size),
                current.error.unwrap_or_default()
            );
            Ok(())
        }
        other => bail!(
            "transfer {:?}: {}",
            other,
            current.error.unwrap_or_default()
        ),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown unit in {s:?} (use B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    Ok((n * mult as f64) as u64)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("unknown unit in {s:?} (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

/// Where calls go: the holder of the home, or a node this process opens.
enum Backend {
    Remote(Client),
    Local(Arc<Node>),
}

impl Backend {
    async fn call(&mut self, call: Call) -> Result<Answer> {
        Ok(match self {
            Backend::Remote(c) => c.call(call).await?,
            Backend::Local(n) => control::dispatch(n, call).await?,
        })
    }

    async fn close(self) {
        if let Backend::Local(n) = self {
            n.shutdown().await;
        }
    }
}

impl Cli {
    fn home(&self) -> Result<PathBuf> {
        Ok(match &self.home {
            Some(h) => h.clone(),
            None => ferry_core::default_home()?,
        })
    }

    fn config(&self) -> Config {
        Config {
            relay: self.relay.clone(),
            bind: self.bind,
            local_discovery: self.local_discovery,
            ..Config::default()
        }
    }

    async fn open_local(&self) -> Result<Arc<Node>> {
        self.open_with(self.config()).await
    }

    /// Opens the home in this process with `config`, with its passphrase: FERRY_PASSPHRASE,
    /// or asked on the terminal (three tries) if the home has one.
    async fn open_with(&self, mut config: Config) -> Result<Arc<Node>> {
        let home = self.home()?;
        config.passphrase = Passphrase::from_env("FERRY_PASSPHRASE");
        let asks = config.passphrase.is_none()
            && vault::protection(&home)? == Some(Protection::Passphrase)
            && std::io::stdin().is_terminal();
        if !asks {
            return Ok(control::open_serving(&home, config).await?);
        }
        for tries_left in (0..3).rev() {
            config.passphrase = Some(Passphrase::from(
                rpassword::prompt_password(format!("Passphrase for {}: ", home.display()))
                    .context("reading the passphrase")?,
            ));
            match control::open_serving(&home, config.clone()).await {
                Err(e @ ferry_core::Error::WrongPassphrase { .. }) if tries_left > 0 => {
                    eprintln!("{e}")
                }
                other => return Ok(other?),
            }
        }
        bail!("wrong passphrase")
    }

    async fn backend(&self) -> Result<Backend> {
        let home = self.home()?;
        if let Some(client) = Client::connect(&home).await? {
            if self.relay.is_some() || self.bind.is_some() || self.local_discovery.is_some() {
                eprintln!("note: another Ferry process holds this home; network options apply to it, not here");
            }
            return Ok(Backend::Remote(client));
        }
        Ok(Backend::Local(self.open_local().await?))
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Init { name } => {
            let home = cli.home()?;
            let settings = NetSettings {
                relay: cli.relay.clone().unwrap_or(RelayChoice::Default),
                bind: cli.bind,
                local_discovery: cli.local_discovery.unwrap_or(true),
            };
            let passphrase = Passphrase::from_env("FERRY_PASSPHRASE");
            let id = Node::init_protected(&home, name, &settings, passphrase.as_ref())?;
            println!("{id}");
            eprintln!("Created {name}'s identity in {}.", home.display());
            if let Some(p) = vault::protection(&home)? {
                eprintln!(
                    "Everything it keeps is sealed; the key is {}.",
                    p.describe()
                );
                if p != Protection::Passphrase {
                    eprintln!("`ferry passphrase set` protects it with a passphrase.");
                }
            }
            eprintln!(
                "Next: `ferry invite` to invite someone, or `ferry pair <invite>` to accept one."
            );
        }
        Command::Whoami { json } => {
            let mut b = cli.backend().await?;
            let v = b.call(Call::Profile).await;
            b.close().await;
            let me: Profile = v?.try_into()?;
            let mut me = me;
            if me.protection.is_none() {
                // A holder of a release before sealing does not say; the key file does.
                me.protection = vault::protection(&cli.home()?)?;
            }
            if *json {
                println!("{}", serde_json::to_string(&me)?);
            } else {
                println!("{} {}", me.name, me.id);
                println!("addresses: {}", serde_json::to_string(&me.addr)?);
                match me.protection {
                    Some(p) => println!("data key: {}", p.describe()),
                    None => println!("data key: none; this home is not sealed yet"),
                }
            }
        }
        Command::Invite { qr, ttl } => {
            let mut b = cli.backend().await?;
            let local = matches!(b, Backend::Local(_));
            let v = b
                .call(Call::Invite {
                    ttl_secs: ttl.map(|d| d.as_secs()),
                })
                .await;
            b.close().await;
            let v: InviteText = v?.try_into()?;
            println!("{}", v.invite);
            if *qr {
                eprintln!("{}", v.qr);
            }
            if local {
                eprintln!("Single use. Keep Ferry running (`ferry daemon` or the app) so the pairing can be answered.");
            }
        }
        Command::Pair { invite } => {
            let mut b = cli.backend().await?;
            let v = b
                .call(Call::Pair {
                    invite: invite.clone(),
                })
                .await;
            b.close().await;
            let c: ContactView = v?.try_into()?;
            println!("Paired with {} ({})", c.name, c.id);
            println!("Safety number: {}", c.safety_number);
            println!(
                "Compare it with {} in person or on a call, then run `ferry verify {}`.",
                c.name, c.name
            );
        }
        Command::Contacts { json } => {
            let mut b = cli.backend().await?;
            let refresh = matches!(b, Backend::Local(_));
            let v = b.call(Call::Contacts { refresh }).await;
            b.close().await;
            let contacts: Vec<ContactView> = v?.try_into()?;
            if *json {
                println!("{}", serde_json::to_string(&contacts)?);
            } else {
                render::contacts(&contacts);
            }
        }
        Command::Send {
            contact,
            text,
            wait,
            json,
        } => {
            let mut b = cli.backend().await?;
            let v = b
                .call(Call::Send {
                    contact: contact.clone(),
                    text: text.clone(),
                })
                .await;
            let m: Message = match v {
                Ok(v) => v.try_into()?,
                Err(e) => {
                    b.close().await;
                    return Err(e);
                }
            };
            let delivered = match &b {
                Backend::Remote(_) => None,
                Backend::Local(node) => {
                    // A group message (its "contact" is its author) goes to every member.
                    let to = (m.contact != m.author).then_some(&m.contact);
                    Some(node.wait_outbox_drained(to, *wait).await?)
                }
            };
            let state = match &b {
                Backend::Local(node) => node.message(&m.id)?.map(|m| m.state),
                Backend::Remote(_) => Some(m.state),
            };
            b.close().await;
            if *json {
                println!("{}", serde_json::to_string(&m)?);
            }
            match (delivered, state) {
                (None, _) => eprintln!("queued; the running Ferry process delivers it"),
                (Some(true), Some(s)) => eprintln!("{}", render::state_word(s)),
                (Some(_), _) => eprintln!(
                    "queued: {contact} is not reachable now. It stays in the outbox and goes out when this home is online (`ferry daemon` or the app) together with {contact}."
                ),
            }
        }
        Command::History {
            contact,
            limit,
            json,
        } => {
            let mut b = cli.backend().await?;
            let v = b
                .call(Call::History {
                    contact: contact.clone(),
                    before: None,
                    limit: *limit,
                    mark_read: true,
                })
                .await;
            if let Backend::Local(node) = &b {
                // Give the read receipt a moment to go out.
                let _ = node.wait_outbox_drained(None, Duration::from_secs(3)).await;
            }
            // In a group, each author's name.
            let members = match b
                .call(Call::Group {
                    group: contact.clone(),
                })
                .await
            {
                Ok(Answer::Group(g)) => Some(g.members),
                _ => None,
            };
            b.close().await;
            let page: Vec<Message> = v?.try_into()?;
            if *json {
                println!("{}", serde_json::to_string(&page)?);
            } else {
                let name = |m: &Message| match &members {
                    Some(list) => list
                        .iter()
                        .find(|x| x.id == m.author)
                        .map(|x| x.name.clone())
                        .unwrap_or_else(|| m.author.fmt_short().to_string()),
                    None => contact.clone(),
                };
                render::history(contact, &page, name);
            }
        }
        Command::Verify {
            contact,
            mark,
            unmark,
            accept,
        } => {
            let mut b = cli.backend().await?;
            let v = if *accept {
                b.call(Call::AcceptKey {
                    contact: contact.clone(),
                })
                .await
            } else if *mark || *unmark {
                b.call(Call::Verify {
                    contact: contact.clone(),
                    verified: *mark,
                })
                .await
            } else {
                b.call(Call::SafetyNumber {
                    contact: contact.clone(),
                })
                .await
            };
            b.close().await;
            if *mark || *unmark || *accept {
                let c: ContactView = v?.try_into()?;
                println!("{} is {}", c.name, render::trust_word(c.state));
            } else {
                let s: control::SafetyNumber = v?.try_into()?;
                eprintln!("{}", s.qr);
                eprintln!(
                    "Compare these digits with {} (in person or on a call), or let them scan \
                     the code; then `ferry verify {} --mark`. {} is {} now.",
                    s.contact.name,
                    contact,
                    s.contact.name,
                    render::trust_word(s.contact.state)
                );
                if s.contact.key_changed {
                    eprintln!(
                        "Their safety number changed since you last accepted it: sending waits \
                         until you accept the new one (--accept, or --mark after comparing)."
                    );
                }
                println!("{}", s.contact.safety_number);
            }
        }
        Command::Block { contact } => {
            let mut b = cli.backend().await?;
            let v = b
                .call(Call::Block {
                    contact: contact.clone(),
                })
                .await;
            b.close().await;
            let c: ContactView = v?.try_into()?;
            println!(
                "Blocked {}: nothing they send is taken, and nothing goes to them.",
                c.name
            );
        }
        Command::Unblock { contact } => {
            let mut b = cli.backend().await?;
            let v = b
                .call(Call::Unblock {
                    contact: contact.clone(),
                })
                .await;
            b.close().await;
            let c: ContactView = v?.try_into()?;
            println!("Unblocked {}.", c.name);
        }
        Command::Remove {
            contact,
            keep_history,
        } => {
            let mut b = cli.backend().await?;
            let v = b
                .call(Call::Remove {
                    contact: contact.clone(),
                    keep_history: *keep_history,
                })
                .await;
            b.close().await;
            let r: control::Removed = v?.try_into()?;
            println!(
                "Removed {}{}.",
                r.name,
                if *keep_history {
                    " (the history stays, and shows again if you pair again)"
                } else {
                    " and your history with them"
                }
            );
        }
        Command::Reset { contact } => {
            let mut b = cli.backend().await?;
            let v = b
                .call(Call::Reset {
                    contact: contact.clone(),
                })
                .await;
            b.close().await;
            let c: ContactView = v?.try_into()?;
            println!("Secured again: the session with {} was reset.", c.name);
        }
        Command::Timer { contact, value } => {
            let secs = value.as_deref().map(parse_timer).transpose()?;
            let mut b = cli.backend().await?;
            let v = b
                .call(Call::Timer {
                    contact: contact.clone(),
                    secs,
                })
                .await;
            b.close().await;
            let c: ContactView = v?.try_into()?;
            match c.timer_secs {
                0 => println!("Disappearing messages with {} are off.", c.name),
                s => println!(
                    "Disappearing messages with {}: {} (new messages are deleted on both sides \
                     that long after they are sent).",
                    c.name,
                    ferry_core::timer_label(s)
                ),
            }
        }
        Command::SendFile {
            contact,
            path,
            json,
        } => {
            let path = std::path::absolute(path)?;
            let mut b = cli.backend().await?;
            let local = matches!(b, Backend::Local(_));
            let v = b
                .call(Call::SendFile {
                    contact: contact.clone(),
                    path,
                })
                .await;
            b.close().await;
            let t: Transfer = v?.try_into()?;
            if *json {
                println!("{}", serde_json::to_string(&t)?);
            } else {
                println!("{}", t.id);
            }
            eprintln!(
                "Offered {} ({}) to {contact}.",
                t.name,
                render::bytes(t.size)
            );
            if local {
                eprintln!("No Ferry process holds this home now: the file is served while `ferry daemon` or the app runs.");
            } else {
                eprintln!("The running Ferry process serves it.");
            }
        }
        Command::Transfers { json } => {
            let mut b = cli.backend().await?;
            let v = b.call(Call::Transfers).await;
            b.close().await;
            let list: Vec<Transfer> = v?.try_into()?;
            if *json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                render::transfers(&list);
            }
        }
        Command::Accept { id } => {
            let mut b = cli.backend().await?;
            let v = b.call(Call::Accept { id: id.clone() }).await;
            match (v, b) {
                (Err(e), b) => {
                    b.close().await;
                    return Err(e);
                }
                (Ok(v), Backend::Remote(_)) => {
                    let t: Transfer = v.try_into()?;
                    eprintln!("Accepted {}; the running Ferry process fetches it.", t.name);
                }
                (Ok(v), b @ Backend::Local(_)) => {
                    let t: Transfer = v.try_into()?;
                    let outcome = follow_transfer(&b, &t).await;
                    b.close().await;
                    outcome?;
                }
            }
        }
        Command::Decline { id } => {
            let mut b = cli.backend().await?;
            let v = b.call(Call::Decline { id: id.clone() }).await;
            if let Backend::Local(node) = &b {
                let _ = node.wait_outbox_drained(None, Duration::from_secs(5)).await;
            }
            b.close().await;
            let t: Transfer = v?.try_into()?;
            eprintln!("Declined {}.", t.name);
        }
        Command::Cancel { id } => {
            let mut b = cli.backend().await?;
            let v = b.call(Call::Cancel { id: id.clone() }).await;
            if let Backend::Local(node) = &b {
                let _ = node.wait_outbox_drained(None, Duration::from_secs(5)).await;
            }
            b.close().await;
            let t: Transfer = v?.try_into()?;
            eprintln!("Cancelled {}.", t.name);
        }
        Command::AutoAccept { contact, size } => {
            let max_bytes = match size.as_str() {
                "off" | "none" | "0" => None,
                s => Some(parse_size(s).map_err(anyhow::Error::msg)?),
            };
            let mut b = cli.backend().await?;
            let v = b
                .call(Call::AutoAccept {
                    contact: contact.clone(),
                    max_bytes,
                })
                .await;
            b.close().await;
            v?;
            match max_bytes {
                Some(m) => eprintln!(
                    "Files from {contact} up to {} are accepted automatically.",
                    render::bytes(m)
                ),
                None => eprintln!("Files from {contact} wait for you to accept them."),
            }
        }
        Command::Daemon {
            json,
            accept_files,
            downloads,
        } => daemon(&cli, *json, *accept_files, downloads.as_deref()).await?,
        Command::Demo => demo::run().await?,
        Command::Passphrase { action } => passphrase(&cli, action).await?,
        Command::Group { action } => group(&cli, action).await?,
        Command::Groups { json } => {
            let mut b = cli.backend().await?;
            let v = b.call(Call::Groups).await;
            b.close().await;
            let list: Vec<ferry_core::GroupView> = v?.try_into()?;
            if *json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                render::groups(&list);
            }
        }
        Command::Backup { action } => backup(&cli, action).await?,
    }
    Ok(())
}

async fn daemon(
    cli: &Cli,
    json: bool,
    accept_files: bool,
    downloads: Option<&std::path::Path>,
) -> Result<()> {
    let config = Config {
        accept_files,
        ..cli.config()
    };
    let node = match cli.open_with(config).await {
        Ok(n) => n,
        Err(e) => match e.downcast::<ferry_core::Error>() {
            Ok(e @ ferry_core::Error::HomeBusy { .. }) => bail!("{e}"),
            Ok(e) => return Err(e).context("starting the daemon"),
            Err(e) => return Err(e).context("starting the daemon"),
        },
    };
    if let Some(dir) = downloads {
        node.set_downloads_dir(dir).await?;
    }
    let mut events = node.subscribe();
    let profile = node.profile().await?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "type": "ready", "id": profile.id, "name": profile.name, "addr": profile.addr })
        );
    } else {
        println!(
            "ferry daemon: {} ({}) online; addresses {:?} relay {:?}",
            profile.name, profile.id, profile.addr.direct, profile.addr.relay
        );
    }
    let stop = async {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r,
                _ = term.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            ev = events.recv() => match ev {
                Ok(ev) => print_event(&ev, json),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("({n} events skipped)");
                }
                Err(_) => break,
            },
        }
    }
    node.shutdown().await;
    Ok(())
}

fn print_event(ev: &Event, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(ev) {
            println!("{line}");
        }
    } else {
        println!("{}", render::event(ev));
    }
}

/// A timer as `ferry timer` takes it: off, 5m, 1h, 1d or 1w.
fn parse_timer(v: &str) -> Result<u64, ferry_core::Error> {
    match v.trim().to_ascii_lowercase().as_str() {
        "off" | "0" => Ok(0),
        "5m" => Ok(300),
        "1h" => Ok(3600),
        "1d" => Ok(86_400),
        "1w" => Ok(604_800),
        other => Err(ferry_core::Error::InvalidInput(format!(
            "{other:?} is not a timer: use off, 5m, 1h, 1d or 1w"
        ))),
    }
}
