//! Allocating one port in a 64,512-port class (1024–65535) at 0 %, 50 %, 99 % and 99.99 %
//! utilization, through the port book exactly as a reconcile does (reserve the lowest free
//! port, then release it so the utilization stays put). Target: ≤ 1 µs in every case.
//! And a block of 10 consecutive ports (`spec.count`) at 99 %: packed (the used ports at the
//! bottom) and fragmented (the free 1 % scattered as single ports, the only free run of 10
//! at the very top, so the search crosses every free stretch). Target: ≤ 10 µs.
//!
//! `cargo bench -p hostport-controller --bench allocator`

use std::time::Instant;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hostport_api::ports::PortRange;
use hostport_api::{ClaimReference, HostPort, HostPortSpec};
use hostport_controller::port_book::PortBook;

const START: u16 = 1024;
const END: u16 = 65535;

fn book_at(utilization: f64) -> PortBook {
    let capacity = u32::from(END - START) + 1;
    let used = (f64::from(capacity) * utilization).round() as u32;
    // Lowest-first allocation packs the used ports at the bottom of the pool, so the search
    // must skip every used word before it finds a free port: the worst case.
    book_of((u32::from(START)..u32::from(START) + used).map(|p| p as u16))
}

/// 99 % used, the free ports scattered one by one (every 100th port), and ports 65526-65535
/// the only free run of 10.
fn fragmented_book() -> PortBook {
    book_of((START..=END).filter(|port| port % 100 != 0 && *port < END - 9))
}

fn book_of(used: impl Iterator<Item = u16>) -> PortBook {
    let mut book = PortBook::default();
    book.relist_start();
    for port in used {
        let host_port = HostPort::new(
            &format!("port-{port}"),
            HostPortSpec {
                claim_ref: Some(ClaimReference {
                    uid: Some(format!("uid-{port}")),
                    ..ClaimReference::default()
                }),
                host_port_class_name: "bench".into(),
                port: Some(i32::from(port)),
            },
        );
        book.relist_apply(&host_port);
    }
    book.relist_done();
    book
}

fn allocate(c: &mut Criterion) {
    let ranges = [PortRange::new(START, END).expect("range")];
    let mut group = c.benchmark_group("allocate one port in 64,512");
    for utilization in [0.0, 0.5, 0.99, 0.9999] {
        let mut book = book_at(utilization);
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}%", utilization * 100.0)),
            &utilization,
            |b, _| {
                b.iter(|| {
                    let port = book
                        .reserve_lowest(&ranges, "claim", Instant::now())
                        .expect("a free port");
                    book.release(port);
                    port
                });
            },
        );
    }
    group.finish();
}

fn allocate_block(c: &mut Criterion) {
    let ranges = [PortRange::new(START, END).expect("range")];
    let mut group = c.benchmark_group("allocate a block of 10 in 64,512 at 99%");
    for (name, mut book) in [("packed", book_at(0.99)), ("fragmented", fragmented_book())] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let base = book
                    .reserve_lowest_run(&ranges, 10, 1, "claim", Instant::now())
                    .expect("a free block");
                // Up to 65535: `base..base + 10` would wrap.
                for port in (0..10).filter_map(|i| base.checked_add(i)) {
                    book.release(port);
                }
                base
            });
        });
    }
    group.finish();
}

criterion_group!(benches, allocate, allocate_block);
criterion_main!(benches);
