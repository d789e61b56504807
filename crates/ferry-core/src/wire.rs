//! What crosses the network ([`ferry_proto::wire`]), and reading and writing its frames on
//! async streams. The size cap is checked before the body is allocated.

pub use ferry_proto::wire::*;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Writes one frame.
pub async fn write_frame<W, T>(w: &mut W, value: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    w.write_all(&encode_frame(value)?).await?;
    Ok(())
}

/// Reads one frame, refusing oversized ones before allocating.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut header = [0u8; FRAME_HEADER_LEN];
    r.read_exact(&mut header).await?;
    let mut body = vec![0u8; frame_len(header)?];
    r.read_exact(&mut body).await?;
    decode_body(&body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_frame_is_refused_before_reading_its_body() {
        let mut bytes = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 8]);
        let r: Result<ChatRequest, _> = read_frame(&mut bytes.as_slice()).await;
        assert!(matches!(r, Err(FrameError::TooLarge(n)) if n == MAX_FRAME + 1));
    }

    #[tokio::test]
    async fn a_stream_that_ends_early_is_an_io_error() {
        let frame = encode_frame(&ChatRequest::Ping).unwrap();
        let r: Result<ChatRequest, _> = read_frame(&mut &frame[..frame.len() - 1]).await;
        assert!(matches!(r, Err(FrameError::Io(_))));
    }

    #[tokio::test]
    async fn frames_roundtrip_on_a_stream() {
        let mut buf = Vec::new();
        let req = ChatRequest::Announce(WireAddr {
            relay: Some("https://relay.example".into()),
            direct: vec!["127.0.0.1:4000".parse().unwrap()],
        });
        write_frame(&mut buf, &req).await.unwrap();
        write_frame(&mut buf, &ChatRequest::Ping).await.unwrap();
        let mut r = buf.as_slice();
        assert_eq!(read_frame::<_, ChatRequest>(&mut r).await.unwrap(), req);
        assert_eq!(
            read_frame::<_, ChatRequest>(&mut r).await.unwrap(),
            ChatRequest::Ping
        );
    }
}
