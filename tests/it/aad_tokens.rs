//! Azure AD token sources for the real EZCA, against a token endpoint on loopback: the right
//! grant and fields are sent, tokens are cached and shared, and refreshed near expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use fleetsim::ezca::TokenSource;
use fleetsim::ezca::aad::{EZCA_SCOPE, Flow, Provider};

type Seen = Arc<Mutex<Vec<HashMap<String, String>>>>;

/// A token endpoint that records each request's fields and answers a numbered token living
/// `lifetime` seconds.
async fn endpoint(lifetime: u64) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let token = |seen: &Seen, fields: HashMap<String, String>| {
        let mut s = seen.lock().unwrap();
        s.push(fields);
        format!("token-{}", s.len())
    };
    let app = axum::Router::new()
        .route(
            "/tenant-1/oauth2/v2.0/token",
            post(move |State(seen): State<Seen>, Form(fields): Form<HashMap<String, String>>| async move {
                axum::Json(serde_json::json!({"token_type": "Bearer", "expires_in": lifetime, "access_token": token(&seen, fields)}))
            }),
        )
        .route(
            "/msi",
            get(move |State(seen): State<Seen>, headers: HeaderMap, Query(mut q): Query<HashMap<String, String>>| async move {
                q.insert("metadata".into(), headers.get("Metadata").and_then(|v| v.to_str().ok()).unwrap_or("").into());
                let expires_on = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + lifetime;
                axum::Json(serde_json::json!({"access_token": token(&seen, q), "expires_on": expires_on.to_string(), "resource": "x"}))
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn client_secret_tokens_are_cached_and_refreshed_near_expiry() {
    let (url, seen) = endpoint(3600).await;
    let flow = Flow::ClientSecret {
        token_url: fleetsim::ezca::aad::token_url(&url, "tenant-1"),
        client_id: "app-1".into(),
        secret: "s3cret".into(),
    };
    let p = Provider::new(flow, EZCA_SCOPE).unwrap();
    assert_eq!(p.token().await.unwrap(), "token-1");
    assert_eq!(p.token().await.unwrap(), "token-1", "cached");
    let fields = seen.lock().unwrap()[0].clone();
    assert_eq!(fields["grant_type"], "client_credentials");
    assert_eq!(fields["client_id"], "app-1");
    assert_eq!(fields["client_secret"], "s3cret");
    assert_eq!(
        fields["scope"],
        "https://management.core.windows.net/.default"
    );
    assert!(
        !format!("{p:?}").contains("s3cret"),
        "secrets stay out of Debug"
    );

    // A token within five minutes of expiry is fetched again.
    let (url, seen) = endpoint(120).await;
    let p = Provider::new(
        Flow::ClientSecret {
            token_url: fleetsim::ezca::aad::token_url(&url, "tenant-1"),
            client_id: "a".into(),
            secret: "b".into(),
        },
        EZCA_SCOPE,
    )
    .unwrap();
    p.token().await.unwrap();
    p.token().await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn workload_identity_sends_the_federated_token_as_assertion() {
    let (url, seen) = endpoint(3600).await;
    let dir = std::env::temp_dir().join(format!("fleetsim-wi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "federated-jwt\n").unwrap();
    let flow = Flow::WorkloadIdentity {
        token_url: fleetsim::ezca::aad::token_url(&url, "tenant-1"),
        client_id: "wi-app".into(),
        assertion_file: dir.join("token"),
    };
    let p = Provider::new(flow, EZCA_SCOPE).unwrap();
    assert_eq!(p.token().await.unwrap(), "token-1");
    let fields = seen.lock().unwrap()[0].clone();
    assert_eq!(fields["client_assertion"], "federated-jwt");
    assert_eq!(
        fields["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(fields["client_id"], "wi-app");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn managed_identity_asks_for_the_resource_with_the_metadata_header() {
    let (url, seen) = endpoint(3600).await;
    let flow = Flow::ManagedIdentity {
        endpoint: format!("{url}/msi"),
        header: None,
        client_id: Some("uami-1".into()),
    };
    let p = Provider::new(flow, EZCA_SCOPE).unwrap();
    assert_eq!(p.token().await.unwrap(), "token-1");
    assert_eq!(
        p.token().await.unwrap(),
        "token-1",
        "expires_on as a string is understood"
    );
    let q = seen.lock().unwrap()[0].clone();
    assert_eq!(q["resource"], "https://management.core.windows.net");
    assert_eq!(q["client_id"], "uami-1");
    assert_eq!(q["metadata"], "true");
}

#[tokio::test]
async fn azure_cli_and_file_sources() {
    // A stand-in `az` that prints what the real one does.
    let dir = std::env::temp_dir().join(format!("fleetsim-az-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let az = dir.join("az");
    std::fs::write(
        &az,
        "#!/bin/sh\n[ \"$4\" = \"https://management.core.windows.net/.default\" ] || exit 3\necho '{\"accessToken\":\"cli-token\",\"expiresOn\":\"2099-01-01 00:00:00.000000\",\"expires_on\":4070908800,\"tokenType\":\"Bearer\"}'\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let p = Provider::new(
        Flow::AzureCli {
            program: az.clone(),
        },
        EZCA_SCOPE,
    )
    .unwrap();
    assert_eq!(p.token().await.unwrap(), "cli-token");

    std::fs::write(dir.join("token"), "file-token\n").unwrap();
    let p = Provider::new(Flow::File(dir.join("token")), EZCA_SCOPE).unwrap();
    assert_eq!(p.token().await.unwrap(), "file-token");
    std::fs::remove_dir_all(&dir).ok();
}
