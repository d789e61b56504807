//! The engine's internal event bus: what a service noticed, for features to react to without
//! the service calling them. (Front ends get [`crate::model::Event`]s instead.)

use tokio::sync::broadcast;

use crate::model::ContactId;

/// Signals on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// A new live link to this contact (dialled or accepted): it may have restarted.
    LinkUp(ContactId),
    /// The periodic presence round finished.
    Tick,
}

/// The bus; cheap to clone. A slow listener loses old signals (and is told so), never blocks
/// the sender.
#[derive(Debug, Clone)]
pub(crate) struct Bus(broadcast::Sender<Signal>);

impl Bus {
    /// A bus keeping up to 256 signals for a listener that lags.
    pub(crate) fn new() -> Bus {
        Bus(broadcast::channel(256).0)
    }

    /// Sends a signal to whoever listens now (nobody is fine).
    pub(crate) fn send(&self, signal: Signal) {
        let _ = self.0.send(signal);
    }

    /// Listens from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.0.subscribe()
    }
}
