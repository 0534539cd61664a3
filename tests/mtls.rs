//! Mutual TLS over real QUIC on loopback: who is let in, who is refused, and
//! what the handler learns about the caller.

mod common;

use common::{Pki, bounded, connect, serve};
use quicall::demo::{ADD, AddRequest, WHOAMI};
use quicall::{Client, ClientOptions, ClientTls, Code, Server, Status};
use zerocopy::little_endian::I64;

/// Connects with `tls` as "localhost" and calls `add(2, 3)`: the status that
/// refused the client, or a panic if it was answered.
async fn refusal(server: &Server, server_name: &str, tls: ClientTls) -> Status {
    let outcome = bounded(async {
        let client = Client::connect(
            server.local_addr(),
            server_name,
            tls,
            ClientOptions::default(),
        )
        .await?;
        client.call(&ADD, &two_and_three()).await
    })
    .await;
    match outcome {
        Ok(_) => panic!("the call was answered; it must be refused"),
        Err(status) => status,
    }
}

fn two_and_three() -> AddRequest {
    AddRequest {
        a: I64::new(2),
        b: I64::new(3),
    }
}

#[tokio::test]
async fn add_over_mutual_tls_and_handler_sees_client_name() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let client = connect(&pki, &server).await;

    let reply = bounded(client.call(&ADD, &two_and_three())).await.unwrap();
    assert_eq!(reply.sum.get(), 5);

    let who = bounded(client.call(&WHOAMI, "")).await.unwrap();
    assert_eq!(&*who, b"alice");

    // And the client sees the server's verified identity.
    let peer = client.connection().peer().expect("server identity");
    assert_eq!(peer.name(), "server");
    assert!(peer.dns_names().iter().any(|n| n == "localhost"));
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let tls = ClientTls::new(pki.roots());
    let status = refusal(&server, "localhost", tls).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
}

#[tokio::test]
async fn client_with_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let rogue = Pki::named("rogue CA");
    let server = serve(&pki, quicall::demo::router());
    // Trusts the right CA, but presents a certificate from another one.
    let tls =
        ClientTls::new(pki.roots()).with_identity(rogue.client.chain(), rogue.client.key_der());
    let status = refusal(&server, "localhost", tls).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
}

#[tokio::test]
async fn client_that_does_not_trust_the_server_refuses_it() {
    let pki = Pki::new();
    let other = Pki::named("other CA");
    let server = serve(&pki, quicall::demo::router());
    let tls = ClientTls::new(other.roots()).with_identity(pki.client.chain(), pki.client.key_der());
    let status = bounded(Client::connect(
        server.local_addr(),
        "localhost",
        tls,
        ClientOptions::default(),
    ))
    .await
    .expect_err("the server's certificate is not trusted");
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    assert!(status.was_not_processed());
}

#[tokio::test]
async fn wrong_server_name_is_refused() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let status = refusal(&server, "not-the-server.example", pki.client_tls()).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
}

#[tokio::test]
async fn refused_clients_do_not_disturb_good_ones() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let good = connect(&pki, &server).await;
    for _ in 0..5 {
        let status = refusal(&server, "localhost", ClientTls::new(pki.roots())).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    }
    let reply = bounded(good.call(&ADD, &two_and_three())).await.unwrap();
    assert_eq!(reply.sum.get(), 5);
}
