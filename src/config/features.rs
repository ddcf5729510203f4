//! The one decision of what runs: whether the key-value store and start-task are served,
//! open only for another feature, waiting to be set up, or off.
//!
//! Butler spreads this over two flags per feature (`restServerEndpointsEnable.*` and the
//! feature's own `enable`), and start-task also depends on QRS being filled in. Combining the
//! flags at each use gave a dozen slightly different answers; here they are combined once,
//! when the config is parsed, and everything else (the wiring, the router, `/health`,
//! `/v4/configfile/endpointsenabled`, `check-config`, the certificate inventory) reads the
//! result.

/// What the key-value store does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvMode {
    /// No database at all: neither the key-value store nor start-task is on.
    Off,
    /// The database is open only for start-task's `Idempotency-Key` answers
    /// (`Butler.keyValueStore.enable` is false).
    IdempotencyOnly,
    /// `Butler.keyValueStore.enable` is true but `restServerEndpointsEnable.keyValueStore`
    /// is false: the store is open (health, metrics and the disk guard watch it), its
    /// endpoints are not served, and start-task's key-value items are not stored.
    NotServed,
    /// Both flags: the key-value API is served.
    Served,
}

/// What start-task does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartTaskMode {
    /// `restServerEndpointsEnable.senseStartTask` is false: the endpoint is a 404.
    Off,
    /// Enabled, but `Butler.configQRS.host` is not filled in yet (the appliance's first-boot
    /// config): the service runs and start-task answers 503 with this text.
    NotSetUp(String),
    /// Enabled and QRS configured.
    Ready,
}

/// The decision, made once from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    pub kv: KvMode,
    pub start_task: StartTaskMode,
    /// `restServerEndpointsEnable.keyValueStore` is true while `keyValueStore.enable` is
    /// false: worth a warning, since the endpoints are then not served.
    pub kv_endpoints_without_store: bool,
}

impl Features {
    /// `kv_endpoints`/`kv_enable`: the two key-value flags; `start_task`: the start-task
    /// flag; `not_set_up`: why QRS is not usable yet, when the config says so.
    pub fn decide(
        kv_endpoints: bool,
        kv_enable: bool,
        start_task: bool,
        not_set_up: Option<String>,
    ) -> Features {
        let start_task = match (start_task, not_set_up) {
            (false, _) => StartTaskMode::Off,
            (true, Some(why)) => StartTaskMode::NotSetUp(why),
            (true, None) => StartTaskMode::Ready,
        };
        let kv = match (kv_enable, kv_endpoints) {
            (true, true) => KvMode::Served,
            (true, false) => KvMode::NotServed,
            (false, _) if start_task != StartTaskMode::Off => KvMode::IdempotencyOnly,
            (false, _) => KvMode::Off,
        };
        Features {
            kv,
            start_task,
            kv_endpoints_without_store: kv_endpoints && !kv_enable,
        }
    }

    /// Whether the database is opened at all.
    pub fn opens_database(&self) -> bool {
        self.kv != KvMode::Off
    }

    /// Whether the key-value store is on (served or not): health, metrics and the disk
    /// guard watch it.
    pub fn kv_store_on(&self) -> bool {
        matches!(self.kv, KvMode::NotServed | KvMode::Served)
    }

    /// Whether the key-value endpoints are served (and start-task's key-value items stored).
    pub fn kv_served(&self) -> bool {
        self.kv == KvMode::Served
    }

    /// Whether the start-task endpoint exists (ready, or answering 503 until set up).
    pub fn start_task_served(&self) -> bool {
        self.start_task != StartTaskMode::Off
    }

    /// Whether start-task can reach QRS (the endpoint is on and QRS configured).
    pub fn start_task_ready(&self) -> bool {
        self.start_task == StartTaskMode::Ready
    }

    /// Why start-task is not set up yet, if it is enabled and waiting for QRS.
    pub fn start_task_not_set_up(&self) -> Option<&str> {
        match &self.start_task {
            StartTaskMode::NotSetUp(why) => Some(why),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_of_the_flags() {
        let f = |e, k, s, why: Option<&str>| Features::decide(e, k, s, why.map(str::to_string));
        assert_eq!(f(true, true, false, None).kv, KvMode::Served);
        assert_eq!(f(false, true, false, None).kv, KvMode::NotServed);
        assert_eq!(f(true, false, false, None).kv, KvMode::Off);
        assert!(f(true, false, false, None).kv_endpoints_without_store);
        assert_eq!(f(false, false, true, None).kv, KvMode::IdempotencyOnly);
        assert_eq!(f(false, false, true, Some("x")).kv, KvMode::IdempotencyOnly);
        let waiting = f(true, true, true, Some("QRS missing"));
        assert!(waiting.start_task_served() && !waiting.start_task_ready());
        assert_eq!(waiting.start_task_not_set_up(), Some("QRS missing"));
        assert_eq!(
            f(true, true, false, Some("x")).start_task,
            StartTaskMode::Off
        );
        assert!(f(false, false, true, None).start_task_ready());
    }
}
