//! Protobuf messages (prost): for teams with `.proto` messages, field-level
//! evolution, or peers in other languages. Decoded when received.

use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};

use super::{BodyError, Encode, EncodeError, Message, Msg};

/// A protobuf message `T` (a prost message) as a body: `Method<Proto<GetRequest>,
/// Proto<GetResponse>>`. The body is `T`'s standard protobuf encoding, with
/// nothing around it, so that any protobuf library can read and write it.
///
/// A sender passes a `T` or `&T`, encoded straight into the send buffer.
/// A received `Msg<Proto<T>>` dereferences to the decoded `T` (decoded
/// once, when received: a body that does not decode is refused with
/// INVALID_ARGUMENT before the handler runs). Protobuf's own rules govern
/// evolution: fields are numbered, unknown ones skipped, missing ones
/// default; [`Method::exact`](crate::Method::exact) has no effect.
///
/// ```
/// use quicall_rpc::{Msg, Proto};
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Get { #[prost(string, tag = "1")] key: String }
///
/// let body = quicall_rpc::encode::<Proto<Get>>(Get { key: "k".into() }).unwrap();
/// assert_eq!(&body[..], &[0x0a, 1, b'k']);
/// assert_eq!(Msg::<Proto<Get>>::new(body).unwrap().key, "k");
/// ```
pub struct Proto<T>(PhantomData<fn() -> T>);

impl<T> Message for Proto<T>
where
    T: prost::Message + Default + Send + Sync + 'static,
{
    type View = T;
    type Decoded = T;

    fn receive(body: Bytes, _exact: bool) -> Result<(Bytes, T), BodyError> {
        match T::decode(body.clone()) {
            Ok(value) => Ok((body, value)),
            Err(e) => Err(BodyError::new::<T>(
                body.len(),
                format!("it does not decode: {e}"),
            )),
        }
    }

    fn view(msg: &Msg<Self>) -> &T {
        msg.decoded()
    }
}

impl<T> Encode<Proto<T>> for &T
where
    T: prost::Message + Default + Send + Sync + 'static,
{
    fn size_hint(&self) -> usize {
        self.encoded_len()
    }

    fn encode(self, buf: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        self.encode_raw(buf);
        Ok(None)
    }
}

impl<T> Encode<Proto<T>> for T
where
    T: prost::Message + Default + Send + Sync + 'static,
{
    fn size_hint(&self) -> usize {
        Encode::<Proto<T>>::size_hint(&self)
    }

    fn encode(self, buf: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        Encode::<Proto<T>>::encode(&self, buf)
    }
}
