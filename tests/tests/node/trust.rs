//! A mesh with a cluster secret: members prove it on every call they make
//! to each other, so forwards, handler fetches, clones and fetches work,
//! while a client without the proof cannot call the peer-only methods or
//! pose as a forward.

use crate::mesh::{all_up, msg, n_of, register_proto, wait_for, wait_for_collection};
use collector::mesh::seal::ClusterSecret;
use collector::proto::{self, collective_dispatcher_client::CollectiveDispatcherClient};
use collector_tests::{Order, TestNode};
use std::time::Duration;
use tonic::Code;

fn secret() -> Option<ClusterSecret> {
    Some(ClusterSecret(b"the mesh's shared secret, 32 b.".to_vec()))
}

fn node_id(n: &TestNode) -> String {
    n.handle.as_ref().unwrap().node_id.clone()
}

async fn run(
    s: Result<tonic::Response<tonic::Streaming<proto::TransferProgress>>, tonic::Status>,
) -> Result<(), tonic::Status> {
    let mut s = s?.into_inner();
    while s.message().await?.is_some() {}
    Ok(())
}

#[tokio::test]
async fn members_prove_the_secret_on_peer_calls_and_clients_cannot_pose_as_members() {
    let mut a = TestNode::start_with(|c| c.cluster_secret = secret()).await;
    let a_addr = a.handle.as_ref().unwrap().addr;
    let mut b = TestNode::start_with(|c| {
        c.cluster_secret = secret();
        c.join = vec![a_addr.to_string()];
    })
    .await;
    for c in [&a.clients, &b.clients] {
        wait_for(c, "both alive", Duration::from_secs(10), |ps| all_up(ps, 2)).await;
    }
    let (a_id, b_id) = (node_id(&a), node_id(&b));

    // A holds orders and the counter handler; B holds counters.
    a.clients.register_shop("shop").await;
    a.clients.create_orders("shop", "orders", &[]).await;
    a.clients
        .put("shop", "orders", "o1", &Order::new("lamp", 2))
        .await
        .unwrap();
    register_proto(&mut a.clients).await;
    a.clients
        .registry
        .register_service(proto::RegisterServiceRequest {
            namespace: "shop".into(),
            service: "t.Counter".into(),
            component: collector_tests::guest("counter"),
            grants: vec![proto::Grant {
                collection: "counters".into(),
                read_only: false,
            }],
            limits: None,
        })
        .await
        .unwrap();
    register_proto(&mut b.clients).await;
    b.clients
        .repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "shop".into(),
            name: "counters".into(),
            message_type: "t.Msg".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_for_collection(&a.clients, "counters").await;
    wait_for_collection(&b.clients, "orders").await;
    wait_for(
        &b.clients,
        "B sees A's handler",
        Duration::from_secs(10),
        |ps| {
            ps.iter()
                .any(|p| p.handlers.iter().any(|h| h.service == "t.Counter"))
        },
    )
    .await;

    // A forward (B → A), a dispatch that makes B fetch the handler from A,
    // a clone pushed to B and a fetch pulled from A: every kind of peer call.
    let got = b
        .clients
        .records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: "o1".into(),
            include_json: false,
        })
        .await
        .expect("a forwarded Get");
    assert_eq!(got.into_inner().id, "o1");
    let out = CollectiveDispatcherClient::new(a.clients.channel.clone())
        .dispatch(proto::DispatchRequest {
            namespace: "shop".into(),
            service: "t.Counter".into(),
            method: "Incr".into(),
            input: Some(msg("visits", 0)),
            collection: "counters".into(),
            ..Default::default()
        })
        .await
        .expect("a dispatch run on B with the handler fetched from A")
        .into_inner();
    assert_eq!(n_of(out.output), 1);
    let mut repo = a.clients.repo.clone();
    run(proto::collection_repo_client::CollectionRepoClient::clone(
        &mut repo,
        proto::CloneRequest {
            namespace: "shop".into(),
            name: "orders".into(),
            dest_name: "orders_b".into(),
            dest_node: b_id.clone(),
            ..Default::default()
        },
    )
    .await)
    .await
    .expect("a clone pushed to B");
    run(b
        .clients
        .repo
        .fetch(proto::FetchRequest {
            source_node: a_id.clone(),
            namespace: "shop".into(),
            name: "orders".into(),
            dest_name: "fetched".into(),
            ..Default::default()
        })
        .await)
    .await
    .expect("a fetch pulled from A");
    assert_eq!(b.clients.count("shop", "fetched").await, 1);

    // A client cannot call the peer-only methods, with no proof or a forged one.
    for proof in [None, Some("1780000000000.00112233445566778899aabbccddeeff")] {
        let mut req = tonic::Request::new(proto::PullCollectionRequest {
            namespace: "shop".into(),
            name: "orders".into(),
            ..Default::default()
        });
        if let Some(p) = proof {
            req.metadata_mut()
                .insert("x-collector-peer", p.parse().unwrap());
        }
        let e = a
            .clients
            .repo
            .clone()
            .pull_collection(req)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let e = CollectiveDispatcherClient::new(a.clients.channel.clone())
            .fetch_component(proto::FetchComponentRequest {
                namespace: "shop".into(),
                service: "t.Counter".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    }

    // Nor pose as a forward: B ignores a client's hop count and forwards
    // the Get to the owner (it would answer NOT_FOUND itself otherwise).
    let mut req = tonic::Request::new(proto::GetRequest {
        namespace: "shop".into(),
        collection: "orders".into(),
        id: "o1".into(),
        include_json: false,
    });
    req.metadata_mut()
        .insert("x-collector-hop", "1".parse().unwrap());
    let got = b.clients.records.get(req).await.expect("forwarded anyway");
    assert_eq!(got.into_inner().id, "o1");
}
