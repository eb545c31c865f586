use std::net::Ipv4Addr;

use hostport_api::{ExternalPortPolicy, RouterProtocol};

use super::*;
use crate::router::client::recording::RecordingRouter;
use crate::router::wanted::Want;

fn want(claim: &str, port: u16) -> Want {
    Want {
        owner: Owner::Claim {
            namespace: "games".into(),
            name: claim.into(),
        },
        request: MapRequest {
            gateway: Ipv4Addr::new(198, 51, 100, 1).into(),
            client: Ipv4Addr::new(198, 51, 100, 2).into(),
            protocol: Protocol::Udp,
            internal_port: port,
            external_port: port,
            policy: ExternalPortPolicy::Same,
            method: RouterProtocol::Natpmp,
            lifetime_seconds: 100,
            description: String::new(),
        },
    }
}

fn wanted(wants: &[Want]) -> WantedMappings {
    let mut wanted = WantedMappings::default();
    for w in wants {
        wanted.mappings.insert(
            (
                hostport_api::IpFamily::Ipv4,
                w.request.protocol,
                w.request.internal_port,
            ),
            w.clone(),
        );
    }
    wanted
}

fn table() -> Table<RecordingRouter> {
    Table::new(
        RecordingRouter::new(Ipv4Addr::new(203, 0, 113, 1)).granting(Duration::from_secs(100)),
    )
}

#[tokio::test]
async fn maps_what_is_missing_renews_at_half_the_lifetime_and_removes_what_is_gone() {
    let mut table = table();
    let start = Instant::now();
    let both = wanted(&[want("a", 7000), want("b", 7001)]);
    let pass = table.reconcile(&both, start).await;
    assert_eq!((pass.mapped, table.held()), (2, 2));
    assert_eq!(table.router().take_calls(), ["map 7000", "map 7001"]);
    // Repeating the pass asks nothing.
    table
        .reconcile(&both, start + Duration::from_secs(10))
        .await;
    assert!(table.router().take_calls().is_empty());
    assert_eq!(table.next_due(), Some(start + Duration::from_secs(50)));
    let pass = table
        .reconcile(&both, start + Duration::from_secs(50))
        .await;
    assert_eq!(pass.renewed, 2);
    assert_eq!(table.router().take_calls(), ["renew 7000", "renew 7001"]);
    let pass = table
        .reconcile(&wanted(&[want("b", 7001)]), start + Duration::from_secs(51))
        .await;
    assert_eq!(pass.removed, 1);
    assert_eq!(table.router().take_calls(), ["unmap 7000"]);
    let reports = table.reports(&[]);
    assert_eq!(reports.len(), 1);
    assert_eq!(table.clear().await, 1);
    assert_eq!(table.router().take_calls(), ["unmap 7001"]);
}

#[tokio::test]
async fn a_port_given_to_another_object_is_unmapped_and_mapped_again() {
    let mut table = table();
    let now = Instant::now();
    table.reconcile(&wanted(&[want("a", 7000)]), now).await;
    table.router().take_calls();
    table.reconcile(&wanted(&[want("b", 7000)]), now).await;
    assert_eq!(table.router().take_calls(), ["unmap 7000", "map 7000"]);
    let owners: Vec<Owner> = table.reports(&[]).into_keys().collect();
    assert_eq!(owners, [want("b", 7000).owner]);
}

#[tokio::test]
async fn a_refusal_is_reported_and_retried_with_a_growing_backoff() {
    let mut table = table();
    table.router().refuse(true);
    let start = Instant::now();
    let one = wanted(&[want("a", 7000)]);
    let pass = table.reconcile(&one, start).await;
    assert_eq!((pass.failed, table.failing()), (1, 1));
    let report = &table.reports(&[])[&want("a", 7000).owner];
    assert_eq!(report.errors[0].reason(), "RouterRefused");
    // Not asked again before the backoff ends (2 s), then again after 4 s.
    table.reconcile(&one, start + Duration::from_secs(1)).await;
    assert_eq!(table.router().take_calls(), ["map 7000"]);
    table.reconcile(&one, start + Duration::from_secs(2)).await;
    assert_eq!(table.router().take_calls(), ["map 7000"]);
    table.reconcile(&one, start + Duration::from_secs(5)).await;
    assert!(table.router().take_calls().is_empty());
    table.router().refuse(false);
    let pass = table.reconcile(&one, start + Duration::from_secs(6)).await;
    assert_eq!((pass.mapped, table.failing(), table.held()), (1, 0, 1));
    assert!(table.reports(&[])[&want("a", 7000).owner].errors.is_empty());
}

#[tokio::test]
async fn a_failed_renewal_keeps_the_mapping_until_its_lifetime_ends() {
    let mut table = table();
    let start = Instant::now();
    let one = wanted(&[want("a", 7000)]);
    table.reconcile(&one, start).await;
    table.router().refuse(true);
    let pass = table.reconcile(&one, start + Duration::from_secs(50)).await;
    assert_eq!((pass.renew_failures, table.held()), (1, 1));
    // Retried soon, not at the next half-lifetime.
    assert_eq!(table.next_due(), Some(start + Duration::from_secs(52)));
    let pass = table
        .reconcile(&one, start + Duration::from_secs(100))
        .await;
    assert_eq!(
        (pass.renew_failures, table.held(), table.failing()),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn renewals_come_sooner_when_capped() {
    let mut table = table().renewing_at_most(Some(Duration::from_secs(5)));
    let start = Instant::now();
    table.reconcile(&wanted(&[want("a", 7000)]), start).await;
    assert_eq!(table.next_due(), Some(start + Duration::from_secs(5)));
}

#[tokio::test]
async fn problems_found_before_asking_are_reported_with_the_mappings() {
    let table = table();
    let owner = want("a", 22).owner;
    let reports = table.reports(&[(owner.clone(), RouterError::Denied { port: 22 })]);
    assert_eq!(reports[&owner].errors[0].reason(), "PortDenied");
    assert!(reports[&owner].endpoints.is_empty());
}
