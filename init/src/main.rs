//! nacre-init: the node's PID 1.
//!
//! As PID 1 it boots the node (stage 1 from the initrd, stage 2 from the verified root); run by
//! a person it only reports what it is.

mod cmdline;
mod fail;
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
        } else {
            stage::stage1()
        }
    }
    match args.get(1).map(String::as_str) {
        Some("--version") => println!("nacre-init {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!("nacre-init runs as PID 1 (the node's init); it has no commands yet besides --version");
            std::process::exit(2);
        }
    }
}
