//! Header encoding and decoding, and reading a message in place.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use quicall::demo::AddRequest;
use quicall::wire::{RequestHead, ResponseFlags, ResponseHead, decode_request, decode_response};
use quicall::{Bytes, Msg};

fn headers(c: &mut Criterion) {
    let request = RequestHead {
        method_id: quicall::method_id("calc.Calc/Add"),
        body_len: 16,
        deadline: Some(Duration::from_millis(250)),
        metadata_len: None,
        stream: false,
    };
    let response = ResponseHead {
        status: 0,
        flags: ResponseFlags::NONE,
        body_len: 8,
    };
    let request_bytes = request.encode();
    let response_bytes = response.encode();
    let body = Bytes::from(vec![1u8; 16]);

    let mut group = c.benchmark_group("wire");
    group.bench_function("encode_request_header", |b| {
        b.iter(|| black_box(black_box(&request).encode()))
    });
    group.bench_function("decode_request_header", |b| {
        b.iter(|| decode_request(black_box(&request_bytes), 4 << 20).unwrap())
    });
    group.bench_function("encode_response_header", |b| {
        b.iter(|| black_box(black_box(&response).encode()))
    });
    group.bench_function("decode_response_header", |b| {
        b.iter(|| decode_response(black_box(&response_bytes), 16 << 20).unwrap())
    });
    group.bench_function("view_add_request", |b| {
        b.iter(|| {
            let msg = Msg::<AddRequest>::new(black_box(body.clone())).unwrap();
            black_box(msg.a.get() + msg.b.get())
        })
    });
    group.finish();

    // Method dispatch: the router lookup of every call, among 3 and 1,000 methods.
    let mut group = c.benchmark_group("dispatch");
    let small = quicall::demo::router();
    let id = quicall::demo::ADD.id();
    group.bench_function("lookup_3_methods", |b| {
        b.iter(|| small.method_name(black_box(id)))
    });
    let mut large = quicall::demo::router();
    let names: Vec<&'static str> = (0..997)
        .map(|i| &*Box::leak(format!("bench.Many/M{i}").into_boxed_str()))
        .collect();
    for name in names {
        let method: quicall::Method<[u8], [u8]> = quicall::Method::new(name);
        large = large
            .route(
                &method,
                |_ctx, msg| async move { Ok::<_, quicall::Status>(msg) },
            )
            .unwrap();
    }
    group.bench_function("lookup_1000_methods", |b| {
        b.iter(|| large.method_name(black_box(id)))
    });
    group.bench_function("lookup_unknown", |b| {
        b.iter(|| large.method_name(black_box(0xdead_beef)))
    });
    group.finish();
}

criterion_group!(benches, headers);
criterion_main!(benches);
