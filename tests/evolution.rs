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
    // In turn, so that both versions answer whatever their latency (three
    // servers and two calls a round: every server takes both kinds).
    let options = ClusterOptions {
        policy: quicall::Policy::RoundRobin,
        ..ClusterOptions::default()
    };
    let cluster = cluster_of(&pki, &refs, options).await;
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

/// The same rolling upgrade with rkyv messages, declared as services: v2
/// appends an `Option` argument and two fields to the response (an
/// `Option` and a number), as the rules for rkyv ask.
mod archived {
    use quicall::rkyv::{Archive, Archived, Serialize};
    use quicall::{Context, Status};

    #[derive(Archive, Serialize)]
    #[rkyv(crate = quicall::rkyv)]
    pub struct StatsV1 {
        pub keys: u64,
        pub owner: String,
    }

    #[derive(Archive, Serialize)]
    #[rkyv(crate = quicall::rkyv)]
    pub struct StatsV2 {
        pub keys: u64,
        pub owner: String,
        /// New: what the server read of the request's new argument.
        pub detail_seen: Option<String>,
        /// New: a v2 client reads 0 from a v1 server.
        pub bytes: u64,
    }

    #[quicall::service(package = "kv", name = "Store")]
    pub trait StoreV1 {
        #[quicall(idempotent)]
        async fn stats(&self, shard: u64) -> StatsV1;
    }

    #[quicall::service(package = "kv", name = "Store")]
    pub trait StoreV2 {
        #[quicall(idempotent)]
        async fn stats(&self, shard: u64, detail: Option<String>) -> StatsV2;
    }

    pub struct V1;
    pub struct V2;

    impl StoreV1 for V1 {
        async fn stats(&self, _: Context, shard: u64) -> Result<StatsV1, Status> {
            Ok(StatsV1 {
                keys: shard * 10,
                owner: format!("v1 server, shard {shard}"),
            })
        }
    }

    impl StoreV2 for V2 {
        async fn stats(
            &self,
            _: Context,
            shard: u64,
            detail: &Archived<Option<String>>,
        ) -> Result<StatsV2, Status> {
            Ok(StatsV2 {
                keys: shard * 10,
                owner: format!("v2 server, shard {shard}"),
                detail_seen: detail.as_ref().map(|d| d.to_string()),
                bytes: 1000 + shard,
            })
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rkyv_services_of_both_versions_call_each_other() {
    use archived::{store_v1, store_v2};
    assert_eq!(store_v1::STATS.id(), store_v2::STATS.id());
    let pki = Pki::new();
    let old = serve(&pki, store_v1::router(archived::V1).unwrap());
    let new = serve(&pki, store_v2::router(archived::V2).unwrap());

    // v1 client, v2 server: the server reads the missing argument as None;
    // the client reads its fields and ignores the new ones.
    let client = store_v1::Client::new(connect(&pki, &new).await);
    let reply = bounded(client.stats(4)).await.unwrap();
    assert_eq!(
        (reply.keys.to_native(), reply.owner.as_str()),
        (40, "v2 server, shard 4")
    );
    let as_v2 = store_v2::Client::new(client.caller().clone());
    let seen = bounded(as_v2.stats(4, None)).await.unwrap();
    assert!(seen.detail_seen.is_none());

    // v2 client, v1 server: the server ignores the new argument; the
    // client reads the new fields as None and 0.
    let client = store_v2::Client::new(connect(&pki, &old).await);
    let reply = bounded(client.stats(5, Some("all".into()))).await.unwrap();
    assert_eq!(reply.keys.to_native(), 50);
    assert_eq!(reply.owner.as_str(), "v1 server, shard 5");
    assert!(reply.detail_seen.is_none());
    assert_eq!(reply.bytes.to_native(), 0);

    // v2 with v2: the new fields travel.
    let client = store_v2::Client::new(connect(&pki, &new).await);
    let reply = bounded(client.stats(6, Some("all".into()))).await.unwrap();
    assert_eq!(reply.detail_seen.as_ref().map(|d| d.as_str()), Some("all"));
    assert_eq!(reply.bytes.to_native(), 1006);

    // Through a cluster of both versions, old and new clients alike (in
    // turn, so that both versions answer).
    let options = ClusterOptions {
        policy: quicall::Policy::RoundRobin,
        ..ClusterOptions::default()
    };
    let old_client = store_v1::Client::new(cluster_of(&pki, &[&old, &new], options.clone()).await);
    let new_client = store_v2::Client::new(cluster_of(&pki, &[&old, &new], options).await);
    let (mut from_v1, mut from_v2, mut old_from_v2) = (0, 0, 0);
    for shard in 0..200 {
        let reply = bounded(old_client.stats(shard)).await.unwrap();
        assert_eq!(reply.keys.to_native(), shard * 10);
        old_from_v2 += usize::from(reply.owner.starts_with("v2"));
        let reply = bounded(new_client.stats(shard, Some("x".into())))
            .await
            .unwrap();
        match reply.bytes.to_native() {
            0 => from_v1 += 1,
            bytes => {
                assert_eq!(bytes, 1000 + shard);
                from_v2 += 1;
            }
        }
    }
    assert!(
        from_v1 > 0 && from_v2 > 0,
        "{from_v1} from v1, {from_v2} from v2"
    );
    assert!(
        old_from_v2 > 0 && old_from_v2 < 200,
        "{old_from_v2} of 200 from v2"
    );
}

/// And with protobuf messages: fields numbered, added in v2.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatsRequestV1 {
        #[prost(uint64, tag = "1")]
        pub shard: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatsRequestV2 {
        #[prost(uint64, tag = "1")]
        pub shard: u64,
        #[prost(string, optional, tag = "2")]
        pub detail: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatsV1 {
        #[prost(uint64, tag = "1")]
        pub keys: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatsV2 {
        #[prost(uint64, tag = "1")]
        pub keys: u64,
        #[prost(string, optional, tag = "2")]
        pub detail_seen: Option<String>,
        #[prost(uint64, tag = "3")]
        pub bytes: u64,
    }
}

use quicall::rpc::Proto;

const PROTO_V1: Method<Proto<proto::StatsRequestV1>, Proto<proto::StatsV1>> =
    Method::new("kv.Proto/Stats").idempotent();
const PROTO_V2: Method<Proto<proto::StatsRequestV2>, Proto<proto::StatsV2>> =
    Method::new("kv.Proto/Stats").idempotent();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_messages_of_both_versions_call_each_other() {
    let pki = Pki::new();
    let old = Router::new()
        .route(
            &PROTO_V1,
            |_ctx, req: Msg<Proto<proto::StatsRequestV1>>| async move {
                Ok::<_, Status>(proto::StatsV1 {
                    keys: req.shard * 10,
                })
            },
        )
        .unwrap();
    let new = Router::new()
        .route(
            &PROTO_V2,
            |_ctx, req: Msg<Proto<proto::StatsRequestV2>>| async move {
                Ok::<_, Status>(proto::StatsV2 {
                    keys: req.shard * 10,
                    detail_seen: req.detail.clone(),
                    bytes: 1000 + req.shard,
                })
            },
        )
        .unwrap();
    let (old, new) = (serve(&pki, old), serve(&pki, new));

    let client = connect(&pki, &new).await;
    let reply = bounded(client.call(&PROTO_V1, proto::StatsRequestV1 { shard: 4 }))
        .await
        .unwrap();
    assert_eq!(reply.keys, 40);

    let client = connect(&pki, &old).await;
    let request = proto::StatsRequestV2 {
        shard: 5,
        detail: Some("all".into()),
    };
    let reply = bounded(client.call(&PROTO_V2, &request)).await.unwrap();
    assert_eq!(
        (reply.keys, reply.detail_seen.as_deref(), reply.bytes),
        (50, None, 0)
    );

    let client = connect(&pki, &new).await;
    let reply = bounded(client.call(&PROTO_V2, &request)).await.unwrap();
    assert_eq!(
        (reply.keys, reply.detail_seen.as_deref(), reply.bytes),
        (50, Some("all"), 1005)
    );

    // Bytes that are not protobuf never reach the handler.
    const RAW: Method<[u8], [u8]> = Method::new("kv.Proto/Stats");
    let status = bounded(client.call(&RAW, vec![0x0a, 0xff, 0xff]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.was_not_processed());
}
