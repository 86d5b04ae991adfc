use collector_tests::TestNode;
use tokio_stream::StreamExt;

#[tokio::test]
async fn health_reports_every_service() {
    let n = TestNode::start().await;
    let mut h = tonic_health::pb::health_client::HealthClient::new(n.clients.channel.clone());
    for s in [
        "",
        "collector.v1.CollectionService",
        "collector.v1.CollectorRegistry",
        "collector.v1.CollectionRepo",
    ] {
        let r = h
            .check(tonic_health::pb::HealthCheckRequest { service: s.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{s}"
        );
    }
}

macro_rules! reflection_test {
    ($name:ident, $v:ident) => {
        #[tokio::test]
        async fn $name() {
            use tonic_reflection::pb::$v::{
                server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse, ServerReflectionRequest,
            };
            let mut n = TestNode::start().await;
            n.clients.register_shop("shop").await;
            let mut client = ServerReflectionClient::new(n.clients.channel.clone());
            let reqs = vec![
                ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) },
                ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::FileContainingSymbol("collector.v1.CollectionService".into())) },
                ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::FileContainingSymbol("shop.Order".into())) },
                ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::FileContainingSymbol("nope.Nothing".into())) },
            ];
            let mut req = tonic::Request::new(tokio_stream::iter(reqs));
            req.metadata_mut().insert("x-collector-namespace", "shop".parse().unwrap());
            let mut stream = client.server_reflection_info(req).await.unwrap().into_inner();
            let mut answers = Vec::new();
            while let Some(r) = stream.next().await {
                answers.push(r.unwrap().message_response.unwrap());
            }
            assert_eq!(answers.len(), 4);
            let MessageResponse::ListServicesResponse(list) = &answers[0] else { panic!("{:?}", answers[0]) };
            let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
            for want in collector::node::SERVICES {
                assert!(names.contains(want), "{want} missing from {names:?}");
            }
            assert!(matches!(&answers[1], MessageResponse::FileDescriptorResponse(f) if !f.file_descriptor_proto.is_empty()));
            assert!(matches!(&answers[2], MessageResponse::FileDescriptorResponse(f) if !f.file_descriptor_proto.is_empty()), "namespace types resolve");
            assert!(matches!(&answers[3], MessageResponse::ErrorResponse(e) if e.error_code == 5));
        }
    };
}

reflection_test!(
    reflection_v1_lists_services_and_resolves_namespace_types,
    v1
);
reflection_test!(
    reflection_v1alpha_lists_services_and_resolves_namespace_types,
    v1alpha
);

/// Bytes that are no protobuf message: field 1, length-delimited, claims 5
/// bytes and has one.
const NOT_PROTOBUF: &[u8] = &[0x0a, 0x05, 0x01];

#[tokio::test]
async fn an_undecodable_request_is_invalid_argument_on_every_built_in_method() {
    let n = TestNode::start().await;
    let pool = collector::proto::api_pool();
    let mut checked = 0;
    for s in pool
        .services()
        .filter(|s| s.package_name() == "collector.v1")
    {
        for m in s.methods() {
            let mut grpc = tonic::client::Grpc::new(n.clients.channel.clone());
            grpc.ready().await.unwrap();
            let path = format!("/{}/{}", s.full_name(), m.name()).parse().unwrap();
            // As a member, so the peer-only methods get as far as decoding.
            let mut req = tonic::Request::new(prost::bytes::Bytes::from_static(NOT_PROTOBUF));
            collector_tests::as_member(&mut req);
            let e = grpc
                .unary(req, path, collector::api::dynamic::BytesCodec)
                .await
                .unwrap_err();
            assert_eq!(
                e.code(),
                tonic::Code::InvalidArgument,
                "{}/{}: {e:?}",
                s.full_name(),
                m.name()
            );
            assert!(e.message().contains("does not decode"), "{e:?}");
            checked += 1;
        }
    }
    assert!(checked > 25, "only {checked} methods");
}
