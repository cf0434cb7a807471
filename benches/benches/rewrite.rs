//! Throughput of the body rewriters, natively and inside wasmtime (the SIMD wasm
//! build), against `memcpy` of the same buffer measured in the same run.
//!
//! `make bench` builds the wasm guest and runs this; it ends with a table of MB/s
//! and ratios and checks them against the targets:
//! Prometheus text: >= 2 GB/s and >= 65% of native in wasmtime, <= 3x memcpy natively;
//! JSON: >= 1 GB/s in wasmtime.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use kubelet_scope_benches::native::Native;
use kubelet_scope_benches::{
    bodies, cases, guest_path, synthetic, Body, Kind, WasmGuest, CHUNK, INJECT_CONFIG,
};

/// (body, case, runtime) → seconds per iteration of each of criterion's own
/// samples (warm-up included).
type Measured = BTreeMap<(String, String, &'static str), Vec<f64>>;

thread_local! {
    static MEASURED: RefCell<Measured> = RefCell::default();
}

fn record(body: &str, case: &str, runtime: &'static str, elapsed: Duration, iters: u64) {
    MEASURED.with_borrow_mut(|m| {
        m.entry((body.to_owned(), case.to_owned(), runtime))
            .or_default()
            .push(elapsed.as_secs_f64() / iters.max(1) as f64);
    });
}

/// Times `iters` runs of `run` for criterion and records the sample for the table.
/// Generic over `run`, so the loop compiles as if written out at each call.
fn timed(
    body: &str,
    case: &str,
    runtime: &'static str,
    iters: u64,
    mut run: impl FnMut(),
) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        run();
    }
    let elapsed = start.elapsed();
    record(body, case, runtime, elapsed, iters);
    elapsed
}

type Group<'a> = BenchmarkGroup<'a, WallTime>;

fn main() {
    let snapshot = synthetic::snapshot();
    let bodies = bodies();
    let mut guest = WasmGuest::load(&guest_path()).unwrap_or_else(|e| panic!("{e}"));
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    for body in &bodies {
        let mut group = criterion.benchmark_group(body.name);
        group.throughput(Throughput::Bytes(body.bytes.len() as u64));
        let mut out = Vec::with_capacity(body.bytes.len() * 2);
        bench_memcpy(&mut group, body, &mut guest, &snapshot, &mut out);
        for (case, config, tenant) in cases(body.kind) {
            let native = Native::new(config, &snapshot, tenant);
            guest
                .prepare(config, &snapshot, tenant, &body.bytes)
                .unwrap_or_else(|e| panic!("{e}"));
            native_and_wasm_agree(body, case, &native, &mut guest, &mut out);
            bench_case(&mut group, body, case, &native, &mut guest, &mut out);
        }
        group.finish();
    }
    criterion.final_summary();
    summarize(&bodies);
}

/// The baseline of every ratio: copying the body, natively and inside the guest.
fn bench_memcpy(
    group: &mut Group,
    body: &Body,
    guest: &mut WasmGuest,
    snapshot: &[u8],
    out: &mut Vec<u8>,
) {
    group.bench_function(BenchmarkId::new("memcpy", "native"), |b| {
        b.iter_custom(|iters| {
            timed(body.name, "memcpy", "native", iters, || {
                out.clear();
                out.extend_from_slice(black_box(&body.bytes));
                black_box(&*out);
            })
        })
    });
    guest
        .prepare(INJECT_CONFIG, snapshot, None, &body.bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    group.bench_function(BenchmarkId::new("memcpy", "wasm"), |b| {
        b.iter_custom(|iters| {
            timed(body.name, "memcpy", "wasm", iters, || {
                black_box(guest.copy().unwrap_or_else(|e| panic!("{e}")));
            })
        })
    });
}

/// Before timing a case: it changes the body, and the guest (prepared for it)
/// writes exactly what the native build writes.
fn native_and_wasm_agree(
    body: &Body,
    case: &str,
    native: &Native,
    guest: &mut WasmGuest,
    out: &mut Vec<u8>,
) {
    native.rewrite(body.kind, &body.bytes, CHUNK, out);
    assert!(
        out.len() != body.bytes.len() || case == "memcpy",
        "{}: {case} changed nothing",
        body.name
    );
    let len = guest
        .rewrite(body.kind, CHUNK as u32)
        .unwrap_or_else(|e| panic!("{e}"));
    let wasm_out = guest.output(len).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        wasm_out == *out,
        "{}: {case}: wasm and native outputs differ",
        body.name
    );
}

/// One case (inject, filter) timed natively and inside the guest prepared for it.
fn bench_case(
    group: &mut Group,
    body: &Body,
    case: &str,
    native: &Native,
    guest: &mut WasmGuest,
    out: &mut Vec<u8>,
) {
    group.bench_function(BenchmarkId::new(case, "native"), |b| {
        b.iter_custom(|iters| {
            timed(body.name, case, "native", iters, || {
                native.rewrite(body.kind, black_box(&body.bytes), CHUNK, out);
                black_box(&*out);
            })
        })
    });
    group.bench_function(BenchmarkId::new(case, "wasm"), |b| {
        b.iter_custom(|iters| {
            timed(body.name, case, "wasm", iters, || {
                black_box(
                    guest
                        .rewrite(body.kind, CHUNK as u32)
                        .unwrap_or_else(|e| panic!("{e}")),
                );
            })
        })
    });
}

fn summarize(bodies: &[Body]) {
    let mut measured = MEASURED.take();
    // The median sample: a neighbour's burst of CPU on a shared machine moves
    // the mean of twenty samples, not their median.
    for samples in measured.values_mut() {
        samples.sort_by(f64::total_cmp);
    }
    let median = |body: &str, case: &str, runtime: &'static str| {
        let samples = measured.get(&(body.to_owned(), case.to_owned(), runtime))?;
        samples.get(samples.len() / 2).copied()
    };
    println!();
    println!("MB/s and ratios of the median of criterion's samples:");
    println!(
        "{:<26} {:<7} {:>10} {:>10} {:>12} {:>14} {:>12}",
        "body", "case", "native MB/s", "wasm MB/s", "wasm/native", "native/memcpy", "wasm/memcpy"
    );
    let mut verdicts = Vec::new();
    for body in bodies {
        let bytes = body.bytes.len() as f64;
        for case in ["memcpy", "inject", "filter"] {
            let (Some(native), Some(wasm)) = (
                median(body.name, case, "native"),
                median(body.name, case, "wasm"),
            ) else {
                continue;
            };
            let memcpy_native = median(body.name, "memcpy", "native").unwrap_or(f64::NAN);
            let memcpy_wasm = median(body.name, "memcpy", "wasm").unwrap_or(f64::NAN);
            let (native_mbs, wasm_mbs) = (bytes / native / 1e6, bytes / wasm / 1e6);
            println!(
                "{:<26} {:<7} {:>10.0} {:>10.0} {:>11.0}% {:>13.2}x {:>11.2}x",
                body.name,
                case,
                native_mbs,
                wasm_mbs,
                100.0 * native / wasm,
                native / memcpy_native,
                wasm / memcpy_wasm
            );
            if case == "memcpy" {
                continue;
            }
            if body.kind == Kind::Exposition {
                verdicts.push((
                    format!("{} {case}: wasm >= 2000 MB/s", body.name),
                    wasm_mbs >= 2000.0,
                ));
                verdicts.push((
                    format!("{} {case}: wasm >= 65% of native", body.name),
                    native / wasm >= 0.65,
                ));
                verdicts.push((
                    format!("{} {case}: native <= 3x memcpy", body.name),
                    native / memcpy_native <= 3.0,
                ));
            } else {
                verdicts.push((
                    format!("{} {case}: wasm >= 1000 MB/s", body.name),
                    wasm_mbs >= 1000.0,
                ));
            }
        }
    }
    println!();
    for (target, met) in verdicts {
        println!("{} {target}", if met { "MET   " } else { "MISSED" });
    }
}
