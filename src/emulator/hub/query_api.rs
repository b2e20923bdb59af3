//! `POST /devices/query` (reference "IoT Hub service side"): body `{"query": "..."}` in the
//! language of [`super::query`]; answers a JSON array of twins (`x-ms-item-type: twin`) or, for
//! `SELECT COUNT()`, one row (`x-ms-item-type: raw`). Pages hold `x-ms-max-item-count` items
//! (1–100, default 100) in device-id order; a response with more to come carries an opaque
//! `x-ms-continuation` token, which the next request sends back with the same query. A query that
//! does not parse gets 400 with IoT Hub's message and the column. Every request passes the query
//! throttle.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query as UrlQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::query::{Query, Selection, parse};
use super::rest::{ApiVersion, admit_as, argument_invalid, format_error};
use super::state::{HubState, bump};
use super::throttle::Class;
use super::twin::Twin;
use super::twin_view::TwinView;
use crate::sync::lock;

/// IoT Hub's largest page.
pub const MAX_PAGE: usize = 100;

pub(super) fn routes() -> axum::Router<Arc<HubState>> {
    axum::Router::new().route("/devices/query", post(query))
}

#[derive(Deserialize)]
struct QueryBody {
    query: Option<String>,
}

async fn query(
    State(state): State<Arc<HubState>>,
    UrlQuery(api): UrlQuery<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit_as(&state, &headers, &api, "devices/query", Class::Query).await {
        return *r;
    }
    let (text, page) = match request(&headers, &body) {
        Ok(r) => r,
        Err(r) => {
            bump(&state.service.queries_invalid);
            return *r;
        }
    };
    let parsed = match parse(&text) {
        Ok(q) => q,
        Err(e) => {
            bump(&state.service.queries_invalid);
            return argument_invalid(&format!(
                "The query is invalid. Please check the format of the query and try again. ({e})"
            ));
        }
    };
    bump(&state.service.queries);
    answer(&text, &parsed, &state, page)
}

/// Where a page starts and how long it is.
struct Page {
    offset: usize,
    size: usize,
}

/// The query text and the page the request asks for, or the 400 to answer.
fn request(headers: &HeaderMap, body: &[u8]) -> Result<(String, Page), Box<Response>> {
    let body: QueryBody = serde_json::from_slice(body)
        .map_err(|e| Box::new(format_error(&format!("query body: {e}"))))?;
    let text = body
        .query
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| Box::new(argument_invalid("the body must name a query")))?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let size = match header("x-ms-max-item-count") {
        None => MAX_PAGE,
        Some(v) => match v.trim().parse::<usize>() {
            // The service may use another size than asked for: more than 100 gets 100.
            Ok(n) if n > 0 => n.min(MAX_PAGE),
            _ => {
                return Err(Box::new(argument_invalid(
                    "x-ms-max-item-count must be a positive number",
                )));
            }
        },
    };
    let offset = match header("x-ms-continuation").filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => continuation_offset(token, &text).ok_or_else(|| {
            Box::new(argument_invalid(
                "x-ms-continuation is not a token this query returned",
            ))
        })?,
    };
    Ok((text, Page { offset, size }))
}

/// How many twins `query` selects, and the JSON of those on `page` (all of them when `None`),
/// in device-id order. Twins are matched in place ([`TwinView`]); only the page's are built.
fn run(state: &HubState, query: &Query, page: Option<&Page>) -> (usize, Vec<Value>) {
    let mut devices: Vec<_> = lock(&state.devices).values().cloned().collect();
    devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    let devices = state.device_views(devices);
    let fresh = Twin::default();
    let twins = lock(&state.twins);
    let (start, end) = page.map_or((0, usize::MAX), |p| {
        (p.offset, p.offset.saturating_add(p.size))
    });
    let mut matched = 0;
    let mut items = Vec::new();
    for device in &devices {
        let twin = twins.get(&device.device_id).unwrap_or(&fresh);
        if !query.selects(&TwinView { twin, device }) {
            continue;
        }
        if (start..end).contains(&matched) {
            items.push(twin.service_json(device));
        }
        matched += 1;
    }
    (matched, items)
}

fn answer(text: &str, query: &Query, state: &HubState, page: Page) -> Response {
    let (items, item_type, more) = match &query.selection {
        Selection::Count { alias } => {
            let (count, _) = run(state, query, Some(&Page { offset: 0, size: 0 }));
            (
                vec![serde_json::json!({ alias.clone(): count })],
                "raw",
                false,
            )
        }
        Selection::All => {
            let (matched, items) = run(state, query, Some(&page));
            (
                items,
                "twin",
                page.offset.saturating_add(page.size) < matched,
            )
        }
    };
    let mut response = Json(Value::Array(items)).into_response();
    let headers = response.headers_mut();
    headers.insert("x-ms-item-type", HeaderValue::from_static(item_type));
    if more {
        let token = continuation_token(page.offset + page.size, text);
        if let Ok(v) = HeaderValue::from_str(&token) {
            headers.insert("x-ms-continuation", v);
        }
    }
    response
}

/// A token for the page at `offset` of `text`: it names the query, so it cannot continue
/// another one.
fn continuation_token(offset: usize, text: &str) -> String {
    let plain = format!("{offset}:{:016x}", fingerprint(text));
    base64::engine::general_purpose::STANDARD.encode(plain)
}

fn continuation_offset(token: &str, text: &str) -> Option<usize> {
    let plain = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let plain = String::from_utf8(plain).ok()?;
    let (offset, print) = plain.split_once(':')?;
    (print == format!("{:016x}", fingerprint(text)))
        .then(|| offset.parse().ok())
        .flatten()
}

/// FNV-1a of the query text.
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_tokens_belong_to_their_query() {
        let q = "SELECT * FROM devices";
        let t = continuation_token(200, q);
        assert_eq!(continuation_offset(&t, q), Some(200));
        assert_eq!(
            continuation_offset(&t, "SELECT * FROM devices WHERE x = 1"),
            None
        );
        assert_eq!(continuation_offset("not base64!", q), None);
        assert_eq!(continuation_offset("MTIz", q), None, "no fingerprint");
    }
}
