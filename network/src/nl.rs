//! Small synchronous netlink requests (no async runtime): send one request, collect the
//! replies with its sequence number until the kernel's ACK, `NLMSG_DONE` or error. Every
//! receive has a timeout: PID 1 never waits forever on the kernel.

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};
use std::fmt::Debug;
use std::io;
use std::os::fd::AsRawFd;

pub use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};

const RECV_TIMEOUT_S: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused the request (errno).
    #[error("{0}")]
    Kernel(io::Error),
    #[error("cannot parse the kernel's reply: {0}")]
    Decode(String),
}

impl NlError {
    /// The errno of a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket of `protocol` (`netlink_sys::protocols::NETLINK_ROUTE`, `NETLINK_GENERIC`).
    pub fn open(protocol: isize) -> Result<Self, NlError> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_ext_ack(true).ok();
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_S,
            tv_usec: 0,
        };
        // SAFETY: a valid socket and a correctly sized timeval.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(Netlink { socket, seq: 1 })
    }

    /// Send `payload` with `flags` (REQUEST is added; ACK too unless it is a dump) and return
    /// the inner messages of the reply.
    pub fn request<T>(&mut self, payload: T, flags: u16) -> Result<Vec<T>, NlError>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        self.seq = self.seq.wrapping_add(1);
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        let sent = self.socket.send(&buf, 0);
        // Requests may carry secrets (a WireGuard private key): leave no copy behind.
        zeroize::Zeroize::zeroize(&mut buf);
        sent?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut off = 0;
            while off + 16 <= data.len() {
                let len =
                    u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]])
                        as usize;
                if len < 16 || off + len > data.len() {
                    return Err(NlError::Decode(format!(
                        "message length {len} at offset {off} of {}",
                        data.len()
                    )));
                }
                let m = NetlinkMessage::<T>::deserialize(&data[off..off + len])
                    .map_err(|e| NlError::Decode(e.to_string()))?;
                off += (len + 3) & !3;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    // Non-dump requests end with the ACK (requested above), replies before it.
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(NlError::Kernel(e.to_io())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    _ => {}
                }
            }
        }
    }
}
