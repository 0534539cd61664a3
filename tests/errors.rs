//! Errors that fit: handlers return their own error types, anyhow's
//! included, and callers get statuses with the right codes and messages.

mod common;

use anyhow::Context as _;
use common::{Pki, bounded, connect, serve_with};
use quicall::{Code, Method, Router, ServerOptions, Status};

/// A service's own error type.
#[derive(Debug)]
enum StoreError {
    Missing(String),
    Exists(String),
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
            StoreError::Missing(key) => Status::not_found(format!("no key {key:?}")),
            StoreError::Exists(key) => Status::already_exists(format!("key {key:?} exists")),
        }
    }
}

const GET: Method<[u8], [u8]> = Method::new("kv.Store/Get");
const PUT: Method<[u8], [u8]> = Method::new("kv.Store/Put");
const SAVE: Method<[u8], [u8]> = Method::new("kv.Store/Save");
const NOT_SERVED: Method<[u8], [u8]> = Method::new("kv.Store/Compact");

fn router() -> Router {
    Router::new()
        .route(&GET, |_ctx, key: quicall::Msg<[u8]>| async move {
            Err::<Vec<u8>, _>(StoreError::Missing(
                String::from_utf8_lossy(&key).into_owned(),
            ))
        })
        .and_then(|r| {
            r.route(&PUT, |_ctx, key: quicall::Msg<[u8]>| async move {
                Err::<Vec<u8>, _>(StoreError::Exists(
                    String::from_utf8_lossy(&key).into_owned(),
                ))
            })
        })
        .and_then(|r| {
            r.route(&SAVE, |_ctx, _req| async move {
                let written: anyhow::Result<Vec<u8>> = Err(std::io::Error::other("disk full"))
                    .context("saving the store to /var/lib/kv");
                written
            })
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_return_their_own_errors_and_anyhow() {
    let pki = Pki::new();
    let server = serve_with(&pki, router(), ServerOptions::default());
    let client = connect(&pki, &server).await;

    let status = bounded(client.call(&GET, &b"apple"[..])).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status}");
    assert_eq!(status.message(), "no key \"apple\"");
    let status = bounded(client.call(&PUT, &b"pear"[..])).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status}");

    // anyhow: INTERNAL, with the whole chain.
    let status = bounded(client.call(&SAVE, &b""[..])).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert_eq!(
        status.message(),
        "saving the store to /var/lib/kv: disk full"
    );

    // The client names the method the server does not have.
    let status = bounded(client.call(&NOT_SERVED, &b""[..]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::UnknownMethod, "{status}");
    assert!(status.message().contains("kv.Store/Compact"), "{status}");
    assert!(status.was_not_processed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_can_keep_its_internals_to_itself() {
    let pki = Pki::new();
    let options = ServerOptions {
        hide_error_details: true,
        ..ServerOptions::default()
    };
    let server = serve_with(&pki, router(), options);
    let client = connect(&pki, &server).await;
    let status = bounded(client.call(&SAVE, &b""[..])).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert_eq!(status.message(), "internal error");
    // Statuses the handler chose itself still go out as they are.
    let status = bounded(client.call(&GET, &b"apple"[..])).await.unwrap_err();
    assert_eq!(status.message(), "no key \"apple\"");
}
