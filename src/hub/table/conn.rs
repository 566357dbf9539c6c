//! One client connection as the hub sees it: where it is in its life
//! (`State`), its input buffer, its output queue of shared frames, its
//! deadlines and its place on the turn's lists. The socket itself belongs
//! to the reactor.
//!
//! Every field is private to the connection table (`table/`): code
//! elsewhere in the hub reads a connection through the accessors below and
//! changes it only through `ConnTable`'s methods, which keep the
//! invariants (index ⇔ stream ⇔ count, the turn's lists, the input budget).

use std::net::IpAddr;
use std::num::NonZeroU64;
use std::time::Instant;

use crate::acl::Grant;
use crate::compress::GzipState;
use crate::event::{Event, Framing};
use crate::http::{BodyDecoder, RequestHead};
use crate::out_queue::OutQueue;
use crate::topics::Subscription;

/// Where a connection is in its life.
#[derive(Debug)]
pub enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Reading a publish body.
    Body(Box<BodyState>),
    /// Parked while LDAP checks the client's credentials.
    Authenticating(Box<Parked>),
    /// A publish parked until the cluster's stream acknowledged its event
    /// (the append's token; see `hub/cluster.rs`).
    Appending(u64),
    /// An open event stream.
    Stream(Box<Stream>),
    /// The last response is queued; input is ignored and the connection
    /// closes once the output is flushed.
    Closing,
}

/// A publish whose body is arriving.
#[derive(Debug)]
pub struct BodyState {
    pub head: RequestHead,
    /// The path's topics, `private` included.
    pub path_topics: Vec<String>,
    pub decoder: BodyDecoder,
    pub body: Vec<u8>,
}

/// A request parked while its credentials are checked.
#[derive(Debug)]
pub struct Parked {
    pub head: RequestHead,
    pub then: AfterAuth,
    /// The expiry of the token that named the user being looked up.
    pub until: Option<Instant>,
}

/// What a request's credentials allow, and until when.
#[derive(Debug, Default)]
pub struct Access {
    pub grant: Option<Grant>,
    /// When the token they came with stops being accepted: a stream
    /// opened with it ends then (`None`: Basic credentials, or none).
    pub until: Option<Instant>,
}

/// What a parked request goes on to do.
#[derive(Debug)]
pub enum AfterAuth {
    Subscribe(Subscription),
    /// The body has not been read yet; the path's topics.
    Publish(Vec<String>),
}

/// A live subscriber.
#[derive(Debug)]
pub struct Stream {
    pub sub: Subscription,
    pub framing: Framing,
    /// What its credentials allow it to see of private events.
    pub grant: Option<Grant>,
    /// While replaying the backlog: the sequence number to send next. Live
    /// events are not queued meanwhile; the replay reaches them in the
    /// backlog, so nothing is lost or sent twice at the seam. (Sequence
    /// numbers start at 1: the niche keeps a `Stream` at 120 bytes.)
    pub replay: Option<NonZeroU64>,
    /// A gzip stream's running trailer (advanced with every frame queued;
    /// unused otherwise).
    pub gzip: GzipState,
}

impl Stream {
    /// Whether this subscriber should receive the event: its topics match,
    /// and a private event is covered by one of its ACL segments.
    pub fn wants(&self, event: &Event) -> bool {
        self.sub.matches(&event.topics)
            && (!event.private
                || self
                    .grant
                    .as_ref()
                    .is_some_and(|g| g.can_see(&event.topics)))
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    /// Distinguishes this connection from later ones that reuse its slab key.
    pub(super) serial: u64,
    /// The peer address, IPv4-mapped IPv6 folded to IPv4.
    pub(super) peer: IpAddr,
    pub(super) state: State,
    /// Bytes read but not yet parsed.
    pub(super) inbuf: Vec<u8>,
    pub(super) out: OutQueue,
    /// When the request being read (or the answer awaited) is due.
    pub(super) request_deadline: Option<Instant>,
    /// The earliest request timer armed for this connection, if any.
    pub(super) request_timer: Option<Instant>,
    /// When the socket last accepted bytes (for the stall timeout).
    pub(super) last_progress: Instant,
    /// A stall check is scheduled for this connection.
    pub(super) stall_timer_armed: bool,
    /// Closing at the end of this turn; nothing more is queued or read.
    pub(super) doomed: bool,
    /// On the turn's flush list.
    pub(super) to_flush: bool,
    /// On the list of connections to run again next turn.
    pub(super) to_rerun: bool,
    /// Requests are not processed until the output queue drains.
    pub(super) paused: bool,
    /// The peer closed its side, or input is over for us.
    pub(super) read_closed: bool,
    /// The sequence number of the last event this connection was matched
    /// against (de-duplicates index candidates).
    pub(super) last_event_seen: u64,
    /// Bytes received while streaming (ignored, but bounded).
    pub(super) stream_input: usize,
    /// Input buffer bytes (request head and body) last counted against the
    /// input budget.
    pub(super) held_input: usize,
    /// Accepted on the admin listener: only the admin endpoints answer.
    pub(super) admin: bool,
    /// The current request's `Origin` is in `clients.cors_origins` (its
    /// index there): responses carry the CORS headers.
    pub(super) cors: Option<u16>,
}

impl Conn {
    pub(super) fn new(serial: u64, peer: IpAddr, admin: bool, now: Instant) -> Conn {
        Conn {
            serial,
            peer,
            state: State::Head,
            inbuf: Vec::new(),
            out: OutQueue::default(),
            request_deadline: None,
            request_timer: None,
            last_progress: now,
            stall_timer_armed: false,
            doomed: false,
            to_flush: false,
            to_rerun: false,
            paused: false,
            read_closed: false,
            last_event_seen: 0,
            stream_input: 0,
            held_input: 0,
            admin,
            cors: None,
        }
    }

    #[inline]
    pub fn serial(&self) -> u64 {
        self.serial
    }

    #[inline]
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    #[inline]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Accepted on the admin listener.
    #[inline]
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// The `clients.cors_origins` entry the current request's `Origin`
    /// matched.
    #[inline]
    pub fn cors(&self) -> Option<u16> {
        self.cors
    }

    /// Requests wait until the client reads its responses.
    #[inline]
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Output bytes not yet written.
    #[inline]
    pub fn queued(&self) -> usize {
        self.out.queued()
    }

    /// A replaying subscriber (its backlog replay has not caught up yet).
    #[inline]
    pub fn is_replaying(&self) -> bool {
        matches!(&self.state, State::Stream(s) if s.replay.is_some())
    }
}

#[cfg(test)]
mod tests {
    /// A subscriber's stream is one allocation; 120 bytes stays in the
    /// allocator's 128-byte class (glibc), so gzip's 8 bytes cost plain
    /// subscribers nothing.
    #[test]
    fn a_stream_is_120_bytes() {
        assert!(std::mem::size_of::<super::Stream>() <= 120);
    }
}
