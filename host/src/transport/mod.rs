//! Transports: the one place that knows the kinds of socket the host
//! serves. A listening socket is one type over its kinds ([`ListenSocket`]
//! bound, [`Listener`] accepting), an accepted stream is one type
//! ([`Stream`]), and a client's two ends are [`Peer`](crate::client::Peer)
//! and [`Local`](crate::client::Local), over IP or a unix socket.
//!
//! A client's stream reaches its guest as a [`ClientSocket`], which reads
//! and writes it in one of two ways:
//!
//! - a raw socket (TCP, unix stream) is read and written with `recv` and
//!   `send` straight into the guest's buffers, and where a process serves
//!   one connection at a time the guest's read sleeps in the socket itself
//!   (the measured fast path);
//! - any other stream (TLS over either) goes through its
//!   `AsyncRead`/`AsyncWrite`, with the same accounting, timeouts and
//!   close.
//!
//! | module | concern |
//! | --- | --- |
//! | `listener` | bound sockets, and what comes in on them: connections accepted, datagrams received |
//! | `addr` | what the kernel says of a socket: local address, family, a unix peer's credentials |
//! | `datagram` | datagram sockets: a request received, its reply's way back, the amplification cap |
//! | `stream` | accepted streams, raw or wrapped; the PROXY header at their start |
//! | `socket` | a client's stream as its guest's stdin and stdout use it |
//! | [`tls`] | the TLS handshake: the ClientHello read, then the handshake finished |

mod addr;
pub mod datagram;
mod listener;
mod socket;
mod stream;
pub mod tls;

pub use listener::{Accepted, Incoming, ListenSocket, Listener, StdIncoming};
pub use socket::{CHUNK, ClientSocket, KeptWriting, WRITES_AFTER_FAILURE, Wait};
pub use stream::{AsyncStream, RawStream, StdStream, Stream};
