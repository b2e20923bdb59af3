//! The hub's service REST API over plain HTTP calls, for tests that check its wire format (twins,
//! methods, statistics, queries): requests signed with the `iothubowner` SAS token, answers as
//! status, headers and JSON.

use std::time::Duration;

use fleetsim::emulator::Emulators;
use reqwest::Method;
use serde_json::Value;

/// One answer of the service API.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

impl Answer {
    /// The header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The numeric IoT Hub error code inside an error body (`{"Message": "{\"errorCode\":...}"}`).
    pub fn error_code(&self) -> Option<u64> {
        let inner: Value = serde_json::from_str(self.body["Message"].as_str()?).ok()?;
        inner["errorCode"].as_u64()
    }

    /// The error's message inside an error body.
    pub fn error_message(&self) -> String {
        self.body["Message"]
            .as_str()
            .and_then(|m| serde_json::from_str::<Value>(m).ok())
            .and_then(|inner| inner["message"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// A service client of one hub emulator.
#[derive(Clone)]
pub struct Service {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Service {
    pub fn new(e: &Emulators) -> Self {
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_der(&e.tls_root).unwrap()])
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let token = e.hub.connection_string().sas_token(u64::MAX / 4).unwrap();
        Self {
            http,
            base: e.hub_registry_url.clone(),
            token,
        }
    }

    /// `method` on `path` (api-version added) with `headers` and a JSON `body`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Answer {
        let url = format!("{}{path}?api-version=2021-04-12", self.base);
        let mut request = self
            .http
            .request(method, url)
            .header("Authorization", &self.token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        self.send(request).await
    }

    /// Like [`Service::call`] with a raw body (for bodies that are not JSON).
    pub async fn call_raw(&self, method: Method, path: &str, body: &'static [u8]) -> Answer {
        let url = format!("{}{path}?api-version=2021-04-12", self.base);
        let request = self
            .http
            .request(method, url)
            .header("Authorization", &self.token)
            .header("Content-Type", "application/json")
            .body(body);
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the hub answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, &[], None).await
    }

    /// `POST /twins/{id}/methods` with `request`.
    pub async fn invoke(&self, id: &str, request: Value) -> Answer {
        self.call(
            Method::POST,
            &format!("/twins/{id}/methods"),
            &[],
            Some(&request),
        )
        .await
    }

    /// `POST /devices/query` with `query` and paging headers.
    pub async fn query(&self, query: &str, headers: &[(&str, &str)]) -> Answer {
        let body = serde_json::json!({ "query": query });
        self.call(Method::POST, "/devices/query", headers, Some(&body))
            .await
    }
}
