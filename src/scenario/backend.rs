//! `backend:` fleetsim as the backend of its own fleet, reading the hub's built-in Event
//! Hub-compatible endpoint while the devices send:
//!
//! ```yaml
//! backend:
//!   consume: true                 # read every partition from @latest at the run's start
//!   consumer_group: $Default      # embedded: created if it is another name
//!   connection_string_env: EVENTHUB_CONNECTION_STRING   # remote targets only
//!   grace: 10s                    # after the devices stop, how long to wait for the rest
//! ```
//!
//! The backend records `d2c.delivery` (a device's send → the backend's read) and counts every
//! QoS 1 message the hub acknowledged that it never read (lost) or read twice (duplicated).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::Span;

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Read every partition of the Event Hub-compatible endpoint from @latest at the run's start,
    /// recording `d2c.delivery`.
    #[serde(default)]
    pub consume: bool,
    /// The consumer group to read with (embedded: created if it is another name than `$Default`).
    #[serde(default = "default_group")]
    pub consumer_group: String,
    /// For a remote target: the variable holding the Event Hub-compatible connection string
    /// (`Endpoint=sb://…/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=…`).
    #[serde(default = "default_env")]
    pub connection_string_env: String,
    /// How long the backend keeps reading after the devices stopped, for messages still on
    /// their way (it stops earlier once nothing acknowledged is missing).
    #[serde(default = "default_grace")]
    pub grace: Span,
}

impl Default for Backend {
    fn default() -> Self {
        Self {
            consume: false,
            consumer_group: default_group(),
            connection_string_env: default_env(),
            grace: default_grace(),
        }
    }
}

impl Backend {
    pub fn is_default(&self) -> bool {
        *self == Backend::default()
    }
}

fn default_group() -> String {
    "$Default".into()
}

fn default_env() -> String {
    "EVENTHUB_CONNECTION_STRING".into()
}

fn default_grace() -> Span {
    Span(std::time::Duration::from_secs(10))
}
