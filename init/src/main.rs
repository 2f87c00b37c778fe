//! nacre-init: the node's PID 1.
//!
//! As PID 1 it boots the node (stage 1 from the initrd, stage 2 from the verified root); run by
//! a person it only reports what it is.

// PID 1 must never die: no unwrap/expect/panic outside tests (the panic hook is the last resort).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod cluster;
mod cmdline;
mod config;
mod fail;
mod keyservice;
mod kube;
mod log;
mod measure;
mod services;
mod stage;
mod tpm;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if std::process::id() == 1 {
        fail::install_panic_hook();
        if args.iter().any(|a| a == "--stage2") {
            stage::stage2()
        } else if args.iter().any(|a| a == "--final") {
            // The end of an orderly shutdown, from a tmpfs copy (services/shutdown.rs).
            services::shutdown::final_stage(&args)
        } else {
            stage::stage1()
        }
    }
    match args.get(1).map(String::as_str) {
        Some("--version") => println!("nacre-init {}", env!("CARGO_PKG_VERSION")),
        // The image builder asks the init which module files stage 1 will load, so the initrd
        // holds exactly those (same code, same order).
        Some("--module-closure") if args.len() >= 3 => module_closure(&args[2], &args[3..]),
        Some(word @ ("shutdown" | "poweroff" | "reboot")) => {
            if let Err(e) = services::request(word) {
                eprintln!("nacre-init {word}: {e}");
                std::process::exit(1);
            }
        }
        Some("key-service-probe") => std::process::exit(keyservice::probe(&args[2..])),
        // wg0's peers, handshakes and counters (what `wg show` would print).
        Some("wg-status") => match nacre_network::status() {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                eprintln!("nacre-init wg-status: {e}");
                std::process::exit(1);
            }
        },
        _ => {
            eprintln!(
                "nacre-init runs as PID 1 (the node's init). Other uses:\n  nacre-init --version\n  nacre-init wg-status   (wg0's peers, handshakes, counters)\n  nacre-init key-service-probe join|disk-key UUID|peers [--runtime-log PATH]\n  nacre-init --module-closure /lib/modules/<release> MODULE...\n  nacre-init shutdown|poweroff|reboot   (asks PID 1 for an orderly shutdown)"
            );
            std::process::exit(2);
        }
    }
}

fn module_closure(dir: &str, modules: &[String]) {
    let db = match nacre_kmod::ModuleDb::read(std::path::Path::new(dir)) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("nacre-init: {dir}: {e}");
            std::process::exit(1);
        }
    };
    let wanted: Vec<&str> = modules.iter().map(String::as_str).collect();
    match db.load_order(&wanted) {
        Ok(steps) => steps.iter().for_each(|s| println!("{}", s.module.path)),
        Err(e) => {
            eprintln!("nacre-init: {e}");
            std::process::exit(1);
        }
    }
}
