//! The codec of the built-in services: prost's, except that a message that
//! does not decode is INVALID_ARGUMENT (the caller sent bad bytes) instead of
//! tonic-prost's INTERNAL, the same code registered methods give. The
//! generated servers and clients use it (`codec_path` in build.rs).

use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// prost encoding; decode errors are INVALID_ARGUMENT naming the message.
#[derive(Debug, Clone)]
pub struct ProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        ProstCodec(PhantomData)
    }
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

/// Decodes one prost message; a malformed one is INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct ProstDecoder<U>(PhantomData<U>);

impl<U: prost::Message + Default> Decoder for ProstDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            let name = std::any::type_name::<U>().rsplit("::").next().unwrap_or("");
            Status::invalid_argument(format!(
                "the message does not decode as collector.v1.{name}: {e}"
            ))
        })
    }
}
