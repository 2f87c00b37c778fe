//! The TCP/TLS front: a thread per connection (at most [`MAX_IN_FLIGHT`] at once), each with its
//! own [`AttestedClientVerifier`] (its own nonce), one request line, one response line.
//! Attestation refusals end the handshake with a TLS alert and are recorded with the check that
//! failed; nothing is answered to a connection that did not attest.

use crate::service::Service;
use nacre_attestation::atls::{
    mutual_server_config, server_config, Attest, AttestedClientVerifier, AttestedServerResolver,
};
use nacre_attestation::join::{read_line, Request, Response};
use nacre_attestation::{JoinKind, Verifier};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections handled at once; more are closed at once (and logged).
pub const MAX_IN_FLIGHT: usize = 256;
/// A connection that sends nothing for this long is dropped.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// How the service proves itself to nodes.
enum Identity {
    /// A certificate from the service's CA (`init`), which nodes carry.
    Certificate {
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    },
    /// Its own attestation (the service on an attested control-plane node): each connection
    /// gets a certificate with evidence for the node's nonce.
    Attested(Arc<dyn Attest>),
}

pub struct Server {
    service: Arc<Service>,
    verifier: Arc<dyn Verifier>,
    identity: Identity,
    in_flight: Arc<AtomicUsize>,
}

/// The service's TLS identity from the state directory (`server.pem` with its chain, `server.key`).
pub fn load_identity(
    dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let cert = dir.join(crate::tls::SERVER_CERT);
    let key = dir.join(crate::tls::SERVER_KEY);
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((chain, key))
}

impl Server {
    pub fn new(
        service: Arc<Service>,
        verifier: Arc<dyn Verifier>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        Server {
            service,
            verifier,
            identity: Identity::Certificate { chain, key },
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A server that attests itself with `attest` (mutual attested TLS).
    pub fn attested(
        service: Arc<Service>,
        verifier: Arc<dyn Verifier>,
        attest: Arc<dyn Attest>,
    ) -> Self {
        Server {
            service,
            verifier,
            identity: Identity::Attested(attest),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Accept until `stop` is set (checked between connections), then wait for the connections
    /// in flight: when `run` returns, no thread of this server holds it (or its database).
    pub fn run(self: Arc<Self>, listener: TcpListener, stop: Arc<AtomicBool>) {
        let in_flight = self.in_flight.clone();
        self.accept(listener, stop);
        let deadline = std::time::Instant::now() + IO_TIMEOUT * 2;
        while in_flight.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn accept(self: Arc<Self>, listener: TcpListener, stop: Arc<AtomicBool>) {
        for conn in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(sock) = conn else { continue };
            let Ok(peer) = sock.peer_addr() else { continue };
            if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                let _ = self.service.record(
                    peer,
                    None,
                    "connect",
                    Err((
                        "overload".into(),
                        format!("more than {MAX_IN_FLIGHT} connections in flight"),
                    )),
                );
                continue;
            }
            let me = self.clone();
            let counter = self.in_flight.clone();
            let spawned = std::thread::Builder::new()
                .name("conn".into())
                .spawn(move || {
                    me.connection(sock, peer);
                    // The server (and its database) is released before the count drops.
                    drop(me);
                    counter.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    fn refuse(&self, peer: SocketAddr, ak: Option<String>, op: &str, check: &str, reason: String) {
        let _ = self
            .service
            .record(peer, ak, op, Err((check.to_string(), reason)));
    }

    /// One connection: handshake (attestation), one request, one answer.
    pub fn connection(&self, mut sock: TcpStream, peer: SocketAddr) {
        let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
        let _ = sock.set_write_timeout(Some(IO_TIMEOUT));
        let _ = sock.set_nodelay(true);
        // PCR 15 is the service's own rule (zero to join, this cluster's id for a member).
        let verifier = match AttestedClientVerifier::new(self.verifier.clone(), JoinKind::Either) {
            Ok(v) => Arc::new(v),
            Err(e) => return self.refuse(peer, None, "connect", "internal", e),
        };
        let config = match &self.identity {
            Identity::Certificate { chain, key } => {
                server_config(verifier.clone(), chain.clone(), key.clone_key())
            }
            Identity::Attested(a) => mutual_server_config(
                verifier.clone(),
                Arc::new(AttestedServerResolver::new(Box::new(a.clone()))),
            ),
        };
        let config = match config {
            Ok(c) => c,
            Err(e) => return self.refuse(peer, None, "connect", "internal", e.to_string()),
        };
        let mut conn = match rustls::ServerConnection::new(Arc::new(config)) {
            Ok(c) => c,
            Err(e) => return self.refuse(peer, None, "connect", "internal", e.to_string()),
        };
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        let mut line = Vec::new();
        let read = {
            let mut r = BufReader::new(&mut tls);
            read_line(&mut r, &mut line)
        };
        if read.is_err() {
            // A refused handshake: deliver the alert rustls queued before closing.
            while tls.conn.wants_write() {
                if tls.conn.write_tls(&mut tls.sock).is_err() {
                    break;
                }
            }
        }
        let accepted = match verifier.verdict() {
            Some(Ok(a)) => a,
            Some(Err(refusal)) => {
                return self.refuse(
                    peer,
                    None,
                    "attest",
                    &refusal.check.to_string(),
                    refusal.reason,
                )
            }
            None => {
                use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
                return match read {
                    Err(e) if matches!(e.kind(), UnexpectedEof | ConnectionReset | BrokenPipe) => {
                        let _ = self
                            .service
                            .record_aborted(peer, format!("TLS handshake: {e}"));
                    }
                    Err(e) => {
                        self.refuse(peer, None, "attest", "tls", format!("TLS handshake: {e}"))
                    }
                    Ok(()) => self.refuse(
                        peer,
                        None,
                        "attest",
                        "tls",
                        "no attested client certificate".into(),
                    ),
                };
            }
        };
        if let Err(e) = read {
            return self.refuse(
                peer,
                Some(accepted.ak_fingerprint()),
                "request",
                "request",
                format!("reading the request: {e}"),
            );
        }
        let response = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => self.service.handle(&accepted, peer, &req),
            Err(e) => {
                let reason = format!("the request does not parse: {e}");
                self.refuse(
                    peer,
                    Some(accepted.ak_fingerprint()),
                    "request",
                    "request",
                    reason.clone(),
                );
                Response::Refused { reason }
            }
        };
        for w in &accepted.warnings {
            let _ = self.service.record(
                peer,
                Some(accepted.ak_fingerprint()),
                "warning",
                Ok(format!(
                    "warn-only PCR {} is {}, expected {}",
                    w.pcr,
                    w.observed.as_deref().unwrap_or("absent"),
                    w.expected
                )),
            );
        }
        // The platform part's warn-only findings (TDX: RTMRs without golden values).
        for w in &accepted.platform_warnings {
            let _ = self.service.record(
                peer,
                Some(accepted.ak_fingerprint()),
                "warning",
                Ok(format!("platform: {w}")),
            );
        }
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        let _ = tls.write_all(&out).and_then(|()| tls.flush());
        tls.conn.send_close_notify();
        let _ = tls.flush();
    }
}
