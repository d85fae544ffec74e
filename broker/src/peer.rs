//! Requests this broker sends to another broker as a client: a replica fetcher's
//! Fetch and OffsetForLeaderEpoch, a transaction coordinator's WriteTxnMarkers. One
//! request at a time per connection, framed as Kafka frames them.

use std::io;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A peer that does not answer in this long is treated as gone (the connection is
/// dropped and made again); Kafka's `replica.socket.timeout.ms` is 30 s, but a replica
/// fetch waits at most 500 ms at the leader, so a few seconds are plenty.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response frame accepted: a full replica fetch (16 MiB) plus headers.
const RESPONSE_FRAME_MAX: usize = (16 << 20) + (1 << 20);

/// A connection to another broker, for requests this broker sends as a client.
pub(crate) struct Peer {
    pub address: (String, u16),
    stream: TcpStream,
    correlation_id: i32,
    client_id: StrBytes,
}

impl Peer {
    pub async fn connect(address: (String, u16), client_id: String) -> io::Result<Peer> {
        let connect = TcpStream::connect((address.0.as_str(), address.1));
        let stream = tokio::time::timeout(PEER_TIMEOUT, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Peer {
            address,
            stream,
            correlation_id: 0,
            client_id: StrBytes::from_string(client_id),
        })
    }

    /// Sends one request and reads its response.
    pub async fn call<R: Request>(&mut self, request: &R, version: i16) -> io::Result<R::Response> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .map_err(io::Error::other)?;
        request.encode(&mut body, version).map_err(io::Error::other)?;
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let len = self.stream.read_i32().await?;
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= RESPONSE_FRAME_MAX)
                .ok_or_else(|| io::Error::other(format!("response frame of {len} bytes")))?;
            // Filled by the reads themselves: no zeroing of a buffer of up to 10 MiB.
            let mut buf = BytesMut::with_capacity(len);
            while buf.len() < len {
                if self.stream.read_buf(&mut buf).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection",
                    ));
                }
            }
            Ok::<Bytes, io::Error>(buf.freeze())
        };
        let mut response = tokio::time::timeout(PEER_TIMEOUT, exchange)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the peer did not answer"))??;
        let header =
            ResponseHeader::decode(&mut response, R::Response::header_version(version)).map_err(io::Error::other)?;
        if header.correlation_id != self.correlation_id {
            return Err(io::Error::other("response to another request"));
        }
        let decoded = R::Response::decode(&mut response, version).map_err(io::Error::other)?;
        let _ = response.remaining();
        Ok(decoded)
    }
}
