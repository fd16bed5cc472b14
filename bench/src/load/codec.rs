//! A tonic codec for bytes that are already protobuf: the encoder copies the pre-encoded
//! request into tonic's frame buffer (no prost work on the timed path) and the decoder keeps
//! the response's bytes as they are, so the caller decides what, if anything, to decode and
//! when. The same codec calls any unary method of any gRPC server.

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends and receives encoded messages as [`Bytes`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost::Message as _;
    use tonic::client::Grpc;
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::{Endpoint, Server};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    use super::*;

    /// A real tonic health server on 127.0.0.1:0 answers bytes sent through [`RawCodec`] with
    /// bytes that decode as its response; an unknown method comes back as `UNIMPLEMENTED`.
    #[tokio::test]
    async fn raw_codec_round_trips_through_a_real_server() {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("probe", tonic_health::ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .unwrap();
        let mut grpc = Grpc::new(channel);

        let body = Bytes::from(
            HealthCheckRequest {
                service: "probe".to_owned(),
            }
            .encode_to_vec(),
        );
        grpc.ready().await.unwrap();
        let answer = grpc
            .unary(
                tonic::Request::new(body),
                PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
                RawCodec,
            )
            .await
            .unwrap()
            .into_inner();
        let decoded = HealthCheckResponse::decode(answer).unwrap();
        assert_eq!(decoded.status, ServingStatus::Serving as i32);

        // The empty message (the ceiling's request) is valid too: the server's overall status.
        grpc.ready().await.unwrap();
        let answer = grpc
            .unary(
                tonic::Request::new(Bytes::new()),
                PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
                RawCodec,
            )
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            HealthCheckResponse::decode(answer).unwrap().status,
            ServingStatus::Serving as i32
        );

        grpc.ready().await.unwrap();
        let status = grpc
            .unary(
                tonic::Request::new(Bytes::new()),
                PathAndQuery::from_static("/grpc.health.v1.Health/NoSuchMethod"),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        server.abort();
    }
}
