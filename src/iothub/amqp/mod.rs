//! fleetsim's own AMQP 1.0 clients, on the neutral codec in [`crate::amqp`] (no AMQP crate):
//! one connection engine over TLS ([`connection`]: SASL, open, one session, sender and receiver
//! links, flow control, heartbeats, bounded reads and timeouts), claims-based security
//! ([`cbs`]: the `$cbs` put-token and `$management` request/response pairs), and on top of them
//! the operator's C2D sender ([`c2d::C2dSender`], `/messages/devicebound`) and the backend's
//! Event Hub consumer ([`eventhub::EventHubConsumer`], the hub's built-in endpoint). Both talk
//! to the embedded hub's AMQP endpoint and to Azure alike.

pub mod c2d;
pub mod cbs;
pub mod connection;
pub mod error;
pub mod eventhub;

pub use c2d::{C2dOutcome, C2dSend, C2dSender};
pub use connection::{Connection, Endpoint};
pub use error::{AmqpError, now_ms};
pub use eventhub::{EventHubConnectionString, EventHubConsumer, ReceivedEvent, StartPosition};
