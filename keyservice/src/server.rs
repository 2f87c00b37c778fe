//! The TCP/TLS front: a thread per connection (at most [`MAX_IN_FLIGHT`] at once), each with its
//! own [`AttestedClientVerifier`] (its own nonce), one request line, one response line.
//! Attestation refusals end the handshake with a TLS alert and are recorded with the check that
//! failed; nothing is answered to a connection that did not attest.
//!
//! What a client costs before it attested is bounded ([`crate::limits`]): one deadline per
//! connection from accept to close, connections in flight per source and overall, and
//! unauthenticated events recorded in full only within a budget, the rest counted and summed up
//! in one decision per source and window.

use crate::limits::{ConnectionLimits, DeadlineStream, EventBudget, Rejected, SourceSlots};
use crate::service::Service;
use nacre_attestation::atls::{
    mutual_server_config, server_config, Attest, AttestedClientVerifier, AttestedServerResolver,
};
use nacre_attestation::join::{read_line, Request, Response, ServerEvidenceLine};
use nacre_attestation::{JoinKind, Verifier};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections handled at once by default; more are closed at once (and counted).
pub const MAX_IN_FLIGHT: usize = 256;
/// The longest one read or write waits (each connection also has a deadline as a whole:
/// [`ConnectionLimits::deadline`]).
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
    limits: ConnectionLimits,
    slots: Arc<SourceSlots>,
    events: EventBudget,
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
            limits: ConnectionLimits::default(),
            slots: SourceSlots::new(8, MAX_IN_FLIGHT),
            events: EventBudget::new(ConnectionLimits::default()),
        }
        .with_limits(ConnectionLimits::default())
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
            limits: ConnectionLimits::default(),
            slots: SourceSlots::new(8, MAX_IN_FLIGHT),
            events: EventBudget::new(ConnectionLimits::default()),
        }
        .with_limits(ConnectionLimits::default())
    }

    /// These limits on unauthenticated clients instead of the defaults.
    pub fn with_limits(mut self, limits: ConnectionLimits) -> Self {
        self.slots = SourceSlots::new(limits.per_source, limits.max_in_flight);
        self.events = EventBudget::new(limits.clone());
        self.limits = limits;
        self
    }

    /// Accept until `stop` is set (checked between connections), then wait for the connections
    /// in flight (at most their deadline) and write the counted unauthenticated events: when
    /// `run` returns, no thread of this server holds it (or its database).
    pub fn run(self: Arc<Self>, listener: TcpListener, stop: Arc<AtomicBool>) {
        let done = Arc::new(AtomicBool::new(false));
        let ticker = {
            let me = self.clone();
            let done = done.clone();
            let tick = (self.limits.log_window / 4)
                .clamp(Duration::from_millis(10), Duration::from_secs(1));
            std::thread::Builder::new()
                .name("event-summaries".into())
                .spawn(move || {
                    while !done.load(Ordering::Acquire) {
                        std::thread::sleep(tick);
                        me.write_summaries(false);
                    }
                })
        };
        self.clone().accept(listener, stop);
        let deadline = std::time::Instant::now() + self.limits.deadline + Duration::from_secs(1);
        while self.slots.in_flight() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        done.store(true, Ordering::Release);
        if let Ok(t) = ticker {
            let _ = t.join();
        }
        self.write_summaries(true);
    }

    /// The summaries of the unauthenticated events counted in a window that is over (`force`:
    /// whatever was counted), one decision each.
    fn write_summaries(&self, force: bool) {
        for s in self.events.take_due(force) {
            let _ = self.service.record_summary(&s);
        }
    }

    /// An unauthenticated event: `record` it if the budget allows, else only count it.
    fn unauthenticated(&self, peer: SocketAddr, kind: &str, record: impl FnOnce()) {
        if self.events.note(peer.ip(), kind) {
            record();
        }
    }

    fn accept(self: Arc<Self>, listener: TcpListener, stop: Arc<AtomicBool>) {
        for conn in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(sock) = conn else { continue };
            let Ok(peer) = sock.peer_addr() else { continue };
            // Closed before any TLS: no handshake, no thread for the excess.
            let slot = match self.slots.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(rejected) => {
                    drop(sock);
                    let check = match rejected {
                        Rejected::Source(_) => "per-source limit",
                        Rejected::Overload(_) => "overload",
                    };
                    self.unauthenticated(peer, check, || {
                        self.refuse(peer, None, "connect", check, rejected.to_string())
                    });
                    continue;
                }
            };
            let me = self.clone();
            // A failed spawn drops the closure: the socket is closed and the slot given back.
            let _ = std::thread::Builder::new()
                .name("conn".into())
                .spawn(move || {
                    me.connection(sock, peer);
                    // The server (and its database) is released before the slot is.
                    drop(me);
                    drop(slot);
                });
        }
    }

    fn refuse(&self, peer: SocketAddr, ak: Option<String>, op: &str, check: &str, reason: String) {
        let _ = self
            .service
            .record(peer, ak, op, Err((check.to_string(), reason)));
    }

    /// One connection: handshake (attestation), one request, one answer.
    ///
    /// A client that trusts this (attested, in-cluster) service through its EK certificate
    /// sends a credential challenge as its first line: answer it and read the request after
    /// it into `line`. Then, if the client's own acceptance is pending (its AK is trusted
    /// through its EK certificate), challenge it; only a completed acceptance is returned.
    fn activation<S: std::io::Read + Write>(
        &self,
        tls: &mut S,
        accepted: nacre_attestation::Accepted,
        line: &mut Vec<u8>,
    ) -> Result<nacre_attestation::Accepted, ActivationFailure> {
        use nacre_attestation::credential::ActivationMessage;
        use nacre_attestation::join::{answer_challenge, challenge_peer, ActivationError};
        use ActivationFailure::{Aborted, Refused};
        if let Ok(ActivationMessage::Challenge(c)) = serde_json::from_slice(line) {
            let Identity::Attested(a) = &self.identity else {
                return Err(Refused(
                    "a credential challenge for a service that does not attest".into(),
                ));
            };
            answer_challenge(tls, &c, a.as_ref()).map_err(|e| {
                Refused(format!("answering the client's credential challenge: {e}"))
            })?;
            line.clear();
            read_line(&mut BufReader::new(&mut *tls), line)
                .map_err(|e| Refused(format!("reading the request: {e}")))?;
        }
        challenge_peer(tls, accepted).map_err(|e| match e {
            // The peer went away (powered off, killed, gave up): not a verdict on its evidence.
            ActivationError::Io(e) if is_abort(e.kind()) => Aborted(e.to_string()),
            other => Refused(other.to_string()),
        })
    }

    pub fn connection(&self, sock: TcpStream, peer: SocketAddr) {
        let _ = sock.set_nodelay(true);
        // Every read and write below ends at one deadline, whatever the client sends.
        let mut sock = DeadlineStream::new(sock, self.limits.deadline, self.limits.idle);
        // PCR 15 is the service's own rule (zero to join, this cluster's id for a member).
        let verifier = match AttestedClientVerifier::new(self.verifier.clone(), JoinKind::Either) {
            Ok(v) => Arc::new(v),
            Err(e) => return self.refuse(peer, None, "connect", "internal", e),
        };
        // In the attested (mutual) mode the per-connection resolver makes the service's
        // evidence once the client is verified.
        let mut resolver = None;
        let config = match &self.identity {
            Identity::Certificate { chain, key } => {
                server_config(verifier.clone(), chain.clone(), key.clone_key())
            }
            Identity::Attested(a) => {
                let r = Arc::new(AttestedServerResolver::new(Box::new(a.clone())));
                resolver = Some(r.clone());
                mutual_server_config(verifier.clone(), r)
            }
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
        // Mutual mode: the client's acceptance once its AK is proven (credential activation,
        // before this service quotes), and why proving it failed.
        let mut proven = None;
        let mut activation_failure = None;
        // Mutual mode: a removed node's AK, proven, gets no quote (and no answer).
        let mut removed = None;
        let read = (|| -> std::io::Result<()> {
            if let Some(r) = &resolver {
                // Mutual mode: finish the handshake (the client's evidence is verified in it);
                // then, only for a client that was accepted and whose AK is proven, quote and
                // send the evidence.
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(tls.sock)?;
                }
                if let Some(Ok(a)) = verifier.verdict() {
                    use nacre_attestation::join::{challenge_peer, ActivationError};
                    match challenge_peer(&mut tls, a) {
                        Ok(a) => {
                            match self.service.is_removed(&a.ak_fingerprint()) {
                                Ok(false) => {}
                                Ok(true) => {
                                    removed = Some(
                                        "this node was removed from the cluster (no evidence \
                                         is sent to it)"
                                            .to_string(),
                                    )
                                }
                                Err(e) => removed = Some(format!("reading the removed nodes: {e}")),
                            }
                            if removed.is_some() {
                                return Err(std::io::Error::other("a removed node"));
                            }
                            proven = Some(a)
                        }
                        Err(e) => {
                            let failure = match e {
                                ActivationError::Io(e) if is_abort(e.kind()) => {
                                    ActivationFailure::Aborted(e.to_string())
                                }
                                other => ActivationFailure::Refused(other.to_string()),
                            };
                            activation_failure = Some(failure);
                            return Err(std::io::Error::other("credential activation failed"));
                        }
                    }
                    let evidence = r.evidence().map_err(|e| {
                        std::io::Error::other(format!("making this service's evidence: {e}"))
                    })?;
                    let mut out = serde_json::to_vec(&ServerEvidenceLine { evidence })
                        .map_err(std::io::Error::other)?;
                    out.push(b'\n');
                    tls.write_all(&out)?;
                    tls.flush()?;
                }
            }
            let mut r = BufReader::new(&mut tls);
            read_line(&mut r, &mut line)
        })();
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
            // Refusals before the client is authenticated: within the event budget.
            Some(Err(refusal)) => {
                let check = refusal.check.to_string();
                return self.unauthenticated(
                    peer,
                    &format!("refused attestation ({check})"),
                    || self.refuse(peer, None, "attest", &check, refusal.reason),
                );
            }
            None => {
                return match read {
                    Err(e) if is_abort(e.kind()) => self.unauthenticated(peer, "aborted", || {
                        let _ = self
                            .service
                            .record_aborted(peer, format!("TLS handshake: {e}"));
                    }),
                    Err(e) => {
                        let kind = if e.kind() == std::io::ErrorKind::TimedOut {
                            "timed out"
                        } else {
                            "tls"
                        };
                        self.unauthenticated(peer, kind, || {
                            self.refuse(peer, None, "attest", "tls", format!("TLS handshake: {e}"))
                        })
                    }
                    Ok(()) => self.unauthenticated(peer, "tls", || {
                        self.refuse(
                            peer,
                            None,
                            "attest",
                            "tls",
                            "no attested client certificate".into(),
                        )
                    }),
                };
            }
        };
        let fingerprint = accepted.ak_fingerprint();
        match activation_failure {
            Some(ActivationFailure::Aborted(detail)) => {
                let _ = self
                    .service
                    .record_aborted_activation(peer, fingerprint, detail);
                return;
            }
            Some(ActivationFailure::Refused(reason)) => {
                return self.refuse(
                    peer,
                    Some(fingerprint),
                    "attest",
                    "credential activation",
                    reason,
                );
            }
            None => {}
        }
        if let Some(reason) = removed {
            return self.refuse(peer, Some(fingerprint), "attest", "policy", reason);
        }
        if let Err(e) = read {
            return self.refuse(
                peer,
                Some(fingerprint),
                "request",
                "request",
                format!("reading the request: {e}"),
            );
        }
        // Mutual mode: proven before the quote already.
        let accepted = proven.unwrap_or(accepted);
        // Credential activation (EK-certified AKs), both directions, before anything is served.
        let accepted = match self.activation(&mut tls, accepted, &mut line) {
            Ok(a) => a,
            Err(ActivationFailure::Aborted(detail)) => {
                let _ = self
                    .service
                    .record_aborted_activation(peer, fingerprint, detail);
                return;
            }
            Err(ActivationFailure::Refused(reason)) => {
                self.refuse(
                    peer,
                    Some(fingerprint),
                    "attest",
                    "credential activation",
                    reason.clone(),
                );
                let mut out = serde_json::to_vec(&Response::Refused { reason }).unwrap_or_default();
                out.push(b'\n');
                let _ = tls.write_all(&out).and_then(|()| tls.flush());
                tls.conn.send_close_notify();
                let _ = tls.flush();
                return;
            }
        };
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
        // The answer may hold a disk key: its bytes are wiped when dropped.
        let mut out = zeroize::Zeroizing::new(serde_json::to_vec(&response).unwrap_or_default());
        out.push(b'\n');
        let _ = tls.write_all(&out).and_then(|()| tls.flush());
        tls.conn.send_close_notify();
        let _ = tls.flush();
    }
}

/// How credential activation on a connection failed.
enum ActivationFailure {
    /// The peer closed or reset the connection instead of answering.
    Aborted(String),
    /// The peer answered wrongly, or the exchange could not be carried out.
    Refused(String),
}

/// An I/O error that means the peer went away.
fn is_abort(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    matches!(kind, UnexpectedEof | ConnectionReset | BrokenPipe)
}
