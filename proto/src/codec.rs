//! The protobuf codec of every kcred and CSI service: tonic's, with small
//! first buffers for the messages of long-lived streams, and the repeated
//! fields of requests counted on the wire before they are decoded.
//!
//! tonic allocates an encode and a decode buffer for every call up front
//! (8 KiB each) and keeps them as long as the call lives. A stream per
//! node (heartbeats, updates) would hold 16 KiB for messages of a few
//! dozen bytes: 160 MiB at 10,000 nodes. Their messages start with
//! [`STREAM_BUFFER`] (a buffer grows as a message needs); every other
//! call keeps tonic's 8 KiB, which a bundle or a batch fills without
//! growing it (1 KiB for every call made the scale bench's fetch phase
//! take 5.4 and 7.4 s of controller CPU against 4.9 s, two runs each).
//!
//! A message is decoded before its service sees the call, so before the
//! caller is authenticated; the entries of a repeated field cost far more
//! decoded than sent ([`crate::limits`]). The decoder counts them first
//! and refuses a message over its limit with the services' own refusal.

use std::any::TypeId;
use std::marker::PhantomData;

use prost::Message;
use prost::bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::kcred::v1::{
    FetchBundlesRequest, HeartbeatRequest, HeartbeatResponse, Reason, VolumeUpdate,
    WatchUpdatesRequest,
};
use crate::limits;
use crate::reason::status;

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
    type Decoder = Counted<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings::<T>())
    }

    fn decoder(&mut self) -> Self::Decoder {
        Counted(ProstCodec::<T, U>::raw_decoder(settings::<U>()))
    }
}

/// A repeated field's number and what refuses too many of its entries.
type Bound = (u32, fn(usize) -> Option<String>);

/// The bounded repeated fields of messages of type `M`.
fn bounds<M: 'static>() -> Option<Bound> {
    let m = TypeId::of::<M>();
    if m == TypeId::of::<FetchBundlesRequest>() {
        Some((2, limits::batch_too_large))
    } else if m == TypeId::of::<HeartbeatRequest>() {
        Some((2, limits::heartbeat_too_large))
    } else {
        None
    }
}

/// [`ProstDecoder`], counting a message's bounded repeated field first.
#[derive(Debug)]
pub struct Counted<U>(ProstDecoder<U>);

impl<U: Message + Default + 'static> Decoder for Counted<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if let Some((field, refusal)) = bounds::<U>() {
            // A view of one `BytesMut` holding exactly the message: its
            // chunk is the whole message.
            let n = count_field(src.chunk(), field)?;
            if let Some(why) = refusal(n) {
                return Err(status(Reason::RequestInvalid, why));
            }
        }
        self.0.decode(src)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// How many times field `field` occurs at the top level of the encoded
/// message `bytes`, reading keys and lengths only.
fn count_field(mut bytes: &[u8], field: u32) -> Result<usize, Status> {
    let malformed = |what: &dyn std::fmt::Display| {
        status(
            Reason::RequestInvalid,
            format!("the request is not a valid message: {what}"),
        )
    };
    let mut n = 0;
    while bytes.has_remaining() {
        let (tag, wire_type) = decode_key(&mut bytes).map_err(|e| malformed(&e))?;
        n += usize::from(tag == field);
        let skip = match wire_type {
            WireType::Varint => {
                decode_varint(&mut bytes).map_err(|e| malformed(&e))?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => decode_varint(&mut bytes).map_err(|e| malformed(&e))?,
            // proto3 has no groups: no kcred or CSI message holds one.
            WireType::StartGroup | WireType::EndGroup => {
                return Err(malformed(&"it holds a group"));
            }
        };
        let skip = usize::try_from(skip)
            .ok()
            .filter(|&s| s <= bytes.len())
            .ok_or_else(|| malformed(&format!("field {tag} runs past its end")))?;
        bytes.advance(skip);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kcred::v1::{Bundle, FetchBundleRequest, VolumeRequest};

    fn batch(volumes: usize) -> Vec<u8> {
        FetchBundlesRequest {
            node_name: "node-a".into(),
            volumes: vec![VolumeRequest::default(); volumes],
        }
        .encode_to_vec()
    }

    #[test]
    fn a_batch_is_counted_before_it_is_decoded() {
        assert_eq!(count_field(&batch(limits::MAX_BATCH), 2).ok(), Some(256));
        // 2 bytes an empty entry on the wire (its key, a zero length): 2
        // million of them fit in 4 MiB, and would take 300 MiB decoded.
        let mut huge = batch(0);
        for _ in 0..2_000_000 {
            huge.extend_from_slice(&[0x12, 0x00]);
        }
        assert!(huge.len() < 4 * 1024 * 1024, "{}", huge.len());
        assert_eq!(count_field(&huge, 2).ok(), Some(2_000_000));
        assert_eq!(count_field(&huge, 1).ok(), Some(1));
    }

    #[test]
    fn too_many_entries_get_the_services_own_refusal() {
        let (field, refusal) = bounds::<FetchBundlesRequest>().expect("bounded");
        let n = count_field(&batch(257), field).expect("counted");
        assert_eq!(
            refusal(n).as_deref(),
            Some("volumes: 257 volumes in one call, at most 256")
        );
        let (field, refusal) = bounds::<HeartbeatRequest>().expect("bounded");
        let beat = HeartbeatRequest {
            node_name: "node-a".into(),
            volume_ids: vec![String::new(); limits::MAX_HELD + 1],
        };
        let n = count_field(&beat.encode_to_vec(), field).expect("counted");
        assert_eq!(n, 10_001);
        assert!(refusal(n).is_some_and(|why| why.contains("at most 10000")));
        assert!(refusal(limits::MAX_HELD).is_none());
        assert!(bounds::<FetchBundleRequest>().is_none());
    }

    #[test]
    fn a_malformed_message_is_refused_as_invalid() {
        for (bytes, says) in [
            // node_name, 5 bytes long, one sent.
            (&[0x0a, 0x05, b'a'][..], "field 1 runs past its end"),
            (&batch(3)[..batch(3).len() - 1], "invalid varint"),
            (&[0x0b][..], "group"),
            (&[0x80][..], "not a valid message"),
        ] {
            let err = count_field(bytes, 2).expect_err("malformed");
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert_eq!(crate::reason::reason_of(&err), Some(Reason::RequestInvalid));
            assert!(err.message().contains(says), "{says}: {err:?}");
        }
    }

    #[test]
    fn stream_messages_start_small_and_the_rest_as_tonic_does() {
        assert_eq!(first_buffer::<HeartbeatRequest>(), STREAM_BUFFER);
        assert_eq!(first_buffer::<VolumeUpdate>(), STREAM_BUFFER);
        assert_eq!(first_buffer::<Bundle>(), CALL_BUFFER);
        assert_eq!(first_buffer::<FetchBundleRequest>(), CALL_BUFFER);
    }
}
