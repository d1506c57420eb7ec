//! The protobuf codec of every kcred and CSI service: tonic's, with small
//! first buffers for the messages of long-lived streams.
//!
//! tonic allocates an encode and a decode buffer for every call up front
//! (8 KiB each) and keeps them as long as the call lives. A stream per
//! node (heartbeats, updates) would hold 16 KiB for messages of a few
//! dozen bytes: 160 MiB at 10,000 nodes. Their messages start with
//! [`STREAM_BUFFER`] (a buffer grows as a message needs); every other
//! call keeps tonic's 8 KiB, which a bundle or a batch fills without
//! growing it (1 KiB for every call made the scale bench's fetch phase
//! take 5.4 and 7.4 s of controller CPU against 4.9 s, two runs each).

use std::any::TypeId;
use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::kcred::v1::{HeartbeatRequest, HeartbeatResponse, VolumeUpdate, WatchUpdatesRequest};

/// The first buffer of a long-lived stream's messages.
pub const STREAM_BUFFER: usize = 1024;
/// tonic's first buffer, for every other message.
pub const CALL_BUFFER: usize = 8 * 1024;
/// tonic's default: how much a stream batches before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The first buffer for messages of type `M`.
pub fn first_buffer<M: 'static>() -> usize {
    let m = TypeId::of::<M>();
    let streamed = [
        TypeId::of::<HeartbeatRequest>(),
        TypeId::of::<HeartbeatResponse>(),
        TypeId::of::<VolumeUpdate>(),
        TypeId::of::<WatchUpdatesRequest>(),
    ];
    if streamed.contains(&m) {
        STREAM_BUFFER
    } else {
        CALL_BUFFER
    }
}

fn settings<M: 'static>() -> BufferSettings {
    BufferSettings::new(first_buffer::<M>(), YIELD_THRESHOLD)
}

/// [`ProstCodec`] with [`first_buffer`]-sized first buffers.
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
        ProstCodec::<T, U>::raw_encoder(settings::<T>())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings::<U>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kcred::v1::{Bundle, FetchBundleRequest};

    #[test]
    fn stream_messages_start_small_and_the_rest_as_tonic_does() {
        assert_eq!(first_buffer::<HeartbeatRequest>(), STREAM_BUFFER);
        assert_eq!(first_buffer::<VolumeUpdate>(), STREAM_BUFFER);
        assert_eq!(first_buffer::<Bundle>(), CALL_BUFFER);
        assert_eq!(first_buffer::<FetchBundleRequest>(), CALL_BUFFER);
    }
}
