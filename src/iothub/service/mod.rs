//! fleetsim as IoT Hub's operator: a client for the hub's service REST API (api-version
//! 2021-04-12), the same calls Microsoft's `azure-iot-hub` SDK makes, against the embedded hub or
//! a real one:
//! - twins: `GET`, `PATCH` and `PUT /twins/{id}`, with quoted etags in `If-Match`;
//! - direct methods: `POST /twins/{id}/methods`, answered by the device's `{status, payload}`,
//!   or [`CallError::Offline`] (404103), [`CallError::DeviceTimeout`] (504101),
//!   [`CallError::Throttled`] (429, with `Retry-After`);
//! - `GET /statistics/service` and `/statistics/devices`;
//! - queries: `POST /devices/query` with paging (`x-ms-max-item-count`, `x-ms-continuation`).
//!
//! Authorised like the registry client: a service SAS token from a connection string, or an
//! Azure AD bearer token. Errors are [`CallError`]s, whose `kind()` and `outcome()` the metrics
//! count.

mod error;
mod models;

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use error::CallError;
pub use models::{
    MethodCall, MethodResponse, QueryPage, QueryResult, RegistryStatistics, ServiceStatistics,
    Twin, TwinProperties,
};

use super::rest::{Answer, RegistryAuth, Rest};
use super::sas::url_encode;

/// The most pages [`ServiceClient::query_all`] reads, so a query that never ends cannot hold
/// the caller forever.
pub const MAX_PAGES: u32 = 10_000;

/// How long past a method's own timeouts the client waits for the hub's answer.
const METHOD_GRACE: Duration = Duration::from_secs(10);

/// IoT Hub's service API. One per run, shared by the operator's tasks.
pub struct ServiceClient {
    rest: Rest,
}

impl ServiceClient {
    /// `base_url` is `https://{HostName}` for Azure; the emulator's REST URL otherwise. With
    /// `only_extra_roots` the system's roots are not trusted.
    pub fn new(
        base_url: &str,
        auth: RegistryAuth,
        extra_roots: &[CertificateDer<'static>],
        only_extra_roots: bool,
    ) -> Result<Self, CallError> {
        let rest =
            Rest::new(base_url, auth, extra_roots, only_extra_roots).map_err(CallError::Setup)?;
        Ok(Self { rest })
    }

    fn twin_url(&self, device_id: &str) -> String {
        self.rest.url(&format!("/twins/{}", url_encode(device_id)))
    }

    /// The twin of `device_id`.
    pub async fn get_twin(&self, device_id: &str) -> Result<Twin, CallError> {
        let req = self.rest.http.get(self.twin_url(device_id));
        self.twin_answer(req).await
    }

    /// Applies `patch` (a partial twin: `{"tags": …, "properties": {"desired": …}}`, `null`
    /// deleting a member) and returns the twin after it. With `etag`, only if the twin still
    /// has it (else [`CallError::PreconditionFailed`]); without, unconditionally (`If-Match: *`).
    pub async fn patch_twin(
        &self,
        device_id: &str,
        patch: &Value,
        etag: Option<&str>,
    ) -> Result<Twin, CallError> {
        let req = self
            .rest
            .http
            .patch(self.twin_url(device_id))
            .header("If-Match", if_match(etag))
            .json(patch);
        self.twin_answer(req).await
    }

    /// Changes desired properties: `desired` is merged into the twin's (`null` deletes).
    pub async fn patch_desired(
        &self,
        device_id: &str,
        desired: &Value,
        etag: Option<&str>,
    ) -> Result<Twin, CallError> {
        let patch = serde_json::json!({ "properties": { "desired": desired } });
        self.patch_twin(device_id, &patch, etag).await
    }

    /// Replaces the twin's tags and desired properties with `twin`'s (`PUT`).
    pub async fn replace_twin(
        &self,
        device_id: &str,
        twin: &Twin,
        etag: Option<&str>,
    ) -> Result<Twin, CallError> {
        let req = self
            .rest
            .http
            .put(self.twin_url(device_id))
            .header("If-Match", if_match(etag))
            .json(twin);
        self.twin_answer(req).await
    }

    /// A twin from the answer, with the `ETag` header's etag when the body has none.
    async fn twin_answer(&self, req: reqwest::RequestBuilder) -> Result<Twin, CallError> {
        let answer = self.rest.send(req).await?;
        let mut twin: Twin = parse(&answer)?;
        if twin.etag.is_none() {
            twin.etag = answer.etag;
        }
        Ok(twin)
    }

    /// Invokes a direct method on `device_id` and returns the device's answer. The client waits
    /// as long as the hub may (both timeouts) and a little more.
    pub async fn invoke_method(
        &self,
        device_id: &str,
        call: &MethodCall,
    ) -> Result<MethodResponse, CallError> {
        let wait =
            Duration::from_secs(call.response_timeout_in_seconds + call.connect_timeout_in_seconds)
                + METHOD_GRACE;
        let url = self
            .rest
            .url(&format!("/twins/{}/methods", url_encode(device_id)));
        let req = self.rest.http.post(url).timeout(wait).json(call);
        let answer = self.rest.send(req).await?;
        parse(&answer)
    }

    /// How many devices are connected (`GET /statistics/service`).
    pub async fn service_statistics(&self) -> Result<ServiceStatistics, CallError> {
        let req = self.rest.http.get(self.rest.url("/statistics/service"));
        parse(&self.rest.send(req).await?)
    }

    /// How many devices the registry holds, enabled and disabled (`GET /statistics/devices`).
    pub async fn registry_statistics(&self) -> Result<RegistryStatistics, CallError> {
        let req = self.rest.http.get(self.rest.url("/statistics/devices"));
        parse(&self.rest.send(req).await?)
    }

    /// One page of `query`: at most `page_size` items (the hub's default when `None`), from
    /// where `continuation` says (the first page when `None`).
    pub async fn query_page(
        &self,
        query: &str,
        page_size: Option<u32>,
        continuation: Option<&str>,
    ) -> Result<QueryPage, CallError> {
        let mut req = self
            .rest
            .http
            .post(self.rest.url("/devices/query"))
            .json(&serde_json::json!({ "query": query }));
        if let Some(n) = page_size {
            req = req.header("x-ms-max-item-count", n.to_string());
        }
        if let Some(token) = continuation {
            req = req.header("x-ms-continuation", token);
        }
        let answer = self.rest.send(req).await?;
        let items: Vec<Value> = parse(&answer)?;
        Ok(QueryPage {
            items,
            continuation: answer.continuation,
        })
    }

    /// Every page of `query` (at most [`MAX_PAGES`]).
    pub async fn query_all(
        &self,
        query: &str,
        page_size: Option<u32>,
    ) -> Result<QueryResult, CallError> {
        let mut result = QueryResult::default();
        let mut continuation: Option<String> = None;
        loop {
            let page = self
                .query_page(query, page_size, continuation.as_deref())
                .await?;
            result.items.extend(page.items);
            result.pages += 1;
            continuation = page.continuation;
            if continuation.is_none() {
                return Ok(result);
            }
            if result.pages >= MAX_PAGES {
                return Err(CallError::Malformed(format!(
                    "the query was still continuing after {MAX_PAGES} pages"
                )));
            }
        }
    }
}

/// `If-Match` as the SDKs send it: the etag in quotes, or `"*"` for any.
fn if_match(etag: Option<&str>) -> String {
    format!("\"{}\"", etag.map_or("*", |e| e.trim_matches('"')))
}

fn parse<T: DeserializeOwned>(answer: &Answer) -> Result<T, CallError> {
    serde_json::from_str(&answer.body).map_err(|e| {
        CallError::Malformed(format!(
            "HTTP {}: {e}: {}",
            answer.status,
            answer.body.chars().take(200).collect::<String>()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_is_quoted_once() {
        assert_eq!(if_match(None), "\"*\"");
        assert_eq!(if_match(Some("AAAA")), "\"AAAA\"");
        assert_eq!(if_match(Some("\"AAAA\"")), "\"AAAA\"");
    }
}
