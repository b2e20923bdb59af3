//! AMQP 1.0 as both sides of fleetsim speak it: the type system and its bounded codec
//! ([`codec`]), framing ([`frames`]), the performatives, SASL frames and outcomes
//! ([`performatives`]) and the message format ([`message`]). A leaf like `crypto`: the hub
//! emulator's AMQP endpoint ([`crate::emulator::amqp`]) and fleetsim's own AMQP clients
//! ([`crate::iothub::amqp`]) both build on it, and it uses neither.
//!
//! Everything here is written to face a hostile peer: lengths are checked against the bytes
//! that carry them, nesting is bounded, and bad input is an error value, never a panic.

pub mod codec;
pub mod frames;
pub mod message;
pub mod performatives;
