//! The nodes a link can attach to and what the server does with each: `$cbs` and `$management`
//! (request/response pairs), `/messages/devicebound` (C2D ingress, needs a CBS grant) and the
//! Event Hub partitions (needs a grant for the entity). Deciding an attach and answering one
//! delivery live here; the connection engine does the framing and flow control.

use super::c2d::C2dMessage;
use super::cbs::{self, Grants, resource_of};
use super::eventhub::{self, parse_partition_address};
use super::shared::Shared;
use crate::amqp::codec::Value;
use crate::amqp::message::{self, Message};
use crate::amqp::performatives::{Attach, error, terminus_address};

/// What a link is attached to.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Requests to `$cbs` (peer sends).
    CbsRequests,
    /// Responses from `$cbs` (we send).
    CbsResponses,
    ManagementRequests,
    ManagementResponses,
    /// `/messages/devicebound` (peer sends C2D messages).
    Devicebound,
    /// An Event Hub partition (we send its events from `next_sequence` on).
    Partition {
        consumer_group: String,
        partition: u32,
        next_sequence: i64,
    },
}

impl Node {
    /// Whether the server is the sending end.
    pub fn we_send(&self) -> bool {
        matches!(
            self,
            Node::CbsResponses | Node::ManagementResponses | Node::Partition { .. }
        )
    }
}

/// An attach refused: the AMQP error condition and a description for the peer and the log.
pub struct Refusal {
    pub condition: &'static str,
    pub description: String,
}

fn refuse(condition: &'static str, description: String) -> Refusal {
    Refusal {
        condition,
        description,
    }
}

/// The resource a link address names, as CBS grants name them. Unlike a SAS resource, a link
/// address without a scheme is a path on this hub (`{hub}/ConsumerGroups/…`) unless it starts
/// with the hub's own host name.
fn link_resource(address: &str, host: &str) -> String {
    let first = address.split('/').next().unwrap_or_default();
    if address.contains("://") || address.starts_with('/') || first.eq_ignore_ascii_case(host) {
        resource_of(address, host)
    } else {
        resource_of(&format!("/{address}"), host)
    }
}

fn is_node(address: &str, node: &str) -> bool {
    address == node || address.ends_with(&format!("/{node}"))
}

/// Decides what `attach` may attach to.
pub fn classify(
    shared: &Shared,
    attach: &Attach,
    grants: &Grants,
    host: &str,
    now: u64,
) -> Result<Node, Refusal> {
    let (terminus, we_send) = match attach.role_receiver {
        true => (&attach.source, true),
        false => (&attach.target, false),
    };
    let address = terminus_address(terminus).unwrap_or_default();
    let unauthorized = || {
        refuse(
            "amqp:unauthorized-access",
            format!(
                "IotHubUnauthorized (401003): no CBS token covers '{address}'; put one on $cbs first"
            ),
        )
    };
    match (we_send, address) {
        (true, a) if is_node(a, "$cbs") => return Ok(Node::CbsResponses),
        (false, a) if is_node(a, "$cbs") => return Ok(Node::CbsRequests),
        (true, a) if is_node(a, "$management") => return Ok(Node::ManagementResponses),
        (false, a) if is_node(a, "$management") => return Ok(Node::ManagementRequests),
        _ => {}
    }
    let resource = link_resource(address, host);
    let path = resource.split_once('/').map_or("", |(_, p)| p);
    if !we_send && path == "messages/devicebound" {
        return match grants.covers(&resource, now) {
            true => Ok(Node::Devicebound),
            false => Err(unauthorized()),
        };
    }
    if we_send && let Some(p) = parse_partition_address(address, &shared.entity) {
        if !shared.events.has_consumer_group(&p.consumer_group) {
            return Err(refuse(
                "amqp:not-found",
                format!("consumer group '{}' does not exist", p.consumer_group),
            ));
        }
        if p.partition >= shared.events.partition_count() {
            return Err(refuse(
                "amqp:not-found",
                format!("partition {} does not exist", p.partition),
            ));
        }
        if !grants.covers_entity(&resource, now) {
            return Err(unauthorized());
        }
        let start =
            eventhub::start_position(terminus).map_err(|why| refuse("amqp:invalid-field", why))?;
        let next_sequence = shared
            .events
            .start_sequence(p.partition, &start)
            .unwrap_or_default();
        return Ok(Node::Partition {
            consumer_group: p.consumer_group,
            partition: p.partition,
            next_sequence,
        });
    }
    Err(refuse(
        "amqp:not-found",
        format!(
            "this hub has no node '{address}' for a {} link",
            if we_send { "receiving" } else { "sending" }
        ),
    ))
}

/// What to do with one complete delivery the peer sent.
pub enum Handled {
    /// Settle with Accepted (`None`) or Rejected with this error.
    Settle(Option<Value>),
    /// Settle Accepted and send this message on the node's response link.
    Respond(Node, Box<Message>),
}

/// Handles one delivery on `node`.
pub fn on_delivery(
    shared: &Shared,
    node: &Node,
    bytes: &[u8],
    grants: &mut Grants,
    host: &str,
    now: u64,
) -> Handled {
    let request = match message::decode(bytes) {
        Ok(m) => m,
        Err(e) => {
            return Handled::Settle(Some(error(
                "amqp:decode-error",
                &format!("undecodable message: {e}"),
            )));
        }
    };
    match node {
        Node::CbsRequests => {
            let (status, description) =
                cbs::put_token(&shared.policies, grants, &request, host, now);
            if status != 200 {
                tracing::debug!(status, %description, "CBS put-token refused");
            }
            let reply = cbs::response(&request, status, &description, Value::Null);
            Handled::Respond(Node::CbsResponses, Box::new(reply))
        }
        Node::ManagementRequests => {
            let (status, description, body) = management(shared, &request, grants, host, now);
            let reply = cbs::response(&request, status, &description, body);
            Handled::Respond(Node::ManagementResponses, Box::new(reply))
        }
        Node::Devicebound => {
            let outcome = C2dMessage::from_amqp(&request).and_then(|m| shared.c2d.enqueue(m));
            Handled::Settle(
                outcome
                    .err()
                    .map(|r| error(r.condition(), &r.description())),
            )
        }
        // Peers cannot send on links where the server is the sender.
        _ => Handled::Settle(Some(error("amqp:not-allowed", "this link only sends"))),
    }
}

/// `$management` requests carry their own token (`security_token`) or ride on a CBS grant.
fn management(
    shared: &Shared,
    request: &Message,
    grants: &Grants,
    host: &str,
    now: u64,
) -> (i32, String, Value) {
    let entity = resource_of(&format!("{host}/{}", shared.entity), host);
    let authorized = match request
        .application_property("security_token")
        .and_then(Value::as_text)
    {
        Some(token) => cbs::check_token(&shared.policies, token, &entity, host, now).is_ok(),
        None => grants.covers_entity(&entity, now),
    };
    if !authorized {
        return (
            401,
            "IotHubUnauthorized (401003): no valid security_token for the entity".into(),
            Value::Null,
        );
    }
    eventhub::management(&shared.events, &shared.entity, request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_addresses_name_resources_on_this_hub() {
        let h = "h.azure-devices.net";
        let want = "h.azure-devices.net/hub/ConsumerGroups/$Default/Partitions/0";
        for address in [
            "amqps://h.azure-devices.net/hub/ConsumerGroups/$Default/Partitions/0",
            "/hub/ConsumerGroups/$Default/Partitions/0",
            "hub/ConsumerGroups/$Default/Partitions/0",
            "H.azure-devices.net/hub/ConsumerGroups/$Default/Partitions/0",
        ] {
            assert_eq!(link_resource(address, h), want, "{address}");
        }
        assert_eq!(
            link_resource("/messages/devicebound", h),
            "h.azure-devices.net/messages/devicebound"
        );
    }
}
