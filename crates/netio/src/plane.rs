//! The thread that drives a media data plane (the SPG's relay, the gateway's bridge): a
//! [`PortSet`] polled in a loop, each datagram handed to the sans-I/O
//! plane, commands from the control plane applied between polls (a waker interrupts the
//! poll so that they take effect at once), counters published every 100 ms.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::portset::{Action, Datagram, PortSet, Waker};

/// Empty polls in a row before the thread blocks again.
const SPIN: u32 = 64;

/// A data plane.
pub trait Plane: Send + 'static {
    type Command: Send + 'static;
    fn apply(&mut self, cmd: Self::Command);
    fn decide(&mut self, d: Datagram<'_>) -> Action;
    /// Publishes counters (called every 100 ms and at the end).
    fn publish(&mut self, set: &PortSet);
}

/// The other threads' handle on a data plane.
pub struct Handle<C> {
    tx: mpsc::Sender<C>,
    waker: Waker,
    stop: Arc<AtomicBool>,
}

impl<C> Clone for Handle<C> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
            stop: self.stop.clone(),
        }
    }
}

impl<C> std::fmt::Debug for Handle<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl<C> Handle<C> {
    pub fn send(&self, cmd: C) {
        if self.tx.send(cmd).is_ok() {
            self.waker.wake();
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.waker.wake();
    }
}

/// Starts the thread `name` over `set` and `plane`.
pub fn spawn<P: Plane>(
    name: &str,
    mut set: PortSet,
    mut plane: P,
) -> std::io::Result<(Handle<P::Command>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<P::Command>();
    let handle = Handle {
        tx,
        waker: set.waker(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let stop = handle.stop.clone();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut published = Instant::now();
            // While datagrams keep coming, look again at once instead of sleeping: under load
            // a wake-up per batch (a context switch, an IPI from the sender's core) costs more
            // than the check; idle, the thread blocks.
            let mut busy = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let wait = if busy > 0 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(250)
                };
                match set.poll(Some(wait), |d| plane.decide(d)) {
                    Ok(o) if o.received > 0 => busy = SPIN,
                    Ok(_) => busy = busy.saturating_sub(1),
                    Err(e) => {
                        tracing::error!(error = %e, "media poll failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                loop {
                    match rx.try_recv() {
                        Ok(cmd) => plane.apply(cmd),
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            plane.publish(&set);
                            return;
                        }
                    }
                }
                if published.elapsed() >= Duration::from_millis(100) {
                    plane.publish(&set);
                    published = Instant::now();
                }
            }
            plane.publish(&set);
        })?;
    Ok((handle, thread))
}
