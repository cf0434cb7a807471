//! x86 instructions per input byte that the filter executes inside wasmtime,
//! counted by callgrind, for the bodies and cases `make bench` times:
//!
//! ```text
//! VALGRIND=path/to/valgrind instructions
//! ```
//!
//! MB/s on a shared machine drift with the neighbours (a run can give half of
//! the one before it); the work does not, so this is how a change to the hot
//! loops is compared here. Each case runs under callgrind once with one
//! rewrite of the body and once with eleven: a tenth of the difference is one
//! rewrite, without wasmtime compiling the module or the body being built.
//! `make bench-instructions` builds the guest and fetches valgrind first (~14 min).

use std::process::{Command, ExitCode};

use kubelet_scope_benches::{bodies, cases, guest_path, synthetic, WasmGuest, CHUNK};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => count_all(),
        [run, body, case, times] if run == "run" => match times.parse() {
            Ok(times) => rewrite(body, case, times),
            Err(_) => usage(),
        },
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: instructions            (count every body and case under $VALGRIND)");
    eprintln!("       instructions run BODY CASE TIMES");
    ExitCode::from(2)
}

/// Rewrites `body` as `case` `times` times in the wasm guest (what callgrind
/// counts).
fn rewrite(body: &str, case: &str, times: usize) -> ExitCode {
    let bodies = bodies();
    let Some(body) = bodies.iter().find(|b| b.name == body) else {
        return usage();
    };
    let Some((_, config, tenant)) = cases(body.kind).into_iter().find(|c| c.0 == case) else {
        return usage();
    };
    let result = WasmGuest::load(&guest_path()).and_then(|mut guest| {
        guest.prepare(config, &synthetic::snapshot(), tenant, &body.bytes)?;
        for _ in 0..times {
            guest.rewrite(body.kind, CHUNK as u32)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("instructions: {e}");
            ExitCode::FAILURE
        }
    }
}

fn count_all() -> ExitCode {
    let valgrind = std::env::var("VALGRIND").unwrap_or_else(|_| "valgrind".to_owned());
    let Ok(me) = std::env::current_exe() else {
        eprintln!("instructions: cannot find its own executable");
        return ExitCode::FAILURE;
    };
    // Instructions callgrind counted for a process that rewrites `times` times.
    let count = |body: &str, case: &str, times: usize| -> Result<u64, String> {
        let output = Command::new(&valgrind)
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(&me)
            .args(["run", body, case, &times.to_string()])
            .output()
            .map_err(|e| format!("cannot run {valgrind}: {e}"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!("{body} {case}: {log}"));
        }
        // `==123== I   refs:      2,678,511,484`
        log.lines()
            .find_map(|line| line.split_once("I   refs:"))
            .and_then(|(_, n)| n.trim().replace(',', "").parse().ok())
            .ok_or_else(|| format!("{body} {case}: no instruction count in: {log}"))
    };
    println!(
        "{:<26} {:<7} {:>16} {:>10}",
        "body", "case", "instr/rewrite", "instr/byte"
    );
    for body in bodies() {
        for (case, _, _) in cases(body.kind) {
            let counted =
                count(body.name, case, 1).and_then(|one| Ok((one, count(body.name, case, 11)?)));
            let (one, eleven) = match counted {
                Ok(counts) => counts,
                Err(e) => {
                    eprintln!("instructions: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let per_rewrite = eleven.saturating_sub(one) as f64 / 10.0;
            println!(
                "{:<26} {:<7} {:>16.0} {:>10.2}",
                body.name,
                case,
                per_rewrite,
                per_rewrite / body.bytes.len() as f64
            );
        }
    }
    ExitCode::SUCCESS
}
