//! Prints a firmware event log (and optionally a nacre CEL log) one event per line, then the
//! replayed PCRs: `cargo run -p nacre-eventlog --example dump -- LOG [CEL]`.

use nacre_eventlog::{cel, replay, EventLog};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: dump LOG [CEL]")?;
    let log = EventLog::parse(&std::fs::read(path)?)?;
    let runtime = match args.next() {
        Some(p) => cel::read(p.as_ref())?,
        None => Vec::new(),
    };
    let header = log.header_event();
    println!("0 PCR 0 {} {}", header.event_type, header.decode());
    for (i, e) in log.events.iter().enumerate() {
        println!("{} PCR {} {} {}", i + 1, e.pcr, e.event_type, e.decode());
    }
    for r in &runtime {
        println!("cel {} PCR {} {:?}", r.recnum, r.pcr, r.content);
    }
    for bank in replay(&log, &runtime)? {
        for (pcr, v) in bank.values.iter().enumerate() {
            println!("{}:{pcr:2} {}", bank.alg, hex::encode(v));
        }
    }
    Ok(())
}
