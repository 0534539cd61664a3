//! A rolling upgrade: version 1 and version 2 of a service's messages (one
//! field appended to the request and one to the response) calling each
//! other, in both directions, on live servers and through a cluster of
//! both versions at once.

mod common;

use common::{Pki, bounded, cluster_of, connect, serve};
use quicall::zerocopy::little_endian::{U32, U64};
use quicall::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
use quicall::{ClusterOptions, Code, Method, Msg, Router, Status};

#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct StatsRequestV1 {
    shard: U64,
}

#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct StatsRequestV2 {
    shard: U64,
    /// New in v2; 0 (what a v1 client's request reads as) means "no detail".
    detail: U32,
}

#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct StatsV1 {
    keys: U64,
}

#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct StatsV2 {
    keys: U64,
    /// New in v2; a v2 client reads 0 from a v1 server.
    bytes: U64,
}

// The same name, so the same identifier, in both versions.
const STATS_V1: Method<StatsRequestV1, StatsV1> = Method::new("kv.Store/Stats").idempotent();
const STATS_V2: Method<StatsRequestV2, StatsV2> = Method::new("kv.Store/Stats").idempotent();
// A method declared exact does not evolve: a size mismatch is refused.
const EXACT_V1: Method<StatsRequestV1, StatsV1> = Method::new("kv.Store/Exact").exact();
const EXACT_V2: Method<StatsRequestV2, StatsV2> = Method::new("kv.Store/Exact").exact();

fn v1_server() -> Router {
    let stats = |_ctx, req: Msg<StatsRequestV1>| async move {
        Ok::<_, Status>(StatsV1 {
            keys: U64::new(req.shard.get() * 10),
        })
    };
    Router::new()
        .route(&STATS_V1, stats)
        .and_then(|r| r.route(&EXACT_V1, stats))
        .unwrap()
}

fn v2_server() -> Router {
    let stats = |_ctx, req: Msg<StatsRequestV2>| async move {
        Ok::<_, Status>(StatsV2 {
            keys: U64::new(req.shard.get() * 10),
            // Tells the test what the server read of the new field.
            bytes: U64::new(1000 + u64::from(req.detail.get())),
        })
    };
    Router::new()
        .route(&STATS_V2, stats)
        .and_then(|r| r.route(&EXACT_V2, stats))
        .unwrap()
}

fn request_v2(shard: u64) -> StatsRequestV2 {
    StatsRequestV2 {
        shard: U64::new(shard),
        detail: U32::new(7),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_peers_call_each_other_in_both_directions() {
    let pki = Pki::new();
    let old = serve(&pki, v1_server());
    let new = serve(&pki, v2_server());

    // v1 client, v2 server: the server reads the missing field as 0; the
    // client reads its own field and ignores the one it does not know.
    let client = connect(&pki, &new).await;
    let request = StatsRequestV1 { shard: U64::new(4) };
    let reply = bounded(client.call(&STATS_V1, &request)).await.unwrap();
    assert_eq!(reply.keys.get(), 40);
    // The same v1 request, its answer read as v2: the server saw detail = 0.
    const V1_REQUEST_V2_ANSWER: Method<StatsRequestV1, StatsV2> = Method::new("kv.Store/Stats");
    let seen = bounded(client.call(&V1_REQUEST_V2_ANSWER, &request))
        .await
        .unwrap();
    assert_eq!(seen.bytes.get(), 1000);

    // v2 client, v1 server: the server ignores the new request field; the
    // client reads the new response field as 0.
    let client = connect(&pki, &old).await;
    let reply = bounded(client.call(&STATS_V2, &request_v2(5)))
        .await
        .unwrap();
    assert_eq!((reply.keys.get(), reply.bytes.get()), (50, 0));

    // v2 with v2: the new fields travel.
    let client = connect(&pki, &new).await;
    let reply = bounded(client.call(&STATS_V2, &request_v2(6)))
        .await
        .unwrap();
    assert_eq!((reply.keys.get(), reply.bytes.get()), (60, 1007));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_halfway_through_a_rolling_upgrade_serves_both_versions() {
    let pki = Pki::new();
    let servers = [
        serve(&pki, v1_server()),
        serve(&pki, v2_server()),
        serve(&pki, v1_server()),
    ];
    let refs: Vec<_> = servers.iter().collect();
    let cluster = cluster_of(&pki, &refs, ClusterOptions::default()).await;
    let (mut new_fields, mut zeros) = (0, 0);
    for shard in 0..300u64 {
        // Old and new clients alike.
        let old = bounded(cluster.call(
            &STATS_V1,
            &StatsRequestV1 {
                shard: U64::new(shard),
            },
        ))
        .await
        .unwrap();
        assert_eq!(old.keys.get(), shard * 10);
        let new = bounded(cluster.call(&STATS_V2, &request_v2(shard)))
            .await
            .unwrap();
        assert_eq!(new.keys.get(), shard * 10);
        match new.bytes.get() {
            1007 => new_fields += 1,
            0 => zeros += 1,
            other => panic!("unexpected bytes {other}"),
        }
    }
    // Both versions answered new clients.
    assert!(
        new_fields > 0 && zeros > 0,
        "{new_fields} from v2, {zeros} from v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_method_refuses_another_version() {
    let pki = Pki::new();
    let old = serve(&pki, v1_server());
    let client = connect(&pki, &old).await;
    let status = bounded(client.call(&EXACT_V2, &request_v2(1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.was_not_processed());
    assert!(status.message().contains("kv.Store/Exact"), "{status}");
}
