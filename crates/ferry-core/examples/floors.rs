//! The floors a message path cannot beat on this machine, measured the way Ferry's own path
//! does each step: an fsync of a small append, a sled insert + flush, and an iroh round trip
//! (a new bidirectional stream per request, 100 bytes each way, loopback, no relay).
//!
//! `cargo run --release -p ferry-core --example floors [ROUNDS]` prints one JSON object of
//! milliseconds (p50, p99, max per floor); `scripts/bench_messages.py` runs it next to the
//! daemons so both come from the same machine state.

use std::io::Write;
use std::time::{Duration, Instant};

use iroh::endpoint::{presets, Connection};
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use iroh::{Endpoint, RelayMode};

const ECHO_ALPN: &[u8] = b"ferry/bench-echo/0";

#[derive(Debug, Clone)]
struct Echo;

impl ProtocolHandler for Echo {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                if let Ok(data) = recv.read_to_end(64 * 1024).await {
                    let _ = send.write_all(&data).await;
                    let _ = send.finish();
                }
            });
        }
        Ok(())
    }
}

fn summary(mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    serde_json::json!({
        "p50": ms(at(0.5)),
        "p99": ms(at(0.99)),
        "max": ms(at(1.0)),
        "n": samples.len(),
    })
}

async fn endpoint() -> anyhow::Result<Endpoint> {
    Ok(Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .alpns(vec![ECHO_ALPN.to_vec()])
        .clear_ip_transports()
        .bind_addr(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?
        .bind()
        .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir()?;

    // fsync of a 100-byte append.
    let mut file = std::fs::File::create(dir.path().join("fsync"))?;
    let mut fsync = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        file.write_all(&[7u8; 100])?;
        file.sync_data()?;
        fsync.push(t.elapsed());
    }

    // sled insert of 100 bytes + flush, as the store does for each change.
    let db = sled::Config::new().path(dir.path().join("sled")).open()?;
    let tree = db.open_tree("messages")?;
    let mut sled_flush = Vec::with_capacity(rounds);
    for i in 0..rounds as u64 {
        let t = Instant::now();
        tree.insert(i.to_be_bytes(), &[7u8; 100][..])?;
        db.flush_async().await?;
        sled_flush.push(t.elapsed());
    }

    // iroh round trip: one connection, a new stream per request.
    let server = endpoint().await?;
    let addr = server.addr();
    let router = Router::builder(server).accept(ECHO_ALPN, Echo).spawn();
    let client = endpoint().await?;
    let conn = client.connect(addr, ECHO_ALPN).await?;
    let mut echo = Vec::with_capacity(rounds);
    for _ in 0..rounds + 20 {
        let t = Instant::now();
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&[7u8; 100]).await?;
        send.finish()?;
        let back = recv.read_to_end(1024).await?;
        anyhow::ensure!(back.len() == 100, "echo returned {} bytes", back.len());
        echo.push(t.elapsed());
    }
    echo.drain(..20); // warm-up: the path settles first
    conn.close(0u32.into(), b"done");
    router.shutdown().await?;
    client.close().await;

    println!(
        "{}",
        serde_json::json!({
            "fsync_ms": summary(fsync),
            "sled_insert_flush_ms": summary(sled_flush),
            "iroh_echo_ms": summary(echo),
        })
    );
    Ok(())
}
