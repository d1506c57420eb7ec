//! The protobuf codec of every kcred and CSI service, with small first
//! buffers.
//!
//! tonic allocates an encode and a decode buffer for every call up front
//! (8 KiB each by default) and keeps them as long as the call lives. A
//! long-lived stream per node (heartbeats, updates) would hold 16 KiB for
//! messages of a few dozen bytes: 160 MiB at 10,000 nodes. kcred's
//! messages are small except bundles and batches, which grow the buffer in
//! steps of [`FIRST_BUFFER`] as tonic does for any message.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Each call's first encode and decode buffer.
pub const FIRST_BUFFER: usize = 1024;
/// tonic's default: how much a stream batches before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(FIRST_BUFFER, YIELD_THRESHOLD)
}

/// [`ProstCodec`] with [`FIRST_BUFFER`]-sized first buffers.
#[derive(Debug, Clone, Copy)]
pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        SmallBuffers(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
