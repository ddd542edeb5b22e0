//! One shutdown signal shared by camera threads, the analysis loop and the
//! publisher, so that "stop" means the same thing everywhere.
//!
//! Camera threads are plain OS threads (GStreamer and inference are
//! blocking), the publisher is a tokio task; a `watch` channel serves both:
//! threads poll [`Shutdown::is_triggered`], tasks await [`Shutdown::wait`].

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Self {
            tx: std::sync::Arc::new(tx),
            rx,
        }
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once [`Shutdown::trigger`] has been called, by anyone.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means every sender is gone, which also means "stop".
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Sleeps for `duration` unless shutdown comes first; returns true when it did.
    pub fn sleep_or_stop(&self, duration: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + duration;
        while std::time::Instant::now() < deadline {
            if self.is_triggered() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50).min(duration));
        }
        self.is_triggered()
    }
}
