//! Encoding and decoding one List response of 100 entries (about 4 KiB)
//! per kind of body: fixed-layout (a copy; a size check), rkyv (serialize;
//! validate, from an aligned and from an unaligned buffer), protobuf
//! (encode; decode).
//!
//! ```sh
//! cargo bench -p quicall-benches --bench messages
//! ```

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use quicall::rpc::{Proto, Rkyv, encode};
use quicall::{Encode, Msg};
use quicall_benches::structured::{
    self as s, FIXED, FixedListing, LISTING, Listing, PB_LISTING, PbListing,
};

/// `body` at an address 16-aligned (`shift` 0) or not (`shift` 1..16).
fn placed(body: &Bytes, shift: usize) -> Bytes {
    let mut buf = vec![0u8; body.len() + 32];
    let start = (16 - buf.as_ptr() as usize % 16) % 16 + shift;
    buf[start..start + body.len()].copy_from_slice(body);
    Bytes::from(buf).slice(start..start + body.len())
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode List of 100");
    let mut buf = BytesMut::with_capacity(16 << 10);
    group.bench_function("fixed-layout", |b| {
        b.iter(|| {
            buf.clear();
            Encode::<FixedListing>::encode(black_box(&*FIXED), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    group.bench_function("rkyv", |b| {
        b.iter(|| {
            buf.clear();
            Encode::<Rkyv<Listing>>::encode(black_box(&*LISTING), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    group.bench_function("rkyv to_bytes (reference)", |b| {
        b.iter(|| {
            let v = quicall::rkyv::to_bytes::<quicall::rkyv::rancor::Error>(black_box(&*LISTING))
                .unwrap();
            black_box(v.len())
        })
    });
    group.bench_function("protobuf", |b| {
        b.iter(|| {
            buf.clear();
            Encode::<Proto<PbListing>>::encode(black_box(&*PB_LISTING), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    group.finish();
}

fn decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("receive and read List of 100");
    let fixed = placed(&encode::<FixedListing>(&*FIXED).unwrap(), 1);
    group.bench_function("fixed-layout", |b| {
        b.iter(|| {
            let msg = Msg::<FixedListing>::new(black_box(fixed.clone())).unwrap();
            s::digest_fixed(&msg)
        })
    });
    let archive = encode::<Rkyv<Listing>>(&*LISTING).unwrap();
    println!("rkyv body: {} bytes", archive.len());
    for (name, shift) in [
        ("rkyv, aligned (in place)", 0),
        ("rkyv, unaligned (one copy)", 1),
    ] {
        let body = placed(&archive, shift);
        group.bench_function(name, |b| {
            b.iter(|| {
                let msg = Msg::<Rkyv<Listing>>::new(black_box(body.clone())).unwrap();
                s::digest_rkyv(&msg)
            })
        });
    }
    let proto = placed(&encode::<Proto<PbListing>>(&*PB_LISTING).unwrap(), 1);
    println!("protobuf body: {} bytes", proto.len());
    group.bench_function("protobuf", |b| {
        b.iter(|| {
            let msg = Msg::<Proto<PbListing>>::new(black_box(proto.clone())).unwrap();
            s::digest_proto(&msg)
        })
    });
    group.finish();
}

criterion_group!(benches, encoding, decoding);
criterion_main!(benches);
